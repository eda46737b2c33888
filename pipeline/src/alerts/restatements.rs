//! Restatements: late events that move a closed period's total for a unit by 0.01 point or
//! more. A late event happened in the period but arrived after it ended (`State::late_events`);
//! a dossier's later steps (a November dossier completed in December) are not late, and what
//! they move in a closed period moves its standing without a record. Each published view's closed
//! periods are compared with their standing (what they showed when first seen closed, or at the
//! last move); a move with late events behind it is recorded with its before and after, the
//! criteria that moved, the late events and when. The log and the standings
//! are kept in the snapshot store (`restatements/log.json`), so a restart neither forgets a
//! restatement nor records one twice; the `restatements` table and the wall read it.
//!
//! Nothing is judged while ingest catches up: more than `[alerts] max_lag_messages` behind, or
//! its newest event more than a day older than the clock (a replay, a backfill: every event of
//! history is "late" then). A replay's figures half-way are not a restatement, and a store's
//! standings are compared only with the figures ingest has caught up to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use index766_core::time::{format_time, Instant, Period};

use super::{figures, Figures};
use crate::engine::view::View;
use crate::persist::store::{KeptJsonError, Store};
use crate::telemetry::metrics::Metrics;

const PATH: &str = "restatements/log.json";
/// The least move of a total that is recorded: totals are shown to two decimals.
const MOVED: f64 = 0.01;
/// How far behind the clock the newest event may be for ingest to count as caught up.
const CURRENT: i64 = 86_400;
/// The least move of a criterion named among the causes.
const CRITERION_MOVED: f64 = 0.005;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restatement {
    pub unit_code: String,
    pub unit_name: String,
    pub period_kind: String,
    pub period: String,
    pub before: f64,
    pub after: f64,
    /// (criterion, change in points), the largest move first.
    pub criteria: Vec<(String, f64)>,
    /// Late events applied to the unit's subtree in the period since its standing (counted since
    /// the process started: after a restart, those it replayed count again).
    pub late_events: u64,
    pub recorded_at: String,
}

/// What a closed period showed when last judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Standing {
    total: f64,
    points: BTreeMap<String, f64>,
    /// The late-event count of the unit's subtree in the period then.
    late_seen: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Log {
    /// By "unit|kind|period".
    standings: BTreeMap<String, Standing>,
    pub rows: Vec<Restatement>,
}

impl Log {
    /// Compares the view's closed periods with their standings; true if the log changed.
    pub(crate) fn judge(&mut self, view: &View, now: Instant) -> bool {
        let late = late_by_unit_and_period(view);
        let mut changed = false;
        let keep_closed = |b: &RecordBatch, i: usize| {
            b.column_by_name("is_current")
                .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                .is_some_and(|current| !current.value(i))
        };
        let tables = |name: &str| view.tables.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, b)| b.as_slice());
        let (totals, groups, scores) = (tables("totals"), tables("group_scores"), tables("scores"));
        // One batch per period, in the same order in every table.
        for i in 0..totals.len().min(groups.len()).min(scores.len()) {
            let closed = figures(&totals[i..=i], &groups[i..=i], &scores[i..=i], u32::MAX, &keep_closed);
            for ((unit, kind), f) in closed {
                let key = format!("{unit}|{kind}|{}", f.period);
                let late_now = late.get(&(unit.clone(), f.period.clone())).copied().unwrap_or(0);
                let standing = || Standing { total: f.total, points: points(&f), late_seen: late_now };
                match self.standings.get(&key) {
                    None => {
                        self.standings.insert(key, standing());
                        changed = true;
                    }
                    Some(before) if (f.total - before.total).abs() >= MOVED => {
                        // A count below the standing's: the process restarted, counting from zero.
                        let late = late_now.checked_sub(before.late_seen).unwrap_or(late_now);
                        if late > 0 {
                            self.rows.push(restatement(&unit, &kind, &f, before, late, now));
                        }
                        self.standings.insert(key, standing());
                        changed = true;
                    }
                    Some(_) => {}
                }
            }
        }
        changed
    }
}

