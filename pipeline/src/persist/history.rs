//! Score history: after each snapshot, the current periods' figures are kept for the day and for
//! the week they were judged in (Vietnam time), as `history/daily/<day>/<table>.parquet` and
//! `history/weekly/<monday>/<table>.parquet` in the snapshot store. The last snapshot of a day
//! (a week) stands for it. Exposed to SQL as `daily_*` and `weekly_*` tables, so day-over-day,
//! week-over-week and rank-history queries work across restarts, and the alert engine compares
//! with the same day last week. (Closed periods need no file of their own: every dossier is part
//! of the state, so their scores are in `scores` after any restart.)

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate};
use datafusion::arrow::array::{ArrayRef, BooleanArray, Date32Array, RecordBatch, TimestampSecondArray};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use index766_core::time::{local_date, Instant};

use crate::persist::snapshot::{decode_parquet, encode_parquet, plain_text, SnapshotError};
use crate::persist::store::Store;

/// How often figures are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cadence {
    Daily,
    Weekly,
}

pub(crate) const CADENCES: [Cadence; 2] = [Cadence::Daily, Cadence::Weekly];

impl Cadence {
    /// (SQL table, the view table it keeps).
    pub fn tables(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Cadence::Daily => {
                &[("daily_scores", "scores"), ("daily_group_scores", "group_scores"), ("daily_totals", "totals")]
            }
            Cadence::Weekly => &[("weekly_scores", "scores"), ("weekly_totals", "totals")],
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Cadence::Daily => "history/daily",
            Cadence::Weekly => "history/weekly",
        }
    }

    /// The column naming the day (the week's Monday) of each row.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Cadence::Daily => "day",
            Cadence::Weekly => "week_start",
        }
    }

    /// The day that names the figures judged at `t`.
    pub fn key(self, t: Instant) -> NaiveDate {
        match self {
            Cadence::Daily => local_date(t),
            Cadence::Weekly => week_of(t),
        }
    }

    /// Days held in memory (and so in SQL) before the newest: a year of weeks, five weeks of days.
    fn span_days(self) -> i64 {
        match self {
            Cadence::Daily => 35,
            Cadence::Weekly => 366,
        }
    }

    /// The columns of the history of a view table: those of `source` (in plain text), after the day's.
    pub(crate) fn schema_for(self, source: &RecordBatch) -> SchemaRef {
        self.stamp(&plain_text(&RecordBatch::new_empty(source.schema())), NaiveDate::default(), 0).schema()
    }

    /// The rows with two leading columns: the day (the week) and when the figures were taken.
    fn stamp(self, rows: &RecordBatch, day: NaiveDate, judged_at: Instant) -> RecordBatch {
        let n = rows.num_rows();
        let days = (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
        let mut fields = vec![
            Arc::new(Field::new(self.column(), DataType::Date32, false)),
            Arc::new(Field::new("judged_at", DataType::Timestamp(TimeUnit::Second, Some("+07:00".into())), false)),
        ];
        fields.extend(rows.schema().fields().iter().cloned());
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![days; n])),
            Arc::new(TimestampSecondArray::from(vec![judged_at; n]).with_timezone("+07:00")),
        ];
        columns.extend(rows.columns().iter().cloned());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match their schema")
    }
}

