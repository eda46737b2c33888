//! Ad hoc SQL over the live view with DataFusion: read-only, bounded in time, memory and
//! concurrency, so a query can never disturb ingest or another user.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{writer::JsonArray, WriterBuilder};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::alerts::restatements::{self, Restatement};
use crate::config::SqlConfig;
use crate::engine::view::View;
use crate::persist::history::HistoryTables;
use crate::serve::access::{Principal, Role};
use crate::serve::audit::{AuditLog, Trail};
use crate::serve::scope::Scope;
use crate::serve::sql_error::{refused, QueryError};
use crate::serve::sql_fence::Bounds;

/// Where the live tables come from: each query reads the newest value of each.
pub struct LiveSources {
    pub view: watch::Receiver<Arc<View>>,
    /// The daily and weekly history tables, as the snapshot writer last published them.
    pub history: watch::Receiver<Arc<HistoryTables>>,
    /// The alert log, as the alert engine last published it.
    pub alerts: watch::Receiver<Arc<Vec<crate::alerts::Alert>>>,
    /// The restatements of closed periods, as last recorded.
    pub restatements: watch::Receiver<Arc<Vec<Restatement>>>,
    /// The audit trail, which every query adds to and `audit_log` reads.
    pub audit: Arc<AuditLog>,
}

impl LiveSources {
    /// Sources that never change: one view, no history, no alerts (tests, golden files).
    pub fn fixed(view: View) -> LiveSources {
        LiveSources {
            view: watch::channel(Arc::new(view)).1,
            history: watch::channel(Arc::new(HistoryTables::new())).1,
            alerts: watch::channel(Arc::new(Vec::new())).1,
            restatements: watch::channel(Arc::new(Vec::new())).1,
            audit: AuditLog::new(None),
        }
    }
}

/// One DataFusion context shared by every query (HTTP and PostgreSQL): its tables are live (a
/// scan reads the newest published batch, so no copy and no per-query catalog), the views of
/// `sql/views` and PostgreSQL's `pg_catalog` are registered once. Queries are parsed, planned and
/// run on threads of their own (`SqlThreads`), never on the workers that serve HTTP and ingest.
pub struct SqlService {
    context: Arc<SessionContext>,
    /// The newest view, for the unit tree a principal's scope is drawn from.
    view: watch::Receiver<Arc<View>>,
    threads: SqlThreads,
    bounds: Bounds,
    timeout: Duration,
    permits: Arc<Semaphore>,
    /// Each signed-in principal's share of queries running or waiting ([sql] max_per_principal).
    shares: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    max_per_principal: usize,
    /// What the audit trail keeps of each query's text.
    audit_queries: crate::config::AuditQueries,
    audit: Arc<AuditLog>,
    running: prometheus::IntGauge,
}

/// A query's admission: its slot ([sql] max_concurrent) and its deadline. Whoever does the
/// query's work holds a clone, so the slot stays taken until planning has stopped and the result
/// stream is dropped, even when the client has long gone.
#[derive(Clone)]
pub struct Ticket {
    _slot: Arc<Slot>,
    pub deadline: Deadline,
    /// The units the query may read; `None`: all.
    scope: Option<Scope>,
    clearance: Clearance,
}

/// Whether a query may read the tables only `admin` may (`audit_log`): every query's session
/// says, and a table for admins reads nothing without it.
#[derive(Debug, Clone, Copy)]
struct Clearance {
    admin: bool,
}

impl Ticket {
    /// The same admission, reading only the subtree of `root` (and only what it read before).
    fn narrowed(self, registry: &index766_core::units::Registry, root: &str) -> Ticket {
        let scope = Scope::narrowed(self.scope.as_ref(), registry, root);
        Ticket { scope: Some(scope), ..self }
    }
}

/// When a query must have sent its last row: [sql] timeout_secs after its admission.
#[derive(Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    secs: u64,
}

impl Deadline {
    pub fn error(&self) -> QueryError {
        QueryError::Timeout(self.secs)
    }

    /// The error, once the deadline has passed.
    pub fn check(&self) -> Result<(), QueryError> {
        match tokio::time::Instant::now() < self.at {
            true => Ok(()),
            false => Err(self.error()),
        }
    }
}

