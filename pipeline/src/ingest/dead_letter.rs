//! The dead-letter topic: every message the pipeline will not (or not yet) count goes there
//! unchanged, with why (`index766.reason`, `index766.detail`), where it came from
//! (`index766.source` = topic/partition/offset) and what became of it (`index766.disposition`:
//! `dropped`, or `kept` for events held until their unit or procedure is known).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use index766_core::event::Rejection;

use crate::ingest::client::{is_authorization, report_refusal, Producer};
use crate::telemetry::health::Health;

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
pub(crate) struct DeadLetter {
    pub origin: Origin,
    pub rejection: Rejection,
}

/// Why dead letters were not all delivered.
#[derive(Debug, thiserror::Error)]
pub enum Undelivered {
    #[error("shutting down with dead letters not delivered")]
    ShuttingDown,
    /// Refused in a way no retry changes: the pipeline stops rather than wait forever.
    #[error("the dead-letter topic {topic} refuses the message from {from}: {error}; {fix}")]
    Refused { topic: String, from: String, error: Box<KafkaError>, fix: &'static str },
    #[error("cannot write the dead-letter file {}: {error}", path.display())]
    File { path: PathBuf, error: std::io::Error },
}

/// Where dead letters go: the dead-letter topic, or (for a replay of files) a JSON-lines file.
pub struct DeadLetters {
    sink: Sink,
}

enum Sink {
    Topic { producer: Producer, topic: String, health: Arc<Health> },
    File { path: PathBuf, out: Mutex<BufWriter<File>> },
}

/// A dead letter as a line of the dead-letter file: the headers of the topic form, then the
/// message itself.
#[derive(Serialize)]
struct FileLetter<'a> {
    source: String,
    reason: &'static str,
    detail: &'a str,
    disposition: &'static str,
    key: Option<std::borrow::Cow<'a, str>>,
    payload: std::borrow::Cow<'a, str>,
}

impl DeadLetters {
    /// A refusal to write (a missing ACL) is reported to `health` and retried.
    pub(crate) fn topic(producer: Producer, topic: String, health: Arc<Health>) -> DeadLetters {
        DeadLetters { sink: Sink::Topic { producer, topic, health } }
    }

    /// Appends to `path` (created if missing).
    pub fn file(path: &Path) -> std::io::Result<DeadLetters> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetters { sink: Sink::File { path: path.to_owned(), out: Mutex::new(BufWriter::new(file)) } })
    }

    /// Delivers every letter, each retried with backoff while the failure is one a retry can
    /// mend (a broker away, a full queue, a missing ACL someone will grant): a reject is never
    /// dropped. Gives up on shutdown, or on a refusal no retry changes (too large, no such
    /// topic). If not all were delivered, the caller must not let their offsets reach a
    /// snapshot, so they are read again after the restart.
    pub(crate) async fn deliver(
        &self,
        letters: &[DeadLetter],
        shutdown: &CancellationToken,
    ) -> Result<(), Undelivered> {
        if letters.is_empty() {
            return Ok(());
        }
        let (producer, topic, health) = match &self.sink {
            Sink::Topic { producer, topic, health } => (producer, topic, health),
            Sink::File { path, out } => return write_file(path, out, letters),
        };
        let results = futures::future::join_all(
            letters.iter().map(|letter| deliver_one(producer, topic, health, letter, shutdown)),
        )
        .await;
        let undelivered = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(why) => {
                tracing::error!(undelivered, topic, %why, "dead letters not delivered");
                Err(why)
            }
        }
    }
}

fn disposition(rejection: &Rejection) -> &'static str {
    if rejection.reason.is_kept() {
        "kept"
    } else {
        "dropped"
    }
}

/// Appends the letters and flushes them, so they are on disk before their offsets move on.
fn write_file(path: &Path, out: &Mutex<BufWriter<File>>, letters: &[DeadLetter]) -> Result<(), Undelivered> {
    let mut out = out.lock().expect("dead-letter file lock");
    let written = letters.iter().try_for_each(|DeadLetter { origin, rejection }| {
        let line = FileLetter {
            source: origin.source(),
            reason: rejection.reason.as_str(),
            detail: &rejection.detail,
            disposition: disposition(rejection),
            key: origin.key.as_deref().map(String::from_utf8_lossy),
            payload: String::from_utf8_lossy(&origin.payload),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    });
    written.and_then(|()| out.flush()).map_err(|error| Undelivered::File { path: path.to_owned(), error })
}

async fn deliver_one(
    producer: &Producer,
    topic: &str,
    health: &Health,
    letter: &DeadLetter,
    shutdown: &CancellationToken,
) -> Result<(), Undelivered> {
    let (origin, rejection) = (&letter.origin, &letter.rejection);
    let source = origin.source();
    let disposition = disposition(rejection);
    tracing::debug!(source, reason = rejection.reason.as_str(), detail = %rejection.detail, disposition, "dead letter");
    let mut backoff = Duration::from_secs(1);
    loop {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "index766.reason", value: Some(rejection.reason.as_str()) })
            .insert(Header { key: "index766.detail", value: Some(rejection.detail.as_str()) })
            .insert(Header { key: "index766.source", value: Some(source.as_str()) })
            .insert(Header { key: "index766.disposition", value: Some(disposition) });
        let mut record = FutureRecord::to(topic).payload(origin.payload.as_slice()).headers(headers);
        if let Some(key) = &origin.key {
            record = record.key(key.as_slice());
        }
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return Ok(()),
            Err((error, _)) => {
                if let Some(fix) = refusal(&error) {
                    return Err(Undelivered::Refused {
                        topic: topic.to_owned(),
                        from: source,
                        error: Box::new(error),
                        fix,
                    });
                }
                match is_authorization(&error) {
                    true => {
                        report_refusal(health, format!("the dead-letter topic {topic} refuses writes: {error}"), &error)
                    }
                    false => {
                        tracing::warn!(%error, topic, retry_in = ?backoff, "dead-letter delivery failed; retrying")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Undelivered::ShuttingDown),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What to fix, when the broker or the client refuses a letter in a way no retry changes.
fn refusal(error: &KafkaError) -> Option<&'static str> {
    use RDKafkaErrorCode::*;
    let KafkaError::MessageProduction(code) = error else { return None };
    Some(match code {
        MessageSizeTooLarge | MessageBatchTooLarge | InvalidRecord => {
            "raise the topic's max.message.bytes and the producer's message.max.bytes ([kafka] options) \
             above [ingest] max_event_bytes and the largest message of the input topics"
        }
        UnknownTopicOrPartition | UnknownTopic => "create the topic, or set [topics] dead_letter to one that exists",
        InvalidTopic => "set [topics] dead_letter to a valid topic name",
        _ => return None,
    })
}
