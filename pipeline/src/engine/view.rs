//! The immutable view that readers (SQL, metrics, snapshots) see: Arrow tables built from the
//! last applied state. Readers never touch the mutating state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampSecondArray, UInt32Array, UInt8Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use tokio::sync::{mpsc, oneshot};

use index766_core::criteria::{Judged, CRITERIA};
use index766_core::dossier::{DossiersCopy, Verdict};
use index766_core::event::flag;
use index766_core::judge;
use index766_core::scoring::{PeriodScores, Scoreboard, Scorer};
use index766_core::spec::{CriterionSpec, Spec};
use index766_core::state::State;
use index766_core::time::{Instant, Period};
use index766_core::units::Registry;

/// Timestamps are shown in Vietnam time.
const TZ: &str = "+07:00";

#[derive(Debug, Clone)]
pub struct View {
    /// The instant the scores were judged at.
    pub as_of: Instant,
    pub registry: Arc<Registry>,
    pub scoreboard: Arc<Scoreboard>,
    /// Each table as batches: the score tables have one per period.
    pub tables: Vec<(&'static str, Vec<RecordBatch>)>,
    /// The `dossiers` table: one row per dossier, so too large to build at every publish.
    pub dossiers: DossierRows,
    /// Late events applied since the start, by (unit code, closed month): see `State::late_events`.
    pub late_events: Vec<(String, Period, u64)>,
    /// The newest event time applied: see `State::newest_event`.
    pub newest_event: Instant,
}

/// Asks the engine for a copy of its dossiers, from which the reader builds the `dossiers` table.
pub(crate) type DossierRequests = mpsc::Sender<oneshot::Sender<DossiersCopy>>;

#[derive(Debug, Clone)]
pub enum DossierRows {
    /// Built with the view (a fixed view: tests, golden files).
    Built(RecordBatch),
    /// Built when a query reads it, by the query, from a copy of the dossiers the engine hands
    /// over as they are then (the engine, once stopped, answers no more).
    OnRequest(DossierRequests),
}

/// The score tables, one batch per period.
const PERIOD_TABLES: [&str; 4] = ["scores", "group_scores", "totals", "gaps"];

/// Builds the views of successive states, reusing the scores and the Arrow batches of every
/// period whose figures did not change.
#[derive(Debug, Default)]
pub struct ViewBuilder {
    scorer: Scorer,
    units: Option<(Arc<Registry>, RecordBatch)>,
    /// The batches of each period, with the scores they were built from.
    periods: HashMap<Period, (Arc<PeriodScores>, [RecordBatch; 4])>,
}

impl ViewBuilder {
    /// `touched`: the months whose tallies changed since the last build (`State::take_touched`).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &mut self,
        registry: Arc<Registry>,
        spec: &Spec,
        target_total: f64,
        state: &State,
        touched: &BTreeSet<Period>,
        petitions: &index766_core::scoring::PetitionTallies,
        dossiers: DossierRows,
    ) -> View {
        let board = self.scorer.score(&registry, state, touched, petitions, spec, target_total);
        if !self.units.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, &registry)) {
            self.units = Some((registry.clone(), units_batch(&registry)));
        }
        let units_table = self.units.as_ref().map(|(_, batch)| batch.clone()).expect("built above");
        let units = Units { registry: &registry, batch: &units_table };
        let mut tables: Vec<(&'static str, Vec<RecordBatch>)> =
            PERIOD_TABLES.iter().map(|&name| (name, Vec::with_capacity(board.periods.len()))).collect();
        let mut periods = HashMap::with_capacity(board.periods.len());
        for scores in &board.periods {
            let batches = match self.periods.remove(&scores.period) {
                Some((built_from, batches)) if Arc::ptr_eq(&built_from, scores) => batches,
                _ => [
                    scores_batch(&units, spec, &board, scores),
                    groups_batch(&units, spec, &board, scores),
                    totals_batch(&units, &board, scores),
                    gaps_batch(&units, spec, &board, scores),
                ],
            };
            for ((_, table), batch) in tables.iter_mut().zip(&batches) {
                table.push(batch.clone());
            }
            periods.insert(scores.period, (scores.clone(), batches));
        }
        self.periods = periods;
        tables.insert(0, ("units", vec![units_table]));
        let late_events = state.late_events().map(|(unit, month, n)| (unit.to_owned(), month, n)).collect();
        let newest_event = state.newest_event();
        View { as_of: state.now(), registry, scoreboard: Arc::new(board), tables, dossiers, late_events, newest_event }
    }
}

