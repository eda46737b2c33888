//! The Kafka source. At start it reads the compacted catalog and unit topics to their end (so
//! events are checked against whole tables), then reads the dossier events and petitions topics
//! from the positions of the last snapshot (or the configured start for a partition it has none
//! for), and keeps following all four. Each message is decoded and validated; rejects go to the
//! dead-letter topic; decoded inputs reach the engine in bounded batches (a full queue blocks the
//! consumer: backpressure, never loss). Partitions added to a topic are picked up while running.

pub(crate) mod client;
pub mod dead_letter;
pub mod replay;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use index766_core::catalog::ProcedureRecord;
use index766_core::event::{reject, DossierEvent, RejectReason, Rejection};
use index766_core::petition::PetitionEvent;
use index766_core::time::Instant;
use index766_core::units::Unit;

use crate::config::{Config, ConfigError, OutOfRange, StartFrom};
use crate::ingest::client::{advice, client_config, is_authorization, report_refusal, Consumer, Reporting};
use crate::ingest::dead_letter::{DeadLetter, DeadLetters, Origin, Undelivered};
use crate::position::{Ledger, Offsets};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    DeadLetters(#[from] Undelivered),
    #[error("cannot create the Kafka client: {0} (check the [kafka] table of the config)")]
    Client(KafkaError),
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error("cannot assign the partitions of {topic}: {source}")]
    Assign { topic: String, source: KafkaError },
    #[error(
        "{topic}[{partition}]: the snapshot resumes at offset {stored}, but the broker holds offsets {low} to {high}: \
         {what}. Nothing was read. To accept the gap and go on from the earliest offset still held, set \
         [ingest] out_of_range = \"earliest\"; to rebuild instead, replay the missing events from their source"
    )]
    OutOfRange { topic: String, partition: i32, stored: i64, low: i64, high: i64, what: &'static str },
    #[error(
        "the broker no longer holds an offset being read (deleted by retention, or the topic was recreated); \
         the pipeline stops rather than skip events. Check the topics' retention; on restart it resumes from its \
         last snapshot and names the partition if the gap is below what the broker holds"
    )]
    LostPosition,
    #[error("reading the table topic {topic}: {source}")]
    Table { topic: String, source: KafkaError },
    #[error("replay of {}: {reason}", path.display())]
    File { path: std::path::PathBuf, reason: String },
}

/// One decoded message.
#[derive(Debug, Clone)]
pub enum Input {
    Dossier(DossierEvent),
    Petition(PetitionEvent, Instant),
    /// A catalog entry from the compacted catalog topic; None (a tombstone) removes it.
    Procedure(String, Option<ProcedureRecord>),
    /// A unit from the compacted units topic; None (a tombstone) removes it.
    Unit(String, Option<Unit>),
}

/// A decoded message and where it came from (for the dead-letter topic, should the engine
/// refuse it).
#[derive(Debug, Clone)]
pub struct Sourced {
    pub input: Input,
    pub origin: Origin,
    /// False for a table record read again at start, already counted before the restart: it is
    /// applied (the table is rebuilt) but not counted again.
    pub first_read: bool,
}

/// Decoded inputs; for each partition they came from, the next offset to read; and what reading
/// them counted (messages consumed, rejects already dead-lettered). The engine takes all three
/// at once, so a snapshot's offsets and counters always agree.
#[derive(Debug, Default)]
pub struct Batch {
    pub inputs: Vec<Sourced>,
    pub next_offsets: Offsets,
    pub ledger: Ledger,
}

/// Which contract a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    Dossiers,
    Petitions,
    Catalog,
    Units,
}

impl Contract {
    /// Compacted tables are read whole at every start; streams resume where the snapshot stopped.
    fn is_table(self) -> bool {
        matches!(self, Contract::Catalog | Contract::Units)
    }
}

fn decode_record<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(payload).map_err(|e| reject(RejectReason::SchemaViolation, e.to_string()))
}

