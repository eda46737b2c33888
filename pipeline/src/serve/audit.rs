//! The audit trail, as structured log lines (target `index766::audit`, fields as `key=value`;
//! `RUST_LOG=index766::audit=info` keeps only them): one `request` line for every HTTP request (who, the route, the
//! status, how long), one `query` line for every SQL query on either interface (who, the query's
//! text or its SHA-256 by `[sql] audit_queries`, the rows sent, the outcome, how long), and one
//! `sign-in` line for every PostgreSQL login. Tokens and passwords never appear.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::config::AuditQueries;
use crate::serve::access::to_hex;
use crate::serve::sql_error::QueryError;

/// One query under way: who ran it, where, what; recorded once when it ends.
#[derive(Debug)]
pub struct Trail {
    principal: Option<String>,
    interface: &'static str,
    query: String,
    hashed: bool,
    started: Instant,
}

impl Trail {
    pub fn new(principal: Option<&str>, interface: &'static str, query: &str, shown: AuditQueries) -> Trail {
        let query = match shown {
            AuditQueries::Text => query.to_owned(),
            AuditQueries::Hash => format!("sha256:{}", to_hex(&Sha256::digest(query.as_bytes()))),
        };
        let hashed = shown == AuditQueries::Hash;
        Trail { principal: principal.map(str::to_owned), interface, query, hashed, started: Instant::now() }
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
        tracing::info!(
            target: "index766::audit",
            kind = "query",
            principal = self.principal.as_deref().unwrap_or("-"),
            interface = self.interface,
            // Quoted and escaped like every field: a newline in a query cannot forge a line.
            query = self.query.as_str(),
            rows,
            outcome,
            duration_ms = self.started.elapsed().as_millis() as u64,
        );
    }
}

/// An HTTP request answered.
pub fn request(principal: Option<&str>, method: &str, path: &str, status: u16, started: Instant) {
    tracing::info!(
        target: "index766::audit",
        kind = "request",
        principal = principal.unwrap_or("-"),
        interface = "http",
        method,
        path,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
    );
}

/// A PostgreSQL login admitted or refused.
pub fn sign_in(user: &str, outcome: &str) {
    tracing::info!(target: "index766::audit", kind = "sign-in", principal = user, interface = "postgres", outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_trail_keeps_the_query_s_sha256_and_not_its_text() {
        let text = "SELECT * FROM dossiers WHERE unit_code = 'H44.01'";
        let hashed = Trail::new(Some("hoa"), "http", text, AuditQueries::Hash);
        assert!(hashed.query.starts_with("sha256:") && !hashed.query.contains("H44.01"), "{}", hashed.query);
        assert_eq!(
            hashed.query,
            Trail::new(None, "postgres", text, AuditQueries::Hash).query,
            "the same query, the same hash"
        );
        assert_eq!(Trail::new(None, "http", text, AuditQueries::Text).query, text);
        let error = QueryError::Invalid("column 'H44.01' not found".into());
        assert!(!hashed.failure(&error).contains("H44.01"), "{}", hashed.failure(&error));
    }
}