fn points(f: &Figures) -> BTreeMap<String, f64> {
    f.criteria.iter().map(|(id, _, points)| (id.clone(), *points)).collect()
}

fn restatement(unit: &str, kind: &str, f: &Figures, before: &Standing, late_events: u64, now: Instant) -> Restatement {
    let mut criteria: Vec<(String, f64)> = points(f)
        .into_iter()
        .map(|(id, after)| {
            let change = after - before.points.get(&id).copied().unwrap_or(0.0);
            (id, change)
        })
        .filter(|(_, change)| change.abs() >= CRITERION_MOVED)
        .collect();
    criteria.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    Restatement {
        unit_code: unit.to_owned(),
        unit_name: f.unit_name.clone(),
        period_kind: kind.to_owned(),
        period: f.period.clone(),
        before: before.total,
        after: f.total,
        criteria,
        late_events,
        recorded_at: format_time(now),
    }
}

/// The late events of each unit's subtree, by (unit code, period id) of every kind.
fn late_by_unit_and_period(view: &View) -> BTreeMap<(String, String), u64> {
    let registry = &view.registry;
    let mut by_month: BTreeMap<Period, Vec<u64>> = BTreeMap::new();
    for (unit, month, n) in &view.late_events {
        if let Some(i) = registry.position(unit) {
            by_month.entry(*month).or_insert_with(|| vec![0; registry.len()])[i] += n;
        }
    }
    let mut out = BTreeMap::new();
    for (month, own) in by_month {
        let pooled = registry.pool_up(&own);
        for period in Period::all_containing(month.start()) {
            for (i, n) in pooled.iter().enumerate().filter(|(_, n)| **n > 0) {
                *out.entry((registry.units()[i].code.clone(), period.to_string())).or_default() += n;
            }
        }
    }
    out
}

/// Reads the log kept in the store (empty when there is none yet). One that exists but cannot be
/// read stops the start: going on would record its restatements again.
pub(crate) async fn load(store: &Store) -> Result<Log, KeptJsonError> {
    Ok(store.get_json(PATH).await?.unwrap_or_default())
}

/// The task: judges every published view (at most once a second) once ingest has caught up,
/// keeps the log in the store, then publishes its rows.
pub(crate) struct RestatementTask {
    pub log: Log,
    pub views: watch::Receiver<Arc<View>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub max_lag: i64,
    pub rows: watch::Sender<Arc<Vec<Restatement>>>,
}