impl View {
    /// A view built from scratch, with its `dossiers` table built now.
    pub fn build(
        registry: Arc<Registry>,
        spec: &Spec,
        target_total: f64,
        state: &State,
        petitions: &index766_core::scoring::PetitionTallies,
    ) -> View {
        let rows = DossierRows::Built(dossiers_batch(&state.copy_dossiers()));
        ViewBuilder::default().build(registry, spec, target_total, state, &BTreeSet::new(), petitions, rows)
    }

    /// The `dossiers` table, built on the caller's thread; None once the engine has stopped.
    pub async fn dossiers(&self) -> Option<RecordBatch> {
        match &self.dossiers {
            DossierRows::Built(batch) => Some(batch.clone()),
            DossierRows::OnRequest(requests) => {
                let (reply, answer) = oneshot::channel();
                requests.send(reply).await.ok()?;
                Some(dossiers_batch(&answer.await.ok()?))
            }
        }
    }

    /// A table's batches (never none: the score tables always have the current periods).
    pub fn table(&self, name: &str) -> &[RecordBatch] {
        &self.tables.iter().find(|(n, _)| *n == name).expect("a table of the view").1
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Second, Some(TZ.into()))
}

fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampSecondArray::from(values.collect::<Vec<_>>()).with_timezone(TZ))
}

fn strings<S: AsRef<str>>(values: impl Iterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The type of `repeated` text columns.
fn repeated_text() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A text column whose rows repeat a few values (units, criteria, the period): each row holds
/// the position of its value in `values`, stored once. SQL reads it as text. At national scale
/// the score tables have millions of rows, and unit names would otherwise be copied into each.
fn repeated(values: &ArrayRef, positions: impl Iterator<Item = Option<usize>>) -> ArrayRef {
    let keys: Int32Array = positions.map(|p| p.map(|p| p as i32)).collect();
    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values.clone()).expect("positions within the values"))
}

/// A text column of one value in every row.
fn same_text(value: &str, rows: usize) -> ArrayRef {
    repeated(&strings(std::iter::once(value)), std::iter::repeat_n(Some(0), rows))
}

fn floats(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}

fn optional_floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(values.collect::<Vec<_>>()))
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

fn u32s(values: impl Iterator<Item = u32>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(values))
}

fn bools(values: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(values.collect::<Vec<_>>()))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match their schema")
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

/// The registry, with its `units` table: the unit codes and names the score tables point into.
struct Units<'a> {
    registry: &'a Registry,
    batch: &'a RecordBatch,
}

/// The columns every score table starts with: which unit, which period.
fn unit_period_fields() -> Vec<Field> {
    vec![
        field("unit_code", repeated_text(), false),
        field("unit_name", repeated_text(), false),
        field("parent_code", repeated_text(), true),
        field("depth", DataType::UInt32, false),
        field("period_kind", repeated_text(), false),
        field("period", repeated_text(), false),
        field("period_start", timestamp_type(), false),
        field("is_current", DataType::Boolean, false),
    ]
}

