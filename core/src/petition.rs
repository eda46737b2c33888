//! Petitions (phản ánh, kiến nghị, PAKN; `schemas/petition-event.v1.schema.json`) and the three
//! criteria counted from them: 6.1 classified (shown only), 6.2 handled on time, 6.3 satisfaction.
//! Deadlines run in working days (weekends and configured holidays excluded) from the submission
//! or the latest transfer in. Petitions are few (hundreds a month per province), so their
//! criteria are recomputed from the petition store at each publish: exact, with no timers.

use std::collections::{BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::dossier::earliest;
use crate::event::{RejectReason, Rejection};
use crate::time::{local_date, parse_time, Instant, Period, VIETNAM_OFFSET_SECS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Submitted,
    Transferred,
    Rejected,
    InfoRequested,
    Answered,
    Published,
    Rated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Rules,
    Officials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Satisfied,
    Unsatisfied,
}

/// One petition event as it travels on the petitions topic (JSON, keyed by petition id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PetitionEvent {
    pub schema_version: u32,
    pub event_id: String,
    pub event_time: String,
    pub petition_id: String,
    pub unit_code: String,
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

pub fn decode(payload: &[u8], key: Option<&[u8]>) -> Result<(PetitionEvent, Instant), Rejection> {
    let reject = |reason, detail: String| Rejection { reason, detail };
    let event: PetitionEvent =
        serde_json::from_slice(payload).map_err(|e| reject(RejectReason::SchemaViolation, e.to_string()))?;
    if event.schema_version != 1 {
        return Err(reject(
            RejectReason::UnsupportedVersion,
            format!("schema_version {}; this build reads 1", event.schema_version),
        ));
    }
    if event.event_id.is_empty() || event.petition_id.is_empty() || event.unit_code.is_empty() {
        return Err(reject(
            RejectReason::SchemaViolation,
            "event_id, petition_id and unit_code must not be empty".into(),
        ));
    }
    if event.rating.is_some() != (event.step == Step::Rated) {
        return Err(reject(RejectReason::SchemaViolation, "rating goes with step \"rated\", and only there".into()));
    }
    let time = parse_time(&event.event_time)
        .map_err(|e| reject(RejectReason::SchemaViolation, format!("event_time {:?}: {e}", event.event_time)))?;
    if key.is_some_and(|k| k != event.petition_id.as_bytes()) {
        return Err(reject(RejectReason::KeyMismatch, "the message key is not the petition id".into()));
    }
    Ok((event, time))
}

/// Working days: Monday to Friday, less the configured public holidays.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    holidays: BTreeSet<NaiveDate>,
}

/// A holiday that is not a date.
#[derive(Debug, thiserror::Error)]
#[error("holiday {holiday:?} is not YYYY-MM-DD: {source}")]
pub struct HolidayError {
    holiday: String,
    source: chrono::ParseError,
}

impl Calendar {
    pub fn new(holidays: &[String]) -> Result<Calendar, HolidayError> {
        let holidays = holidays
            .iter()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|source| HolidayError { holiday: d.clone(), source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Calendar { holidays })
    }

    fn is_working(&self, day: NaiveDate) -> bool {
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&day)
    }

    /// The last instant (23:59:59, UTC+7) of the `n`th working day after the day of `start`.
    pub fn deadline(&self, start: Instant, n: u32) -> Instant {
        let mut day = local_date(start);
        let mut left = n;
        while left > 0 {
            day = day.succ_opt().expect("in range");
            if self.is_working(day) {
                left -= 1;
            }
        }
        let next_midnight = day.succ_opt().expect("in range").and_hms_opt(0, 0, 0).expect("midnight");
        next_midnight.and_utc().timestamp() - VIETNAM_OFFSET_SECS as i64 - 1
    }
}

