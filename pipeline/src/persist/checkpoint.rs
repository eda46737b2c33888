//! The state as Arrow tables and back: what a snapshot stores so that a restart resumes exactly.
//! Only what events made is stored (dossiers, petitions, the event ids seen); the tallies are
//! derived from the dossiers when the state is restored, so they cannot disagree with them.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, Int64Builder, ListArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt16Array, UInt64Array, UInt64Builder, UInt8Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use index766_core::catalog::Catalog;
use index766_core::dossier::{Dossier, DossiersCopy, Supplements, When};
use index766_core::event::Channel;
use index766_core::petition::{Petition, Petitions};
use index766_core::state::State;
use index766_core::time::Instant;

use crate::persist::snapshot::{Checkpoint, Unrestorable};

pub(crate) const DOSSIERS: &str = "dossiers";

/// What the engine hands to the snapshot writer: the dossiers shared with the state, not yet
/// encoded, so that ingest waits only for the copy, not for building the table.
#[derive(Debug)]
pub struct StateCopy {
    pub dossiers: DossiersCopy,
    /// Every table but the dossiers.
    pub rest: Checkpoint,
}

impl StateCopy {
    /// The checkpoint with its dossiers table (CPU-heavy at scale: run it off the engine).
    pub(crate) fn into_checkpoint(self) -> Checkpoint {
        let mut checkpoint = self.rest;
        checkpoint.tables.insert(0, (DOSSIERS, vec![dossiers_table(&self.dossiers)]));
        checkpoint
    }
}
pub const PETITIONS: &str = "petitions";

fn times_field(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))), false)
}

/// One list of instants per row.
fn times<'a>(rows: impl Iterator<Item = &'a [Instant]>) -> ArrayRef {
    let mut builder = ListBuilder::new(Int64Builder::new());
    for row in rows {
        builder.values().append_slice(row);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match their schema")
}

/// Every dossier, with the ids of the events applied to it.
pub(crate) fn dossiers_table(copy: &DossiersCopy) -> RecordBatch {
    let ds = &copy.dossiers;
    let time = |name: &str| Field::new(name, DataType::Int64, true);
    let instants =
        |f: fn(&Dossier) -> Option<Instant>| -> ArrayRef { Arc::new(Int64Array::from_iter(ds.iter().map(f))) };
    let mut seen = ListBuilder::new(UInt64Builder::new());
    for d in ds.iter() {
        seen.values().append_slice(d.seen_events());
        seen.append(true);
    }
    batch(
        vec![
            Field::new("dossier_id", DataType::Utf8, false),
            Field::new("unit_code", DataType::Utf8, false),
            Field::new("procedure_code", DataType::Utf8, false),
            Field::new("channel", DataType::UInt8, false),
            Field::new("last_status", DataType::UInt8, false),
            Field::new("last_status_time", DataType::Int64, false),
            time("received_at"),
            time("due_at"),
            time("completed_at"),
            time("returned_at"),
            time("abandoned_at"),
            times_field("supplement_requests"),
            times_field("supplement_arrivals"),
            Field::new("flags", DataType::UInt16, false),
            Field::new("seen_events", DataType::List(Arc::new(Field::new_list_field(DataType::UInt64, true))), false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| &*d.id))),
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| &*copy.units[d.unit as usize]))),
            Arc::new(StringArray::from_iter_values(ds.iter().map(|d| &*copy.procedures[d.procedure as usize]))),
            Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.channel as u8))),
            Arc::new(UInt8Array::from_iter_values(ds.iter().map(|d| d.last_status))),
            Arc::new(Int64Array::from_iter_values(ds.iter().map(|d| d.last_status_time))),
            instants(|d| d.received_at()),
            instants(|d| d.due_at()),
            instants(|d| d.completed_at()),
            instants(|d| d.returned_at()),
            instants(|d| d.abandoned_at()),
            times(ds.iter().map(Dossier::supplement_requests)),
            times(ds.iter().map(Dossier::supplement_arrivals)),
            Arc::new(UInt16Array::from_iter_values(ds.iter().map(|d| d.flags))),
            Arc::new(seen.finish()),
        ],
    )
}