fn unit_period_columns(units: &Units, scores: &PeriodScores, rows: &[usize]) -> Vec<ArrayRef> {
    let (codes, names) = (units.batch.column(0), units.batch.column(1));
    let period = scores.period;
    vec![
        repeated(codes, rows.iter().map(|&u| Some(u))),
        repeated(names, rows.iter().map(|&u| Some(u))),
        repeated(codes, rows.iter().map(|&u| units.registry.parent_of(u))),
        u32s(rows.iter().map(|&u| units.registry.depth_of(u))),
        same_text(period.kind.as_str(), rows.len()),
        same_text(&period.to_string(), rows.len()),
        timestamps(rows.iter().map(|_| Some(period.start()))),
        bools(rows.iter().map(|_| scores.current)),
    ]
}

/// A batch of one period's rows, `rows` giving each row's unit.
fn with_unit_period(
    units: &Units,
    scores: &PeriodScores,
    rows: &[usize],
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> RecordBatch {
    let mut all_fields = unit_period_fields();
    all_fields.extend(fields);
    let mut all_columns = unit_period_columns(units, scores, rows);
    all_columns.extend(columns);
    batch(all_fields, all_columns)
}

fn units_batch(registry: &Registry) -> RecordBatch {
    let units = registry.units();
    batch(
        vec![
            field("unit_code", DataType::Utf8, false),
            field("unit_name", DataType::Utf8, false),
            field("parent_code", DataType::Utf8, true),
            field("level", DataType::Utf8, false),
            field("depth", DataType::UInt32, false),
        ],
        vec![
            strings(units.iter().map(|u| &u.code)),
            strings(units.iter().map(|u| &u.name)),
            Arc::new(StringArray::from(units.iter().map(|u| u.parent.as_deref()).collect::<Vec<_>>())),
            strings(units.iter().map(|u| u.level.as_str())),
            u32s((0..units.len()).map(|i| registry.depth_of(i))),
        ],
    )
}

/// The criteria's codes and names in force (`spec.for_period`), for `repeated` columns.
fn criterion_texts(in_force: &[&CriterionSpec]) -> [ArrayRef; 3] {
    [
        strings(CRITERIA.iter().map(|c| c.id)),
        strings(in_force.iter().map(|e| &e.name_vi)),
        strings(in_force.iter().map(|e| &e.name_en)),
    ]
}

fn scores_batch(units: &Units, spec: &Spec, board: &Scoreboard, scores: &PeriodScores) -> RecordBatch {
    let rows = &scores.criteria;
    let keys: Vec<usize> = rows.iter().map(|s| s.unit).collect();
    let in_force = spec.for_period(scores.period);
    let entry = |i: usize| in_force[rows[i].criterion];
    let n = rows.len();
    let [codes, names_vi, names_en] = criterion_texts(&in_force);
    let criterion = |values: &ArrayRef| repeated(values, rows.iter().map(|s| Some(s.criterion)));
    with_unit_period(
        units,
        scores,
        &keys,
        vec![
            field("criterion", repeated_text(), false),
            field("group_id", DataType::UInt8, false),
            field("criterion_name_vi", repeated_text(), false),
            field("criterion_name_en", repeated_text(), false),
            field("max_points", DataType::Float64, false),
            field("numerator", DataType::Int64, false),
            field("denominator", DataType::Int64, false),
            field("ratio", DataType::Float64, true),
            field("points", DataType::Float64, false),
            field("points_lost", DataType::Float64, false),
            field("spec_version", repeated_text(), false),
        ],
        vec![
            criterion(&codes),
            Arc::new(UInt8Array::from_iter_values((0..n).map(|i| entry(i).group()))),
            criterion(&names_vi),
            criterion(&names_en),
            floats(rows.iter().map(|s| s.max_points)),
            ints(rows.iter().map(|s| s.numerator)),
            ints(rows.iter().map(|s| s.denominator)),
            optional_floats(rows.iter().map(|s| s.ratio)),
            floats(rows.iter().map(|s| s.points)),
            floats(rows.iter().map(|s| s.points_lost())),
            same_text(&board.spec_version, n),
        ],
    )
}

fn groups_batch(units: &Units, spec: &Spec, board: &Scoreboard, scores: &PeriodScores) -> RecordBatch {
    let rows = &scores.groups;
    let keys: Vec<usize> = rows.iter().map(|g| g.unit).collect();
    let group =
        |values: &ArrayRef| repeated(values, rows.iter().map(|g| spec.groups.iter().position(|s| s.id == g.group)));
    with_unit_period(
        units,
        scores,
        &keys,
        vec![
            field("group_id", DataType::UInt8, false),
            field("group_name_vi", repeated_text(), false),
            field("group_name_en", repeated_text(), false),
            field("max_points", DataType::Float64, false),
            field("points", DataType::Float64, false),
            field("points_lost", DataType::Float64, false),
            field("spec_version", repeated_text(), false),
        ],
        vec![
            Arc::new(UInt8Array::from_iter_values(rows.iter().map(|g| g.group))),
            group(&strings(spec.groups.iter().map(|g| &g.name_vi))),
            group(&strings(spec.groups.iter().map(|g| &g.name_en))),
            floats(rows.iter().map(|g| g.max_points)),
            floats(rows.iter().map(|g| g.points)),
            floats(rows.iter().map(|g| (g.max_points - g.points).max(0.0))),
            same_text(&board.spec_version, rows.len()),
        ],
    )
}

fn totals_batch(units: &Units, board: &Scoreboard, scores: &PeriodScores) -> RecordBatch {
    let rows = &scores.totals;
    let keys: Vec<usize> = rows.iter().map(|t| t.unit).collect();
    with_unit_period(
        units,
        scores,
        &keys,
        vec![
            field("total", DataType::Float64, false),
            field("band", DataType::Utf8, false),
            field("previous_total", DataType::Float64, true),
            field("delta", DataType::Float64, true),
            field("rank", DataType::UInt32, false),
            field("siblings", DataType::UInt32, false),
            field("target_total", DataType::Float64, false),
            field("spec_version", repeated_text(), false),
        ],
        vec![
            floats(rows.iter().map(|t| t.total)),
            strings(rows.iter().map(|t| &t.band)),
            optional_floats(rows.iter().map(|t| t.previous_total)),
            optional_floats(rows.iter().map(|t| t.previous_total.map(|p| t.total - p))),
            u32s(rows.iter().map(|t| t.rank)),
            u32s(rows.iter().map(|t| t.siblings)),
            floats(rows.iter().map(|_| board.target_total)),
            same_text(&board.spec_version, rows.len()),
        ],
    )
}

fn gaps_batch(units: &Units, spec: &Spec, board: &Scoreboard, scores: &PeriodScores) -> RecordBatch {
    let rows = &scores.gaps;
    let keys: Vec<usize> = rows.iter().map(|g| g.unit).collect();
    let [codes, _, names_en] = criterion_texts(&spec.for_period(scores.period));
    let criterion = |values: &ArrayRef| repeated(values, rows.iter().map(|g| Some(g.criterion)));
    with_unit_period(
        units,
        scores,
        &keys,
        vec![
            field("criterion", repeated_text(), false),
            field("criterion_name_en", repeated_text(), false),
            field("points_lost", DataType::Float64, false),
            field("loss_rank", DataType::UInt32, false),
            field("total", DataType::Float64, false),
            field("target_total", DataType::Float64, false),
            field("good_needed_for_target", DataType::Int64, true),
        ],
        vec![
            criterion(&codes),
            criterion(&names_en),
            floats(rows.iter().map(|g| g.points_lost)),
            u32s(rows.iter().map(|g| g.loss_rank)),
            floats(rows.iter().map(|g| scores.totals[g.unit].total)),
            floats(rows.iter().map(|_| board.target_total)),
            Arc::new(Int64Array::from(rows.iter().map(|g| g.good_needed).collect::<Vec<_>>())),
        ],
    )
}

/// How 2.1 sees a dossier right now, in words an analyst can filter on.
fn timeliness(verdict: Verdict, now: Instant) -> &'static str {
    match verdict {
        Verdict::NotReceived => "not_received",
        Verdict::Decided(true) => "on_time",
        Verdict::Decided(false) => "late",
        Verdict::OpenUntil(_) if verdict.on_time_at(now) => "open_in_time",
        Verdict::OpenUntil(_) => "open_overdue",
    }
}

