//! Replay: the pipeline fed from event-log files instead of Kafka, for a backfill, a rescore
//! after a formula change, or to measure processing without a broker in the way.
//!
//! A file is JSON lines (one event of `schemas/dossier-event.v1.schema.json` a line) or, if its
//! name ends in `.parquet`, Parquet with the columns of [`event_schema`]: the same fields, nested
//! parts as structs and lists, times as the contract's RFC 3339 strings. A Parquet row is turned
//! back into the contract's JSON and decoded by the same code as a Kafka message, so both forms
//! are held to one contract. Each file is a source of its own: its path is the "topic", partition
//! 0, the line or row number the offset; a snapshot records how far each file was read, and a
//! replay that resumes from it skips what it has already counted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::dead_letter::{DeadLetters, Undelivered};
use crate::ingest::{Batch, IngestError, Pending, Raw, Reader};
use crate::position::Offsets;
use crate::telemetry::metrics::Metrics;

/// What to replay, and what to do when it is read.
#[derive(Debug, Clone)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    /// JSON lines, appended to: one line per event refused or held, with why.
    pub dead_letters: PathBuf,
    /// Keep serving SQL, metrics and the dashboard after the files are read (until shutdown),
    /// instead of writing the final snapshot and stopping.
    pub keep_serving: bool,
}

/// The Arrow schema of a Parquet event file: the event contract's fields, column for field.
pub(crate) fn event_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let flag = |name: &str| Field::new(name, DataType::Boolean, true);
    let list_of = |name: &str, fields: Vec<Field>| {
        Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Struct(fields.into()), true))), true)
    };
    Arc::new(Schema::new(vec![
        Field::new("schema_version", DataType::UInt32, false),
        utf8("event_id", false),
        utf8("event_time", false),
        utf8("dossier_id", false),
        Field::new("status", DataType::UInt8, false),
        utf8("unit_code", false),
        utf8("procedure_code", false),
        Field::new("channel", DataType::UInt8, false),
        utf8("due_at", true),
        flag("supplement_received"),
        list_of(
            "fees",
            vec![Field::new("amount", DataType::UInt64, false), Field::new("paid_online", DataType::UInt8, true)],
        ),
        Field::new("paid_online", DataType::UInt8, true),
        list_of("documents", vec![utf8("code", false), flag("digitised"), flag("reused"), flag("from_personal_store")]),
        Field::new(
            "result",
            DataType::Struct(Fields::from(vec![utf8("file_url", true), flag("synced_to_personal_store")])),
            true,
        ),
        flag("vneid_authenticated"),
        flag("population_data_used"),
        flag("synced_to_portal"),
        Field::new("feedback", DataType::Struct(Fields::from(vec![flag("dislike"), flag("complaint")])), true),
    ]))
}

/// The source of a replay: reads the files one after the other on a thread of its own (decoding
/// is the costly part), and hands the engine the same batches the Kafka source does.
pub(crate) struct FileSource {
    pub files: Files,
    pub batch_max_events: usize,
    pub max_message_bytes: usize,
    /// Where the last snapshot stopped in each file.
    pub resume: Offsets,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
}

fn source_name(path: &Path) -> String {
    path.display().to_string()
}

fn file_error(path: &Path, reason: impl ToString) -> IngestError {
    IngestError::File { path: path.to_owned(), reason: reason.to_string() }
}

impl FileSource {
    /// Checks that every file can be opened, before anything starts.
    pub fn check(files: &Files) -> Result<(), IngestError> {
        if files.paths.is_empty() {
            return Err(IngestError::File { path: PathBuf::new(), reason: "no file to replay was given".into() });
        }
        files.paths.iter().try_for_each(|path| File::open(path).map(drop).map_err(|e| file_error(path, e)))
    }

    /// Reads every file to its end, then (unless told to keep serving) cancels `shutdown`, so the
    /// pipeline writes its final snapshot and stops.
    pub async fn run(self, batches: mpsc::Sender<Batch>, shutdown: CancellationToken) -> Result<(), IngestError> {
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(4);
        let names: Vec<String> = self.files.paths.iter().map(|p| source_name(p)).collect();
        let reader = Reader::events(&names, self.max_message_bytes, self.metrics.clone());
        let (paths, resume, batch_max) = (self.files.paths.clone(), self.resume.clone(), self.batch_max_events.max(1));
        let stop = shutdown.clone();
        let decoding = tokio::task::spawn_blocking(move || {
            let out = Batches { reader, batch_max, tx: pending_tx, stop };
            for path in &paths {
                let skip = resume.get(&(source_name(path), 0)).copied().unwrap_or(0);
                let read = match path.extension().is_some_and(|e| e == "parquet") {
                    true => read_parquet(path, skip, &out),
                    false => read_json_lines(path, skip, &out),
                };
                read?;
                tracing::info!(file = %path.display(), "replayed");
            }
            Ok::<(), IngestError>(())
        });
        while let Some(pending) = pending_rx.recv().await {
            // Dead letters first: once the engine has the batch, its offsets may reach a snapshot.
            let delivered = match self.dead_letters.deliver(&pending.letters, &shutdown).await {
                Err(Undelivered::ShuttingDown) => false,
                // The reader stops at its next batch, which has no one to go to.
                Err(refused) => return Err(refused.into()),
                Ok(()) => true,
            };
            if !delivered || batches.send(pending.batch).await.is_err() {
                break;
            }
        }
        let result = decoding.await.expect("the file reader does not panic");
        if result.is_ok() {
            match self.files.keep_serving {
                // The engine goes on (and so does serving) while this source lives.
                true => shutdown.cancelled().await,
                false => shutdown.cancel(),
            }
        }
        result
    }
}

