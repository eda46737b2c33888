//! The Kafka source: reads the events topic from explicitly assigned partitions, decodes and
//! validates each message, sends rejects to the dead-letter topic, and hands decoded events to
//! the state in bounded batches (a full queue blocks the consumer: backpressure, never loss).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StartFrom};
use crate::event::{decode, DossierEvent, Rejection};
use crate::health::Health;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot create the Kafka client: {0} (check the [kafka] table of the config)")]
    Client(rdkafka::error::KafkaError),
    #[error("cannot assign the partitions of {topic}: {source}")]
    Assign { topic: String, source: rdkafka::error::KafkaError },
}

/// Decoded events, and for each partition they came from the next offset to read.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<DossierEvent>,
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Where each assigned partition stands: next offset to read (shared with the lag reporter).
type Positions = Arc<Mutex<BTreeMap<i32, i64>>>;

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

    let Some(partitions) = wait_for_partitions(&consumer, &topic, &health, &shutdown).await else {
        return Ok(());
    };
    let start = match config.ingest.start_from {
        StartFrom::Earliest => Offset::Beginning,
        StartFrom::Latest => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        assignment
            .add_partition_offset(&topic, p, start)
            .map_err(|source| IngestError::Assign { topic: topic.clone(), source })?;
    }
    consumer.assign(&assignment).map_err(|source| IngestError::Assign { topic: topic.clone(), source })?;
    tracing::info!(topic, partitions = partitions.len(), start_from = reset, "assigned");

    let positions: Positions = Arc::new(Mutex::new(BTreeMap::new()));
    let lag_reporter = tokio::spawn(report_lag(
        consumer.clone(),
        topic.clone(),
        partitions,
        positions.clone(),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let linger = Duration::from_millis(config.ingest.batch_linger_ms);
    let max_events = config.ingest.batch_max_events;
    let max_bytes = config.ingest.max_event_bytes;
    'consume: loop {
        let mut batch = Batch::default();
        let mut deadline = None;
        while batch.events.len() < max_events {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break 'consume,
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
            let payload = message.payload().unwrap_or_default();
            metrics.events_consumed.inc();
            metrics.bytes_consumed.inc_by(payload.len() as u64);
            batch.next_offsets.insert(message.partition(), message.offset() + 1);
            match decode(payload, message.key(), max_bytes) {
                Ok(event) => batch.events.push(event),
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
        positions.lock().expect("positions lock").extend(batch.next_offsets.iter().map(|(&p, &o)| (p, o)));
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

/// Waits until the topic exists and has partitions, reporting the wait in /healthz.
async fn wait_for_partitions(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<i32>> {
    loop {
        let (client, name) = (consumer.clone(), topic.to_owned());
        let metadata = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(Some(&name), Duration::from_secs(5)).map(|m| {
                m.topics()
                    .iter()
                    .filter(|t| t.name() == name && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect::<Vec<i32>>()
            })
        })
        .await
        .expect("metadata task does not panic");
        match metadata {
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

/// Publishes consumer lag per partition and broker reachability every few seconds.
async fn report_lag(
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
    positions: Positions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        let (client, name, parts) = (consumer.clone(), topic.clone(), partitions.clone());
        let watermarks = tokio::task::spawn_blocking(move || {
            parts
                .iter()
                .map(|&p| client.fetch_watermarks(&name, p, Duration::from_secs(5)).map(|(low, high)| (p, low, high)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .expect("watermark task does not panic");
        match watermarks {
            Ok(marks) => {
                health.connected();
                metrics.broker_connected.set(1);
                let positions = positions.lock().expect("positions lock").clone();
                for (p, low, high) in marks {
                    let next = positions.get(&p).copied().unwrap_or(low);
                    metrics.consumer_lag.with_label_values(&[&p.to_string()]).set((high - next).max(0));
                }
            }
            Err(error) => {
                metrics.broker_connected.set(0);
                health.fault(format!("cannot read watermarks of {topic}: {error}"));
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