/// A taken query slot, shown in `index766_sql_queries_running` while it is held, and the
/// principal's share it counts against.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _own: Option<OwnedSemaphorePermit>,
    running: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// The tokio runtime that plans and runs queries: a few threads with stacks large enough for
/// any query the bounds let through, at a lower CPU priority than ingest and the HTTP workers.
struct SqlThreads(Option<tokio::runtime::Runtime>);

/// Room for parsing and planning the deepest expression `max_expression_depth` and
/// `max_query_bytes` allow (only the pages touched are ever resident).
const SQL_THREAD_STACK: usize = 256 << 20;

impl SqlThreads {
    fn start(threads: usize) -> Result<SqlThreads, QueryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(threads)
            .thread_name("index766-sql")
            .thread_stack_size(SQL_THREAD_STACK)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the SQL threads: {e}")))?;
        Ok(SqlThreads(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for SqlThreads {
    fn drop(&mut self) {
        // Dropped from async code too: shutting down must not block a worker.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A heavy query takes the CPU ingest would otherwise get only when ingest does not want it.
fn lower_priority() {
    // SAFETY: setpriority with who = 0 changes only the calling thread's nice value (Linux).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// What one statement of a PostgreSQL client asks for, decided before anything runs.
pub(crate) enum Classified {
    /// A read, planned and checked: run it.
    Read(LogicalPlan),
    /// `DECLARE name CURSOR FOR <read>`, planned and checked.
    Declare { name: String, plan: LogicalPlan },
    /// `FETCH` or `CLOSE` of a cursor of this connection.
    Cursor,
    /// A per-connection setting, `SHOW`, or transaction control: touches nothing shared.
    Session,
}

/// Client session variables datafusion-postgres keeps per connection; every other `SET` (engine
/// settings, the time zone) would change the context all users share.
const SESSION_VARIABLES: [&str; 8] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "client_encoding",
];

impl SqlService {
    /// `running` counts the query slots taken.
    pub async fn start(
        config: &SqlConfig,
        sources: LiveSources,
        running: prometheus::IntGauge,
    ) -> Result<SqlService, QueryError> {
        let memory = config.memory_limit_mib << 20;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory, 1.0)
            // Spill files of sorts and joins are bounded like memory.
            .with_max_temp_directory_size(memory as u64)
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        let settings = SessionConfig::new().with_information_schema(true);
        let context = SessionContext::new_with_config_rt(settings, runtime);
        let bounds = Bounds {
            max_query_bytes: config.max_query_bytes,
            max_expression_depth: config.max_expression_depth,
            max_plan_nodes: config.max_plan_nodes,
            max_value_bytes: config.max_value_mib << 20,
        };
        crate::serve::sql_fence::cap_functions(&context, bounds.max_value_bytes);
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &context,
            "datafusion",
            Arc::new(datafusion_postgres::auth::AuthManager::default()),
        )
        .map_err(|e| QueryError::Internal(format!("pg_catalog: {e}")))?;
        let (view, audit) = (sources.view.clone(), sources.audit.clone());
        register_live_tables(&context, sources)?;
        for (name, body) in load_views(&config.views_dir)? {
            context
                .sql(&format!("CREATE VIEW {name} AS {body}"))
                .await
                .map_err(|e| QueryError::Invalid(format!("view {name} (sql/views/{name}.sql): {e}")))?;
        }
        Ok(SqlService {
            context: Arc::new(context),
            view,
            threads: SqlThreads::start(config.threads)?,
            bounds,
            timeout: Duration::from_secs(config.timeout_secs),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            shares: Default::default(),
            max_per_principal: config.max_per_principal,
            audit_queries: config.audit_queries,
            audit,
            running,
        })
    }

    /// The audit trail of a query `principal` sends over `interface`.
    pub(crate) fn trail(&self, principal: Option<&Principal>, interface: &'static str, text: &str) -> Trail {
        Trail::new(self.audit.clone(), principal.map(|p| p.name.as_str()), interface, text, self.audit_queries)
    }

    pub(crate) fn audit(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    pub fn context(&self) -> Arc<SessionContext> {
        self.context.clone()
    }

    pub(crate) fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Waits for a free query slot ([sql] max_concurrent), within the time limit that starts now,
    /// for a query that reads what `principal` may, counted against the principal's own share.
    pub(crate) async fn admit(&self, principal: Option<&Principal>) -> Result<Ticket, QueryError> {
        self.take_slot(principal, true).await
    }

    /// A slot to parse and plan statements in, not counted against the principal's share: a
    /// principal at its share may still FETCH from and CLOSE its cursors, or SET.
    pub(crate) async fn admit_to_plan(&self, principal: Option<&Principal>) -> Result<Ticket, QueryError> {
        self.take_slot(principal, false).await
    }

    async fn take_slot(&self, principal: Option<&Principal>, counted: bool) -> Result<Ticket, QueryError> {
        let scope = Scope::for_principal(principal, &self.view.borrow().registry);
        // Sign-in off (no principal): every surface is open, the audit trail too.
        let clearance = Clearance { admin: principal.is_none_or(|p| p.may(Role::Admin)) };
        // Its own share first, without waiting: past it, one caller would only queue against itself.
        let own = match principal.filter(|_| counted) {
            Some(principal) => {
                let share = self
                    .shares
                    .lock()
                    .expect("never poisoned")
                    .entry(principal.name.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_principal)))
                    .clone();
                let permit = share
                    .try_acquire_owned()
                    .map_err(|_| QueryError::TooMany { name: principal.name.clone(), limit: self.max_per_principal })?;
                Some(permit)
            }
            None => None,
        };
        let deadline = Deadline { at: tokio::time::Instant::now() + self.timeout, secs: self.timeout.as_secs() };
        let permit = tokio::time::timeout_at(deadline.at, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| QueryError::Busy(deadline.secs))?
            .expect("semaphore is never closed");
        self.running.inc();
        let slot = Slot { _permit: permit, _own: own, running: self.running.clone() };
        Ok(Ticket { _slot: Arc::new(slot), deadline, scope, clearance })
    }

    /// Runs `work` on the SQL threads under `ticket`: the answer comes by the deadline or the
    /// query has timed out (the work holds the ticket until it stops).
    async fn on_sql_threads<T: Send + 'static>(
        &self,
        ticket: &Ticket,
        work: impl FnOnce(SessionState, Bounds) -> BoxFuture<'static, Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let (mut state, bounds, held) = (self.context.state(), self.bounds, ticket.clone());
        if let Some(scope) = &ticket.scope {
            // Every table scan of this query reads it (`LiveTable::scan`).
            state.config_mut().set_extension(Arc::new(scope.clone()));
        }
        state.config_mut().set_extension(Arc::new(ticket.clearance));
        let task = self.threads.handle().spawn(async move {
            let _held = held;
            work(state, bounds).await
        });
        match tokio::time::timeout_at(ticket.deadline.at, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(panicked)) => Err(QueryError::Internal(format!("the query's planner failed: {panicked}"))),
            Err(_) => Err(ticket.deadline.error()),
        }
    }