impl RestatementTask {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = self.views.changed() => if changed.is_err() { return },
            }
            let view = self.views.borrow_and_update().clone();
            let current = view.as_of.saturating_sub(view.newest_event) <= CURRENT;
            let caught_up = current && self.metrics.total_lag().is_some_and(|lag| lag <= self.max_lag);
            if caught_up && self.log.judge(&view, view.as_of) {
                let bytes = serde_json::to_vec(&self.log).expect("the log serialises");
                if let Err(error) = self.store.put(PATH, bytes).await {
                    tracing::error!(%error, "cannot keep the restatement log; it is kept again at the next change");
                }
                self.rows.send_replace(Arc::new(self.log.rows.clone()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The `restatements` table.
pub(crate) fn table(rows: &[Restatement]) -> RecordBatch {
    let text = |f: &dyn Fn(&Restatement) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let number = |f: &dyn Fn(&Restatement) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let causes =
        |r: &Restatement| r.criteria.iter().map(|(c, d)| format!("{c} {d:+.2}")).collect::<Vec<_>>().join(", ");
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        ("unit_code", DataType::Utf8, text(&|r| r.unit_code.clone())),
        ("unit_name", DataType::Utf8, text(&|r| r.unit_name.clone())),
        ("period_kind", DataType::Utf8, text(&|r| r.period_kind.clone())),
        ("period", DataType::Utf8, text(&|r| r.period.clone())),
        ("before", DataType::Float64, number(&|r| r.before)),
        ("after", DataType::Float64, number(&|r| r.after)),
        ("change", DataType::Float64, number(&|r| r.after - r.before)),
        ("criteria", DataType::Utf8, text(&causes)),
        (
            "late_events",
            DataType::UInt64,
            Arc::new(UInt64Array::from(rows.iter().map(|r| r.late_events).collect::<Vec<_>>())),
        ),
        ("recorded_at", DataType::Utf8, text(&|r| r.recorded_at.clone())),
    ];
    let schema =
        Schema::new(columns.iter().map(|(name, t, _)| Field::new(*name, t.clone(), false)).collect::<Vec<_>>());
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, _, c)| c).collect())
        .expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use index766_core::event::status;
    use index766_core::fixtures::{event, province_and_department, reception, state_at};
    use index766_core::spec::Spec;
    use index766_core::state::State;
    use index766_core::time::parse_time;

    fn view_of(state: &State) -> View {
        View::build(province_and_department(), &Spec::shipped(), 80.0, state, &Default::default())
    }

    fn in_unit_a(mut e: index766_core::event::DossierEvent) -> index766_core::event::DossierEvent {
        e.unit_code = "A".into();
        e
    }

    fn october_total(log: &Log, unit: &str) -> f64 {
        log.standings[&format!("{unit}|month|2026-10")].total
    }

    /// A November step of an October dossier moves October's figures without a record; an
    /// October dossier that arrives in November is a restatement, recorded once.
    #[test]
    fn a_later_step_moves_the_standing_and_a_late_dossier_is_recorded_once() {
        // October as it happened: one dossier on time, one still open and in time at the month's end.
        let mut state = state_at("2026-10-01T00:00:00+07:00");
        state.apply(&in_unit_a(reception("r1", "D1", "2026-10-02T08:00:00+07:00", "2026-10-06T17:00:00+07:00")));
        state.apply(&in_unit_a(event("c1", "D1", status::COMPLETED, "2026-10-03T08:00:00+07:00")));
        state.apply(&in_unit_a(reception("r2", "D2", "2026-10-05T08:00:00+07:00", "2026-11-15T17:00:00+07:00")));
        state.advance_to(parse_time("2026-11-20T00:00:00+07:00").unwrap());
        let mut log = Log::default();
        assert!(log.judge(&view_of(&state), state.now()), "October is seen closed for the first time");
        assert!(log.rows.is_empty());
        let first = october_total(&log, "A");

        // D2 is completed in November, after its due date: October's 2.1 judges it late now, and
        // nothing arrived late.
        state.apply(&in_unit_a(event("c2", "D2", status::COMPLETED, "2026-11-17T08:00:00+07:00")));
        assert!(log.judge(&view_of(&state), state.now()));
        let moved = october_total(&log, "A");
        assert!((moved - first).abs() >= MOVED, "the later step moves October ({first} → {moved})");
        assert!(log.rows.is_empty(), "a later step is not a restatement: {:?}", log.rows);

        // An October dossier, received and completed in October, arrives now: two late events.
        state.apply(&in_unit_a(reception("r3", "D3", "2026-10-20T08:00:00+07:00", "2026-10-22T17:00:00+07:00")));
        state.apply(&in_unit_a(event("c3", "D3", status::COMPLETED, "2026-10-21T08:00:00+07:00")));
        let view = view_of(&state);
        assert!(log.judge(&view, state.now()));
        let mut rows: Vec<_> =
            log.rows.iter().map(|r| (r.unit_code.as_str(), r.period.as_str(), r.late_events)).collect();
        rows.sort();
        assert_eq!(rows, [("A", "2026-10", 2), ("P", "2026-10", 2)], "one row for the unit and one for the province");
        let a = log.rows.iter().find(|r| r.unit_code == "A").unwrap();
        assert_eq!((a.before, a.after), (moved, october_total(&log, "A")));
        assert!(a.after > a.before, "an on-time dossier raises October");
        assert!(!log.judge(&view, state.now()), "judged again, nothing changes");
        assert_eq!(log.rows.len(), 2);
    }
}
