//! How a query fails, in classes that keep their meaning to the client: the query's fault
//! (HTTP 400), a limit or a busy server (503, 504), ours (500); each with its SQLSTATE.

use datafusion::error::DataFusionError;
use datafusion::prelude::SQLOptions;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query's own fault: it does not parse or plan (HTTP 400, SQLSTATE 42000 and kin).
    #[error("{0}")]
    Invalid(String),
    /// Not a read: DDL, DML, settings (HTTP 400, SQLSTATE 25006).
    #[error("{0}")]
    Refused(String),
    /// Past a bound on its size or on what it may make (HTTP 400, SQLSTATE 54000).
    #[error("{0}")]
    TooLarge(String),
    #[error("the query ran longer than the {0} s limit ([sql] timeout_secs); narrow it with WHERE or LIMIT")]
    Timeout(u64),
    #[error("every query slot stayed busy for the {0} s limit ([sql] max_concurrent queries at once); try again")]
    Busy(u64),
    /// One principal past its own share (HTTP 429, SQLSTATE 53300).
    #[error("{name} has {limit} queries running or waiting already ([sql] max_per_principal): let one finish, or close a cursor")]
    TooMany { name: String, limit: usize },
    /// Past the memory all queries share (HTTP 503, SQLSTATE 53200).
    #[error("{0}")]
    Memory(String),
    /// Ours, not the query's (HTTP 500, SQLSTATE XX000).
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    pub(crate) fn from_datafusion(error: DataFusionError) -> QueryError {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(_) => {
                QueryError::Memory(format!("{error} ([sql] memory_limit_mib, max_value_mib); narrow the query"))
            }
            DataFusionError::Internal(_) | DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
                QueryError::Internal(error.to_string())
            }
            _ => QueryError::Invalid(explain(error)),
        }
    }

    /// The SQLSTATE a PostgreSQL client is told.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Invalid(_) => "42000",
            QueryError::Refused(_) => "25006",  // read_only_sql_transaction
            QueryError::TooLarge(_) => "54000", // program_limit_exceeded
            QueryError::Timeout(_) => "57014",  // query_canceled
            QueryError::Busy(_) | QueryError::TooMany { .. } => "53300", // too_many_connections
            QueryError::Memory(_) => "53200",   // out_of_memory
            QueryError::Internal(_) => "XX000",
        }
    }
}

/// Statements that only read. Everything else (DDL, DML, COPY, SET, external tables) is refused.
pub(crate) fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

pub(crate) const READ_ONLY_HINT: &str =
    "index766 SQL is read-only: SELECT, WITH, EXPLAIN, SHOW over the published tables";

/// A statement that is not a read, refused with its verb named.
pub fn refused(statement: &str) -> QueryError {
    let verb = statement.split_whitespace().next().unwrap_or("").to_uppercase();
    QueryError::Refused(format!("{verb} refused: {READ_ONLY_HINT}; the engine's settings are fixed by the server"))
}

/// DataFusion's messages, with a hint where the user hit the read-only fence.
fn explain(error: datafusion::error::DataFusionError) -> String {
    let message = error.to_string();
    if message.contains("not supported")
        && (message.contains("DDL") || message.contains("DML") || message.contains("Statement"))
    {
        format!("{message} ({READ_ONLY_HINT})")
    } else {
        message
    }
}
