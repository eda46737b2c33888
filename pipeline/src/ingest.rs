//! The Kafka source: reads the dossier events topic and, where they exist, the petitions topic
//! and the compacted catalog and unit topics, from explicitly assigned partitions; decodes and
//! validates each message, sends rejects to the dead-letter topic, and hands decoded inputs to
//! the engine in bounded batches (a full queue blocks the consumer: backpressure, never loss).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::ProcedureRecord;
use crate::config::{Config, StartFrom};
use crate::event::{DossierEvent, RejectReason, Rejection};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::petition::PetitionEvent;
use crate::time::Instant;
use crate::units::Unit;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot create the Kafka client: {0} (check the [kafka] table of the config)")]
    Client(rdkafka::error::KafkaError),
    #[error("cannot assign the partitions of {topic}: {source}")]
    Assign { topic: String, source: rdkafka::error::KafkaError },
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

/// Decoded inputs, and for each partition they came from the next offset to read.
#[derive(Debug, Default)]
pub struct Batch {
    pub inputs: Vec<Input>,
    pub next_offsets: BTreeMap<(String, i32), i64>,
}

/// Where each assigned partition stands: next offset to read (shared with the lag reporter).
type Positions = Arc<Mutex<BTreeMap<(String, i32), i64>>>;

/// Which contract a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    Dossiers,
    Petitions,
    Catalog,
    Units,
}

fn decode_record<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(payload)
        .map_err(|e| Rejection { reason: RejectReason::SchemaViolation, detail: e.to_string() })
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
        return key.map(|k| (k, None)).ok_or_else(|| Rejection {
            reason: RejectReason::KeyMismatch,
            detail: "a tombstone needs the code as its key".into(),
        });
    };
    let record: T = decode_record(payload)?;
    let code = code_of(&record).to_owned();
    if key.as_ref().is_some_and(|k| *k != code) {
        return Err(Rejection {
            reason: RejectReason::KeyMismatch,
            detail: format!("key {key:?} is not the code {code:?}"),
        });
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
        return Err(Rejection {
            reason: RejectReason::Oversized,
            detail: format!("{} bytes, the limit is {max_bytes}", bytes.len()),
        });
    }
    match contract {
        Contract::Dossiers => crate::event::decode(bytes, key, max_bytes).map(Input::Dossier),
        Contract::Petitions => crate::petition::decode(bytes, key).map(|(e, t)| Input::Petition(e, t)),
        Contract::Catalog => {
            let (code, record) = decode_keyed(payload, key, |r: &ProcedureRecord| &r.code)?;
            if let Some(r) = &record {
                crate::catalog::Procedure::from_record(r)
                    .map_err(|detail| Rejection { reason: RejectReason::SchemaViolation, detail })?;
            }
            Ok(Input::Procedure(code, record))
        }
        Contract::Units => decode_keyed(payload, key, |u: &Unit| &u.code).map(|(code, unit)| Input::Unit(code, unit)),
    }
}

pub fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.kafka {
        client.set(key, value);
    }
    client
}

