//! The weekly report the leaders read: for a unit and an ISO week, its standing at the end of the
//! week (the week's kept figures, `weekly_*`) against the week before, its six groups, the units
//! below it (best, worst, biggest movers), the criteria losing most points with the good dossiers
//! each needs for the target, the overdue dossiers to chase now, and the week's restatements.
//! `Figures` reads them through SQL (the caller's scope holds), `layout` lays them out once in
//! the reader's language, and `html`, `pdf` and `xlsx` write that same layout; `kept` writes the
//! reports every Monday 00:00 (Vietnam) into the store, and `answer` serves them.

pub mod answer;
pub mod html;
pub mod kept;
pub mod layout;
pub mod pdf;
pub mod xlsx;

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use datafusion::scalar::ScalarValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use index766_core::criteria::CRITERIA;
use index766_core::scoring::{unit_gaps, CriterionScore};
use index766_core::spec::Spec;
use index766_core::time::{Period, PeriodKind, VIETNAM_OFFSET_SECS};

use crate::serve::access::Principal;
use crate::serve::api::{day, text};
use crate::serve::query::{to_json, Bound, SqlService};
use crate::serve::sql_error::QueryError;

/// How many units each list below the unit shows, and how many dossiers.
const UNITS_LISTED: usize = 5;
const DOSSIERS_LISTED: usize = 20;

/// An ISO week (Monday to Sunday, as Vietnam counts them: "tuần 45").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week {
    pub monday: NaiveDate,
}

impl Week {
    pub fn of(day: NaiveDate) -> Week {
        Week { monday: day - Duration::days(day.weekday().num_days_from_monday() as i64) }
    }

    /// `2026-W45`.
    pub fn parse(text: &str) -> Result<Week, String> {
        let wrong = || format!("week={text:?}: an ISO week as YYYY-Www, e.g. 2026-W45");
        let (year, number) = text.split_once("-W").ok_or_else(wrong)?;
        let (year, number) = (year.parse().map_err(|_| wrong())?, number.parse().map_err(|_| wrong())?);
        NaiveDate::from_isoywd_opt(year, number, Weekday::Mon).map(|monday| Week { monday }).ok_or_else(wrong)
    }

    pub fn number(self) -> u32 {
        self.monday.iso_week().week()
    }

    pub fn sunday(self) -> NaiveDate {
        self.monday + Duration::days(6)
    }

    pub fn before(self) -> Week {
        Week { monday: self.monday - Duration::days(7) }
    }

    /// When it ends: the next Monday 00:00 in Vietnam, as an instant.
    pub fn end(self) -> index766_core::time::Instant {
        let next = self.monday + Duration::days(7);
        next.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp() - VIETNAM_OFFSET_SECS as i64
    }
}

impl std::fmt::Display for Week {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-W{:02}", self.monday.iso_week().year(), self.number())
    }
}

/// What a report is asked for.
#[derive(Debug, Clone)]
pub struct Asked {
    pub unit: String,
    pub week: Week,
    /// The period whose figures the details are of (groups, units below, criteria).
    pub period_kind: PeriodKind,
}

/// A unit's total at the end of a week.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Standing {
    pub period_kind: String,
    pub period: String,
    pub total: f64,
    pub band: String,
    pub rank: u32,
    pub siblings: u32,
    pub target_total: f64,
    /// The same kind's figures at the end of the week before (a new month's start compares with
    /// the old month's end, as the weekly figures in the news do).
    pub last_week: Option<LastWeek>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastWeek {
    pub period: String,
    pub total: f64,
    pub rank: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupLine {
    pub group_id: u8,
    pub name_vi: String,
    pub name_en: String,
    pub points: f64,
    pub max_points: f64,
    pub last_week: Option<f64>,
}

/// A unit directly below the one reported on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitLine {
    pub unit_code: String,
    pub unit_name: String,
    pub total: f64,
    pub band: String,
    pub rank: u32,
    pub last_week: Option<LastWeek>,
}

