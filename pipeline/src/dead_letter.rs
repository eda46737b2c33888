//! The dead-letter topic: every message the pipeline will not (or not yet) count goes there
//! unchanged, with why (`index766.reason`, `index766.detail`), where it came from
//! (`index766.source` = topic/partition/offset) and what became of it (`index766.disposition`:
//! `dropped`, or `kept` for events held until their unit or procedure is known).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::event::Rejection;

/// Where a message came from, and its bytes, kept until the message is counted or dead-lettered.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Origin {
    pub fn source(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub origin: Origin,
    pub rejection: Rejection,
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: String) -> DeadLetters {
        DeadLetters { producer, topic }
    }

    /// Delivers every letter, each retried until the broker acknowledges it: a reject is never
    /// dropped. Gives up only on shutdown; returns whether all were delivered (if not, the caller
    /// must not let their offsets reach a snapshot, so they are read again after the restart).
    pub async fn deliver(&self, letters: &[DeadLetter], shutdown: &CancellationToken) -> bool {
        let undelivered =
            futures::future::join_all(letters.iter().map(|letter| self.deliver_one(letter, shutdown))).await;
        let undelivered = undelivered.into_iter().filter(|delivered| !delivered).count();
        if undelivered > 0 {
            tracing::error!(undelivered, topic = self.topic, "shutting down with dead letters not delivered");
        }
        undelivered == 0
    }

    async fn deliver_one(&self, letter: &DeadLetter, shutdown: &CancellationToken) -> bool {
        let (origin, rejection) = (&letter.origin, &letter.rejection);
        let source = origin.source();
        let disposition = if rejection.reason.is_kept() { "kept" } else { "dropped" };
        tracing::debug!(source, reason = rejection.reason.as_str(), detail = %rejection.detail, disposition, "dead letter");
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "index766.reason", value: Some(rejection.reason.as_str()) })
                .insert(Header { key: "index766.detail", value: Some(rejection.detail.as_str()) })
                .insert(Header { key: "index766.source", value: Some(source.as_str()) })
                .insert(Header { key: "index766.disposition", value: Some(disposition) });
            let mut record = FutureRecord::to(&self.topic).payload(origin.payload.as_slice()).headers(headers);
            if let Some(key) = &origin.key {
                record = record.key(key.as_slice());
            }
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => return true,
                Err((error, _)) => {
                    tracing::warn!(%error, topic = self.topic, "dead-letter delivery failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}
