//! Ad hoc SQL over the live view with DataFusion: read-only, bounded in time, memory and
//! concurrency, so a query can never disturb ingest or another user.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{writer::JsonArray, WriterBuilder};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use tokio::sync::{watch, Semaphore};

use crate::config::SqlConfig;
use crate::history::HistoryTables;
use crate::view::View;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("the query ran longer than the {0} s limit ([sql] timeout_secs); narrow it with WHERE or LIMIT")]
    Timeout(u64),
}

pub struct SqlService {
    /// (name, SELECT) of the views registered in every session.
    views: Vec<(String, String)>,
    /// The weekly history tables, as the snapshot writer last published them.
    history: watch::Receiver<Arc<HistoryTables>>,
    timeout: Duration,
    runtime: Arc<RuntimeEnv>,
    permits: Semaphore,
}

impl SqlService {
    pub fn new(config: &SqlConfig) -> Result<SqlService, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_mib << 20, 1.0)
            .build_arc()
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        Ok(SqlService {
            views: load_views(&config.views_dir)?,
            history: watch::channel(Arc::new(HistoryTables::new())).1,
            timeout: Duration::from_secs(config.timeout_secs),
            runtime,
            permits: Semaphore::new(config.max_concurrent),
        })
    }

    /// Serves the history tables published on `history` too.
    pub fn with_history(self, history: watch::Receiver<Arc<HistoryTables>>) -> SqlService {
        SqlService { history, ..self }
    }

    /// A session over the view's tables and the history, with the views registered.
    async fn session(&self, view: &View) -> Result<SessionContext, QueryError> {
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), self.runtime.clone());
        let history = self.history.borrow().clone();
        let tables = view.tables.iter().map(|(name, batch)| (*name, batch.schema(), vec![batch.clone()]));
        let history_tables = crate::history::TABLES.iter().map(|&(name, source)| {
            let kept = history.iter().find(|(n, _)| *n == name).map(|(_, b)| b.clone()).unwrap_or_default();
            // Before the first week is kept: empty, with the columns it will have.
            let schema = kept.first().map_or_else(|| crate::history::schema_for(view.table(source)), |b| b.schema());
            (name, schema, kept)
        });
        for (name, schema, batches) in tables.chain(history_tables) {
            let table = MemTable::try_new(schema, vec![batches]).map_err(|e| QueryError::Invalid(e.to_string()))?;
            ctx.register_table(name, Arc::new(table)).map_err(|e| QueryError::Invalid(e.to_string()))?;
        }
        for (name, body) in &self.views {
            ctx.sql(&format!("CREATE VIEW {name} AS {body}"))
                .await
                .map_err(|e| QueryError::Invalid(format!("view {name} (sql/views/{name}.sql): {e}")))?;
        }
        Ok(ctx)
    }

    /// Checks that every view plans against the tables of `view` (at start, so a broken view file
    /// stops the pipeline with its name rather than failing every query).
    pub async fn check_views(&self, view: &View) -> Result<(), QueryError> {
        self.session(view).await.map(|_| ())
    }

    /// Runs one read-only query against the view's tables.
    pub async fn query(&self, view: &View, sql: &str) -> Result<Results, QueryError> {
        let _permit = self.permits.acquire().await.expect("semaphore is never closed");
        let ctx = self.session(view).await?;
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let run = async {
            let frame = ctx.sql_with_options(sql, read_only).await?;
            let schema = frame.schema().inner().clone();
            Ok(Results { schema, batches: frame.collect().await? })
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result.map_err(|e| QueryError::Invalid(explain(e))),
            Err(_) => Err(QueryError::Timeout(self.timeout.as_secs())),
        }
    }
}

fn load_views(dir: &Path) -> Result<Vec<(String, String)>, QueryError> {
    if dir.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let unreadable = |e: std::io::Error| {
        QueryError::Invalid(format!("cannot read the views folder {}: {e} (set [sql] views_dir)", dir.display()))
    };
    let mut views = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let Some(name) =
            path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == "sql"))
        else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(QueryError::Invalid(format!(
                "view file {}: name it with letters, digits and _",
                path.display()
            )));
        }
        views.push((name.to_owned(), std::fs::read_to_string(&path).map_err(unreadable)?));
    }
    views.sort();
    Ok(views)
}

/// DataFusion's messages, with a hint where the user hit the read-only fence.
fn explain(error: datafusion::error::DataFusionError) -> String {
    let message = error.to_string();
    if message.contains("not supported")
        && (message.contains("DDL") || message.contains("DML") || message.contains("Statement"))
    {
        format!("{message} (index766 SQL is read-only: SELECT, WITH, EXPLAIN over the published tables)")
    } else {
        message
    }
}