/// Where the file readers put the lines they read: decoded into batches of at most `batch_max`
/// messages, handed to the engine's side.
struct Batches {
    reader: Reader,
    batch_max: usize,
    tx: mpsc::Sender<Pending>,
    stop: CancellationToken,
}

impl Batches {
    /// Decodes a message into `pending`, handing it over when full; false when the pipeline is stopping.
    fn take(&self, pending: &mut Pending, raw: &Raw<'_>) -> bool {
        self.reader.take_raw(pending, raw);
        pending.batch.inputs.len() + pending.letters.len() < self.batch_max || self.hand_over(pending)
    }

    /// Hands the batch over; false when the pipeline is stopping.
    fn hand_over(&self, pending: &mut Pending) -> bool {
        let full = std::mem::take(pending);
        !self.stop.is_cancelled() && self.tx.blocking_send(full).is_ok()
    }
}

fn read_json_lines(path: &Path, skip: i64, out: &Batches) -> Result<(), IngestError> {
    let name = source_name(path);
    let mut lines = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| file_error(path, e))?);
    let mut pending = Pending::default();
    let mut line = Vec::with_capacity(4096);
    let mut number = 0i64;
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).map_err(|e| file_error(path, e))? == 0 {
            break;
        }
        let offset = number;
        number += 1;
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
        if offset < skip || payload.iter().all(u8::is_ascii_whitespace) {
            continue; // counted before the snapshot, or a blank line (not a message)
        }
        let raw = Raw { topic: &name, partition: 0, offset, key: None, payload: Some(payload) };
        if !out.take(&mut pending, &raw) {
            return Ok(());
        }
    }
    if !pending.batch.next_offsets.is_empty() {
        out.hand_over(&mut pending);
    }
    Ok(())
}

fn read_parquet(path: &Path, skip: i64, out: &Batches) -> Result<(), IngestError> {
    let name = source_name(path);
    let file = File::open(path).map_err(|e| file_error(path, e))?;
    let rows = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(out.batch_max).build())
        .map_err(|e| file_error(path, format!("not a readable Parquet file: {e}")))?;
    let mut offset = 0i64;
    for batch in rows {
        let batch = batch.map_err(|e| file_error(path, e))?;
        if offset + batch.num_rows() as i64 <= skip {
            offset += batch.num_rows() as i64;
            continue;
        }
        let json = rows_as_json(&batch).map_err(|e| file_error(path, e))?;
        let mut pending = Pending::default();
        for payload in json.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if offset >= skip {
                let raw = Raw { topic: &name, partition: 0, offset, key: None, payload: Some(payload) };
                out.reader.take_raw(&mut pending, &raw);
            }
            offset += 1;
        }
        if !out.hand_over(&mut pending) {
            return Ok(());
        }
    }
    Ok(())
}

/// Rows as JSON lines, one object per row, null fields left out (as the contract's optional
/// fields are).
fn rows_as_json(batch: &RecordBatch) -> Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
    let mut out = LineDelimitedWriter::new(Vec::with_capacity(batch.num_rows() * 512));
    out.write(batch)?;
    out.finish()?;
    Ok(out.into_inner())
}

/// Writes events (JSON lines of the contract) as a Parquet event file of [`event_schema`].
pub(crate) struct ParquetEvents {
    writer: datafusion::parquet::arrow::ArrowWriter<File>,
    decoder: datafusion::arrow::json::reader::Decoder,
}

impl ParquetEvents {
    pub fn create(path: &Path) -> Result<ParquetEvents, String> {
        let schema = event_schema();
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let properties = datafusion::parquet::file::properties::WriterProperties::builder()
            .set_compression(datafusion::parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| e.to_string())?;
        let decoder = datafusion::arrow::json::ReaderBuilder::new(schema)
            .with_batch_size(65_536)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        Ok(ParquetEvents { writer, decoder })
    }

    /// Adds events given as JSON lines.
    pub(crate) fn write_json_lines(&mut self, json: &[u8]) -> Result<(), String> {
        let mut rest = json;
        while !rest.is_empty() {
            let read = self.decoder.decode(rest).map_err(|e| e.to_string())?;
            rest = &rest[read..];
            if let Some(batch) = self.decoder.flush().map_err(|e| e.to_string())? {
                self.writer.write(&batch).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), String> {
        if let Some(batch) = self.decoder.flush().map_err(|e| e.to_string())? {
            self.writer.write(&batch).map_err(|e| e.to_string())?;
        }
        self.writer.close().map(drop).map_err(|e| e.to_string())
    }
}
