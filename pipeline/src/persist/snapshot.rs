//! Snapshots that are the state: each generation is a folder `snapshot-<id>` of Parquet tables
//! (dossiers, petitions, scores) and a `manifest.json` written last, naming every file with its
//! size and SHA-256, the next offset of every partition, the counters, and the versions it was
//! written under. A generation counts only once its manifest is durable and its checksums verify;
//! the newest such generation is where a restart resumes, the one before it the fallback.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use index766_core::time::Instant;

use crate::persist::store::Store;
use crate::position::{Ledger, Offsets};

/// The layout of a generation; a manifest of another format is not read.
pub(crate) const FORMAT: u32 = 1;
const PREFIX: &str = "snapshot-";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {store}: {source} (check [snapshot] dir, or url and options, and their permissions)")]
    Io { store: String, source: std::io::Error },
    #[error(
        "no snapshot in {store} verifies ({why}); the pipeline does not start from nothing over damaged \
         snapshots: restore them from a backup, or move them away to start afresh from the topics"
    )]
    NoneVerifies { store: String, why: String },
    #[error("encoding snapshot table {table}: {source}")]
    Encode { table: String, source: datafusion::parquet::errors::ParquetError },
}

impl SnapshotError {
    /// Names the store an I/O error happened in.
    pub fn io(store: &Store) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
        |source| SnapshotError::Io { store: store.describe(), source }
    }
}

/// What the engine hands to the writer: a copy of the state, taken between two batches.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub tables: Vec<(&'static str, Vec<RecordBatch>)>,
    pub offsets: Offsets,
    pub ledger: Ledger,
    pub judged_at: Instant,
    pub spec_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetEntry {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: u64,
    pub written_at: String,
    pub event_schema_version: u32,
    pub spec_version: String,
    /// The judging instant of the state when it was copied.
    pub judged_at: Instant,
    pub files: Vec<FileEntry>,
    pub offsets: Vec<OffsetEntry>,
    pub ledger: Ledger,
}

impl Manifest {
    pub fn offsets(&self) -> Offsets {
        self.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.next_offset)).collect()
    }
}

/// A snapshot table that does not hold what this build writes, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unrestorable(pub String);

/// Why a generation is not used.
enum Unreadable {
    /// No manifest: the write never finished.
    Incomplete,
    Damaged(String),
}

/// A verified generation, read back: its files as stored, decoded when asked for.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    files: BTreeMap<String, Bytes>,
}

/// Rows per batch when a table is read back (a few megabytes of dossiers).
const RESTORE_BATCH_ROWS: usize = 65_536;

impl Restored {
    /// A table whole (empty when the generation has none of that name).
    pub fn table(&self, name: &str) -> Result<Vec<RecordBatch>, Unrestorable> {
        self.batches(name).collect()
    }

    /// A table's rows, decoded batch by batch on a thread of its own while the caller takes them:
    /// the table is never whole in memory, and decoding overlaps with what the caller does.
    pub fn batches(&self, name: &str) -> impl Iterator<Item = Result<RecordBatch, Unrestorable>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        if let Some(bytes) = self.files.get(name).cloned() {
            std::thread::spawn(move || {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .and_then(|b| b.with_batch_size(RESTORE_BATCH_ROWS).build())
                    .map_err(|e| Unrestorable(e.to_string()));
                let batches: Box<dyn Iterator<Item = Result<RecordBatch, Unrestorable>>> = match reader {
                    Ok(reader) => Box::new(reader.map(|batch| batch.map_err(|e| Unrestorable(e.to_string())))),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                for batch in batches {
                    if tx.send(batch).is_err() {
                        break; // the reader stopped listening
                    }
                }
            });
        }
        rx.into_iter()
    }

    /// Rows of a table, as the manifest counts them.
    pub fn rows(&self, name: &str) -> u64 {
        let file = format!("{name}.parquet");
        self.manifest.files.iter().filter(|f| f.name == file).map(|f| f.rows).sum()
    }
}