/// A query's answer: its schema (known even when no row comes back) and its rows.
#[derive(Debug)]
pub struct Results {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// How results are written, chosen by the request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    ArrowIpc,
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    /// CSV for `text/csv`, Arrow IPC stream for `application/vnd.apache.arrow.stream`, else JSON.
    pub fn from_accept(accept: &str) -> Format {
        if accept.contains("text/csv") {
            Format::Csv
        } else if accept.contains(ARROW_STREAM) {
            Format::ArrowIpc
        } else {
            Format::Json
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::ArrowIpc => ARROW_STREAM,
        }
    }

    pub fn encode(self, results: &Results) -> Result<Vec<u8>, QueryError> {
        let failed = |e: datafusion::arrow::error::ArrowError| QueryError::Invalid(e.to_string());
        match self {
            Format::Json => to_json(&results.batches),
            Format::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
                if results.batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(results.schema.clone())).map_err(failed)?;
                }
                for batch in &results.batches {
                    writer.write(batch).map_err(failed)?;
                }
                Ok(writer.into_inner())
            }
            Format::ArrowIpc => {
                let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &results.schema)
                    .map_err(failed)?;
                for batch in &results.batches {
                    writer.write(batch).map_err(failed)?;
                }
                writer.into_inner().map_err(failed)
            }
        }
    }
}

/// Results as a JSON array of row objects, nulls written out.
pub fn to_json(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(|e| QueryError::Invalid(e.to_string()))?;
    writer.finish().map_err(|e| QueryError::Invalid(e.to_string()))?;
    let out = writer.into_inner();
    // The writer emits nothing at all for zero rows; an empty result is still a JSON array.
    Ok(if out.is_empty() { b"[]".to_vec() } else { out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{reception, state_at};
    use crate::units::Registry;

    fn view() -> View {
        let registry = Registry::parse("{\"code\":\"U1\",\"name\":\"Xã Một\",\"level\":\"commune\"}").unwrap();
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        state.apply(&reception("a", "D1", "2026-11-02T08:00:00+07:00", "2026-11-30T17:00:00+07:00"));
        View::build(Arc::new(registry), &crate::spec::tests::shipped(), 80.0, &state, &Default::default())
    }

    fn service() -> SqlService {
        let views = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/views");
        SqlService::new(&crate::config::Config::from_toml(&format!("[sql]\nviews_dir = {views:?}")).unwrap().sql)
            .unwrap()
    }

    #[tokio::test]
    async fn selects_over_the_live_tables() {
        let batches = service()
            .query(&view(), "SELECT unit_code, numerator, denominator, points FROM scores WHERE period = '2026-11' AND criterion = '2.1'")
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&to_json(&batches.batches).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!([{"unit_code": "U1", "numerator": 1, "denominator": 1, "points": 20.0}]));
        let empty = service().query(&view(), "SELECT * FROM dossiers WHERE false").await.unwrap();
        assert_eq!(to_json(&empty.batches).unwrap(), b"[]");
        let csv = String::from_utf8(Format::Csv.encode(&empty).unwrap()).unwrap();
        assert!(csv.starts_with("dossier_id,unit_code,"), "an empty CSV still has its header: {csv}");
        let rows = service().query(&view(), "SELECT unit_code, criterion, points FROM scores WHERE period = '2026-11' AND criterion IN ('1.4', '2.1') ORDER BY criterion").await.unwrap();
        assert_eq!(
            String::from_utf8(Format::Csv.encode(&rows).unwrap()).unwrap(),
            "unit_code,criterion,points\nU1,1.4,0.0\nU1,2.1,20.0\n"
        );
        let ipc = Format::ArrowIpc.encode(&rows).unwrap();
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
        let read: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(read, rows.batches);
        assert_eq!(Format::from_accept("text/csv"), Format::Csv);
        assert_eq!(Format::from_accept("*/*"), Format::Json);
    }

    #[tokio::test]
    async fn writes_and_ddl_are_refused_with_a_reason() {
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO units VALUES ('x','y',NULL,'commune',0)",
            "SET datafusion.execution.batch_size = 1",
            "DROP TABLE scores",
        ] {
            let err = service().query(&view(), sql).await.unwrap_err().to_string();
            assert!(err.contains("read-only") || err.contains("not supported"), "{sql}: {err}");
        }
        let err = service().query(&view(), "SELECT nope FROM scores").await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = service().query(&view(), "CREATE VIEW mine AS SELECT 1").await.unwrap_err().to_string();
        assert!(err.contains("read-only"), "users cannot add views: {err}");
    }
}