/// Deadlines of the petition rules (domain reference §7), in working days.
pub const REJECT_DAYS: u32 = 2;
pub const FIRST_INFO_REQUEST_DAYS: u32 = 5;
pub const ANSWER_DAYS: u32 = 15;
pub const PUBLISH_DAYS: u32 = 2;

#[derive(Debug, Clone, Default)]
pub struct Petition {
    pub unit: String,
    pub submitted_at: Option<Instant>,
    /// Latest transfer in: deadlines restart from it, and it names the handling unit.
    pub transferred_at: Option<Instant>,
    /// Every time each step was taken: after a transfer only the handling unit's steps (those at
    /// or after the transfer) count.
    pub rejected: Vec<Instant>,
    pub info_requested: Vec<Instant>,
    pub answered: Vec<Instant>,
    pub published: Vec<Instant>,
    pub classified: bool,
    pub unsatisfied: bool,
    pub repeated: bool,
    pub seen: Vec<String>,
}

impl Petition {
    /// 6.2: handled on time, judged at `at` (the period's end, or now for the live period).
    pub fn on_time(&self, calendar: &Calendar, at: Instant) -> bool {
        let Some(submitted) = self.submitted_at else { return true };
        let start = self.transferred_at.map_or(submitted, |t| t.max(submitted));
        let first = |times: &[Instant]| times.iter().copied().filter(|&t| t >= start).min();
        let met = |done: Option<Instant>, days: u32| done.is_none_or(|t| t <= calendar.deadline(start, days));
        if let Some(rejected) = first(&self.rejected) {
            return rejected <= calendar.deadline(start, REJECT_DAYS);
        }
        if !met(first(&self.info_requested), FIRST_INFO_REQUEST_DAYS) {
            return false;
        }
        match first(&self.answered) {
            Some(answered) => {
                answered <= calendar.deadline(start, ANSWER_DAYS)
                    && first(&self.published).unwrap_or(at) <= calendar.deadline(answered, PUBLISH_DAYS)
            }
            None => at <= calendar.deadline(start, ANSWER_DAYS),
        }
    }
}

#[derive(Debug, Default)]
pub struct Petitions {
    pub by_id: HashMap<String, Petition>,
}

impl Petitions {
    /// Merges one event (order-independent; a repeated event id counts once). Returns false for a duplicate.
    pub fn apply(&mut self, e: &PetitionEvent, t: Instant) -> bool {
        let p = self.by_id.entry(e.petition_id.clone()).or_default();
        if p.seen.contains(&e.event_id) {
            return false;
        }
        p.seen.push(e.event_id.clone());
        match e.step {
            Step::Submitted => {
                if p.submitted_at.is_none_or(|s| t < s) && p.transferred_at.is_none() {
                    p.unit = e.unit_code.clone();
                }
                earliest(&mut p.submitted_at, t);
                p.repeated |= e.repeated;
            }
            Step::Transferred => {
                if p.transferred_at.is_none_or(|old| t > old) {
                    p.transferred_at = Some(t);
                    p.unit = e.unit_code.clone();
                }
            }
            Step::Rejected => p.rejected.push(t),
            Step::InfoRequested => p.info_requested.push(t),
            Step::Answered => p.answered.push(t),
            Step::Published => p.published.push(t),
            Step::Rated => p.unsatisfied |= e.rating == Some(Rating::Unsatisfied),
        }
        if p.unit.is_empty() {
            p.unit = e.unit_code.clone();
        }
        p.classified |= e.classification.is_some();
        true
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// (numerator, denominator) of 6.1, 6.2 and 6.3 (at [`CLASSIFIED`], [`ON_TIME`],
    /// [`SATISFIED`]) per (unit code, period), for the unit's own petitions (the caller pools
    /// them up the tree).
    pub fn tallies(&self, calendar: &Calendar, now: Instant) -> HashMap<(&str, Period), [(i64, i64); 3]> {
        let mut out: HashMap<(&str, Period), [(i64, i64); 3]> = HashMap::new();
        for p in self.by_id.values() {
            let Some(submitted) = p.submitted_at else { continue };
            for period in Period::all_containing(submitted) {
                let on_time = p.on_time(calendar, now.min(period.last_instant()));
                let mut marks = [false; 3];
                marks[CLASSIFIED] = p.classified;
                marks[ON_TIME] = on_time;
                marks[SATISFIED] = on_time && !p.unsatisfied && !p.repeated;
                let slot = out.entry((p.unit.as_str(), period)).or_default();
                for (r, good) in slot.iter_mut().zip(marks) {
                    r.0 += good as i64;
                    r.1 += 1;
                }
            }
        }
        out
    }
}

/// The petition tallies' slots: 6.1 classified, 6.2 handled on time, 6.3 satisfied.
pub const CLASSIFIED: usize = 0;
pub const ON_TIME: usize = 1;
pub const SATISFIED: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Instant {
        parse_time(s).unwrap()
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let calendar = Calendar::new(&["2026-11-23".into()]).unwrap();
        // Thursday 19 Nov + 2 working days: Fri 20, (Sat, Sun, holiday Mon 23) Tue 24.
        assert_eq!(calendar.deadline(t("2026-11-19T10:00:00+07:00"), 2), t("2026-11-24T23:59:59+07:00"));
        assert!(Calendar::new(&["24/11/2026".into()]).is_err());
    }