/// The generations in a store: writes new ones, keeps the last few, finds the newest good one.
pub struct Snapshots {
    store: Store,
    keep: usize,
    next_id: u64,
}

fn folder(id: u64) -> String {
    format!("{PREFIX}{id:012}")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One Parquet file of a table's batches (at least one: it gives the columns).
pub(crate) fn encode_parquet(name: &str, batches: &[RecordBatch]) -> Result<Vec<u8>, SnapshotError> {
    let encode_error = |source| SnapshotError::Encode { table: name.to_owned(), source };
    let properties = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let schema = plain_text(&batches[0]).schema();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties)).map_err(encode_error)?;
    for batch in batches {
        writer.write(&plain_text(batch)).map_err(encode_error)?;
    }
    writer.into_inner().map_err(encode_error)
}

/// The batch with its repeated-text columns (dictionaries, as views build them) as plain text:
/// files read alike by any Parquet tool and by every version of the history.
pub(crate) fn plain_text(batch: &RecordBatch) -> RecordBatch {
    let (mut fields, mut columns) = (Vec::new(), Vec::new());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Dictionary(_, values) => {
                columns.push(cast(column, values).expect("a dictionary casts to its values' type"));
                fields.push(field.as_ref().clone().with_data_type(values.as_ref().clone()));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("same columns, plain types")
}

pub(crate) fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>, Unrestorable> {
    let unreadable = |e: &dyn std::fmt::Display| Unrestorable(e.to_string());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| unreadable(&e))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| unreadable(&e))
}

impl Snapshots {
    /// Opens the store and reads back its newest generation that verifies and that `restore`
    /// accepts (it rebuilds the state from the tables), falling back to older ones (each rejected
    /// generation is logged with why).
    pub async fn open<T>(
        store: Store,
        keep: usize,
        restore: impl Fn(&Restored) -> Result<T, Unrestorable>,
    ) -> Result<(Snapshots, Option<(Manifest, T)>), SnapshotError> {
        let ids = Self::ids(&store).await?;
        let next_id = ids.last().map_or(1, |last| last + 1);
        let mut damaged = Vec::new();
        for &id in ids.iter().rev() {
            let verified = Self::read(&store, id).await.and_then(|generation| {
                let restored =
                    restore(&generation).map_err(|why| Unreadable::Damaged(format!("cannot be restored: {why}")))?;
                Ok((generation.manifest, restored))
            });
            match verified {
                Ok(found) => return Ok((Snapshots { store, keep: keep.max(1), next_id }, Some(found))),
                // Killed before its manifest: never durable, nothing lost by skipping it.
                Err(Unreadable::Incomplete) => tracing::warn!(snapshot = folder(id), "incomplete snapshot skipped"),
                Err(Unreadable::Damaged(why)) => {
                    tracing::error!(snapshot = folder(id), %why, "snapshot does not verify; trying the one before");
                    damaged.push(format!("{}: {why}", folder(id)));
                }
            }
        }
        if !damaged.is_empty() {
            return Err(SnapshotError::NoneVerifies { store: store.describe(), why: damaged.join("; ") });
        }
        Ok((Snapshots { store, keep: keep.max(1), next_id }, None))
    }

    async fn ids(store: &Store) -> Result<Vec<u64>, SnapshotError> {
        let names = store.list("").await.map_err(SnapshotError::io(store))?;
        let mut ids: Vec<u64> = names.iter().filter_map(|n| n.strip_prefix(PREFIX)?.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads one generation, verifying every file against the manifest.
    async fn read(store: &Store, id: u64) -> Result<Restored, Unreadable> {
        let dir = folder(id);
        let text = match store.get(&format!("{dir}/{MANIFEST}")).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unreadable::Incomplete),
            Err(e) => return Err(Unreadable::Damaged(format!("manifest unreadable: {e}"))),
        };
        Self::verify(store, &dir, id, &text).await.map_err(Unreadable::Damaged)
    }