pub async fn run(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    batches: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let topic = config.topics.events.clone();
    let reset = match config.ingest.start_from {
        StartFrom::Earliest => "earliest",
        StartFrom::Latest => "latest",
    };
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(&config)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .create()
            .map_err(IngestError::Client)?,
    );
    let dead_letters: FutureProducer =
        client_config(&config).remove("group.id").create().map_err(IngestError::Client)?;

    let Some(events_partitions) = wait_for_partitions(&consumer, &topic, &health, &shutdown).await else {
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
        match existing_partitions(&consumer, name).await {
            Some(partitions) => topics.push((name.clone(), contract, partitions)),
            None => tracing::warn!(topic = name, "topic not found at start; not consumed"),
        }
    }
    let start = match config.ingest.start_from {
        StartFrom::Earliest => Offset::Beginning,
        StartFrom::Latest => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    for (name, contract, partitions) in &topics {
        // Catalog and units topics are compacted tables: always read whole.
        let offset = if matches!(contract, Contract::Catalog | Contract::Units) { Offset::Beginning } else { start };
        for &p in partitions {
            assignment
                .add_partition_offset(name, p, offset)
                .map_err(|source| IngestError::Assign { topic: name.clone(), source })?;
        }
    }
    consumer.assign(&assignment).map_err(|source| IngestError::Assign { topic: topic.clone(), source })?;
    tracing::info!(topics = ?topics.iter().map(|(n, _, p)| format!("{n}[{}]", p.len())).collect::<Vec<_>>(), start_from = reset, "assigned");
    let contracts: HashMap<String, Contract> = topics.iter().map(|(n, c, _)| (n.clone(), *c)).collect();

    let positions: Positions = Arc::new(Mutex::new(BTreeMap::new()));
    let lag_reporter = tokio::spawn(report_lag(
        consumer.clone(),
        topics.into_iter().map(|(n, _, p)| (n, p)).collect(),
        positions.clone(),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let linger = Duration::from_millis(config.ingest.batch_linger_ms);
    let max_events = config.ingest.batch_max_events;
    let max_bytes = config.ingest.max_event_bytes;
    let mut stopping = false;
    while !stopping {
        let mut batch = Batch::default();
        let mut deadline = None;
        while batch.inputs.len() < max_events {
            let received = tokio::select! {
                // The batch read so far still goes to the engine: nothing consumed is dropped.
                _ = shutdown.cancelled() => { stopping = true; break }
                _ = sleep_until(deadline) => break,
                received = consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    health.fault(format!("reading {topic}: {error}"));
                    tracing::warn!(%error, "consumer error");
                    continue;
                }
            };
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
            let contract = contracts.get(message.topic()).copied().unwrap_or(Contract::Dossiers);
            metrics.events_consumed.inc();
            metrics.bytes_consumed.inc_by(message.payload_len() as u64);
            batch.next_offsets.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
            match decode(contract, message.payload(), message.key(), max_bytes) {
                Ok(input) => batch.inputs.push(input),
                Err(rejection) => {
                    let source = format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
                    dead_letter(&dead_letters, &config.topics.dead_letter, &message, &rejection, &source, &shutdown)
                        .await;
                    metrics.events_rejected.with_label_values(&[rejection.reason.as_str()]).inc();
                }
            }
        }
        if batch.next_offsets.is_empty() {
            continue;
        }
        positions.lock().expect("positions lock").extend(batch.next_offsets.iter().map(|(k, &o)| (k.clone(), o)));
        if batches.send(batch).await.is_err() {
            break; // the state has stopped: shutting down
        }
    }
    lag_reporter.abort();
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The partitions of `topic`; Ok(empty) when it does not exist.
async fn fetch_partitions(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let (client, name) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        client.fetch_metadata(Some(&name), Duration::from_secs(5)).map(|m| {
            m.topics()
                .iter()
                .filter(|t| t.name() == name && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect::<Vec<i32>>()
        })
    })
    .await
    .expect("metadata task does not panic")
}

async fn existing_partitions(consumer: &Arc<StreamConsumer>, topic: &str) -> Option<Vec<i32>> {
    fetch_partitions(consumer, topic).await.ok().filter(|p| !p.is_empty())
}

/// Waits until the topic exists and has partitions, reporting the wait in /healthz.
async fn wait_for_partitions(
    consumer: &Arc<StreamConsumer>,
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
            Err(error) => health.fault(format!("cannot reach the brokers for topic {topic}: {error}")),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Publishes consumer lag per topic and partition, and broker reachability, every few seconds.
async fn report_lag(
    consumer: Arc<StreamConsumer>,
    topics: Vec<(String, Vec<i32>)>,
    positions: Positions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        let (client, wanted) = (consumer.clone(), topics.clone());
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
                health.connected();
                metrics.broker_connected.set(1);
                let positions = positions.lock().expect("positions lock").clone();
                for (t, p, low, high) in marks {
                    let next = positions.get(&(t.clone(), p)).copied().unwrap_or(low);
                    metrics.consumer_lag.with_label_values(&[t.as_str(), &p.to_string()]).set((high - next).max(0));
                }
            }
            Err(error) => {
                metrics.broker_connected.set(0);
                health.fault(format!("cannot read watermarks: {error}"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Sends a rejected message, unchanged, to the dead-letter topic with why and where it came from.
/// Retries until delivered: a reject is never dropped.
async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    message: &rdkafka::message::BorrowedMessage<'_>,
    rejection: &Rejection,
    source: &str,
    shutdown: &CancellationToken,
) {
    tracing::debug!(source, reason = rejection.reason.as_str(), detail = %rejection.detail, "rejected");
    let payload = message.payload().unwrap_or_default();
    loop {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "index766.reason", value: Some(rejection.reason.as_str()) })
            .insert(Header { key: "index766.detail", value: Some(rejection.detail.as_str()) })
            .insert(Header { key: "index766.source", value: Some(source) });
        let mut record = FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return,
            Err((error, _)) => {
                tracing::warn!(%error, topic, "dead-letter delivery failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