/// Every petition, with the ids of the events applied to it.
pub(crate) fn petitions_table(petitions: &Petitions) -> RecordBatch {
    let mut ps: Vec<(&String, &Petition)> = petitions.by_id.iter().collect();
    ps.sort_by(|a, b| a.0.cmp(b.0));
    let time = |f: fn(&Petition) -> Option<Instant>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(ps.iter().map(|(_, p)| f(p))))
    };
    let steps = |f: fn(&Petition) -> &[Instant]| times(ps.iter().map(|(_, p)| f(p)));
    let flag = |f: fn(&Petition) -> bool| -> ArrayRef {
        Arc::new(BooleanArray::from_iter(ps.iter().map(|(_, p)| Some(f(p)))))
    };
    let mut seen = ListBuilder::new(StringBuilder::new());
    for (_, p) in &ps {
        for id in &p.seen {
            seen.values().append_value(id);
        }
        seen.append(true);
    }
    batch(
        vec![
            Field::new("petition_id", DataType::Utf8, false),
            Field::new("unit_code", DataType::Utf8, false),
            Field::new("submitted_at", DataType::Int64, true),
            Field::new("transferred_at", DataType::Int64, true),
            times_field("rejected"),
            times_field("info_requested"),
            times_field("answered"),
            times_field("published"),
            Field::new("classified", DataType::Boolean, false),
            Field::new("unsatisfied", DataType::Boolean, false),
            Field::new("repeated", DataType::Boolean, false),
            Field::new("seen_events", DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))), false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(ps.iter().map(|(id, _)| id.as_str()))),
            Arc::new(StringArray::from_iter_values(ps.iter().map(|(_, p)| p.unit.as_str()))),
            time(|p| p.submitted_at),
            time(|p| p.transferred_at),
            steps(|p| &p.rejected),
            steps(|p| &p.info_requested),
            steps(|p| &p.answered),
            steps(|p| &p.published),
            flag(|p| p.classified),
            flag(|p| p.unsatisfied),
            flag(|p| p.repeated),
            Arc::new(seen.finish()),
        ],
    )
}

/// Reads typed columns of a snapshot table, naming what is wrong when the file does not match.
struct Columns<'a> {
    table: &'a str,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn get<A: Array + 'static>(&self, name: &str) -> Result<&'a A, Unrestorable> {
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<A>())
            .ok_or_else(|| Unrestorable(format!("{} table: column {name} is missing or of another type", self.table)))
    }

    /// A list column, read in place: no array per row.
    fn list<A: Array + 'static>(&self, name: &str) -> Result<Lists<'a, A>, Unrestorable> {
        let lists: &ListArray = self.get(name)?;
        if lists.null_count() > 0 {
            return Err(Unrestorable(format!("{} table: {name} has a null list", self.table)));
        }
        let values = lists
            .values()
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| Unrestorable(format!("{} table: {name} holds values of another type", self.table)))?;
        Ok(Lists { offsets: lists.value_offsets(), values })
    }
}

/// The lists of a column: row `i` is `values[offsets[i]..offsets[i + 1]]`.
struct Lists<'a, A> {
    offsets: &'a [i32],
    values: &'a A,
}

impl<A> Lists<'_, A> {
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i] as usize..self.offsets[i + 1] as usize
    }
}

impl<T: datafusion::arrow::datatypes::ArrowPrimitiveType> Lists<'_, datafusion::arrow::array::PrimitiveArray<T>> {
    fn row(&self, i: usize) -> Vec<T::Native> {
        self.values.values()[self.range(i)].to_vec()
    }
}

fn opt(a: &Int64Array, i: usize) -> Option<Instant> {
    a.is_valid(i).then(|| a.value(i))
}

/// Adds a batch of a snapshot's dossiers to `state`.
fn read_dossiers(batch: &RecordBatch, state: &mut State) -> Result<(), Unrestorable> {
    let c = Columns { table: DOSSIERS, batch };
    let id: &StringArray = c.get("dossier_id")?;
    let unit: &StringArray = c.get("unit_code")?;
    let procedure: &StringArray = c.get("procedure_code")?;
    let channel: &UInt8Array = c.get("channel")?;
    let last_status: &UInt8Array = c.get("last_status")?;
    let last_status_time: &Int64Array = c.get("last_status_time")?;
    let [received, due, completed, returned, abandoned] =
        ["received_at", "due_at", "completed_at", "returned_at", "abandoned_at"].map(|n| c.get::<Int64Array>(n));
    let (received, due, completed, returned, abandoned) = (received?, due?, completed?, returned?, abandoned?);
    let requests = c.list::<Int64Array>("supplement_requests")?;
    let arrivals = c.list::<Int64Array>("supplement_arrivals")?;
    let flags: &UInt16Array = c.get("flags")?;
    let seen = c.list::<UInt64Array>("seen_events")?;
    for i in 0..batch.num_rows() {
        let dossier = Dossier {
            id: id.value(i).into(),
            unit: 0,
            procedure: 0,
            channel: Channel::try_from(channel.value(i)).map_err(Unrestorable)?,
            last_status: last_status.value(i),
            last_status_time: last_status_time.value(i),
            received_at: When::from(opt(received, i)),
            due_at: When::from(opt(due, i)),
            completed_at: When::from(opt(completed, i)),
            returned_at: When::from(opt(returned, i)),
            abandoned_at: When::from(opt(abandoned, i)),
            supplements: Supplements::boxed(requests.row(i), arrivals.row(i)),
            flags: flags.value(i),
            seen_events: seen.row(i).into_boxed_slice(),
        };
        state.restore_dossier(dossier, unit.value(i), procedure.value(i));
    }
    Ok(())
}