/// Column name of a dossier criterion's mark: `c2_1` for 2.1.
pub(crate) fn mark_column(id: &str) -> String {
    format!("c{}", id.replace('.', "_"))
}

/// The columns of the `dossiers` table.
pub(crate) fn dossiers_schema() -> SchemaRef {
    let mut fields = vec![
        field("dossier_id", DataType::Utf8, false),
        field("unit_code", DataType::Utf8, false),
        field("procedure_code", DataType::Utf8, false),
        field("channel", DataType::UInt8, false),
        field("status", DataType::UInt8, false),
        field("received_at", timestamp_type(), true),
        field("due_at", timestamp_type(), true),
        field("ended_at", timestamp_type(), true),
        field("supplement_requests", DataType::UInt32, false),
        field("timeliness", DataType::Utf8, false),
        field("processing_days", DataType::Float64, true),
        field("synced_to_portal", DataType::Boolean, false),
        field("paid_online", DataType::Boolean, false),
        field("electronic_result", DataType::Boolean, false),
        field("digitised", DataType::Boolean, false),
        field("disliked_or_complained", DataType::Boolean, false),
    ];
    for (id, _) in judge::marked() {
        fields.push(field(&mark_column(id), DataType::Boolean, true));
    }
    Arc::new(Schema::new(fields))
}

