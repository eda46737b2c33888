//! The PostgreSQL wire protocol over the same DataFusion context as `POST /sql`, so `psql`,
//! DBeaver, Grafana's PostgreSQL data source and Superset connect unchanged. The protocol and
//! `pg_catalog` come from datafusion-postgres (pgwire); index766 adds the same fences as HTTP:
//! read-only statements, one time limit from the query's start to its last row, and the shared
//! bound on queries running at once.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{Sink, StreamExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{QueryResponse, Response};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::query::{QueryError, QueryLimits, Slot, SqlService, READ_ONLY_HINT};

/// Accepts connections until `shutdown`.
pub async fn serve(listener: TcpListener, sql: &SqlService, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let handlers = Arc::new(Handlers {
        service: Arc::new(Bounded { inner: session_service(sql.context()), limits: sql.limits(), metrics }),
        startup: Arc::new(Startup),
    });
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "postgres: accept failed");
                    continue;
                }
            },
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            if let Err(error) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%error, %peer, "postgres connection ended with an error");
            }
        });
    }
}

fn session_service(context: Arc<SessionContext>) -> DfSessionService {
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    DfSessionService::new_with_hooks(context, hooks)
}

struct Handlers {
    service: Arc<Bounded>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Any user, no password: the port belongs behind the deployment's network policy, and nothing
/// it serves can change anything.
struct Startup;

impl NoopStartupHandler for Startup {}

/// Refuses every statement that is not a read, by what DataFusion would run (its plan), not by
/// its outer shape: `SELECT … INTO`, `EXPLAIN ANALYZE COPY …` and a cursor over either are writes
/// too. The message names the fence.
struct ReadOnly;

/// Client session variables datafusion-postgres keeps per connection; every other `SET` (engine
/// settings, the time zone) would change the context all users share.
const SESSION_VARIABLES: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

impl ReadOnly {
    async fn check(statement: &Statement, context: &SessionContext) -> PgWireResult<()> {
        let queries: Vec<Statement> = match statement {
            // Handled per connection by the library's hooks, touching nothing shared.
            Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. } => Vec::new(),
            Statement::Set(Set::SingleAssignment { variable, .. }) => {
                let name = variable.to_string().trim_matches('"').to_lowercase();
                if SESSION_VARIABLES.contains(&name.as_str()) {
                    Vec::new()
                } else {
                    return Err(refusal(statement));
                }
            }
            Statement::Declare { stmts } => {
                stmts.iter().filter_map(|d| d.for_query.clone()).map(Statement::Query).collect()
            }
            Statement::Set(_) => return Err(refusal(statement)),
            other => vec![other.clone()],
        };
        for query in queries {
            // Planned from its text by DataFusion's own parser, as the library runs it (so COPY
            // inside EXPLAIN ANALYZE is seen); what does not plan fails there the same way.
            let planned = context.state().create_logical_plan(&query.to_string()).await;
            if let Ok(plan) = planned {
                if crate::query::read_only().verify_plan(&plan).is_err() {
                    return Err(refusal(statement));
                }
            }
        }
        Ok(())
    }
}

fn refusal(statement: &Statement) -> PgWireError {
    let verb = statement.to_string().split_whitespace().next().unwrap_or("").to_uppercase();
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "25006".into(), // read_only_sql_transaction
        format!("{verb} refused: {READ_ONLY_HINT}; the engine's settings are fixed by the server"),
    )))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement, context).await.err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        Self::check(statement, context).await.err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::check(statement, context).await.err().map(Err)
    }
}

/// datafusion-postgres's handlers, inside index766's limits: a query slot is held and the time
/// limit runs until the last row has been streamed, not just until planning. (Rows of the
/// extended protocol are gathered by pgwire before they are sent; the simple protocol streams.)
struct Bounded {
    inner: DfSessionService,
    limits: QueryLimits,
    metrics: Arc<Metrics>,
}

/// The query ran past `[sql] timeout_secs`: SQLSTATE 57014 (query_canceled).
fn timeout_error(secs: u64) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        QueryError::Timeout(secs).to_string(),
    )))
}

impl Bounded {
    /// Runs `work` (which plans and starts the query) under a query slot and the deadline, and
    /// makes its rows stream under them too.
    async fn bounded<F>(&self, work: F) -> PgWireResult<Vec<Response>>
    where
        F: std::future::Future<Output = PgWireResult<Vec<Response>>>,
    {
        let started = std::time::Instant::now();
        let (slot, deadline) = self.limits.admit().await.map_err(|busy| {
            self.metrics.observe_query("postgres", false, 0.0);
            PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "53300".into(), busy.to_string())))
        })?;
        let timeout = self.limits.timeout.as_secs();
        let started_work =
            tokio::time::timeout_at(deadline, work).await.unwrap_or_else(|_| Err(timeout_error(timeout)));
        let responses = started_work.inspect_err(|_| {
            self.metrics.observe_query("postgres", false, started.elapsed().as_secs_f64());
        })?;
        let slot = Arc::new(slot);
        Ok(responses
            .into_iter()
            .map(|response| match response {
                Response::Query(query) => Response::Query(self.stream_within(query, slot.clone(), deadline, started)),
                other => other,
            })
            .collect())
    }

    fn stream_within(
        &self,
        query: QueryResponse,
        slot: Arc<Slot>,
        deadline: tokio::time::Instant,
        started: std::time::Instant,
    ) -> QueryResponse {
        let (metrics, timeout) = (self.metrics.clone(), self.limits.timeout.as_secs());
        let rows = futures::stream::unfold(Some((query.data_rows, slot)), move |running| {
            let metrics = metrics.clone();
            async move {
                let (mut rows, slot) = running?;
                let next = tokio::time::timeout_at(deadline, rows.next())
                    .await
                    .unwrap_or_else(|_| Some(Err(timeout_error(timeout))));
                match next {
                    Some(Ok(row)) => Some((Ok(row), Some((rows, slot)))),
                    Some(Err(error)) => {
                        metrics.observe_query("postgres", false, started.elapsed().as_secs_f64());
                        Some((Err(error), None))
                    }
                    None => {
                        metrics.observe_query("postgres", true, started.elapsed().as_secs_f64());
                        None
                    }
                }
            }
        });
        let mut bounded = QueryResponse::new(query.row_schema, rows);
        bounded.set_command_tag(&query.command_tag);
        bounded
    }
}

#[async_trait]
impl SimpleQueryHandler for Bounded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.bounded(SimpleQueryHandler::do_query(&self.inner, client, query)).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Bounded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let one =
            async { ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await.map(|r| vec![r]) };
        let mut responses = self.bounded(one).await?;
        Ok(responses.pop().expect("one response"))
    }
}