    /// Parses one statement of DataFusion's SQL (the HTTP dialect), checks it and plans it.
    pub async fn plan(&self, ticket: &Ticket, text: &str) -> Result<LogicalPlan, QueryError> {
        self.bounds.check_text(text)?;
        let text = text.to_owned();
        self.on_sql_threads(ticket, move |state, bounds| {
            async move {
                let statement = state
                    .sql_to_statement(&text, &datafusion::config::Dialect::Generic)
                    .map_err(QueryError::from_datafusion)?;
                let sql = match &statement {
                    DfStatement::Statement(sql) => sql.as_ref(),
                    // EXPLAIN ANALYZE runs what it explains: only a query may be explained.
                    DfStatement::Explain(explain) => match explain.statement.as_ref() {
                        DfStatement::Statement(sql) if matches!(sql.as_ref(), Statement::Query(_)) => sql.as_ref(),
                        other => return Err(refused(&other.to_string())),
                    },
                    _ => return Err(refused(&statement.to_string())),
                };
                bounds.check_statement(sql)?;
                let plan = state.statement_to_plan(statement).await.map_err(QueryError::from_datafusion)?;
                bounds.check_plan(&plan, state.config().batch_size())?;
                Ok(plan)
            }
            .boxed()
        })
        .await
    }

