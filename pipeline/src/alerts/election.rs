//! Which replica tells the alerts when several run (`[alerts.election] topic`): the member of a
//! consumer group on a one-partition topic that the group assigns the partition to. When it
//! dies, the group hands the partition to another member once the session times out. Kafka,
//! not a Kubernetes Lease: the pipeline already depends on the brokers, a plain server has no
//! Lease, and a transaction on the same brokers can fence the old sender.
//!
//! The same topic holds the shared alert log. The sender writes the whole log there in one
//! transaction with the alerts it tells on the alerts topic, under one transactional id for all
//! replicas. A new sender's first act fences the old one (its open transaction is aborted, its
//! later writes refused); it then writes a mark and reads the topic up to it, so it starts from
//! the last log its predecessor committed. An alert is thus on the alerts topic, and in the log,
//! exactly once. Every replica mirrors the log, so its `alerts` table and API answer alike.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Alert;
use crate::config::Config;
use crate::ingest::client::{client_config, producer_config, Producer, Reporting};
use crate::ingest::{fetch_partitions, IngestError};
use crate::telemetry::health::Health;

/// The record key of the whole log, and of a new sender's mark.
const LOG_KEY: &str = "log";
const MARK_KEY: &str = "takeover";
/// Kafka's transactions and the reading of the log up to a mark are given this long.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// What the mirror has read of the topic: the newest log and the newest mark.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mirrored {
    pub log: Arc<Vec<Alert>>,
    mark: Option<String>,
}

/// This replica's part in the election: whether it is assigned the partition, and the mirrored log.
pub(crate) struct Election {
    pub assigned: watch::Receiver<bool>,
    pub mirrored: watch::Receiver<Mirrored>,
    /// The transactional producer's settings, shared by every replica.
    producer: rdkafka::ClientConfig,
    health: Arc<Health>,
    topic: String,
    alerts_topic: Option<String>,
    /// Keeps the member and the mirror reading until the pipeline stops.
    _consumers: (Arc<StreamConsumer<Member>>, Arc<StreamConsumer<Reporting>>),
}

/// The group member's context: a rebalance that assigns or revokes the partition changes `assigned`.
struct Member {
    reporting: Reporting,
    assigned: watch::Sender<bool>,
}

impl ClientContext for Member {
    fn error(&self, error: KafkaError, reason: &str) {
        self.reporting.error(error, reason)
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, line: &str) {
        self.reporting.log(level, facility, line)
    }
}

impl ConsumerContext for Member {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Cooperative rebalances name only what changes: the one partition, or nothing.
            Rebalance::Assign(partitions) if partitions.count() > 0 => self.assigned.send_replace(true),
            Rebalance::Revoke(partitions) if partitions.count() > 0 => self.assigned.send_replace(false),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "alert sender election: the rebalance failed");
                return;
            }
            _ => return,
        };
        tracing::info!(sender = *self.assigned.borrow(), "alert sender election: rebalanced");
    }
}

impl Election {
    /// Joins the election and starts mirroring the log, both until `shutdown`. A topic of other
    /// than one partition is refused: each partition would elect a sender of its own.
    pub async fn join(
        config: &Config,
        health: &Arc<Health>,
        shutdown: &CancellationToken,
    ) -> Result<Election, IngestError> {
        let election = &config.alerts.election;
        let group = config.kafka.get("group.id").map_or("index766", String::as_str);
        let sender_id = format!("{group}.alert-sender");
        let (assigned_tx, assigned) = watch::channel(false);
        let member: StreamConsumer<Member> = client_config(config)?
            .set("group.id", &sender_id)
            // A rebalance (a replica joining) leaves the partition with the sender it has.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", election.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (election.session_timeout_ms / 5).max(100).to_string())
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .create_with_context(Member { reporting: Reporting::new(health), assigned: assigned_tx })
            .map_err(IngestError::Client)?;
        member.subscribe(&[&election.topic]).map_err(IngestError::Client)?;
        let mirror: StreamConsumer<Reporting> = client_config(config)?
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create_with_context(Reporting::new(health))
            .map_err(IngestError::Client)?;
        let mirror = Arc::new(mirror);
        match fetch_partitions(&mirror, &election.topic).await {
            Ok(partitions) if partitions.len() == 1 => {}
            Ok(partitions) => {
                return Err(IngestError::Settings(crate::config::ConfigError::Invalid(format!(
                    "[alerts.election] topic = {:?} has {} partitions: create it with exactly one (each partition would elect a sender)",
                    election.topic,
                    partitions.len()
                ))))
            }
            // The brokers are not reachable yet: the clients wait for them, as ingest does.
            Err(error) => tracing::warn!(%error, topic = election.topic, "alert sender election: cannot check the topic's partitions"),
        }
        let mut from_start = TopicPartitionList::new();
        from_start.add_partition_offset(&election.topic, 0, Offset::Beginning).map_err(IngestError::Client)?;
        mirror.assign(&from_start).map_err(IngestError::Client)?;
        let member = Arc::new(member);
        let (mirrored_tx, mirrored) = watch::channel(Mirrored::default());
        drop(tokio::spawn(take_part(member.clone(), shutdown.clone())));
        drop(tokio::spawn(keep_mirroring(mirror.clone(), mirrored_tx, shutdown.clone())));
        let mut producer = producer_config(config)?;
        producer.set("transactional.id", &sender_id);
        Ok(Election {
            assigned,
            mirrored,
            producer,
            health: health.clone(),
            topic: election.topic.clone(),
            alerts_topic: (!config.alerts.topic.is_empty()).then(|| config.alerts.topic.clone()),
            _consumers: (member, mirror),
        })
    }

