//! The audit trail: one `request` line for every HTTP request (who, the route, the status, how
//! long), one `query` line for every SQL query on either interface (who, the query's text or its
//! SHA-256 by `[sql] audit_queries`, the rows sent, the outcome, how long), and one `sign-in` line
//! for every PostgreSQL login. Each is a structured log line (target `index766::audit`, fields as
//! `key=value`; `RUST_LOG=index766::audit=info` keeps only them) and a row of the SQL table
//! `audit_log`, which only `admin` may read: kept in the store (`persist::audit_files`), flushed
//! every `[sql] audit_flush_secs` and at shutdown. Tokens and passwords never appear.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tokio_util::sync::CancellationToken;

use crate::config::AuditQueries;
use crate::persist::audit_files::AuditFiles;
use crate::serve::access::sha256_hex;
use crate::serve::sql_error::QueryError;

/// One line of the trail, as a row of `audit_log`.
#[derive(Debug)]
struct Line {
    at: chrono::DateTime<Utc>,
    kind: &'static str,
    principal: String,
    interface: &'static str,
    /// The query (or its hash), or the request's method and path; nothing for a sign-in.
    action: String,
    rows: Option<u64>,
    /// `ok`, `cut` or the error of a query; the status of a request; a sign-in's verdict.
    outcome: String,
    duration_ms: Option<u64>,
}

/// The lines since the last flush, and where flushes go (nowhere: kept in memory, for tests).
#[derive(Debug)]
pub struct AuditLog {
    newest: Mutex<Vec<Line>>,
    files: Option<AuditFiles>,
}

impl AuditLog {
    pub fn new(files: Option<AuditFiles>) -> Arc<AuditLog> {
        Arc::new(AuditLog { newest: Mutex::new(Vec::new()), files })
    }

    fn keep(&self, line: Line) {
        self.newest.lock().expect("never poisoned").push(line);
    }

    /// An HTTP request answered.
    pub fn request(&self, principal: Option<&str>, method: &str, path: &str, status: u16, started: Instant) {
        let (principal, duration_ms) = (principal.unwrap_or("-"), started.elapsed().as_millis() as u64);
        tracing::info!(
            target: "index766::audit",
            kind = "request",
            principal,
            interface = "http",
            method,
            path,
            status,
            duration_ms,
        );
        self.keep(Line {
            at: Utc::now(),
            kind: "request",
            principal: principal.into(),
            interface: "http",
            action: format!("{method} {path}"),
            rows: None,
            outcome: status.to_string(),
            duration_ms: Some(duration_ms),
        });
    }

    /// A PostgreSQL login admitted or refused.
    pub fn sign_in(&self, user: &str, outcome: &str) {
        tracing::info!(target: "index766::audit", kind = "sign-in", principal = user, interface = "postgres", outcome);
        self.keep(Line {
            at: Utc::now(),
            kind: "sign-in",
            principal: user.into(),
            interface: "postgres",
            action: String::new(),
            rows: None,
            outcome: outcome.into(),
            duration_ms: None,
        });
    }

    /// Writes the lines since the last flush as one file; on failure they stay for the next.
    pub async fn flush(&self) -> std::io::Result<()> {
        let Some(files) = &self.files else { return Ok(()) };
        let lines = std::mem::take(&mut *self.newest.lock().expect("never poisoned"));
        if lines.is_empty() {
            return Ok(());
        }
        let written = files.write(&table(&lines), Utc::now()).await;
        if written.is_err() {
            let mut newest = self.newest.lock().expect("never poisoned");
            newest.splice(0..0, lines);
        }
        written
    }

    /// Flushes every `every` until `shutdown` (the last flush is `Pipeline::wait`'s).
    pub async fn keep_flushing(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "audit lines not written to the store; they are kept for the next try");
            }
        }
    }

    /// Every line kept, then the newest: the rows of `audit_log`.
    pub async fn batches(&self) -> std::io::Result<Vec<RecordBatch>> {
        let mut batches = match &self.files {
            Some(files) => files.read().await?,
            None => Vec::new(),
        };
        batches.push(table(&self.newest.lock().expect("never poisoned")));
        Ok(batches)
    }
}