    /// Parses PostgreSQL's SQL as its clients send it (`pg_catalog` queries rewritten to what
    /// DataFusion plans), checks each statement and plans the reads.
    pub(crate) async fn classify_postgres(
        &self,
        ticket: &Ticket,
        text: &str,
    ) -> Result<Vec<(Statement, Classified)>, QueryError> {
        self.bounds.check_text(text)?;
        let text = text.to_owned();
        self.on_sql_threads(ticket, move |state, bounds| {
            async move {
                let parser = datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
                let statements = parser.parse(&text).map_err(|e| QueryError::Invalid(e.to_string()))?;
                let mut classified = Vec::with_capacity(statements.len());
                for statement in statements {
                    bounds.check_statement(&statement)?;
                    let class = classify(&state, bounds, &statement).await?;
                    classified.push((statement, class));
                }
                Ok(classified)
            }
            .boxed()
        })
        .await
    }

    /// Starts a checked plan under `ticket`: its rows stream from the returned `Rows`, cut at the
    /// deadline, and its slot is held until `Rows` is dropped. Bound parameters, if any, are put
    /// in first, and the plan is checked again with them.
    pub async fn run(
        &self,
        ticket: Ticket,
        plan: LogicalPlan,
        params: Option<ParamValues>,
        trail: Trail,
    ) -> Result<Rows, QueryError> {
        let (tx, rx) = mpsc::channel(1);
        let (deadline, held) = (ticket.deadline, ticket.clone());
        let started = self.on_sql_threads(&ticket, move |state, bounds| {
            async move {
                let plan = match params {
                    Some(params) => plan.replace_params_with_values(&params).map_err(QueryError::from_datafusion)?,
                    None => plan,
                };
                bounds.check_plan(&plan, state.config().batch_size())?;
                let physical = state.create_physical_plan(&plan).await.map_err(QueryError::from_datafusion)?;
                let stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx())
                    .map_err(QueryError::from_datafusion)?;
                let schema = stream.schema();
                // The stream goes on on these threads, feeding the reader one batch at a time.
                tokio::spawn(feed(stream, tx, held));
                Ok(schema)
            }
            .boxed()
        });
        let schema = match started.await {
            Ok(schema) => schema,
            Err(error) => {
                trail.failed(&error);
                return Err(error);
            }
        };
        Ok(Rows { schema, first: None, rx, deadline, done: false, trail, handed_out: 0, outcome: None })
    }

    /// Admits, plans and starts one read-only query of DataFusion's SQL (HTTP): its rows stream
    /// from the returned `Rows` within one time limit counted from now. The first batch is
    /// computed here, so most failures are reported before any row is sent.
    pub async fn query(&self, text: &str, principal: Option<&Principal>) -> Result<Rows, QueryError> {
        self.begin(text, None, None, principal, self.trail(principal, "http", text)).await
    }

    /// Runs a query to the end, as `principal`.
    pub async fn collect(&self, sql: &str, principal: Option<&Principal>) -> Result<Results, QueryError> {
        self.query(sql, principal).await?.all().await
    }

    /// Runs one of the typed API's queries to the end, as `principal`.
    pub(crate) async fn read(&self, bound: &Bound, principal: Option<&Principal>) -> Result<Results, QueryError> {
        let values = bound.values.iter().map(|(name, value)| (name.to_string(), value.clone().into())).collect();
        // The trail keeps the values too: they are what the caller asked.
        let shown =
            bound.values.iter().fold(bound.text.clone(), |text, (name, value)| text + &format!(" ${name}={value}"));
        let trail = self.trail(principal, "api", &shown);
        let within = bound.within.as_deref();
        self.begin(&bound.text, Some(ParamValues::Map(values)), within, principal, trail).await?.all().await
    }

    /// The columns a query answers with, from its plan alone (nothing is read).
    pub(crate) async fn columns(&self, text: &str) -> Result<SchemaRef, QueryError> {
        let ticket = self.admit_to_plan(None).await?;
        Ok(self.plan(&ticket, text).await?.schema().inner().clone())
    }

    /// Admits a query (narrowed to the subtree of `within`, if given), plans it, binds `values`
    /// and starts it, with its first batch made.
    async fn begin(
        &self,
        text: &str,
        values: Option<ParamValues>,
        within: Option<&str>,
        principal: Option<&Principal>,
        trail: Trail,
    ) -> Result<Rows, QueryError> {
        let admitted = match self.admit(principal).await {
            Ok(ticket) => {
                let ticket = match within {
                    Some(root) => ticket.narrowed(&self.view.borrow().registry, root),
                    None => ticket,
                };
                self.plan(&ticket, text).await.map(|plan| (ticket, plan))
            }
            Err(error) => Err(error),
        };
        let (ticket, plan) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                trail.failed(&error);
                return Err(error);
            }
        };
        let mut rows = self.run(ticket, plan, values, trail).await?;
        match rows.next().await {
            Some(Err(error)) => Err(error),
            first => {
                rows.first = first;
                Ok(rows)
            }
        }
    }
}