    /// Becomes the sender: fences the one before, then reads the log up to its own mark.
    pub async fn take_over(&mut self) -> Result<(Sender, Vec<Alert>), KafkaError> {
        let producer: Producer = self.producer.create_with_context(Reporting::new(&self.health))?;
        let sender = Sender { producer, topic: self.topic.clone(), alerts_topic: self.alerts_topic.clone() };
        sender.blocking(|p| p.init_transactions(KAFKA_TIMEOUT)).await?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mark = format!("{}/{}", std::process::id(), nanos.as_nanos());
        sender.transaction(&[(MARK_KEY, mark.clone().into_bytes())], &[]).await?;
        let caught_up = self.mirrored.wait_for(|m| m.mark.as_deref() == Some(&mark));
        let log = match tokio::time::timeout(KAFKA_TIMEOUT, caught_up).await {
            Ok(Ok(mirrored)) => mirrored.log.to_vec(),
            _ => return Err(KafkaError::Canceled),
        };
        Ok((sender, log))
    }
}

/// The elected sender's transactional producer.
pub(crate) struct Sender {
    producer: Producer,
    topic: String,
    alerts_topic: Option<String>,
}

impl Sender {
    /// Writes the whole log and the alerts told, on their topics, in one transaction.
    pub async fn write(&self, log: &[Alert], told: &[&Alert]) -> Result<(), KafkaError> {
        let log = serde_json::to_vec(log).expect("alerts serialize");
        let alerts: Vec<(&str, Vec<u8>)> =
            told.iter().map(|a| (a.id.as_str(), serde_json::to_vec(a).expect("alerts serialize"))).collect();
        self.transaction(&[(LOG_KEY, log)], &alerts).await
    }

    /// One transaction: `records` on the election topic, `alerts` on the alerts topic (if any).
    /// A failure aborts it; a fatal one (fenced by a newer sender) leaves this sender unusable.
    async fn transaction(&self, records: &[(&str, Vec<u8>)], alerts: &[(&str, Vec<u8>)]) -> Result<(), KafkaError> {
        self.blocking(|p| p.begin_transaction()).await?;
        let on_topics = records.iter().map(|(key, bytes)| (self.topic.as_str(), key, bytes)).chain(
            self.alerts_topic.iter().flat_map(|t| alerts.iter().map(move |(key, bytes)| (t.as_str(), key, bytes))),
        );
        let sends = on_topics.map(|(topic, key, bytes)| {
            self.producer.send(FutureRecord::to(topic).key(*key).payload(bytes), KAFKA_TIMEOUT)
        });
        let sent: Result<Vec<_>, KafkaError> =
            futures::future::join_all(sends).await.into_iter().map(|r| r.map_err(|(error, _)| error)).collect();
        let committed = match sent {
            Ok(_) => self.blocking(|p| p.commit_transaction(KAFKA_TIMEOUT)).await,
            Err(error) => Err(error),
        };
        if committed.is_err() {
            // Fails when fenced (nothing to abort then: the broker has); the error said it all.
            let _ = self.blocking(|p| p.abort_transaction(KAFKA_TIMEOUT)).await;
        }
        committed
    }

    /// librdkafka's transaction calls block until the brokers answer: run off the async threads.
    async fn blocking(
        &self,
        call: impl FnOnce(&Producer) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || call(&producer)).await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// Polls the member, which keeps it in the group and runs its rebalances; its records (the log,
/// read by the mirror) are not needed here.
async fn take_part(member: Arc<StreamConsumer<Member>>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            polled = member.recv() => if let Err(error) = polled {
                tracing::warn!(%error, "alert sender election: polling the group failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
        }
    }
}

/// Reads the election topic from its start: each log record replaces the mirrored log.
async fn keep_mirroring(
    mirror: Arc<StreamConsumer<Reporting>>,
    mirrored: watch::Sender<Mirrored>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = mirror.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "alert log: reading the election topic failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let payload = message.payload().unwrap_or_default();
        match message.key() {
            Some(key) if key == LOG_KEY.as_bytes() => match serde_json::from_slice::<Vec<Alert>>(payload) {
                Ok(log) => {
                    mirrored.send_modify(|m| m.log = Arc::new(log));
                }
                // Written by a newer version or damaged: the next log record replaces it.
                Err(error) => tracing::error!(%error, offset = message.offset(), "alert log record not readable"),
            },
            Some(key) if key == MARK_KEY.as_bytes() => {
                let mark = String::from_utf8_lossy(payload).into_owned();
                mirrored.send_modify(|m| m.mark = Some(mark));
            }
            _ => tracing::warn!(offset = message.offset(), "election topic: a record of another kind, ignored"),
        }
    }
}
