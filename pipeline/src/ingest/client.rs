//! The pipeline's Kafka clients: their settings (the `[kafka]` table, secrets read from their
//! files or variables) and what they report. librdkafka's own errors (credentials refused, a
//! certificate not trusted, every broker down) and the brokers' refusals (a missing ACL) reach
//! the log once and /healthz while they last, each with what to fix.

use std::sync::{Arc, Mutex};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::Config;
use crate::ingest::IngestError;
use crate::telemetry::health::Health;

pub(crate) type Consumer = StreamConsumer<Reporting>;
pub(crate) type Producer = FutureProducer<Reporting>;

/// A client configured from `[kafka]`; files and variables are read again for every client, so a
/// rotated secret is used from the next start on.
pub(crate) fn client_config(config: &Config) -> Result<ClientConfig, IngestError> {
    let mut client = ClientConfig::new();
    for (key, value) in config.kafka.resolved()? {
        client.set(key, value);
    }
    Ok(client)
}

/// A producer with the pipeline's client settings (less the consumers' own), reporting to `health`.
pub(crate) fn producer(config: &Config, health: &Arc<Health>) -> Result<Producer, IngestError> {
    producer_config(config)?.create_with_context(Reporting::new(health)).map_err(IngestError::Client)
}

/// The pipeline's client settings less the consumers' own.
pub(crate) fn producer_config(config: &Config) -> Result<ClientConfig, IngestError> {
    let mut client = client_config(config)?;
    client.remove("group.id").remove("isolation.level");
    Ok(client)
}

/// The context every client of the pipeline is made with: librdkafka's errors go to /healthz,
/// and to the log when they change (librdkafka repeats them at every reconnect).
#[derive(Clone)]
pub(crate) struct Reporting {
    health: Arc<Health>,
    last: Arc<Mutex<String>>,
}

impl Reporting {
    pub fn new(health: &Arc<Health>) -> Reporting {
        Reporting { health: health.clone(), last: Default::default() }
    }
}

impl ClientContext for Reporting {
    fn error(&self, error: KafkaError, reason: &str) {
        // "1/1 brokers are down" follows every failed connection: it would hide the cause.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            tracing::debug!(%error, "Kafka client: {reason}");
            return;
        }
        let message = match advice(&error, reason) {
            Some(fix) => format!("{reason} ({fix})"),
            None => reason.to_owned(),
        };
        // Logged when the kind of error changes, not at every reconnect (the words change:
        // librdkafka adds timings and counts).
        let kind = error.to_string();
        let mut last = self.last.lock().expect("client error lock");
        if *last != kind {
            tracing::warn!(%error, "Kafka client: {message}");
            *last = kind;
        }
        self.health.client_error(message);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        use RDKafkaLogLevel::*;
        // A failed connection also comes to `error`, with what to fix: not logged twice.
        if facility == "FAIL" {
            return tracing::debug!(facility, "librdkafka: {line}");
        }
        match level {
            Emerg | Alert | Critical | Error => tracing::error!(facility, "librdkafka: {line}"),
            Warning => tracing::warn!(facility, "librdkafka: {line}"),
            Notice | Info => tracing::info!(facility, "librdkafka: {line}"),
            Debug => tracing::debug!(facility, "librdkafka: {line}"),
        }
    }
}

impl ConsumerContext for Reporting {}

/// What to fix for the errors a deployment meets first (README: "Connecting to a secured
/// Kafka"); None when librdkafka's words say it all.
pub(crate) fn advice(error: &KafkaError, reason: &str) -> Option<&'static str> {
    use RDKafkaErrorCode::*;
    let code = error.rdkafka_error_code()?;
    Some(match code {
        Authentication | SaslAuthenticationFailed => {
            "the brokers refused the credentials: check [kafka] sasl.mechanism, sasl.username and sasl.password \
             (or the file or variable it comes from)"
        }
        SSL if reason.contains("certificate verify failed") => {
            "the brokers' certificate is not signed by a CA this client trusts: set [kafka] ssl.ca.location to \
             the CA that signed it"
        }
        SSL => {
            "the TLS handshake failed: check [kafka] security.protocol, ssl.ca.location and, for mutual TLS, \
             ssl.certificate.location and ssl.key.location"
        }
        TopicAuthorizationFailed => {
            "the brokers refuse this principal on the topic: grant it the ACLs in the README (READ and DESCRIBE \
             on the input topics, WRITE and DESCRIBE on the dead-letter and alert topics)"
        }
        GroupAuthorizationFailed => "grant the principal READ on the consumer group [kafka] group.id",
        ClusterAuthorizationFailed => "the principal needs no cluster ACL unless enable.idempotence is set",
        AllBrokersDown | BrokerTransportFailure => {
            "check [kafka] bootstrap.servers, that the brokers run, and that security.protocol matches their listener"
        }
        _ => return None,
    })
}

/// Reports a refusal of the brokers (see `is_authorization`) in /healthz until the pipeline
/// makes progress again, and in the log the first time it is seen.
pub(crate) fn report_refusal(health: &Health, what: String, error: &KafkaError) {
    let message = match advice(error, "") {
        Some(fix) => format!("{what} ({fix}); waiting"),
        None => format!("{what}; waiting"),
    };
    if health.blocked(message.clone()) {
        tracing::warn!("{message}");
    }
}

/// A refusal of the brokers that a retry mends once someone grants an ACL: the pipeline waits
/// (reporting it) rather than stop, so a deployment does not restart in a loop over it.
pub(crate) fn is_authorization(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(TopicAuthorizationFailed | GroupAuthorizationFailed | ClusterAuthorizationFailed)
    )
}