impl UnitLine {
    fn change(&self) -> Option<f64> {
        self.last_week.as_ref().map(|l| self.total - l.total)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CriterionLine {
    pub criterion: String,
    pub name_vi: String,
    pub name_en: String,
    pub points: f64,
    pub max_points: f64,
    pub points_lost: f64,
    /// Good dossiers (items) that alone would bring the unit to its target; None when this
    /// criterion alone cannot, or is not counted in items.
    pub good_needed_for_target: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverdueDossier {
    pub dossier_id: String,
    pub unit_code: String,
    pub procedure_code: String,
    pub received_at: Option<String>,
    pub due_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestatementLine {
    pub unit_code: String,
    pub unit_name: String,
    pub period_kind: String,
    pub period: String,
    pub before: f64,
    pub after: f64,
    pub criteria: String,
    pub late_events: u64,
    pub recorded_at: String,
}

/// Every figure of one weekly report: what `format=json` answers and the tests compare with SQL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeeklyReport {
    pub unit_code: String,
    pub unit_name: String,
    /// `2026-W46`, and its Monday.
    pub week: String,
    pub week_start: String,
    pub period_kind: String,
    /// When the week's figures were taken (its last snapshot), Vietnam time.
    pub judged_at: String,
    /// The month's and the year's (the running figures the news reads each week), then the
    /// details' kind if it is another.
    pub standings: Vec<Standing>,
    pub groups: Vec<GroupLine>,
    pub best_units: Vec<UnitLine>,
    pub worst_units: Vec<UnitLine>,
    pub movers: Vec<UnitLine>,
    pub criteria: Vec<CriterionLine>,
    pub overdue: Vec<OverdueDossier>,
    pub restatements: Vec<RestatementLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("no figures are kept for {unit} in week {week}: GET /api/v1/history/weekly lists the weeks kept")]
    NoFigures { unit: String, week: Week },
    #[error("no weekly figures are kept for {unit} yet: they are kept from the first snapshot on")]
    NoWeeks { unit: String },
}

/// A `weekly_totals` row.
#[derive(Deserialize)]
struct TotalRow {
    /// YYYY-MM-DD.
    week_start: String,
    unit_code: String,
    unit_name: String,
    period_kind: String,
    period: String,
    period_start: String,
    total: f64,
    band: String,
    rank: u32,
    siblings: u32,
    target_total: f64,
    judged_at: String,
}

/// A `weekly_scores` row.
#[derive(Deserialize)]
struct ScoreRow {
    week_start: String,
    criterion: String,
    group_id: u8,
    criterion_name_vi: String,
    criterion_name_en: String,
    max_points: f64,
    numerator: i64,
    denominator: i64,
    ratio: Option<f64>,
    points: f64,
}

fn kind_of(text: &str) -> Option<PeriodKind> {
    PeriodKind::ALL.into_iter().find(|k| k.as_str() == text)
}

/// Reads a report's figures through SQL, as `principal` may see them.
pub struct Figures<'a> {
    pub sql: &'a SqlService,
    pub spec: &'a Spec,
    pub principal: Option<&'a Principal>,
}

/// The rows of a query within `unit`'s subtree, as `principal` may read them.
async fn rows<T: DeserializeOwned>(
    sql: &SqlService,
    principal: Option<&Principal>,
    unit: &str,
    text: &str,
    values: Vec<(&'static str, ScalarValue)>,
) -> Result<Vec<T>, QueryError> {
    let bound = Bound { text: text.to_owned(), values, within: Some(unit.to_owned()) };
    let results = sql.read(&bound, principal).await?;
    serde_json::from_slice(&to_json(&results.batches)?)
        .map_err(|e| QueryError::Internal(format!("the report cannot read its own query's rows: {e}")))
}

impl Figures<'_> {
    async fn rows<T: DeserializeOwned>(
        &self,
        unit: &str,
        text: &str,
        values: Vec<(&'static str, ScalarValue)>,
    ) -> Result<Vec<T>, QueryError> {
        rows(self.sql, self.principal, unit, text, values).await
    }

    pub async fn gather(&self, asked: &Asked) -> Result<WeeklyReport, ReportError> {
        let (unit, week, last) = (asked.unit.as_str(), asked.week, asked.week.before());
        let (monday, last_monday) = (week.monday.to_string(), last.monday.to_string());
        let weeks = || vec![("unit", text(unit)), ("week", day(week.monday)), ("last", day(last.monday))];
        let totals: Vec<TotalRow> = self
            .rows(unit, "SELECT * FROM weekly_totals WHERE unit_code = $unit AND week_start IN ($week, $last)", weeks())
            .await?;
        let this_week = |row: &&TotalRow| row.week_start == monday;
        let Some(own) = totals.iter().find(|r| this_week(r) && r.period_kind == asked.period_kind.as_str()) else {
            return Err(ReportError::NoFigures { unit: unit.to_owned(), week });
        };
        let last_of = |rows: &[TotalRow], code: &str, kind: &str| {
            rows.iter()
                .find(|r| r.week_start == last_monday && r.unit_code == code && r.period_kind == kind)
                .map(|r| LastWeek { period: r.period.clone(), total: r.total, rank: r.rank })
        };
        let mut kinds = vec![PeriodKind::Month, PeriodKind::Year];
        if !kinds.contains(&asked.period_kind) {
            kinds.push(asked.period_kind);
        }
        let standings = kinds
            .iter()
            .filter_map(|kind| totals.iter().find(|r| this_week(r) && r.period_kind == kind.as_str()))
            .map(|r| Standing {
                period_kind: r.period_kind.clone(),
                period: r.period.clone(),
                total: r.total,
                band: r.band.clone(),
                rank: r.rank,
                siblings: r.siblings,
                target_total: r.target_total,
                last_week: last_of(&totals, unit, &r.period_kind),
            })
            .collect();

        let kind = || ("kind", text(asked.period_kind.as_str()));
        let children: Vec<TotalRow> = self
            .rows(
                unit,
                "SELECT * FROM weekly_totals WHERE parent_code = $unit AND period_kind = $kind AND week_start IN ($week, $last)",
                [weeks(), vec![kind()]].concat(),
            )
            .await?;
        let mut below: Vec<UnitLine> = children
            .iter()
            .filter(|r| this_week(r))
            .map(|r| UnitLine {
                unit_code: r.unit_code.clone(),
                unit_name: r.unit_name.clone(),
                total: r.total,
                band: r.band.clone(),
                rank: r.rank,
                last_week: last_of(&children, &r.unit_code, &r.period_kind),
            })
            .collect();
        below.sort_by(|a, b| b.total.total_cmp(&a.total).then_with(|| a.unit_code.cmp(&b.unit_code)));
        let best_units = below.iter().take(UNITS_LISTED).cloned().collect();
        let worst_units = below.iter().rev().take(UNITS_LISTED).cloned().collect();
        let mut movers: Vec<UnitLine> =
            below.iter().filter(|u| u.change().is_some_and(|c| c != 0.0)).cloned().collect();
        movers.sort_by(|a, b| {
            let size = |u: &UnitLine| u.change().unwrap_or_default().abs();
            size(b).total_cmp(&size(a)).then_with(|| a.unit_code.cmp(&b.unit_code))
        });
        movers.truncate(UNITS_LISTED);

        let scores: Vec<ScoreRow> = self
            .rows(
                unit,
                "SELECT * FROM weekly_scores WHERE unit_code = $unit AND period_kind = $kind AND week_start IN ($week, $last)",
                [weeks(), vec![kind()]].concat(),
            )
            .await?;
        let (now, before): (Vec<&ScoreRow>, Vec<&ScoreRow>) = scores.iter().partition(|s| s.week_start == monday);
        let group_points = |rows: &[&ScoreRow], group: u8| -> Option<f64> {
            let points: Vec<f64> = rows.iter().filter(|s| s.group_id == group).map(|s| s.points).collect();
            (!points.is_empty()).then(|| points.iter().sum())
        };
        let groups = self
            .spec
            .groups
            .iter()
            .filter_map(|g| {
                Some(GroupLine {
                    group_id: g.id,
                    name_vi: g.name_vi.clone(),
                    name_en: g.name_en.clone(),
                    points: group_points(&now, g.id)?,
                    max_points: g.max_points,
                    last_week: group_points(&before, g.id),
                })
            })
            .collect();
        let criteria = self.losing_most(own, &now);

        let overdue = self
            .rows(
                unit,
                &format!(
                    "SELECT dossier_id, unit_code, procedure_code, CAST(received_at AS VARCHAR) AS received_at, \
                     CAST(due_at AS VARCHAR) AS due_at FROM dossiers WHERE timeliness = 'open_overdue' \
                     ORDER BY due_at, dossier_id LIMIT {DOSSIERS_LISTED}"
                ),
                vec![],
            )
            .await?;
        let rfc3339 = |t| index766_core::time::format_time(t);
        let restatements = self
            .rows(
                unit,
                "SELECT unit_code, unit_name, period_kind, period, before, after, criteria, late_events, recorded_at \
                 FROM restatements WHERE recorded_at >= $from AND recorded_at < $to ORDER BY recorded_at, unit_code",
                vec![("from", text(&rfc3339(week.before().end()))), ("to", text(&rfc3339(week.end())))],
            )
            .await?;
        Ok(WeeklyReport {
            unit_code: unit.to_owned(),
            unit_name: own.unit_name.clone(),
            week: week.to_string(),
            week_start: monday.clone(),
            period_kind: asked.period_kind.as_str().to_owned(),
            judged_at: own.judged_at.clone(),
            standings,
            groups,
            best_units,
            worst_units,
            movers,
            criteria,
            overdue,
            restatements,
        })
    }

    /// The criteria losing the unit points at the end of the week, the most first, each with the good
    /// dossiers it alone needs for the target, worked out from the kept figures as `gaps` is.
    fn losing_most(&self, own: &TotalRow, rows: &[&ScoreRow]) -> Vec<CriterionLine> {
        let Some(kind) = kind_of(&own.period_kind) else { return Vec::new() };
        let Ok(start) = chrono::DateTime::parse_from_rfc3339(&own.period_start) else { return Vec::new() };
        let period = Period::containing(kind, start.timestamp());
        let in_force = self.spec.for_period(period);
        let scores: Vec<CriterionScore> = rows
            .iter()
            .filter_map(|s| {
                Some(CriterionScore {
                    unit: 0,
                    period,
                    criterion: CRITERIA.iter().position(|c| c.id == s.criterion)?,
                    numerator: s.numerator,
                    denominator: s.denominator,
                    ratio: s.ratio,
                    points: s.points,
                    max_points: s.max_points,
                })
            })
            .collect();
        let by_id: HashMap<&str, &&ScoreRow> = rows.iter().map(|s| (s.criterion.as_str(), s)).collect();
        unit_gaps(&scores, &in_force, own.total, own.target_total)
            .into_iter()
            .filter(|g| g.points_lost > 0.0)
            .filter_map(|g| {
                let row = by_id.get(CRITERIA[g.criterion].id)?;
                Some(CriterionLine {
                    criterion: row.criterion.clone(),
                    name_vi: row.criterion_name_vi.clone(),
                    name_en: row.criterion_name_en.clone(),
                    points: row.points,
                    max_points: row.max_points,
                    points_lost: g.points_lost,
                    good_needed_for_target: g.good_needed,
                })
            })
            .collect()
    }
}

/// The newest week `unit` has kept figures for.
pub async fn newest_week(
    sql: &SqlService,
    unit: &str,
    principal: Option<&Principal>,
) -> Result<Option<Week>, QueryError> {
    #[derive(Deserialize)]
    struct Newest {
        week_start: Option<String>,
    }
    let query = "SELECT max(week_start) AS week_start FROM weekly_totals WHERE unit_code = $unit";
    let newest: Vec<Newest> = rows(sql, principal, unit, query, vec![("unit", text(unit))]).await?;
    let day = newest.first().and_then(|r| r.week_start.as_deref()).and_then(|d| d.parse::<NaiveDate>().ok());
    Ok(day.map(Week::of))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;
    use crate::serve::report::layout::Cell;

    #[test]
    fn weeks_are_iso_weeks_that_end_on_monday_midnight_in_vietnam() {
        let week = Week::parse("2026-W47").unwrap();
        assert_eq!(week.monday, NaiveDate::from_ymd_opt(2026, 11, 16).unwrap());
        assert_eq!(
            (week.to_string(), week.number(), week.sunday().to_string()),
            ("2026-W47".into(), 47, "2026-11-22".into())
        );
        assert_eq!(index766_core::time::format_time(week.end()), "2026-11-23T00:00:00+07:00");
        assert_eq!(Week::of(NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()), week);
        assert_eq!(week.before().to_string(), "2026-W46");
        // The week of 1 January 2026 (a Thursday) is week 1 of 2026, from Monday 29 December.
        assert_eq!(Week::parse("2026-W01").unwrap().monday, NaiveDate::from_ymd_opt(2025, 12, 29).unwrap());
        for wrong in ["2026-47", "2026-W54", "W47", "2026-Wxx"] {
            assert!(Week::parse(wrong).unwrap_err().contains("YYYY-Www"), "{wrong}");
        }
    }

    #[test]
    fn changes_carry_their_sign_and_numbers_their_language() {
        let change = |value| Cell::Change { value, decimals: 2 };
        assert_eq!(change(0.2).shown(Language::Vi), "+0,20");
        assert_eq!(change(-1.5).shown(Language::En), "-1.50");
        assert_eq!(change(0.001).shown(Language::Vi), "0,00");
        assert_eq!(Cell::Number { value: 1234.5, decimals: 1 }.shown(Language::Vi), "1.234,5");
        assert_eq!(Cell::Empty.shown(Language::En), "—");
    }
}