/// A query the typed API composes: fixed text with a `$name` for each value, never the values
/// spliced in, and the subtree its answer is narrowed to (within the principal's own scope).
pub(crate) struct Bound {
    pub text: String,
    pub values: Vec<(&'static str, datafusion::scalar::ScalarValue)>,
    pub within: Option<String>,
}

/// Moves a running query's batches to its reader until the stream ends, the reader goes away or
/// the deadline passes; the query's slot is held until then. The end is sent as `None`: a channel
/// that closes without it was cut.
async fn feed(mut stream: SendableRecordBatchStream, tx: mpsc::Sender<Fed>, ticket: Ticket) {
    let deadline = ticket.deadline.at;
    let moving = async move {
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = tx.closed() => return,
            };
            let next = next.map(|n| n.map_err(QueryError::from_datafusion));
            if !matches!(next, Some(Ok(_))) {
                // The slot is free before the reader hears of the end: the caller's next query,
                // sent as soon as this one is answered, finds its share free.
                drop(stream);
                drop(ticket);
                let _ = tx.send(next).await;
                return;
            }
            if tx.send(next).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, moving).await;
}

/// What the feeder sends: a batch or an error, then `None` at the end of the rows.
type Fed = Option<Result<RecordBatch, QueryError>>;

/// The rows of a running query, batch by batch, cut at its deadline.
pub struct Rows {
    pub schema: SchemaRef,
    /// A batch (or the error) already received, handed out first.
    first: Option<Result<RecordBatch, QueryError>>,
    rx: mpsc::Receiver<Fed>,
    pub deadline: Deadline,
    /// The stream has ended or failed: nothing more comes.
    done: bool,
    /// Who asked what, recorded with the rows handed out and how it ended when this is dropped.
    trail: Trail,
    handed_out: u64,
    outcome: Option<String>,
}

impl Drop for Rows {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or stopped reading a cursor.
        self.trail.ended(self.handed_out, self.outcome.as_deref().unwrap_or("cut"));
    }
}

impl Rows {
    /// Every remaining batch.
    pub async fn all(mut self) -> Result<Results, QueryError> {
        let schema = self.schema.clone();
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        Ok(Results { schema, batches })
    }

    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        // Put back by `SqlService::query` after this counted it.
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        let next = match tokio::time::timeout_at(self.deadline.at, self.rx.recv()).await {
            Ok(Some(fed)) => fed,
            // The feeder stopped without the end: the deadline cut the stream.
            Ok(None) | Err(_) => Some(Err(self.deadline.error())),
        };
        match &next {
            Some(Ok(batch)) => self.handed_out += batch.num_rows() as u64,
            Some(Err(error)) => self.outcome = Some(self.trail.failure(error)),
            None => self.outcome = Some("ok".into()),
        }
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

/// Statements answered per connection (a client's own settings, SHOW, transaction control): they
/// touch nothing shared. A `SET` is one only for the variables of `SESSION_VARIABLES`.
pub(crate) fn is_session(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Set(Set::SingleAssignment { .. })
    )
}