/// Decodes a message of a compacted topic keyed by code: a record whose code is the key, or a
/// tombstone (no payload).
fn decode_keyed<T: serde::de::DeserializeOwned>(
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    code_of: impl Fn(&T) -> &str,
) -> Result<(String, Option<T>), Rejection> {
    let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return key
            .map(|k| (k, None))
            .ok_or_else(|| reject(RejectReason::KeyMismatch, "a tombstone needs the code as its key"));
    };
    let record: T = decode_record(payload)?;
    let code = code_of(&record).to_owned();
    if key.as_ref().is_some_and(|k| *k != code) {
        return Err(reject(RejectReason::KeyMismatch, format!("key {key:?} is not the code {code:?}")));
    }
    Ok((code, Some(record)))
}

fn decode(
    contract: Contract,
    payload: Option<&[u8]>,
    key: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Input, Rejection> {
    let bytes = payload.unwrap_or_default();
    if bytes.len() > max_bytes {
        return Err(reject(RejectReason::Oversized, format!("{} bytes, the limit is {max_bytes}", bytes.len())));
    }
    match contract {
        Contract::Dossiers => index766_core::event::decode(bytes, key, max_bytes).map(Input::Dossier),
        Contract::Petitions => index766_core::petition::decode(bytes, key).map(|(e, t)| Input::Petition(e, t)),
        Contract::Catalog => {
            let (code, record) = decode_keyed(payload, key, |r: &ProcedureRecord| &r.code)?;
            if let Some(r) = &record {
                index766_core::catalog::Procedure::from_record(r)
                    .map_err(|d| reject(RejectReason::SchemaViolation, d))?;
            }
            Ok(Input::Procedure(code, record))
        }
        Contract::Units => decode_keyed(payload, key, |u: &Unit| &u.code).map(|(code, unit)| Input::Unit(code, unit)),
    }
}

/// Turns messages into a batch: decodes, counts, collects dead letters.
#[derive(Clone)]
pub(crate) struct Reader {
    topics: hashbrown::HashMap<String, TopicReader>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

/// What the reader knows of one topic, looked up once per message.
#[derive(Clone)]
struct TopicReader {
    contract: Contract,
    /// The topic's name, shared by every message's origin.
    name: Arc<str>,
    /// Per partition, the snapshot's position: a table message before it was counted (and, if
    /// bad, dead-lettered) before the restart, so re-reading the table does not count it again.
    resumed: hashbrown::HashMap<i32, i64>,
}

impl TopicReader {
    fn new(name: &str, contract: Contract, resume: &Offsets) -> TopicReader {
        let resumed = resume.iter().filter(|((topic, _), _)| topic == name).map(|(&(_, p), &next)| (p, next)).collect();
        TopicReader { contract, name: Arc::from(name), resumed }
    }
}

/// A batch being filled, with the dead letters its messages produced.
#[derive(Default)]
pub(crate) struct Pending {
    pub batch: Batch,
    pub letters: Vec<DeadLetter>,
}

/// One message as read: from a topic, or a line or row of a replayed file (its "topic" is the
/// file's path, partition 0, offset the line or row number).
pub(crate) struct Raw<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl Reader {
    /// A reader of dossier events only, from the given sources (a replay's files).
    pub(crate) fn events(sources: &[String], max_bytes: usize, metrics: Arc<Metrics>) -> Reader {
        let topics =
            sources.iter().map(|s| (s.clone(), TopicReader::new(s, Contract::Dossiers, &Offsets::new()))).collect();
        Reader { topics, max_bytes, metrics }
    }

    fn take(&self, pending: &mut Pending, message: &BorrowedMessage<'_>) {
        let raw = Raw {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload(),
        };
        self.take_raw(pending, &raw);
    }

    pub(crate) fn take_raw(&self, pending: &mut Pending, message: &Raw<'_>) {
        let (topic, partition, offset) = (message.topic, message.partition, message.offset);
        let TopicReader { contract, name: topic_name, resumed } = &self.topics[topic];
        let counted_before = resumed.get(&partition).is_some_and(|&next| offset < next);
        read_up_to(&mut pending.batch.next_offsets, topic, partition, offset + 1);
        let payload = message.payload.unwrap_or_default();
        if !counted_before {
            pending.batch.ledger.consumed += 1;
            self.metrics.bytes_consumed.inc_by(payload.len() as u64);
        }
        let decoded = decode(*contract, message.payload, message.key, self.max_bytes);
        if decoded.is_err() && counted_before {
            return;
        }
        let origin = Origin {
            topic: topic_name.clone(),
            partition,
            offset,
            key: message.key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        };
        match decoded {
            Ok(input) => pending.batch.inputs.push(Sourced { input, origin, first_read: !counted_before }),
            Err(rejection) => {
                pending.batch.ledger.reject(rejection.reason.as_str());
                pending.letters.push(DeadLetter { origin, rejection });
            }
        }
    }
}

/// Notes that `topic`/`partition` is read up to `next` (a batch holds few partitions: a scan
/// finds it without allocating a key for every message).
fn read_up_to(offsets: &mut Offsets, topic: &str, partition: i32, next: i64) {
    match offsets.iter_mut().find(|((t, p), _)| *p == partition && t == topic) {
        Some((_, offset)) => *offset = next,
        None => {
            offsets.insert((topic.to_owned(), partition), next);
        }
    }
}

/// Where each partition stands (next offset to read), shared with the lag reporter.
type Positions = Arc<Mutex<Offsets>>;

pub(crate) struct Source {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub dead_letters: Arc<DeadLetters>,
    /// Where the last snapshot stopped.
    pub resume: Offsets,
    /// The offsets of the newest durable snapshot, committed to the consumer group for lag tools.
    pub durable: watch::Receiver<Offsets>,
}

impl Source {
    pub async fn run(self, batches: mpsc::Sender<Batch>, shutdown: CancellationToken) -> Result<(), IngestError> {
        let config = self.config.clone();
        let topic = config.topics.events.clone();
        let consumer: Arc<Consumer> = Arc::new(
            client_config(&config)?
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // A position the broker no longer holds is an error, never a silent jump.
                .set("auto.offset.reset", "error")
                .create_with_context(Reporting::new(&self.health))
                .map_err(IngestError::Client)?,
        );
        let Some(events_partitions) = wait_for_partitions(&consumer, &topic, &self.health, &shutdown).await else {
            return Ok(());
        };
        let mut topics = vec![(topic.clone(), Contract::Dossiers, events_partitions)];
        for (name, contract) in [
            (&config.topics.petitions, Contract::Petitions),
            (&config.topics.catalog, Contract::Catalog),
            (&config.topics.units, Contract::Units),
        ] {
            if name.is_empty() {
                continue;
            }
            let partitions = match fetch_partitions(&consumer, name).await {
                Ok(partitions) => partitions,
                // Not an absent topic: brokers away, or a refusal; wait as for the events topic.
                Err(_) => match wait_for_partitions(&consumer, name, &self.health, &shutdown).await {
                    Some(partitions) => partitions,
                    None => return Ok(()),
                },
            };
            match partitions.is_empty() {
                false => topics.push((name.clone(), contract, partitions)),
                true => tracing::warn!(topic = name, "topic not found at start; not consumed"),
            }
        }
        let reader = Reader {
            topics: topics.iter().map(|(n, c, _)| (n.clone(), TopicReader::new(n, *c, &self.resume))).collect(),
            max_bytes: config.ingest.max_event_bytes,
            metrics: self.metrics.clone(),
        };

        // The tables first, whole: events are checked against every unit and procedure known.
        let mut assignment = TopicPartitionList::new();
        for (name, _, partitions) in topics.iter().filter(|(_, c, _)| c.is_table()) {
            let Some((tables, ends)) = self.read_table_until_allowed(name, partitions, &reader, &shutdown).await?
            else {
                return Ok(());
            };
            match self.dead_letters.deliver(&tables.letters, &shutdown).await {
                Ok(()) => {}
                // Shutting down: the table is read again at the next start.
                Err(Undelivered::ShuttingDown) => return Ok(()),
                Err(refused) => return Err(refused.into()),
            }
            for ((name, partition), end) in ends {
                add(&mut assignment, &name, partition, Offset::Offset(end))?;
            }
            if batches.send(tables.batch).await.is_err() {
                return Ok(());
            }
        }
        // Positions resolved here (the end, for start_from = latest) go to the engine at once, so
        // the next snapshot holds them: a crash before it cannot skip what arrives meanwhile.
        let mut resolved = Batch::default();
        for (name, _, partitions) in topics.iter().filter(|(_, c, _)| !c.is_table()) {
            for &p in partitions {
                let start = self.start_of(&consumer, name, p).await?;
                if let (Offset::Offset(at), false) = (start, self.resume.contains_key(&(name.clone(), p))) {
                    resolved.next_offsets.insert((name.clone(), p), at);
                }
                add(&mut assignment, name, p, start)?;
            }
        }
        consumer.assign(&assignment).map_err(|source| IngestError::Assign { topic: topic.clone(), source })?;
        let mut positions = self.resume.clone();
        positions.extend(resolved.next_offsets.clone());
        if !resolved.next_offsets.is_empty() && batches.send(resolved).await.is_err() {
            return Ok(());
        }
        tracing::info!(
            topics = ?topics.iter().map(|(n, _, p)| format!("{n}[{}]", p.len())).collect::<Vec<_>>(),
            resumed = self.resume.len(),
            "assigned"
        );

        let progress: Positions = Arc::new(Mutex::new(positions));
        // The watcher runs in this task, not beside it: if it fails, ingest fails with it, under
        // the supervisor's eye.
        let watcher = Watcher {
            consumer: consumer.clone(),
            topics: topics.into_iter().map(|(n, _, p)| (n, p)).collect(),
            progress: progress.clone(),
            start_from: self.config.ingest.start_from,
            batches: batches.clone(),
            durable: self.durable.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        };
        let watching = watcher.run(shutdown.clone());
        let following = self.follow(&consumer, &reader, &progress, batches, &shutdown);
        tokio::pin!(watching, following);
        tokio::select! {
            result = &mut following => result,
            // It ends only at shutdown; the batch being read still goes to the engine.
            () = &mut watching => following.await,
        }
    }

    /// Reads a table topic whole; while the brokers refuse it (a missing ACL), says so in
    /// /healthz and tries again every few seconds. None: shut down meanwhile.
    async fn read_table_until_allowed(
        &self,
        name: &str,
        partitions: &[i32],
        reader: &Reader,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Pending, Offsets)>, IngestError> {
        loop {
            let (client, reader, topic, partitions) =
                (client_config(&self.config)?, reader.clone(), name.to_owned(), partitions.to_vec());
            match tokio::task::spawn_blocking(move || read_table(client, &reader, &topic, &partitions))
                .await
                .expect("table reader does not panic")
            {
                Err(IngestError::Table { topic, source }) if is_authorization(&source) => {
                    report_refusal(&self.health, format!("cannot read the table topic {topic}: {source}"), &source);
                }
                read => return read.map(Some),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Where to start a stream partition: the snapshot's offset if it has one the broker still
    /// holds; the configured start for a partition it has never seen.
    async fn start_of(&self, consumer: &Arc<Consumer>, topic: &str, partition: i32) -> Result<Offset, IngestError> {
        let watermarks = || {
            let (client, name) = (consumer.clone(), topic.to_owned());
            async move {
                tokio::task::spawn_blocking(move || client.fetch_watermarks(&name, partition, Duration::from_secs(10)))
                    .await
                    .expect("watermark task does not panic")
                    .map_err(|source| IngestError::Assign { topic: topic.to_owned(), source })
            }
        };
        let Some(&stored) = self.resume.get(&(topic.to_owned(), partition)) else {
            return Ok(match self.config.ingest.start_from {
                StartFrom::Earliest => Offset::Beginning,
                StartFrom::Latest => Offset::Offset(watermarks().await?.1),
            });
        };
        let (low, high) = watermarks().await?;
        // A position past the end (topic recreated) is left to the broker to refuse when read:
        // some brokers report a high watermark behind the last batch, so it is no proof here.
        if stored >= low {
            return Ok(Offset::Offset(stored));
        }
        let what = "the events between were deleted by retention before they were read";
        match self.config.ingest.out_of_range {
            OutOfRange::Fail => {
                Err(IngestError::OutOfRange { topic: topic.to_owned(), partition, stored, low, high, what })
            }
            OutOfRange::Earliest => {
                tracing::error!(
                    topic,
                    partition,
                    stored,
                    low,
                    high,
                    what,
                    "out of range; going on from the earliest offset held, as configured"
                );
                self.health.notice(format!("{topic}[{partition}] resumed at {low}, not {stored}: {what}"));
                Ok(Offset::Offset(low))
            }
        }
    }

    /// Reads the assigned partitions until shutdown, handing the engine one batch at a time.
    async fn follow(
        &self,
        consumer: &Consumer,
        reader: &Reader,
        progress: &Positions,
        batches: mpsc::Sender<Batch>,
        shutdown: &CancellationToken,
    ) -> Result<(), IngestError> {
        let linger = Duration::from_millis(self.config.ingest.batch_linger_ms);
        let max_events = self.config.ingest.batch_max_events;
        let mut stopping = false;
        while !stopping {
            let mut pending = Pending::default();
            let mut deadline = None;
            while pending.batch.inputs.len() < max_events {
                let received = tokio::select! {
                    // The batch read so far still goes to the engine: nothing consumed is dropped.
                    _ = shutdown.cancelled() => { stopping = true; break }
                    _ = sleep_until(deadline) => break,
                    received = consumer.recv() => received,
                };
                match received {
                    Ok(message) => {
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
                        reader.take(&mut pending, &message);
                    }
                    Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
                    )) => return Err(IngestError::LostPosition),
                    // A missing READ: librdkafka retries the fetch, which works once it is granted.
                    Err(error) if is_authorization(&error) => {
                        report_refusal(&self.health, format!("reading the topics: {error}"), &error)
                    }
                    Err(error) => {
                        self.health.fault(format!("reading the topics: {error}"));
                        tracing::warn!(%error, "consumer error");
                    }
                }
            }
            if pending.batch.next_offsets.is_empty() {
                continue;
            }
            // Dead letters first: once the engine has the batch, its offsets may reach a snapshot.
            match self.dead_letters.deliver(&pending.letters, shutdown).await {
                Ok(()) => {}
                // Shutting down: this batch is read again after the restart.
                Err(Undelivered::ShuttingDown) => break,
                Err(refused) => return Err(refused.into()),
            }
            progress.lock().expect("positions lock").extend(pending.batch.next_offsets.clone());
            self.health.unblocked();
            if batches.send(pending.batch).await.is_err() {
                break; // the engine has stopped: shutting down
            }
        }
        Ok(())
    }
}

fn add(list: &mut TopicPartitionList, topic: &str, partition: i32, offset: Offset) -> Result<(), IngestError> {
    list.add_partition_offset(topic, partition, offset)
        .map_err(|source| IngestError::Assign { topic: topic.to_owned(), source })
}

/// Reads a compacted table topic from its beginning to the end it has now (blocking); returns
/// the batch and where each partition ended.
fn read_table(
    client: ClientConfig,
    reader: &Reader,
    topic: &str,
    partitions: &[i32],
) -> Result<(Pending, Offsets), IngestError> {
    let table_error = |source| IngestError::Table { topic: topic.to_owned(), source };
    let consumer: BaseConsumer = client
        .clone()
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(IngestError::Client)?;
    let mut ends = Offsets::new();
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(table_error)?;
        ends.insert((topic.to_owned(), p), high);
        if high > low {
            add(&mut assignment, topic, p, Offset::Offset(low))?;
        }
    }
    let mut unread: BTreeMap<i32, i64> =
        assignment.elements().iter().map(|e| (e.partition(), ends[&(topic.to_owned(), e.partition())])).collect();
    consumer.assign(&assignment).map_err(table_error)?;
    let mut pending = Pending::default();
    let mut last_progress = std::time::Instant::now();
    while !unread.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_progress = std::time::Instant::now();
                if unread.get(&message.partition()).is_some_and(|&end| message.offset() + 1 >= end) {
                    unread.remove(&message.partition());
                }
                reader.take(&mut pending, &message);
            }
            Some(Err(source)) => return Err(table_error(source)),
            None if last_progress.elapsed() > Duration::from_secs(60) => {
                return Err(table_error(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut)))
            }
            None => {}
        }
    }
    tracing::info!(topic, records = pending.batch.inputs.len(), "table read");
    Ok((pending, ends))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The partitions of `topic`; Ok(empty) when it does not exist.