    async fn verify(store: &Store, dir: &str, id: u64, text: &[u8]) -> Result<Restored, String> {
        let manifest: Manifest = serde_json::from_slice(text).map_err(|e| format!("manifest is not valid: {e}"))?;
        if manifest.format != FORMAT {
            return Err(format!("manifest of format {}; this build reads format {FORMAT}", manifest.format));
        }
        if manifest.id != id {
            return Err(format!("the manifest names generation {}, not {id}", manifest.id));
        }
        let mut files = BTreeMap::new();
        for file in &manifest.files {
            let bytes = store.get(&format!("{dir}/{}", file.name)).await.map_err(|e| format!("{}: {e}", file.name))?;
            if bytes.len() as u64 != file.bytes || sha256(&bytes) != file.sha256 {
                return Err(format!("{}: {} bytes, checksum does not match the manifest", file.name, bytes.len()));
            }
            // The rows are decoded when restored; the file's footer says how many it holds.
            let rows = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .map(|b| b.metadata().file_metadata().num_rows())
                .map_err(|e| format!("{}: not a readable Parquet file: {e}", file.name))?;
            if rows as u64 != file.rows {
                return Err(format!("{}: {rows} rows, the manifest says {}", file.name, file.rows));
            }
            files.insert(file.name.trim_end_matches(".parquet").to_owned(), bytes);
        }
        Ok(Restored { manifest, files })
    }

    /// Writes a new generation (tables, then the manifest), then removes all but the newest `keep`.
    pub async fn write(&mut self, checkpoint: Checkpoint) -> Result<Manifest, SnapshotError> {
        let id = self.next_id;
        self.next_id += 1;
        let tables = checkpoint.tables;
        let encoded = tokio::task::spawn_blocking(move || {
            tables
                .iter()
                .map(|(name, batches)| {
                    let bytes = encode_parquet(name, batches)?;
                    let entry = FileEntry {
                        name: format!("{name}.parquet"),
                        bytes: bytes.len() as u64,
                        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
                        sha256: sha256(&bytes),
                    };
                    Ok((entry, bytes))
                })
                .collect::<Result<Vec<_>, SnapshotError>>()
        })
        .await
        .expect("encoding does not panic")?;
        let manifest = Manifest {
            format: FORMAT,
            id,
            written_at: chrono::Utc::now().to_rfc3339(),
            event_schema_version: index766_core::event::SCHEMA_VERSION,
            spec_version: checkpoint.spec_version,
            judged_at: checkpoint.judged_at,
            files: encoded.iter().map(|(entry, _)| entry.clone()).collect(),
            offsets: checkpoint
                .offsets
                .iter()
                .map(|((topic, partition), &next_offset)| OffsetEntry {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset,
                })
                .collect(),
            ledger: checkpoint.ledger,
        };
        let dir = folder(id);
        let files = encoded.into_iter().map(|(entry, bytes)| (entry.name, bytes)).collect();
        self.store.put_folder(&dir, files).await.map_err(SnapshotError::io(&self.store))?;
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        self.store.put(&format!("{dir}/{MANIFEST}"), text).await.map_err(SnapshotError::io(&self.store))?;
        if let Err(error) = self.prune(id).await {
            tracing::warn!(%error, "older snapshots not removed; the next snapshot tries again");
        }
        Ok(manifest)
    }