/// Decides what a PostgreSQL statement is; plans and checks the reads. What is neither a read,
/// a cursor over one, nor a per-connection setting is refused, and so is whatever does not plan.
async fn classify(state: &SessionState, bounds: Bounds, statement: &Statement) -> Result<Classified, QueryError> {
    let plan_read = |query: Statement| async move {
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(query)))
            .await
            .map_err(QueryError::from_datafusion)?;
        bounds.check_plan(&plan, state.config().batch_size())?;
        Ok::<_, QueryError>(plan)
    };
    Ok(match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => {
            let name = variable.to_string().trim_matches('"').to_lowercase();
            match SESSION_VARIABLES.contains(&name.as_str()) {
                true => Classified::Session,
                false => return Err(refused(&statement.to_string())),
            }
        }
        Statement::Set(_) => return Err(refused(&statement.to_string())),
        s if is_session(s) => Classified::Session,
        Statement::Fetch { .. } | Statement::Close { .. } => Classified::Cursor,
        Statement::Declare { stmts } => {
            let [declare] = stmts.as_slice() else {
                return Err(QueryError::Invalid("declare one cursor at a time".into()));
            };
            let (Some(name), Some(query)) = (declare.names.first(), declare.for_query.as_ref()) else {
                return Err(QueryError::Invalid("DECLARE name CURSOR FOR SELECT …: a name and a query".into()));
            };
            if declare.declare_type != Some(datafusion::sql::sqlparser::ast::DeclareType::Cursor) {
                return Err(QueryError::Invalid("only DECLARE … CURSOR FOR … is served".into()));
            }
            Classified::Declare { name: name.value.clone(), plan: plan_read(Statement::Query(query.clone())).await? }
        }
        // EXPLAIN ANALYZE runs what it explains: only a query may be explained.
        Statement::Explain { statement: explained, .. } if !matches!(explained.as_ref(), Statement::Query(_)) => {
            return Err(refused(&explained.to_string()))
        }
        Statement::Query(_) | Statement::Explain { .. } | Statement::ExplainTable { .. } => {
            Classified::Read(plan_read(statement.clone()).await?)
        }
        // SHOW TABLES, SHOW COLUMNS and kin plan into reads of information_schema.
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } | Statement::ShowFunctions { .. } => {
            Classified::Read(plan_read(statement.clone()).await?)
        }
        _ => return Err(refused(&statement.to_string())),
    })
}
/// A table whose rows are whatever `read` returns when a query scans it.
struct LiveTable {
    schema: SchemaRef,
    read: Box<dyn Fn() -> BoxFuture<'static, datafusion::error::Result<Vec<RecordBatch>>> + Send + Sync>,
    /// Only `admin` reads it.
    admin_only: bool,
}

impl LiveTable {
    /// A table whose newest batches are at hand.
    fn at_hand(schema: SchemaRef, read: impl Fn() -> Vec<RecordBatch> + Send + Sync + 'static) -> LiveTable {
        LiveTable { schema, read: Box::new(move || futures::future::ready(Ok(read())).boxed()), admin_only: false }
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
        let admin = state.config().get_extension::<Clearance>().is_some_and(|c| c.admin);
        if self.admin_only && !admin {
            return Err(datafusion::error::DataFusionError::Plan(
                "audit_log is for the admin role only (README \"Security\")".into(),
            ));
        }
        let mut batches = (self.read)().await?;
        // A scoped principal's query (`SqlService::admit`) reads only its units' rows.
        if let Some(scope) = state.config().get_extension::<Scope>() {
            batches = batches.iter().map(|b| scope.rows(b)).collect::<Result<_, _>>()?;
        }
        MemTable::try_new(self.schema.clone(), vec![batches])?.scan(state, projection, filters, limit).await
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
    let (receiver, pool) = (sources.view.clone(), context.runtime_env().memory_pool.clone());
    let read = move || {
        let (view, pool) = (receiver.borrow().clone(), pool.clone());
        async move {
            let batch = view.dossiers().await.ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(
                    "the pipeline is stopping: dossiers are no longer served".into(),
                )
            })?;
            // Built for this query, on its thread: a table larger than what the SQL memory limit
            // has left is refused like any operator that outgrows it.
            MemoryConsumer::new("dossiers table").register(&pool).try_grow(batch.get_array_memory_size())?;
            Ok(vec![batch])
        }
        .boxed()
    };
    let dossiers =
        LiveTable { schema: crate::engine::view::dossiers_schema(), read: Box::new(read), admin_only: false };
    tables.push(("dossiers", dossiers));
    let history_tables = crate::persist::history::CADENCES.iter().flat_map(|c| c.tables().iter().map(move |t| (c, t)));
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
    let receiver = sources.restatements.clone();
    let schema = restatements::table(&[]).schema();
    tables.push(("restatements", LiveTable::at_hand(schema, move || vec![restatements::table(&receiver.borrow())])));
    let audit = sources.audit.clone();
    let read = move || {
        let audit = audit.clone();
        async move { audit.batches().await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))) }
            .boxed()
    };
    tables.push((
        "audit_log",
        LiveTable { schema: crate::serve::audit::schema(), read: Box::new(read), admin_only: true },
    ));
    for (name, table) in tables {
        context.register_table(name, Arc::new(table)).map_err(QueryError::from_datafusion)?;
    }
    Ok(())
}