pub(crate) async fn fetch_partitions(consumer: &Arc<Consumer>, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let (client, name) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        client.fetch_metadata(Some(&name), Duration::from_secs(5)).map(|m| {
            let topic = m.topics().iter().find(|t| t.name() == name);
            match topic.and_then(|t| t.error()).map(RDKafkaErrorCode::from) {
                None => Ok(topic.into_iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect()),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => Ok(Vec::new()),
                // Refused (a missing DESCRIBE), or not ready: not the same as absent.
                Some(code) => Err(KafkaError::MetadataFetch(code)),
            }
        })?
    })
    .await
    .expect("metadata task does not panic")
}

/// Waits until the topic exists and has partitions, reporting the wait in /healthz.
async fn wait_for_partitions(
    consumer: &Arc<Consumer>,
    topic: &str,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<i32>> {
    loop {
        match fetch_partitions(consumer, topic).await {
            Ok(partitions) if !partitions.is_empty() => {
                health.connected();
                return Some(partitions);
            }
            Ok(_) => health.fault(format!("topic {topic} does not exist yet; waiting for it")),
            Err(error) => health.fault(match advice(&error, "") {
                Some(fix) => format!("cannot read the metadata of topic {topic}: {error} ({fix})"),
                None => format!("cannot reach the brokers for topic {topic}: {error}"),
            }),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Every few seconds: reports lag per partition and whether the brokers answer, picks up
/// partitions added to a topic, and commits the newest durable snapshot's offsets to the group.
struct Watcher {
    consumer: Arc<Consumer>,
    topics: Vec<(String, Vec<i32>)>,
    progress: Positions,
    start_from: StartFrom,
    /// To the engine: where added partitions start, before they are read.
    batches: mpsc::Sender<Batch>,
    durable: watch::Receiver<Offsets>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Watcher {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let (client, wanted) = (self.consumer.clone(), self.topics.clone());
            let watermarks = tokio::task::spawn_blocking(move || {
                wanted
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                    .map(|(t, p)| {
                        client.fetch_watermarks(&t, p, Duration::from_secs(5)).map(|(low, high)| (t, p, low, high))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .expect("watermark task does not panic");
            match watermarks {
                Ok(marks) => {
                    self.health.connected();
                    self.metrics.broker_connected.set(1);
                    let positions = self.progress.lock().expect("positions lock").clone();
                    // The client's own position is past an upstream transaction's commit marker,
                    // a record never handed to the pipeline: without it the lag would stay at 1.
                    // (It may also be ahead by a batch still lingering: at most a batch early.)
                    let fetched: Offsets = self.consumer.position().map_or_else(
                        |_| Offsets::new(),
                        |list| {
                            list.elements()
                                .iter()
                                .filter_map(|e| Some(((e.topic().to_owned(), e.partition()), e.offset().to_raw()?)))
                                .filter(|&(_, next)| next >= 0)
                                .collect()
                        },
                    );
                    for (t, p, low, high) in marks {
                        let read = positions.get(&(t.clone(), p)).copied().unwrap_or(low);
                        let next = fetched.get(&(t.clone(), p)).map_or(read, |&client| client.max(read));
                        let lag = self.metrics.consumer_lag.with_label_values(&[t.as_str(), &p.to_string()]);
                        lag.set((high - next).max(0));
                    }
                    for k in 0..self.topics.len() {
                        if let Ok(now) = fetch_partitions(&self.consumer, &self.topics[k].0).await {
                            self.add_new_partitions(k, now).await;
                        }
                    }
                }
                Err(error) => {
                    self.metrics.broker_connected.set(0);
                    self.health.fault(format!("cannot reach the brokers: {error}; serving the last scores"));
                }
            }
            if self.durable.has_changed().unwrap_or(false) {
                commit(&self.consumer, &self.durable.borrow_and_update());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Starts reading the partitions of topic `k` that `now` lists and it does not yet read. A
    /// partition started at its end (`start_from = latest`) keeps that position like those at
    /// start-up: the engine has it before the partition is read, so the next snapshot holds it
    /// and a restart resumes there, not at a later end.
    async fn add_new_partitions(&mut self, k: usize, now: Vec<i32>) {
        let (topic, known) = &self.topics[k];
        let added: Vec<i32> = now.into_iter().filter(|p| !known.contains(p)).collect();
        if added.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        let mut resolved = Batch::default();
        for &p in &added {
            let key = (topic.clone(), p);
            let earlier = self.progress.lock().expect("positions lock").get(&key).copied();
            let start = match (self.start_from, earlier) {
                (StartFrom::Earliest, _) => Offset::Beginning,
                // Resolved by an earlier attempt whose assignment failed: the same end again.
                (StartFrom::Latest, Some(at)) => Offset::Offset(at),
                (StartFrom::Latest, None) => {
                    let (client, name) = (self.consumer.clone(), topic.clone());
                    let high = tokio::task::spawn_blocking(move || {
                        client.fetch_watermarks(&name, p, Duration::from_secs(10)).map(|(_, high)| high)
                    })
                    .await
                    .expect("watermark task does not panic");
                    match high {
                        Ok(high) => {
                            resolved.next_offsets.insert(key, high);
                            Offset::Offset(high)
                        }
                        Err(error) => {
                            tracing::warn!(%error, topic, partition = p, "cannot find where an added partition ends; will retry");
                            return;
                        }
                    }
                }
            };
            let _ = list.add_partition_offset(topic, p, start);
        }
        if !resolved.next_offsets.is_empty() {
            self.progress.lock().expect("positions lock").extend(resolved.next_offsets.clone());
            if self.batches.send(resolved).await.is_err() {
                return; // the engine has stopped: shutting down
            }
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => {
                tracing::info!(topic, ?added, "partitions added to the topic are now read");
                self.topics[k].1.extend(added);
            }
            Err(error) => tracing::warn!(%error, topic, "cannot read the added partitions yet; will retry"),
        }
    }
}

/// Commits offsets to the consumer group, for lag tools only: the pipeline resumes from its
/// snapshots, never from the group.
fn commit(consumer: &Consumer, offsets: &Offsets) {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), &next) in offsets {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(next));
    }
    if list.count() > 0 {
        if let Err(error) = consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(%error, "cannot commit the snapshot's offsets to the consumer group");
        }
    }
}
