//! The audit trail, as structured log lines (target `index766::audit`, fields as `key=value`;
//! `RUST_LOG=index766::audit=info` keeps only them): one `request` line for every HTTP request (who, the route, the
//! status, how long), one `query` line for every SQL query on either interface (who, the query's
//! text or its SHA-256 by `[access] audit_queries`, the rows sent, the outcome, how long), and one
//! `sign-in` line for every PostgreSQL login. Tokens and passwords never appear.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::config::AuditQueries;
use crate::serve::access::to_hex;

/// One query under way: who ran it, where, what; recorded once when it ends.
#[derive(Debug)]
pub struct Trail {
    pub principal: Option<String>,
    pub interface: &'static str,
    query: String,
    started: Instant,
}

impl Trail {
    pub fn new(principal: Option<&str>, interface: &'static str, query: &str, shown: AuditQueries) -> Trail {
        let query = match shown {
            AuditQueries::Text => query.to_owned(),
            AuditQueries::Hash => format!("sha256:{}", to_hex(&Sha256::digest(query.as_bytes()))),
        };
        Trail { principal: principal.map(str::to_owned), interface, query, started: Instant::now() }
    }

    /// The query ended: `outcome` is `ok`, `cut` (the client left or the deadline passed) or the
    /// error's class and message.
    pub fn ended(&self, rows: u64, outcome: &str) {
        tracing::info!(
            target: "index766::audit",
            kind = "query",
            principal = self.principal.as_deref().unwrap_or("-"),
            interface = self.interface,
            query = %self.query,
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
    }
}
