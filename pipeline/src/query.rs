//! Ad hoc SQL over the live view with DataFusion: read-only, bounded in time, memory and
//! concurrency, so a query can never disturb ingest or another user.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{writer::JsonArray, WriterBuilder};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
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
    #[error("every query slot stayed busy for the {0} s limit ([sql] max_concurrent queries at once); try again")]
    Busy(u64),
}

impl QueryError {
    fn from_datafusion(error: datafusion::error::DataFusionError) -> QueryError {
        QueryError::Invalid(explain(error))
    }
}

/// Where the live tables come from: each query reads the newest value of each.
pub struct LiveSources {
    pub view: watch::Receiver<Arc<View>>,
    /// The daily and weekly history tables, as the snapshot writer last published them.
    pub history: watch::Receiver<Arc<HistoryTables>>,
    /// The alert log, as the alert engine last published it.
    pub alerts: watch::Receiver<Arc<Vec<crate::alerts::Alert>>>,
}

impl LiveSources {
    /// Sources that never change: one view, no history, no alerts (tests, golden files).
    pub fn fixed(view: View) -> LiveSources {
        LiveSources {
            view: watch::channel(Arc::new(view)).1,
            history: watch::channel(Arc::new(HistoryTables::new())).1,
            alerts: watch::channel(Arc::new(Vec::new())).1,
        }
    }
}

/// One DataFusion context shared by every query (HTTP and PostgreSQL): its tables are live (a
/// scan reads the newest published batch, so no copy and no per-query catalog), the views of
/// `sql/views` and PostgreSQL's `pg_catalog` are registered once.
pub struct SqlService {
    context: Arc<SessionContext>,
    limits: QueryLimits,
}

/// What bounds every query, whichever way it came in.
#[derive(Clone)]
pub struct QueryLimits {
    pub timeout: Duration,
    permits: Arc<Semaphore>,
}

impl QueryLimits {
    /// Waits for a free query slot ([sql] max_concurrent), within the time limit that starts now.
    /// The slot frees itself at the deadline even if its holder is never dropped: a client that
    /// stops reading, or a portal left suspended, cannot keep it.
    pub async fn admit(&self) -> Result<(Slot, tokio::time::Instant), QueryError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| QueryError::Busy(self.timeout.as_secs()))?
            .expect("semaphore is never closed");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        });
        Ok((Slot { _release: release }, deadline))
    }
}

/// A query's slot: released when dropped, or at the query's deadline.
pub struct Slot {
    _release: tokio::sync::oneshot::Sender<()>,
}

/// Statements that only read. Everything else (DDL, DML, COPY, SET, external tables) is refused.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

pub const READ_ONLY_HINT: &str = "index766 SQL is read-only: SELECT, WITH, EXPLAIN, SHOW over the published tables";