    /// Only once the generation `newest` is durable: removes the older generations but the
    /// `keep - 1` newest complete ones (those killed before their manifest are removed too: they
    /// never count as a fallback).
    async fn prune(&self, newest: u64) -> Result<(), SnapshotError> {
        let mut complete = 0;
        for old in Self::ids(&self.store).await?.into_iter().filter(|&old| old < newest).rev() {
            let has_manifest = self.store.get(&format!("{}/{MANIFEST}", folder(old))).await.is_ok();
            if has_manifest && complete < self.keep - 1 {
                complete += 1;
            } else {
                self.store.remove_folder(&folder(old)).await.map_err(SnapshotError::io(&self.store))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn checkpoint(value: i64) -> Checkpoint {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value; 100]))]).unwrap();
        Checkpoint {
            tables: vec![("dossiers", vec![batch.clone()]), ("scores", vec![batch])],
            offsets: [(("events".to_owned(), 0), value)].into(),
            ledger: Ledger { consumed: value as u64, ..Default::default() },
            judged_at: 0,
            spec_version: "test".into(),
        }
    }

    type Opened = (Snapshots, Option<(Manifest, Vec<RecordBatch>)>);

    async fn open(dir: &std::path::Path) -> Result<Opened, SnapshotError> {
        Snapshots::open(Store::Local(dir.to_owned()), 3, |r| r.table("dossiers")).await
    }

    async fn reopen(dir: &std::path::Path) -> Option<(Manifest, Vec<RecordBatch>)> {
        open(dir).await.unwrap().1
    }

    #[tokio::test]
    async fn the_newest_verified_generation_is_restored_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (mut snapshots, none) = open(dir.path()).await.unwrap();
        assert!(none.is_none());
        for value in 1..=5 {
            snapshots.write(checkpoint(value)).await.unwrap();
        }
        let names = Store::Local(dir.path().to_owned()).list("").await.unwrap();
        assert_eq!(names, vec!["snapshot-000000000003", "snapshot-000000000004", "snapshot-000000000005"]);
        let restored = reopen(dir.path()).await.unwrap();
        assert_eq!(restored.0.offsets(), [(("events".to_owned(), 0), 5)].into());
        assert_eq!(restored.0.ledger.consumed, 5);
        assert_eq!(restored.1, checkpoint(5).tables[0].1);
        // A generation that verifies but cannot be restored (say, tables of another shape) is
        // passed over for the one before.
        let store = Store::Local(dir.path().to_owned());
        let picky =
            |r: &Restored| if r.manifest.id == 5 { Err(Unrestorable("another shape".to_owned())) } else { Ok(()) };
        let (_, found) = Snapshots::open(store, 3, picky).await.unwrap();
        assert_eq!(found.unwrap().0.id, 4);
    }

    #[tokio::test]
    async fn a_corrupted_or_truncated_newest_snapshot_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut snapshots, _) = open(dir.path()).await.unwrap();
        for value in 1..=3 {
            snapshots.write(checkpoint(value)).await.unwrap();
        }
        let newest = dir.path().join("snapshot-000000000003");
        // Truncated table file.
        let file = newest.join("scores.parquet");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(reopen(dir.path()).await.unwrap().0.id, 2);
        // One flipped byte, same length.
        let file = dir.path().join("snapshot-000000000002/dossiers.parquet");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(reopen(dir.path()).await.unwrap().0.id, 1);
        // With every complete generation damaged, the pipeline refuses to start from nothing.
        let file = dir.path().join("snapshot-000000000001/scores.parquet");
        std::fs::write(&file, b"not parquet").unwrap();
        let err = open(dir.path()).await.err().unwrap().to_string();
        assert!(err.contains("snapshot-000000000001") && err.contains("move them away"), "{err}");
        // Generations killed before their manifest are skipped without complaint.
        for id in 1..=3 {
            std::fs::remove_file(dir.path().join(format!("snapshot-{id:012}/manifest.json"))).unwrap();
        }
        let (mut snapshots, none) = open(dir.path()).await.unwrap();
        assert!(none.is_none());
        // The next generation gets a fresh id: a damaged folder is never overwritten; incomplete
        // ones are removed once it is durable.
        assert_eq!(snapshots.write(checkpoint(9)).await.unwrap().id, 4);
        assert_eq!(reopen(dir.path()).await.unwrap().0.ledger.consumed, 9);
        let names = Store::Local(dir.path().to_owned()).list("").await.unwrap();
        assert_eq!(names, vec!["snapshot-000000000004"]);
    }
}
