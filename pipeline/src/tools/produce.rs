//! Writing dossier events to a broker with the project's own client: used by `generate`, the
//! demo, and the tests. Deliveries are confirmed: `finish` reports any message the broker refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use index766_core::event::WireEvent;

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    delivered: AtomicU64,
}

#[derive(Clone, Default)]
struct CountingContext(Arc<Deliveries>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() { &self.0.delivered } else { &self.0.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create a producer for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("producing to {topic}: {source}")]
    Send { topic: String, source: KafkaError },
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic { topic: String, source: KafkaError },
    #[error("{failed} of {sent} messages were not delivered to {topic} (does the topic exist? is the broker up?)")]
    Undelivered { topic: String, failed: u64, sent: u64 },
}

/// Creates each topic with `partitions` partitions unless it exists already.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), ProduceError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|source| ProduceError::Client { brokers: brokers.into(), source })?;
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(&new, &options)
        .await
        .map_err(|source| ProduceError::CreateTopic { topic: topics.join(", "), source })?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(ProduceError::CreateTopic { topic, source: KafkaError::AdminOp(code) }),
        }
    }
    Ok(())
}

pub struct EventProducer {
    producer: ThreadedProducer<CountingContext>,
    context: CountingContext,
    topic: String,
    sent: u64,
}

impl EventProducer {
    pub fn new(brokers: &str, topic: &str) -> Result<EventProducer, ProduceError> {
        Self::with(ClientConfig::new().set("linger.ms", "20").set("compression.type", "lz4"), brokers, topic)
    }

    pub fn with(config: &mut ClientConfig, brokers: &str, topic: &str) -> Result<EventProducer, ProduceError> {
        let context = CountingContext::default();
        let producer = config
            .set("bootstrap.servers", brokers)
            .create_with_context(context.clone())
            .map_err(|source| ProduceError::Client { brokers: brokers.into(), source })?;
        Ok(EventProducer { producer, context, topic: topic.into(), sent: 0 })
    }

    /// Sends one event keyed by its dossier id; waits for room when librdkafka's queue is full.
    pub fn send(&mut self, event: &WireEvent) -> Result<(), ProduceError> {
        let payload = serde_json::to_vec(event).expect("events serialise");
        self.send_raw(event.dossier_id.as_bytes(), &payload)
    }

    /// Sends arbitrary bytes (tests use it for malformed input).
    pub fn send_raw(&mut self, key: &[u8], payload: &[u8]) -> Result<(), ProduceError> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => return Err(ProduceError::Send { topic: self.topic.clone(), source }),
            }
        }
    }

    /// Waits until every message is acknowledged; fails if any was not.
    pub fn finish(&self) -> Result<u64, ProduceError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|source| ProduceError::Send { topic: self.topic.clone(), source })?;
        let failed = self.context.0.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(ProduceError::Undelivered { topic: self.topic.clone(), failed, sent: self.sent });
        }
        Ok(self.context.0.delivered.load(Ordering::Relaxed))
    }
}