/// The views this binary ships (`sql/views/`), registered when `[sql] views_dir` is empty.
const SHIPPED_VIEWS: [(&str, &str); 6] = [
    ("monthly_trend", include_str!("../../../sql/views/monthly_trend.sql")),
    ("overdue_by_unit", include_str!("../../../sql/views/overdue_by_unit.sql")),
    ("period_over_period", include_str!("../../../sql/views/period_over_period.sql")),
    ("points_lost", include_str!("../../../sql/views/points_lost.sql")),
    ("unit_ranking", include_str!("../../../sql/views/unit_ranking.sql")),
    ("week_over_week", include_str!("../../../sql/views/week_over_week.sql")),
];

fn load_views(dir: &Path) -> Result<Vec<(String, String)>, QueryError> {
    if dir.as_os_str().is_empty() {
        return Ok(SHIPPED_VIEWS.iter().map(|&(name, body)| (name.to_owned(), body.to_owned())).collect());
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

/// A query's answer: its schema (known even when no row comes back) and its rows.
#[derive(Debug)]
pub struct Results {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// How results are written, chosen by the request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
    ArrowIpc,
}

pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    /// CSV for `text/csv`, Arrow IPC stream for `application/vnd.apache.arrow.stream`, else JSON.
    pub(crate) fn from_accept(accept: &str) -> Format {
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
    pub(crate) fn encoder(self, schema: &SchemaRef) -> Result<Encoder, QueryError> {
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
pub(crate) enum Encoder {
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
                writer.write(&neutralised(batch).map_err(arrow_failed)?).map_err(arrow_failed)?;
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

/// A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
/// formula: such text cells get a leading `'` (OWASP's advice against CSV injection). Numbers are
/// not text and stay as they are.
fn neutralised(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let risky = |v: &str| v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let is_text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let mut changed = false;
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let text = match column.data_type() {
            DataType::Dictionary(_, value) if is_text(value) => true,
            other => is_text(other),
        };
        if !text {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        let plain = datafusion::arrow::compute::cast(column, &DataType::Utf8)?;
        let strings = plain.as_string::<i32>();
        if !strings.iter().flatten().any(risky) {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        changed = true;
        let safe: StringArray =
            strings.iter().map(|v| v.map(|v| if risky(v) { format!("'{v}") } else { v.to_owned() })).collect();
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, safe.null_count() > 0 || field.is_nullable())));
        columns.push(Arc::new(safe));
    }
    match changed {
        true => RecordBatch::try_new(Arc::new(Schema::new(fields)), columns),
        false => Ok(batch.clone()),
    }
}

/// Results as a JSON array of row objects, nulls written out.
pub(crate) fn to_json(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
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
    use index766_core::fixtures::{reception, state_at};
    use index766_core::units::Registry;

    fn view() -> View {
        let registry = Registry::parse("{\"code\":\"U1\",\"name\":\"Xã Một\",\"level\":\"commune\"}").unwrap();
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        state.apply(&reception("a", "D1", "2026-11-02T08:00:00+07:00", "2026-11-30T17:00:00+07:00"));
        View::build(Arc::new(registry), &index766_core::spec::Spec::shipped(), 80.0, &state, &Default::default())
    }

    async fn service() -> SqlService {
        service_over(LiveSources::fixed(view())).await
    }

    #[test]
    fn the_shipped_views_are_those_of_the_views_folder() {
        let folder = load_views(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/views")).unwrap();
        assert_eq!(load_views(Path::new("")).unwrap(), folder);
    }

    async fn service_over(sources: LiveSources) -> SqlService {
        // The shipped views: an empty views_dir.
        let config = crate::config::Config::from_toml("").unwrap();
        SqlService::start(&config.sql, sources, prometheus::IntGauge::new("running", "slots").unwrap()).await.unwrap()
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
            .collect("SELECT unit_code, numerator, denominator, points FROM scores WHERE period = '2026-11' AND criterion = '2.1'", None)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &batches)).unwrap();
        assert_eq!(json, serde_json::json!([{"unit_code": "U1", "numerator": 1, "denominator": 1, "points": 20.0}]));
        let empty = sql.collect("SELECT * FROM dossiers WHERE false", None).await.unwrap();
        assert_eq!(encode(Format::Json, &empty), b"[]");
        let csv = String::from_utf8(encode(Format::Csv, &empty)).unwrap();
        assert!(csv.starts_with("dossier_id,unit_code,"), "an empty CSV still has its header: {csv}");
        let rows = sql.collect("SELECT unit_code, criterion, points FROM scores WHERE period = '2026-11' AND criterion IN ('1.4', '2.1') ORDER BY criterion", None).await.unwrap();
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
            .collect("SELECT unit_code, criterion FROM scores WHERE period = '2026-11' AND criterion = '2.1'", None)
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
        let rows = sql.collect("SELECT count(*) AS n FROM weekly_totals", None).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &rows)).unwrap();
        assert_eq!(json, serde_json::json!([{"n": 0}]));
        sql.collect("SELECT * FROM week_over_week", None).await.expect("the view over it still plans and runs");
    }

    /// The `dossiers` table is built for the query that reads it, and held to the SQL memory
    /// limit: 20,000 dossiers do not fit in 1 MiB; they do in 64.
    #[tokio::test]
    async fn the_dossiers_table_counts_against_the_memory_limit() {
        let registry =
            Arc::new(Registry::parse("{\"code\":\"U1\",\"name\":\"Xã Một\",\"level\":\"commune\"}").unwrap());
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        for i in 0..20_000 {
            let (event, dossier) = (format!("e{i}"), format!("D{i}"));
            state.apply(&reception(&event, &dossier, "2026-11-02T08:00:00+07:00", "2026-11-30T17:00:00+07:00"));
        }
        let spec = index766_core::spec::Spec::shipped();
        for (limit_mib, fits) in [(1, false), (64, true)] {
            let view = View::build(registry.clone(), &spec, 80.0, &state, &Default::default());
            let config = crate::config::Config::from_toml(&format!("[sql]\nmemory_limit_mib = {limit_mib}")).unwrap();
            let gauge = prometheus::IntGauge::new("running", "slots").unwrap();
            let sql = SqlService::start(&config.sql, LiveSources::fixed(view), gauge).await.unwrap();
            match sql.collect("SELECT count(*) AS n FROM dossiers", None).await {
                Ok(rows) => assert!(fits, "20,000 dossiers read within {limit_mib} MiB: {:?}", rows.batches),
                Err(err) => assert!(!fits && err.to_string().contains("dossiers table"), "{limit_mib} MiB: {err}"),
            }
        }
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
            let err = sql.collect(text, None).await.unwrap_err().to_string();
            assert!(err.contains("read-only"), "{text}: {err}");
        }
        let err = sql.collect("SELECT nope FROM scores", None).await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = sql.collect("CREATE VIEW mine AS SELECT 1", None).await.unwrap_err().to_string();
        assert!(err.contains("read-only"), "users cannot add views: {err}");
    }
}