    fn event(id: &str, step: Step, time: &str) -> (PetitionEvent, Instant) {
        let e = PetitionEvent {
            schema_version: 1,
            event_id: id.into(),
            event_time: time.into(),
            petition_id: "P1".into(),
            unit_code: "U".into(),
            step,
            classification: None,
            rating: (step == Step::Rated).then_some(Rating::Unsatisfied),
            repeated: false,
        };
        (e, t(time))
    }

    #[test]
    fn on_time_rules() {
        let calendar = Calendar::default();
        let mut store = Petitions::default();
        let add = |store: &mut Petitions, id, step, time| {
            let (e, at) = event(id, step, time);
            store.apply(&e, at);
        };
        // Submitted Monday 2 Nov; answered Friday 20 Nov (15th working day); published 24 Nov (2nd).
        add(&mut store, "a", Step::Submitted, "2026-11-02T09:00:00+07:00");
        add(&mut store, "b", Step::Answered, "2026-11-20T09:00:00+07:00");
        let p = store.by_id["P1"].clone();
        assert!(p.on_time(&calendar, t("2026-11-24T12:00:00+07:00")), "answer published within 2 working days of now");
        assert!(!p.on_time(&calendar, t("2026-11-25T00:00:00+07:00")), "not published 2 working days after the answer");
        add(&mut store, "c", Step::Published, "2026-11-24T09:00:00+07:00");
        assert!(store.by_id["P1"].on_time(&calendar, t("2026-12-31T00:00:00+07:00")));
        let nov = Period::containing(crate::time::PeriodKind::Month, t("2026-11-02T09:00:00+07:00"));
        let tallies = store.tallies(&calendar, t("2026-12-31T00:00:00+07:00"));
        assert_eq!(tallies[&("U", nov)], [(0, 1), (1, 1), (1, 1)]);
        add(&mut store, "d", Step::Rated, "2026-11-25T09:00:00+07:00");
        let tallies = store.tallies(&calendar, t("2026-12-31T00:00:00+07:00"));
        assert_eq!(tallies[&("U", nov)], [(0, 1), (1, 1), (0, 1)], "rated unsatisfied");
        // Transferred after the answer: the new unit's clock runs, the old answer does not count.
        add(&mut store, "e", Step::Transferred, "2026-11-26T09:00:00+07:00");
        assert!(store.by_id["P1"].on_time(&calendar, t("2026-12-10T00:00:00+07:00")), "within 15 working days");
        assert!(!store.by_id["P1"].on_time(&calendar, t("2026-12-31T00:00:00+07:00")), "unanswered since the transfer");
    }
}