/// One row per dossier, judged at the copy's instant.
pub fn dossiers_batch(copy: &DossiersCopy) -> RecordBatch {
    let ds = &copy.dossiers;
    let now = copy.now;
    let verdicts: Vec<Verdict> = ds.iter().map(|d| d.verdict(copy.procedure_of(d))).collect();
    let judged: Vec<Judged> = ds
        .iter()
        .zip(&verdicts)
        .map(|(d, v)| Judged { dossier: d, on_time: v.on_time_at(now), procedure: copy.procedure_of(d) })
        .collect();
    let has = |bit: u16| bools(ds.iter().map(move |d| d.flags & bit != 0));
    let mut columns = vec![
        strings(ds.iter().map(|d| &*d.id)),
        strings(ds.iter().map(|d| &*copy.units[d.unit as usize])),
        strings(ds.iter().map(|d| &*copy.procedures[d.procedure as usize])),
        Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.channel as u8))) as ArrayRef,
        Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.last_status))),
        timestamps(ds.iter().map(|d| d.received_at())),
        timestamps(ds.iter().map(|d| d.due_at())),
        timestamps(ds.iter().map(|d| d.end())),
        u32s(ds.iter().map(|d| d.supplement_requests().len() as u32)),
        strings(verdicts.iter().map(|&v| timeliness(v, now))),
        optional_floats(
            ds.iter().map(|d| d.received_at().zip(d.completed_at()).map(|(r, c)| (c - r) as f64 / 86_400.0)),
        ),
        has(flag::SYNCED_TO_PORTAL),
        has(flag::PAID_ONLINE),
        has(flag::ELECTRONIC_RESULT),
        has(flag::DIGITISED),
        bools(ds.iter().map(|d| d.flags & (flag::DISLIKED | flag::COMPLAINED) != 0)),
    ];
    // Marks judged now: true good, false lost, null not counted.
    for (_, judge) in judge::marked() {
        columns.push(Arc::new(BooleanArray::from(
            judged.iter().map(|j| j.dossier.received_at().and(judge(j).map(|num| num > 0))).collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(dossiers_schema(), columns).expect("columns match their schema")
}