impl SqlService {
    pub async fn start(config: &SqlConfig, sources: LiveSources) -> Result<SqlService, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_mib << 20, 1.0)
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        let settings = SessionConfig::new().with_information_schema(true);
        let context = SessionContext::new_with_config_rt(settings, runtime);
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &context,
            "datafusion",
            Arc::new(datafusion_postgres::auth::AuthManager::default()),
        )
        .map_err(|e| QueryError::Invalid(format!("pg_catalog: {e}")))?;
        register_live_tables(&context, sources)?;
        for (name, body) in load_views(&config.views_dir)? {
            context
                .sql(&format!("CREATE VIEW {name} AS {body}"))
                .await
                .map_err(|e| QueryError::Invalid(format!("view {name} (sql/views/{name}.sql): {e}")))?;
        }
        let limits = QueryLimits {
            timeout: Duration::from_secs(config.timeout_secs),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
        };
        Ok(SqlService { context: Arc::new(context), limits })
    }

    pub fn context(&self) -> Arc<SessionContext> {
        self.context.clone()
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits.clone()
    }

    /// Plans and starts one read-only query; its rows stream from the returned `Rows`, within the
    /// time limit counted from now. The first batch is computed here, so most failures are
    /// reported before any row is sent.
    pub async fn query(&self, sql: &str) -> Result<Rows, QueryError> {
        let (slot, deadline) = self.limits.admit().await?;
        let timeout = self.limits.timeout.as_secs();
        let start = async {
            let frame = self.context.sql_with_options(sql, read_only()).await.map_err(QueryError::from_datafusion)?;
            let mut stream = frame.execute_stream().await.map_err(QueryError::from_datafusion)?;
            let first = stream.next().await.transpose().map_err(QueryError::from_datafusion)?;
            Ok::<_, QueryError>((stream, first))
        };
        let (stream, first) =
            tokio::time::timeout_at(deadline, start).await.map_err(|_| QueryError::Timeout(timeout))??;
        let done = first.is_none();
        Ok(Rows { schema: stream.schema(), first, stream, done, deadline, timeout, _slot: slot })
    }

    /// Runs a query to the end.
    pub async fn collect(&self, sql: &str) -> Result<Results, QueryError> {
        let mut rows = self.query(sql).await?;
        let schema = rows.schema.clone();
        let mut batches = Vec::new();
        while let Some(batch) = rows.next().await {
            batches.push(batch?);
        }
        Ok(Results { schema, batches })
    }
}

/// The rows of a running query, batch by batch; holds its query slot until dropped.
pub struct Rows {
    pub schema: SchemaRef,
    first: Option<RecordBatch>,
    stream: SendableRecordBatchStream,
    /// The stream has ended: it is not polled again.
    done: bool,
    deadline: tokio::time::Instant,
    timeout: u64,
    _slot: Slot,
}

impl Rows {
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let next = match tokio::time::timeout_at(self.deadline, self.stream.next()).await {
            Ok(next) => next.map(|batch| batch.map_err(QueryError::from_datafusion)),
            Err(_) => Some(Err(QueryError::Timeout(self.timeout))),
        };
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// A table whose rows are whatever `read` returns when a query scans it.
struct LiveTable {
    schema: SchemaRef,
    read: Box<dyn Fn() -> BoxFuture<'static, datafusion::error::Result<Vec<RecordBatch>>> + Send + Sync>,
}

impl LiveTable {
    /// A table whose newest batches are at hand.
    fn at_hand(schema: SchemaRef, read: impl Fn() -> Vec<RecordBatch> + Send + Sync + 'static) -> LiveTable {
        LiveTable { schema, read: Box::new(move || futures::future::ready(Ok(read())).boxed()) }
    }
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTable").field("schema", &self.schema).finish()
    }
}