/// The columns of `audit_log`.
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        text("kind"),
        text("principal"),
        text("interface"),
        text("action"),
        Field::new("rows", DataType::UInt64, true),
        text("outcome"),
        Field::new("duration_ms", DataType::UInt64, true),
    ]))
}

fn table(lines: &[Line]) -> RecordBatch {
    let text = |field: fn(&Line) -> &str| Arc::new(StringArray::from_iter_values(lines.iter().map(field)));
    let at = TimestampMicrosecondArray::from_iter_values(lines.iter().map(|l| l.at.timestamp_micros()));
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(at.with_timezone("UTC")),
            text(|l| l.kind),
            text(|l| &l.principal),
            text(|l| l.interface),
            text(|l| &l.action),
            Arc::new(UInt64Array::from_iter(lines.iter().map(|l| l.rows))),
            text(|l| &l.outcome),
            Arc::new(UInt64Array::from_iter(lines.iter().map(|l| l.duration_ms))),
        ],
    )
    .expect("columns as the schema says")
}

/// One query under way: who ran it, where, what; recorded once when it ends.
#[derive(Debug)]
pub struct Trail {
    log: Arc<AuditLog>,
    principal: Option<String>,
    interface: &'static str,
    query: String,
    hashed: bool,
    started: Instant,
}

impl Trail {
    pub fn new(
        log: Arc<AuditLog>,
        principal: Option<&str>,
        interface: &'static str,
        query: &str,
        shown: AuditQueries,
    ) -> Trail {
        let query = match shown {
            AuditQueries::Text => query.to_owned(),
            AuditQueries::Hash => format!("sha256:{}", sha256_hex(query)),
        };
        let hashed = shown == AuditQueries::Hash;
        Trail { log, principal: principal.map(str::to_owned), interface, query, hashed, started: Instant::now() }
    }

    /// A failed query's outcome: the error's message, or only its SQLSTATE when queries are kept
    /// hashed (a message quotes the names and values the query held).
    pub fn failure(&self, error: &QueryError) -> String {
        match self.hashed {
            true => format!("error: SQLSTATE {}", error.sqlstate()),
            false => format!("error: {error}"),
        }
    }

    /// The query failed before any row.
    pub fn failed(&self, error: &QueryError) {
        self.ended(0, &self.failure(error));
    }

    /// The query ended: `outcome` is `ok`, `cut` (the client left or the deadline passed) or the
    /// error's class and message.
    pub fn ended(&self, rows: u64, outcome: &str) {
        let (principal, duration_ms) =
            (self.principal.as_deref().unwrap_or("-"), self.started.elapsed().as_millis() as u64);
        tracing::info!(
            target: "index766::audit",
            kind = "query",
            principal,
            interface = self.interface,
            // Quoted and escaped like every field: a newline in a query cannot forge a line.
            query = self.query.as_str(),
            rows,
            outcome,
            duration_ms,
        );
        self.log.keep(Line {
            at: Utc::now(),
            kind: "query",
            principal: principal.into(),
            interface: self.interface,
            action: self.query.clone(),
            rows: Some(rows),
            outcome: outcome.into(),
            duration_ms: Some(duration_ms),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_trail_keeps_the_query_s_sha256_and_not_its_text() {
        let text = "SELECT * FROM dossiers WHERE unit_code = 'H44.01'";
        let log = AuditLog::new(None);
        let hashed = Trail::new(log.clone(), Some("hoa"), "http", text, AuditQueries::Hash);
        assert!(hashed.query.starts_with("sha256:") && !hashed.query.contains("H44.01"), "{}", hashed.query);
        assert_eq!(
            hashed.query,
            Trail::new(log.clone(), None, "postgres", text, AuditQueries::Hash).query,
            "the same query, the same hash"
        );
        assert_eq!(Trail::new(log, None, "http", text, AuditQueries::Text).query, text);
        let error = QueryError::Invalid("column 'H44.01' not found".into());
        assert!(!hashed.failure(&error).contains("H44.01"), "{}", hashed.failure(&error));
    }
}