/// Every day and week kept: the tables SQL sees.
pub(crate) type HistoryTables = Vec<(&'static str, Vec<RecordBatch>)>;

pub(crate) struct History {
    cadence: Cadence,
    store: Store,
    /// Day (or Monday) → one batch per table of the cadence.
    kept: BTreeMap<NaiveDate, Vec<RecordBatch>>,
}

/// The Monday of the week `t` falls in, in Vietnam.
pub(crate) fn week_of(t: Instant) -> NaiveDate {
    let day = local_date(t);
    day - Duration::days(day.weekday().num_days_from_monday() as i64)
}

impl History {
    /// Reads the days (weeks) kept in the store within the cadence's span of the newest; a file
    /// that cannot be read is logged and its day skipped.
    pub async fn load(cadence: Cadence, store: Store) -> Result<History, SnapshotError> {
        let folders = store.list(cadence.folder()).await.map_err(SnapshotError::io(&store))?;
        let mut days: Vec<NaiveDate> =
            folders.iter().filter_map(|f| NaiveDate::parse_from_str(f, "%Y-%m-%d").ok()).collect();
        days.sort();
        let first = days.last().map(|&newest| newest - Duration::days(cadence.span_days()));
        let mut kept = BTreeMap::new();
        for day in days.into_iter().filter(|&d| Some(d) >= first) {
            let mut tables = Vec::new();
            for (_, source) in cadence.tables() {
                let path = format!("{}/{day}/{source}.parquet", cadence.folder());
                match store.get(&path).await.map(decode_parquet) {
                    Ok(Ok(batches)) => tables.extend(batches.into_iter().next()),
                    Ok(Err(why)) => tracing::error!(path, %why, "history file unreadable; skipped"),
                    Err(error) => tracing::error!(path, %error, "history file unreadable; skipped"),
                }
            }
            if tables.len() == cadence.tables().len() {
                kept.insert(day, tables);
            }
        }
        Ok(History { cadence, store, kept })
    }

    /// Keeps the current periods' rows of `tables` (the view's) as the figures of the day (week)
    /// `judged_at` falls in.
    pub async fn record(
        &mut self,
        tables: &[(&'static str, Vec<RecordBatch>)],
        judged_at: Instant,
    ) -> Result<(), SnapshotError> {
        let day = self.cadence.key(judged_at);
        let mut kept = Vec::new();
        for (_, source) in self.cadence.tables() {
            let Some((_, batches)) = tables.iter().find(|(name, _)| name == source) else { return Ok(()) };
            let current: Vec<RecordBatch> = batches
                .iter()
                .map(|batch| {
                    let current = batch
                        .column_by_name("is_current")
                        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                        .expect("score tables have is_current");
                    filter_record_batch(batch, current).expect("a mask of the batch's length")
                })
                .collect();
            // Plain text, as the days read back from files have: one layout for all days.
            let rows = plain_text(&concat_batches(&batches[0].schema(), &current).expect("batches of one table"));
            let stamped = self.cadence.stamp(&rows, day, judged_at);
            let bytes = encode_parquet(source, std::slice::from_ref(&stamped))?;
            self.store
                .put(&format!("{}/{day}/{source}.parquet", self.cadence.folder()), bytes)
                .await
                .map_err(SnapshotError::io(&self.store))?;
            kept.push(stamped);
        }
        self.kept.insert(day, kept);
        let first = day - Duration::days(self.cadence.span_days());
        self.kept.retain(|&d, _| d >= first);
        Ok(())
    }

    /// The days (weeks) kept, per SQL table; those written under another layout of the tables
    /// (an older spec with other columns) are left out, with a warning.
    pub fn tables(&self) -> HistoryTables {
        self.cadence
            .tables()
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let newest = self.kept.values().last().map(|t| t[i].schema());
                let batches = self
                    .kept
                    .iter()
                    .filter(|(day, t)| {
                        let same = Some(t[i].schema()) == newest;
                        if !same {
                            tracing::warn!(%day, table = name, "history of another layout; not in SQL");
                        }
                        same
                    })
                    .map(|(_, t)| t[i].clone())
                    .collect();
                (*name, batches)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use index766_core::time::parse_time;

    #[test]
    fn weeks_start_on_monday_in_vietnam() {
        // Sunday 29 Nov 2026 23:30 in Vietnam is still the week of Monday 23 Nov.
        let monday = |s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(week_of(parse_time("2026-11-29T23:30:00+07:00").unwrap()), monday("2026-11-23"));
        assert_eq!(week_of(parse_time("2026-11-29T17:30:00Z").unwrap()), monday("2026-11-30"));
    }

    #[tokio::test]
    async fn a_week_kept_reads_back_after_a_restart() {
        let registry = Arc::new(
            index766_core::units::Registry::parse("{\"code\":\"U1\",\"name\":\"Xã\",\"level\":\"commune\"}").unwrap(),
        );
        let state = index766_core::fixtures::state_at("2026-11-24T12:00:00+07:00");
        let view = crate::engine::view::View::build(
            registry,
            &index766_core::spec::Spec::shipped(),
            80.0,
            &state,
            &Default::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::load(Cadence::Weekly, Store::Local(dir.path().to_owned())).await.unwrap();
        assert!(history.tables()[1].1.is_empty(), "nothing before the first week");
        history.record(&view.tables, state.now()).await.unwrap();
        let again = History::load(Cadence::Weekly, Store::Local(dir.path().to_owned())).await.unwrap();
        let tables = again.tables();
        assert_eq!(tables.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["weekly_scores", "weekly_totals"]);
        let totals = &tables[1].1[0];
        // U1 has four current periods (month, quarter, half-year, year).
        assert_eq!(totals.num_rows(), 4);
        let week = totals.column_by_name("week_start").unwrap().as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(week.value_as_date(0).unwrap().to_string(), "2026-11-23");
        assert_eq!(tables, history.tables());
        assert_eq!(totals.schema(), Cadence::Weekly.schema_for(&view.table("totals")[0]));
        let mut daily = History::load(Cadence::Daily, Store::Local(dir.path().to_owned())).await.unwrap();
        daily.record(&view.tables, state.now()).await.unwrap();
        let days = History::load(Cadence::Daily, Store::Local(dir.path().to_owned())).await.unwrap().tables();
        assert_eq!(
            days.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["daily_scores", "daily_group_scores", "daily_totals"]
        );
        let day = days[2].1[0].column_by_name("day").unwrap().as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(day.value_as_date(0).unwrap().to_string(), "2026-11-24");
    }
}