#[async_trait::async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        MemTable::try_new(self.schema.clone(), vec![(self.read)().await?])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The view's tables, the daily and weekly history and the alerts, each read afresh by every scan.
fn register_live_tables(context: &SessionContext, sources: LiveSources) -> Result<(), QueryError> {
    let mut tables: Vec<(&str, LiveTable)> = Vec::new();
    let view = sources.view.borrow().clone();
    for (name, batches) in &view.tables {
        let (name, receiver) = (*name, sources.view.clone());
        tables.push((name, LiveTable::at_hand(batches[0].schema(), move || receiver.borrow().table(name).to_vec())));
    }
    let receiver = sources.view.clone();
    let read = move || {
        let view = receiver.borrow().clone();
        async move {
            let batch = view.dossiers().await.ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(
                    "the pipeline is stopping: dossiers are no longer served".into(),
                )
            })?;
            Ok(vec![batch])
        }
        .boxed()
    };
    tables.push(("dossiers", LiveTable { schema: crate::view::dossiers_schema(), read: Box::new(read) }));
    let history_tables = crate::history::CADENCES.iter().flat_map(|c| c.tables().iter().map(move |t| (c, t)));
    for (cadence, &(name, source)) in history_tables {
        // Before the first day is kept: empty, with the columns it will have.
        let schema = cadence.schema_for(&view.table(source)[0]);
        let (receiver, columns) = (sources.history.clone(), schema.clone());
        // Days kept under another layout (before an upgrade that changed the tables) are left
        // out until this layout's first day is kept, rather than failing every query.
        let read = move || {
            let history = receiver.borrow();
            let kept = history.iter().find(|(n, _)| *n == name).map(|(_, b)| b.as_slice()).unwrap_or_default();
            kept.iter().filter(|b| b.schema() == columns).cloned().collect()
        };
        tables.push((name, LiveTable::at_hand(schema, read)));
    }
    let receiver = sources.alerts.clone();
    let schema = crate::alerts::table(&[]).schema();
    tables.push(("alerts", LiveTable::at_hand(schema, move || vec![crate::alerts::table(&receiver.borrow())])));
    for (name, table) in tables {
        context.register_table(name, Arc::new(table)).map_err(QueryError::from_datafusion)?;
    }
    Ok(())
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
        format!("{message} ({READ_ONLY_HINT})")
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

    /// A writer of results in this format, batch by batch.
    pub fn encoder(self, schema: &SchemaRef) -> Result<Encoder, QueryError> {
        Ok(match self {
            Format::Json => Encoder::Json { opened: false, rows: false },
            Format::Csv => Encoder::Csv { schema: schema.clone(), header_written: false },
            Format::ArrowIpc => Encoder::ArrowIpc(Box::new(
                datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(arrow_failed)?,
            )),
        })
    }
}

fn arrow_failed(error: datafusion::arrow::error::ArrowError) -> QueryError {
    QueryError::Invalid(error.to_string())
}

/// Writes a result set piece by piece, so a large answer streams instead of being held whole.
pub enum Encoder {
    /// One JSON array of row objects across all batches.
    Json {
        opened: bool,
        rows: bool,
    },
    /// The header once, then rows.
    Csv {
        schema: SchemaRef,
        header_written: bool,
    },
    ArrowIpc(Box<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    /// The bytes that carry `batch`.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
        match self {
            Encoder::Json { opened, rows } => {
                let array = to_json(std::slice::from_ref(batch))?;
                let mut out = Vec::with_capacity(array.len() + 1);
                if !std::mem::replace(opened, true) {
                    out.push(b'[');
                }
                // The batch's own array without its brackets, joined to the rows before by a comma.
                let inner = &array[1..array.len() - 1];
                if !inner.is_empty() {
                    if std::mem::replace(rows, true) {
                        out.push(b',');
                    }
                    out.extend_from_slice(inner);
                }
                Ok(out)
            }
            Encoder::Csv { header_written, .. } => {
                let header = !std::mem::replace(header_written, true);
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(header).build(Vec::new());
                writer.write(batch).map_err(arrow_failed)?;
                Ok(writer.into_inner())
            }
            Encoder::ArrowIpc(writer) => {
                writer.write(batch).map_err(arrow_failed)?;
                Ok(std::mem::take(writer.get_mut()))
            }
        }
    }