/// The petitions of a snapshot.
pub(crate) fn read_petitions(batches: &[RecordBatch]) -> Result<Petitions, Unrestorable> {
    let mut petitions = Petitions::default();
    for batch in batches {
        let c = Columns { table: PETITIONS, batch };
        let id: &StringArray = c.get("petition_id")?;
        let unit: &StringArray = c.get("unit_code")?;
        let submitted: &Int64Array = c.get("submitted_at")?;
        let transferred: &Int64Array = c.get("transferred_at")?;
        let [rejected, info, answered, published] =
            ["rejected", "info_requested", "answered", "published"].map(|n| c.list::<Int64Array>(n));
        let (rejected, info, answered, published) = (rejected?, info?, answered?, published?);
        let [classified, unsatisfied, repeated] =
            ["classified", "unsatisfied", "repeated"].map(|n| c.get::<BooleanArray>(n));
        let (classified, unsatisfied, repeated) = (classified?, unsatisfied?, repeated?);
        let seen = c.list::<StringArray>("seen_events")?;
        for i in 0..batch.num_rows() {
            let petition = Petition {
                unit: unit.value(i).to_owned(),
                submitted_at: opt(submitted, i),
                transferred_at: opt(transferred, i),
                rejected: rejected.row(i),
                info_requested: info.row(i),
                answered: answered.row(i),
                published: published.row(i),
                classified: classified.value(i),
                unsatisfied: unsatisfied.value(i),
                repeated: repeated.value(i),
                seen: seen.range(i).map(|j| seen.values.value(j).to_owned()).collect(),
            };
            petitions.by_id.insert(id.value(i).to_owned(), petition);
        }
    }
    Ok(petitions)
}

/// The state a snapshot holds, judged at `now` against `catalog`: its `rows` dossiers, batch by batch.
pub fn restore_state(
    now: Instant,
    catalog: Arc<Catalog>,
    rows: u64,
    dossiers: impl IntoIterator<Item = Result<RecordBatch, Unrestorable>>,
) -> Result<State, Unrestorable> {
    let mut state = State::new(now, catalog);
    state.reserve(rows as usize);
    for batch in dossiers {
        read_dossiers(&batch?, &mut state)?;
    }
    state.rejudge_all();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use index766_core::event::status;
    use index766_core::fixtures::{event, reception, state_at};

    #[test]
    fn state_and_petitions_survive_the_round_trip() {
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        state.apply(&reception("a", "D1", "2026-11-02T08:00:00+07:00", "2026-11-03T08:00:00+07:00"));
        state.apply(&event("b", "D1", status::SUPPLEMENT_REQUESTED, "2026-11-02T09:00:00+07:00"));
        state.apply(&event("c", "D2", status::COMPLETED, "2026-11-05T09:00:00+07:00"));
        let table = dossiers_table(&state.copy_dossiers());
        let rows = table.num_rows() as u64;
        let restored = restore_state(state.now(), Arc::default(), rows, [Ok(table.clone())]).unwrap();
        assert_eq!(dossiers_table(&restored.copy_dossiers()), table);
        assert_eq!(restored.tallies(), state.tallies());
        // The event ids seen survive: a repeat after the restart is still a duplicate.
        let mut restored = restored;
        assert_eq!(
            restored.apply(&event("b", "D1", status::SUPPLEMENT_REQUESTED, "2026-11-02T09:00:00+07:00")),
            index766_core::state::Applied::Duplicate
        );

        let mut petitions = Petitions::default();
        let json = r#"{"schema_version":1,"event_id":"p1","event_time":"2026-11-02T09:00:00+07:00","petition_id":"P1","unit_code":"U1","step":"submitted","classification":"rules"}"#;
        let (e, t) = index766_core::petition::decode(json.as_bytes(), None).unwrap();
        petitions.apply(&e, t);
        let table = petitions_table(&petitions);
        let mut again = read_petitions(std::slice::from_ref(&table)).unwrap();
        assert_eq!(petitions_table(&again), table);
        assert!(!again.apply(&e, t), "a petition event seen before the snapshot is a duplicate after it");
    }

    #[test]
    fn a_table_of_another_shape_is_named() {
        let wrong =
            batch(vec![Field::new("dossier_id", DataType::Int64, false)], vec![Arc::new(Int64Array::from(vec![1]))]);
        let err = restore_state(0, Arc::default(), 1, [Ok(wrong)]).unwrap_err();
        assert!(err.to_string().contains("dossier_id"), "{err}");
    }
}
