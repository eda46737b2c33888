//! Weekly history: after each snapshot, the scores and totals of the current periods are kept
//! for the week they were judged in (Monday, UTC+7), as `history/weekly/<monday>/{scores,totals}.parquet`
//! in the snapshot store. The last snapshot of a week stands for that week. Exposed to SQL as
//! `weekly_scores` and `weekly_totals`, so week-over-week and rank-history queries work across
//! restarts. (Closed periods need no file of their own: every dossier is part of the state, so
//! their scores are in `scores` after any restart, and in every snapshot's `scores.parquet`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Duration};
use datafusion::arrow::array::{ArrayRef, BooleanArray, Date32Array, RecordBatch, TimestampSecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::snapshot::{decode_parquet, encode_parquet, SnapshotError};
use crate::store::Store;
use crate::time::{local_date, Instant};

const FOLDER: &str = "history/weekly";
/// (SQL table, the view table it keeps).
pub const TABLES: [(&str, &str); 2] = [("weekly_scores", "scores"), ("weekly_totals", "totals")];

/// Every week kept: the tables SQL sees.
pub type HistoryTables = Vec<(&'static str, Vec<RecordBatch>)>;

pub struct History {
    store: Store,
    /// Week (its Monday) → one batch per table of TABLES.
    weeks: BTreeMap<chrono::NaiveDate, Vec<RecordBatch>>,
}

/// The Monday of the week `t` falls in, in Vietnam.
pub fn week_of(t: Instant) -> chrono::NaiveDate {
    let day = local_date(t);
    day - Duration::days(day.weekday().num_days_from_monday() as i64)
}

impl History {
    /// Reads every week kept in the store; a week that cannot be read is logged and skipped.
    pub async fn load(store: Store) -> Result<History, SnapshotError> {
        let mut weeks = BTreeMap::new();
        for folder in store.list(FOLDER).await.map_err(SnapshotError::io(&store))? {
            let Ok(week) = chrono::NaiveDate::parse_from_str(&folder, "%Y-%m-%d") else { continue };
            let mut tables = Vec::new();
            for (_, source) in TABLES {
                let path = format!("{FOLDER}/{folder}/{source}.parquet");
                match store.get(&path).await.map(decode_parquet) {
                    Ok(Ok(batches)) => tables.extend(batches.into_iter().next()),
                    Ok(Err(why)) => tracing::error!(path, %why, "history file unreadable; skipped"),
                    Err(error) => tracing::error!(path, %error, "history file unreadable; skipped"),
                }
            }
            if tables.len() == TABLES.len() {
                weeks.insert(week, tables);
            }
        }
        Ok(History { store, weeks })
    }

    /// Keeps the current periods' rows of `tables` (the view's scores and totals) as the figures
    /// of the week `judged_at` falls in.
    pub async fn record(
        &mut self,
        tables: &[(&'static str, RecordBatch)],
        judged_at: Instant,
    ) -> Result<(), SnapshotError> {
        let week = week_of(judged_at);
        let mut kept = Vec::new();
        for (_, source) in TABLES {
            let Some((_, batch)) = tables.iter().find(|(name, _)| *name == source) else { return Ok(()) };
            let current = batch
                .column_by_name("is_current")
                .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                .expect("score tables have is_current");
            let rows = filter_record_batch(batch, current).expect("a mask of the batch's length");
            let with_week = stamp(&rows, week, judged_at);
            let bytes = encode_parquet(source, &with_week)?;
            self.store
                .put(&format!("{FOLDER}/{week}/{source}.parquet"), bytes)
                .await
                .map_err(SnapshotError::io(&self.store))?;
            kept.push(with_week);
        }
        self.weeks.insert(week, kept);
        Ok(())
    }

    /// The weeks kept, per SQL table; weeks written under another layout of the tables (an older
    /// spec with other columns) are left out, with a warning.
    pub fn tables(&self) -> HistoryTables {
        TABLES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let newest = self.weeks.values().last().map(|t| t[i].schema());
                let batches = self
                    .weeks
                    .iter()
                    .filter(|(week, t)| {
                        let same = Some(t[i].schema()) == newest;
                        if !same {
                            tracing::warn!(%week, table = name, "history week of another layout; not in SQL");
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

/// The columns of the history of a view table: those of `source`, after the week's.
pub fn schema_for(source: &RecordBatch) -> SchemaRef {
    stamp(&RecordBatch::new_empty(source.schema()), chrono::NaiveDate::default(), 0).schema()
}

/// The rows with two leading columns: the week and when the figures were taken.
fn stamp(rows: &RecordBatch, week: chrono::NaiveDate, judged_at: Instant) -> RecordBatch {
    let n = rows.num_rows();
    let days = (week - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    let mut fields = vec![
        Arc::new(Field::new("week_start", DataType::Date32, false)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_time;

    #[test]
    fn weeks_start_on_monday_in_vietnam() {
        // Sunday 29 Nov 2026 23:30 in Vietnam is still the week of Monday 23 Nov.
        let monday = |s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(week_of(parse_time("2026-11-29T23:30:00+07:00").unwrap()), monday("2026-11-23"));
        assert_eq!(week_of(parse_time("2026-11-29T17:30:00Z").unwrap()), monday("2026-11-30"));
    }

    #[tokio::test]
    async fn a_week_kept_reads_back_after_a_restart() {
        let registry =
            Arc::new(crate::units::Registry::parse("{\"code\":\"U1\",\"name\":\"Xã\",\"level\":\"commune\"}").unwrap());
        let state = crate::state::tests::state_at("2026-11-24T12:00:00+07:00");
        let view =
            crate::view::View::build(registry, &crate::spec::tests::shipped(), 80.0, &state, &Default::default());
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::load(Store::Local(dir.path().to_owned())).await.unwrap();
        assert!(history.tables()[1].1.is_empty(), "nothing before the first week");
        history.record(&view.tables, state.now()).await.unwrap();
        let again = History::load(Store::Local(dir.path().to_owned())).await.unwrap();
        let tables = again.tables();
        assert_eq!(tables.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["weekly_scores", "weekly_totals"]);
        let totals = &tables[1].1[0];
        // U1 has four current periods (month, quarter, half-year, year).
        assert_eq!(totals.num_rows(), 4);
        let week = totals.column_by_name("week_start").unwrap().as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(week.value_as_date(0).unwrap().to_string(), "2026-11-23");
        assert_eq!(tables, history.tables());
        assert_eq!(totals.schema(), schema_for(view.table("totals")));
    }
}
