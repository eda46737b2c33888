//! The immutable view that readers (SQL, metrics, snapshots) see: Arrow tables built from the
//! last applied state. Readers never touch the mutating state.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray, UInt32Array,
    UInt8Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::flag;
use crate::scoring::{Scoreboard, ON_TIME};
use crate::state::{State, Verdict};
use crate::time::Instant;
use crate::units::Registry;

/// Timestamps are shown in Vietnam time.
const TZ: &str = "+07:00";

#[derive(Debug, Clone)]
pub struct View {
    /// The instant the scores were judged at.
    pub as_of: Instant,
    pub registry: Arc<Registry>,
    pub scoreboard: Arc<Scoreboard>,
    pub units: RecordBatch,
    pub scores: RecordBatch,
    pub dossiers: RecordBatch,
}

impl View {
    pub fn empty(registry: Arc<Registry>, now: Instant) -> View {
        View::build(registry, &State::new(now))
    }

    pub fn build(registry: Arc<Registry>, state: &State) -> View {
        let scoreboard = crate::scoring::score(&registry, state);
        View {
            as_of: state.now(),
            units: units_batch(&registry),
            scores: scores_batch(&registry, &scoreboard),
            dossiers: dossiers_batch(state),
            scoreboard: Arc::new(scoreboard),
            registry,
        }
    }

    /// The SQL tables, by name.
    pub fn tables(&self) -> [(&'static str, &RecordBatch); 3] {
        [("units", &self.units), ("scores", &self.scores), ("dossiers", &self.dossiers)]
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Second, Some(TZ.into()))
}

fn timestamps(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampSecondArray::from(values).with_timezone(TZ))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema, columns).expect("columns match their schema")
}

pub fn units_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("unit_name", DataType::Utf8, false),
        Field::new("parent_code", DataType::Utf8, true),
        Field::new("level", DataType::Utf8, false),
        Field::new("depth", DataType::UInt32, false),
    ]))
}

fn units_batch(registry: &Registry) -> RecordBatch {
    let units = registry.units();
    batch(
        units_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(units.iter().map(|u| &u.code))),
            Arc::new(StringArray::from_iter_values(units.iter().map(|u| &u.name))),
            Arc::new(StringArray::from(units.iter().map(|u| u.parent.as_deref()).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(units.iter().map(|u| u.level.as_str()))),
            Arc::new(UInt32Array::from_iter_values((0..units.len()).map(|i| registry.depth_of(i)))),
        ],
    )
}

pub fn scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("unit_name", DataType::Utf8, false),
        Field::new("depth", DataType::UInt32, false),
        Field::new("period_kind", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("period_start", timestamp_type(), false),
        Field::new("is_current", DataType::Boolean, false),
        Field::new("criterion", DataType::Utf8, false),
        Field::new("max_points", DataType::Float64, false),
        Field::new("numerator", DataType::Int64, false),
        Field::new("denominator", DataType::Int64, false),
        Field::new("ratio", DataType::Float64, true),
        Field::new("points", DataType::Float64, false),
    ]))
}

fn scores_batch(registry: &Registry, board: &Scoreboard) -> RecordBatch {
    let rows = &board.scores;
    let unit = |i: usize| &registry.units()[rows[i].unit];
    let n = rows.len();
    batch(
        scores_schema(),
        vec![
            Arc::new(StringArray::from_iter_values((0..n).map(|i| &unit(i).code))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| &unit(i).name))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|s| registry.depth_of(s.unit)))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|s| s.period.kind.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|s| s.period.to_string()))),
            timestamps(rows.iter().map(|s| Some(s.period.start())).collect()),
            Arc::new(BooleanArray::from(rows.iter().map(|s| s.current).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| ON_TIME.id))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|_| ON_TIME.max_points))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|s| s.numerator))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|s| s.denominator))),
            Arc::new(Float64Array::from(rows.iter().map(|s| s.ratio()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|s| s.points()))),
        ],
    )
}

pub fn dossiers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("dossier_id", DataType::Utf8, false),
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("procedure_code", DataType::Utf8, false),
        Field::new("channel", DataType::UInt8, false),
        Field::new("status", DataType::UInt8, false),
        Field::new("received_at", timestamp_type(), true),
        Field::new("due_at", timestamp_type(), true),
        Field::new("ended_at", timestamp_type(), true),
        Field::new("supplement_requests", DataType::UInt32, false),
        Field::new("timeliness", DataType::Utf8, false),
        Field::new("synced_to_portal", DataType::Boolean, false),
        Field::new("paid_online", DataType::Boolean, false),
        Field::new("electronic_result", DataType::Boolean, false),
        Field::new("digitised", DataType::Boolean, false),
    ]))
}

/// How 2.1 sees a dossier right now, in words an analyst can filter on.
fn timeliness(verdict: Verdict, now: Instant) -> &'static str {
    match verdict {
        Verdict::NotReceived => "not_received",
        Verdict::Decided(true) => "on_time",
        Verdict::Decided(false) => "late",
        Verdict::OpenUntil(Some(due)) if now > due => "open_overdue",
        Verdict::OpenUntil(_) => "open_in_time",
    }
}

fn dossiers_batch(state: &State) -> RecordBatch {
    let ds = state.dossiers();
    let now = state.now();
    let has =
        |bit: u16| Arc::new(BooleanArray::from(ds.iter().map(|d| d.flags & bit != 0).collect::<Vec<_>>())) as ArrayRef;
    batch(
        dossiers_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| &*d.id))),
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| state.units.name(d.unit)))),
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| state.procedures.name(d.procedure)))),
            Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.channel as u8))),
            Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.last_status))),
            timestamps(ds.iter().map(|d| d.received_at).collect()),
            timestamps(ds.iter().map(|d| d.due_at).collect()),
            timestamps(ds.iter().map(|d| d.end()).collect()),
            Arc::new(UInt32Array::from_iter_values(ds.iter().map(|d| d.supplement_requests.len() as u32))),
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| timeliness(d.verdict(), now)))),
            has(flag::SYNCED_TO_PORTAL),
            has(flag::PAID_ONLINE),
            has(flag::ELECTRONIC_RESULT),
            has(flag::DIGITISED),
        ],
    )
}