    /// The closing bytes (an empty result still gets its `[]`, CSV header or Arrow schema).
    pub fn finish(mut self) -> Result<Vec<u8>, QueryError> {
        match &mut self {
            Encoder::Json { opened, .. } => Ok(if *opened { b"]".to_vec() } else { b"[]".to_vec() }),
            Encoder::Csv { schema, header_written: false } => {
                let empty = RecordBatch::new_empty(schema.clone());
                self.batch(&empty)
            }
            Encoder::Csv { .. } => Ok(Vec::new()),
            Encoder::ArrowIpc(writer) => {
                writer.finish().map_err(arrow_failed)?;
                Ok(std::mem::take(writer.get_mut()))
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

    async fn service() -> SqlService {
        service_over(LiveSources::fixed(view())).await
    }

    async fn service_over(sources: LiveSources) -> SqlService {
        let views = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/views");
        let config = crate::config::Config::from_toml(&format!("[sql]\nviews_dir = {views:?}")).unwrap();
        SqlService::start(&config.sql, sources).await.unwrap()
    }

    fn encode(format: Format, results: &Results) -> Vec<u8> {
        let mut encoder = format.encoder(&results.schema).unwrap();
        let mut out = Vec::new();
        for batch in &results.batches {
            out.extend(encoder.batch(batch).unwrap());
        }
        out.extend(encoder.finish().unwrap());
        out
    }

    #[tokio::test]
    async fn selects_over_the_live_tables() {
        let sql = service().await;
        let batches = sql
            .collect("SELECT unit_code, numerator, denominator, points FROM scores WHERE period = '2026-11' AND criterion = '2.1'")
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &batches)).unwrap();
        assert_eq!(json, serde_json::json!([{"unit_code": "U1", "numerator": 1, "denominator": 1, "points": 20.0}]));
        let empty = sql.collect("SELECT * FROM dossiers WHERE false").await.unwrap();
        assert_eq!(encode(Format::Json, &empty), b"[]");
        let csv = String::from_utf8(encode(Format::Csv, &empty)).unwrap();
        assert!(csv.starts_with("dossier_id,unit_code,"), "an empty CSV still has its header: {csv}");
        let rows = sql.collect("SELECT unit_code, criterion, points FROM scores WHERE period = '2026-11' AND criterion IN ('1.4', '2.1') ORDER BY criterion").await.unwrap();
        assert_eq!(
            String::from_utf8(encode(Format::Csv, &rows)).unwrap(),
            "unit_code,criterion,points\nU1,1.4,0.0\nU1,2.1,20.0\n"
        );
        let ipc = encode(Format::ArrowIpc, &rows);
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
        let read: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(read, rows.batches);
        assert_eq!(Format::from_accept("text/csv"), Format::Csv);
        assert_eq!(Format::from_accept("*/*"), Format::Json);
    }

    #[tokio::test]
    async fn json_and_csv_join_batches_into_one_answer() {
        let sql = service().await;
        let one = sql
            .collect("SELECT unit_code, criterion FROM scores WHERE period = '2026-11' AND criterion = '2.1'")
            .await
            .unwrap();
        let twice = Results {
            schema: one.schema.clone(),
            batches: vec![one.batches[0].clone(), RecordBatch::new_empty(one.schema.clone()), one.batches[0].clone()],
        };
        let json: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &twice)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
        assert_eq!(String::from_utf8(encode(Format::Csv, &twice)).unwrap(), "unit_code,criterion\nU1,2.1\nU1,2.1\n");
    }

    #[tokio::test]
    async fn history_of_another_layout_is_left_out_not_an_error() {
        let old_layout = RecordBatch::try_from_iter([(
            "week_start",
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![1])) as datafusion::arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut sources = LiveSources::fixed(view());
        sources.history = watch::channel(Arc::new(vec![("weekly_totals", vec![old_layout])])).1;
        let sql = service_over(sources).await;
        let rows = sql.collect("SELECT count(*) AS n FROM weekly_totals").await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &rows)).unwrap();
        assert_eq!(json, serde_json::json!([{"n": 0}]));
        sql.collect("SELECT * FROM week_over_week").await.expect("the view over it still plans and runs");
    }

    #[tokio::test]
    async fn writes_and_ddl_are_refused_with_a_reason() {
        let sql = service().await;
        for text in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO units VALUES ('x','y',NULL,'commune',0)",
            "SET datafusion.execution.batch_size = 1",
            "DROP TABLE scores",
            "COPY scores TO '/tmp/out.csv'",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        ] {
            let err = sql.collect(text).await.unwrap_err().to_string();
            assert!(err.contains("read-only"), "{text}: {err}");
        }
        let err = sql.collect("SELECT nope FROM scores").await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = sql.collect("CREATE VIEW mine AS SELECT 1").await.unwrap_err().to_string();
        assert!(err.contains("read-only"), "users cannot add views: {err}");
    }
}
