//! The PostgreSQL wire protocol over the same SQL service as `POST /sql`, so `psql`, DBeaver,
//! Grafana's PostgreSQL data source and Superset connect unchanged. pgwire speaks the protocol;
//! datafusion-postgres gives `pg_catalog`, the encoding of Arrow values and the per-connection
//! `SET`/`SHOW`/transaction statements. Everything that touches the shared context goes through
//! index766's own fence (`SqlService::classify_postgres`): a statement is parsed once, classified
//! and planned from that one tree, and exactly that checked plan runs, on every path (simple,
//! extended, prepared, cursors). Rows stream under the query's deadline and slot on both
//! protocols; a cursor is a query and holds its slot until closed.
//!
//! Every connection passes through `pg_guard`, which checks each message's framing before pgwire
//! decodes it (sizes, counts, lengths), answers TLS requests, and closes idle connections.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::sql::sqlparser::ast::{FetchDirection, Statement, Value, ValueWithSpan};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{self, DefaultServerParameterProvider, StartupHandler};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type, DEFAULT_NAME,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::extendedquery::{Execute, PortalSuspended};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::serve::access::{permit, Credential, Denied, Gate, Login, Need, Principal, Role};
use crate::serve::audit::{AuditLog, Trail};
use crate::serve::pg_guard;
use crate::serve::query::{Classified, Rows, SqlService, Ticket};
use crate::serve::scram::{Exchange, Verifier};
use crate::serve::sql_error::QueryError;
use crate::serve::tls::Tls;
use crate::telemetry::metrics::Metrics;

/// What the PostgreSQL listener allows each connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: std::time::Duration,
}

/// Accepts connections until `shutdown`; at most `max_connections` at once (the others wait in
/// the kernel's queue).
pub async fn serve(
    listener: TcpListener,
    sql: Arc<SqlService>,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let pids = Arc::new(RandomPidSecretKeyGenerator::default());
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let max_query_bytes = sql.bounds().max_query_bytes;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "postgres: accept failed");
                    // Out of file descriptors or the like: give the system a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (ours, theirs) = tokio::net::UnixStream::pair()?;
        let (sql, metrics, gate, pids, tls, shutdown) =
            (sql.clone(), metrics.clone(), gate.clone(), pids.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let serving = async {
                let opened = match pg_guard::open(socket, tls.as_deref(), limits.idle_timeout).await {
                    Ok(Some(opened)) => opened,
                    Ok(None) => return,
                    Err(error) => return tracing::debug!(%error, %peer, "postgres: no session"),
                };
                let (signed_in, audit) = (Arc::new(OnceLock::new()), sql.audit());
                let service = Arc::new(PgService { sql, metrics, signed_in: signed_in.clone() });
                let scram = Mutex::new(None);
                let startup =
                    Arc::new(Startup { gate, pids, certificate: opened.certificate, signed_in, scram, audit });
                let handlers = Arc::new(Handlers { service, startup });
                let guard = pg_guard::Guard { max_query_bytes, idle_timeout: limits.idle_timeout };
                let (served, guarded) = tokio::join!(
                    pgwire::tokio::process_socket_unix(ours, handlers),
                    guard.pump(opened.stream, opened.read, theirs)
                );
                if let Err(error) = served.and(guarded) {
                    tracing::debug!(%error, %peer, "postgres connection ended with an error");
                }
            };
            tokio::select! {
                () = serving => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

struct Handlers {
    service: Arc<PgService>,
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

/// Sign-in: without tokens, any user and no password (allowed on loopback, or where the config
/// says so); with them, the name of the connection's client certificate with no password, or a
/// user of the tokens file by SCRAM-SHA-256 (a token's or a `[[password]]`'s verifier), or else a
/// password sent as is (a JWT naming the user, or a token without a verifier); each must hold
/// the analyst role.
struct Startup {
    gate: Arc<Gate>,
    /// Each session's process id (counted) and cancel key (random).
    pids: Arc<RandomPidSecretKeyGenerator>,
    /// The common name of the connection's verified client certificate.
    certificate: Option<String>,
    /// Who signed in, for what the session's queries may read.
    signed_in: Arc<OnceLock<Principal>>,
    /// A SCRAM exchange under way.
    scram: Mutex<Option<Scram>>,
    audit: Arc<AuditLog>,
}

/// Where a SCRAM-SHA-256 sign-in stands; no principal: an unknown user's exchange, bound to fail.
enum Scram {
    Asked(Verifier, Option<Principal>),
    Challenged(Exchange, Verifier, Option<Principal>),
}

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                auth::protocol_negotiation(client, startup).await?;
                auth::save_startup_parameters_to_metadata(client, startup);
                if !self.gate.signs_in() {
                    return self.admitted(client, None).await;
                }
                if let Some(name) = self.certificate.as_deref().filter(|&name| Some(name) == user(client).as_deref()) {
                    return match self.gate.admit(Some(Credential::Certificate(name)), Need::Role(Role::Analyst)) {
                        Ok(principal) => self.admitted(client, principal).await,
                        Err(denied) => Err(refusal(&self.audit, name, denied)),
                    };
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let ask = match self.gate.login(&user(client).unwrap_or_default()) {
                    Login::Scram(verifier, principal) => {
                        *self.scram.lock().expect("never poisoned") = Some(Scram::Asked(verifier, principal));
                        Authentication::SASL(vec![SCRAM_SHA_256.into()])
                    }
                    Login::Password | Login::Open => Authentication::CleartextPassword,
                };
                client.send(PgWireBackendMessage::Authentication(ask)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = user(client).unwrap_or_default();
                let scram = self.scram.lock().expect("never poisoned").take();
                match scram {
                    Some(Scram::Asked(verifier, principal)) => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM_SHA_256 {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(initial.auth_method));
                        }
                        let first = initial.data.unwrap_or_default();
                        let (server_first, exchange) =
                            verifier.challenge(&first).map_err(|why| failed(&self.audit, &user, &why))?;
                        *self.scram.lock().expect("never poisoned") =
                            Some(Scram::Challenged(exchange, verifier, principal));
                        let challenge = Authentication::SASLContinue(server_first.into_bytes().into());
                        client.send(PgWireBackendMessage::Authentication(challenge)).await?;
                        return Ok(());
                    }
                    Some(Scram::Challenged(exchange, verifier, principal)) => {
                        let last = message.into_sasl_response()?;
                        let proven =
                            exchange.finish(&verifier, &last.data).map_err(|why| failed(&self.audit, &user, &why))?;
                        let principal = principal.ok_or_else(|| failed(&self.audit, &user, "no such user"))?;
                        let principal =
                            permit(principal, Role::Analyst).map_err(|denied| refusal(&self.audit, &user, denied))?;
                        let proof = Authentication::SASLFinal(proven.into_bytes().into());
                        client.send(PgWireBackendMessage::Authentication(proof)).await?;
                        return self.admitted(client, Some(principal)).await;
                    }
                    None => {}
                }
                let password = message.into_password()?;
                let refused =
                    match self.gate.admit(Some(Credential::Token(&password.password)), Need::Role(Role::Analyst)) {
                        Ok(Some(principal)) if principal.name == user => {
                            return self.admitted(client, Some(principal)).await
                        }
                        Err(forbidden @ Denied::Forbidden { .. }) => refusal(&self.audit, &user, forbidden),
                        // Why a JWT failed goes to the trail, not to a stranger.
                        Err(jwt @ Denied::Jwt(_)) => failed(&self.audit, &user, &jwt.to_string()),
                        _ => failed(&self.audit, &user, "password authentication failed"),
                    };
                return Err(refused);
            }
            _ => {}
        }
        Ok(())
    }
}

fn user(client: &impl ClientInfo) -> Option<String> {
    client.metadata().get(pgwire::api::METADATA_USER).cloned()
}

/// A sign-in refused for its password, with the reason in the trail only: a stranger learns
/// neither which users exist nor what was wrong.
fn failed(audit: &AuditLog, user: &str, why: &str) -> PgWireError {
    audit.sign_in(user, &format!("refused: {why}"));
    PgWireError::InvalidPassword(user.into())
}

/// A sign-in refused for what the principal may not do.
fn refusal(audit: &AuditLog, user: &str, denied: Denied) -> PgWireError {
    audit.sign_in(user, &format!("refused: {denied}"));
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), "42501".into(), denied.to_string())))
}

impl Startup {
    /// Authentication done: who it is, the session's parameters, its key, and ready for queries.
    async fn admitted<C>(&self, client: &mut C, principal: Option<Principal>) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(principal) = principal {
            self.audit.sign_in(&principal.name, "ok");
            // A session signs in once: pgwire sends no second startup.
            let _ = self.signed_in.set(principal);
        }
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key);
        auth::finish_authentication(client, &DefaultServerParameterProvider::default()).await
    }
}

/// A prepared statement: its text, and its one statement with the plan that will run (a
/// placeholder for the statements that run no plan: settings, FETCH, CLOSE). datafusion-postgres's
/// hooks read the portal store under this very type.
type Prepared = (String, Option<(Statement, LogicalPlan)>);

/// One session's queries.
struct PgService {
    sql: Arc<SqlService>,
    metrics: Arc<Metrics>,
    /// Who signed in (`Startup` sets it); empty while sign-in is off.
    signed_in: Arc<OnceLock<Principal>>,
}

fn pg_error(error: QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), error.sqlstate().into(), error.to_string())))
}

/// The connection's portal store under its one concrete type: pgwire hands the simple protocol
/// the store without its statement type, as it does datafusion-postgres's hooks.
fn cursors(store: &impl PortalStore) -> PgWireResult<&MemPortalStore<Prepared>> {
    store
        .as_any()
        .downcast_ref()
        .ok_or_else(|| pg_error(QueryError::Internal("the connection's portal store is not index766's".into())))
}

fn no_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(DFSchema::empty()) })
}

/// The per-connection statements datafusion-postgres answers without touching the context.
fn session_hooks() -> [Box<dyn QueryHook>; 2] {
    [Box::new(SetShowHook), Box::new(TransactionStatementHook)]
}

impl PgService {
    /// A query's rows as PostgreSQL rows, streamed; counted in the query metrics when they end.
    fn respond(&self, rows: Rows, format: &Format, options: Arc<FormatOptions>) -> PgWireResult<QueryResponse> {
        let fields: Arc<Vec<FieldInfo>> = Arc::new(arrow_schema_to_pg_fields(&rows.schema, format, Some(options))?);
        let (encoding, metrics, started) = (fields.clone(), self.metrics.clone(), std::time::Instant::now());
        let deadline = rows.deadline;
        let batches = futures::stream::unfold(Some(rows), move |rows| {
            let (encoding, metrics) = (encoding.clone(), metrics.clone());
            async move {
                let mut rows = rows?;
                match rows.next().await {
                    Some(Ok(batch)) => {
                        let encoded: Vec<_> = encode_recordbatch(encoding, batch).collect();
                        Some((futures::stream::iter(encoded), Some(rows)))
                    }
                    Some(Err(error)) => {
                        metrics.observe_query("postgres", false, started.elapsed().as_secs_f64());
                        Some((futures::stream::iter(vec![Err(pg_error(error))]), None))
                    }
                    None => {
                        metrics.observe_query("postgres", true, started.elapsed().as_secs_f64());
                        None
                    }
                }
            }
        });
        // A batch is encoded whole; rows still unsent at the deadline are not sent (a cursor's
        // FETCH can come long after its batch was made).
        let cut = batches.flatten().scan(false, move |ended, row| {
            let row = match *ended {
                true => None,
                false => Some(deadline.check().map_err(pg_error).and(row)),
            };
            *ended = matches!(row, Some(Err(_)));
            futures::future::ready(row)
        });
        Ok(QueryResponse::new(fields, cut))
    }

    /// A query slot for the statement `trail` records; a refusal is recorded on it.
    async fn admit(&self, trail: &Trail) -> PgWireResult<Ticket> {
        self.sql.admit(self.signed_in.get()).await.map_err(|busy| {
            trail.failed(&busy);
            self.failed(busy)
        })
    }

    fn trail(&self, text: &str) -> Trail {
        self.sql.trail(self.signed_in.get(), "postgres", text)
    }

    /// Runs one classified statement; `plan` for reads and cursors, `params` from a Bind.
    async fn execute<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        class: Classified,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match class {
            Classified::Read(plan) => {
                let trail = self.trail(&statement.to_string());
                let ticket = self.admit(&trail).await?;
                let rows = self.sql.run(ticket, plan, params, trail).await.map_err(|e| self.failed(e))?;
                Ok(Response::Query(self.respond(rows, format, options)?))
            }
            Classified::Declare { name, plan } => {
                // The cursor's portal describes as its query's rows (clients Describe it before FETCH).
                let query = match statement {
                    Statement::Declare { stmts } => stmts.first().and_then(|d| d.for_query.clone()),
                    _ => None,
                };
                let Some(query) = query else {
                    return Err(pg_error(QueryError::Invalid("DECLARE name CURSOR FOR SELECT …".into())));
                };
                let described = (statement.to_string(), Some((Statement::Query(query), plan.clone())));
                let trail = self.trail(&statement.to_string());
                let ticket = self.admit(&trail).await?;
                let rows = self.sql.run(ticket, plan, params, trail).await.map_err(|e| self.failed(e))?;
                let response = self.respond(rows, &Format::UnifiedText, options)?;
                let stored = Arc::new(StoredStatement::new(name.clone(), described, vec![]));
                let portal = Portal::new_cursor(name, stored);
                portal.start(response).await;
                cursors(client.portal_store())?.put_portal(Arc::new(portal));
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Classified::Cursor => match statement {
                Statement::Fetch { name, direction, .. } => {
                    fetch(cursors(client.portal_store())?, &name.value, direction).await
                }
                _ => self.hooked(&[Box::new(CursorStatementHook)], statement, client).await,
            },
            Classified::Session => self.hooked(&session_hooks(), statement, client).await,
        }
    }

    /// A statement datafusion-postgres's hooks answer per connection.
    async fn hooked<C>(
        &self,
        hooks: &[Box<dyn QueryHook>],
        statement: &Statement,
        client: &mut C,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let context = self.sql.context();
        for hook in hooks {
            if let Some(answer) = hook.handle_simple_query(statement, &context, client).await {
                return answer;
            }
        }
        Err(pg_error(QueryError::Invalid(format!("{statement}: not supported by index766"))))
    }

    fn failed(&self, error: QueryError) -> PgWireError {
        self.metrics.observe_query("postgres", false, 0.0);
        pg_error(error)
    }
}

/// `FETCH [n | ALL | NEXT] FROM name`: up to n rows of the cursor, streamed as they come.
async fn fetch(
    store: &impl PortalStore<Statement = Prepared>,
    name: &str,
    direction: &FetchDirection,
) -> PgWireResult<Response> {
    let count = match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Some(1),
        FetchDirection::Forward { limit: Some(ValueWithSpan { value: Value::Number(n, _), .. }) }
        | FetchDirection::Count { limit: ValueWithSpan { value: Value::Number(n, _), .. } } => {
            Some(n.parse::<usize>().map_err(|_| pg_error(QueryError::Invalid(format!("FETCH {n}: a row count"))))?)
        }
        FetchDirection::ForwardAll | FetchDirection::All => None,
        _ => return Err(pg_error(QueryError::Invalid("cursors only move forward: FETCH n, NEXT or ALL".into()))),
    };
    let Some(Entry::Value(portal)) = store.get_portal(name) else {
        return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "34000".into(),
            format!("cursor \"{name}\" does not exist"),
        ))));
    };
    let mut state = portal.state().lock_owned().await;
    let schema = match &mut *state {
        PortalExecutionState::Suspended(response) => response.row_schema(),
        PortalExecutionState::Finished => Arc::new(Vec::new()),
        PortalExecutionState::Initial => return Err(PgWireError::PortalNotStarted),
    };
    let rows = futures::stream::unfold((state, 0usize), move |(mut state, taken)| async move {
        if count.is_some_and(|n| taken >= n) {
            return None;
        }
        let PortalExecutionState::Suspended(response) = &mut *state else { return None };
        match response.data_rows().next().await {
            Some(row) => Some((row, (state, taken + 1))),
            None => {
                *state = PortalExecutionState::Finished;
                None
            }
        }
    });
    let mut response = QueryResponse::new(schema, rows);
    response.set_command_tag("FETCH");
    Ok(Response::Query(response))
}

#[async_trait]
impl SimpleQueryHandler for PgService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let classified = async {
            let ticket = self.sql.admit_to_plan(self.signed_in.get()).await?;
            self.sql.classify_postgres(&ticket, query).await
        };
        let classified = classified.await.map_err(|error| {
            self.trail(query).failed(&error);
            self.failed(error)
        })?;
        if classified.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(classified.len());
        for (statement, class) in classified {
            responses.push(self.execute(client, &statement, class, None, &Format::UnifiedText).await?);
        }
        Ok(responses)
    }
}

/// Parses and checks a statement once, at Parse; Execute runs the plan kept then.
struct PgParser {
    sql: Arc<SqlService>,
    signed_in: Arc<OnceLock<Principal>>,
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let ticket = self.sql.admit_to_plan(self.signed_in.get()).await.map_err(pg_error)?;
        let mut classified = self.sql.classify_postgres(&ticket, sql).await.map_err(pg_error)?;
        let Some((statement, class)) = classified.pop() else { return Ok(None) };
        if !classified.is_empty() {
            return Err(pg_error(QueryError::Invalid(
                "one statement per prepared statement (Parse); send several with the simple protocol".into(),
            )));
        }
        let plan = match class {
            Classified::Read(plan) | Classified::Declare { plan, .. } => plan,
            Classified::Cursor | Classified::Session => no_plan(),
        };
        Ok(Some((sql.to_owned(), Some((statement, plan)))))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some((_, plan)) = &statement.1 else { return Ok(Vec::new()) };
        parameter_types(plan)?.into_iter().map(|t| t.map_or(Ok(Type::UNKNOWN), |t| into_pg_type(&t))).collect()
    }

    fn get_result_schema(&self, statement: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match &statement.1 {
            Some((statement, plan)) => match prepared_class(statement, plan) {
                Classified::Read(plan) => {
                    arrow_schema_to_pg_fields(plan.schema().as_arrow(), format.unwrap_or(&Format::UnifiedText), None)
                }
                Classified::Declare { .. } | Classified::Cursor | Classified::Session => Ok(Vec::new()),
            },
            None => Ok(Vec::new()),
        }
    }
}

/// What a prepared statement is. Only what passed the fence at Parse is in the portal store, so
/// its kind is all that is left to tell.
fn prepared_class(statement: &Statement, plan: &LogicalPlan) -> Classified {
    match statement {
        Statement::Declare { stmts } => Classified::Declare {
            name: stmts.first().and_then(|d| d.names.first()).map(|n| n.value.clone()).unwrap_or_default(),
            plan: plan.clone(),
        },
        Statement::Fetch { .. } | Statement::Close { .. } => Classified::Cursor,
        s if crate::serve::query::is_session(s) => Classified::Session,
        _ => Classified::Read(plan.clone()),
    }
}

/// The plan's parameters `$1`, `$2` … in order, with the types DataFusion inferred for them.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut numbered: Vec<(usize, Option<DataType>)> =
        types.into_iter().filter_map(|(id, t)| id.trim_start_matches('$').parse().ok().map(|n| (n, t))).collect();
    numbered.sort_by_key(|(n, _)| *n);
    Ok(numbered.into_iter().map(|(_, t)| t).collect())
}

#[async_trait]
impl ExtendedQueryHandler for PgService {
    type Statement = Prepared;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        Arc::new(PgParser { sql: self.sql.clone(), signed_in: self.signed_in.clone() })
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((statement, plan)) = &portal.statement.statement.1 else { return Ok(Response::EmptyQuery) };
        let types = parameter_types(plan)?;
        let wire: Vec<Type> =
            types.iter().map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect::<PgWireResult<_>>()?;
        let params = deserialize_parameters_with_server_types(
            portal,
            &types.iter().map(Option::as_ref).collect::<Vec<_>>(),
            &wire.iter().map(Some).collect::<Vec<_>>(),
        )?;
        let class = prepared_class(statement, plan);
        self.execute(client, statement, class, Some(params), &portal.result_column_format).await
    }

    /// pgwire's Execute, except that rows stream to the client as they come instead of being
    /// gathered first (a large result would otherwise be held whole in memory), and a negative
    /// row limit means "all", as in PostgreSQL.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut transaction = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let started = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        let rows_follow = if started {
            match ExtendedQueryHandler::do_query(self, client, &portal, max_rows).await? {
                Response::Query(results) => {
                    portal.start(results).await;
                    true
                }
                Response::EmptyQuery => {
                    client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
                    false
                }
                Response::Execution(tag) => {
                    client.feed(PgWireBackendMessage::CommandComplete(tag.into())).await?;
                    false
                }
                Response::TransactionStart(tag) => {
                    client.feed(PgWireBackendMessage::CommandComplete(tag.into())).await?;
                    transaction = transaction.to_in_transaction_state();
                    false
                }
                Response::TransactionEnd(tag) => {
                    client.feed(PgWireBackendMessage::CommandComplete(tag.into())).await?;
                    transaction = transaction.to_idle_state();
                    client.portal_store().rm_portal(DEFAULT_NAME);
                    false
                }
                Response::Error(error) => {
                    client.send(PgWireBackendMessage::ErrorResponse((*error).into())).await?;
                    transaction = transaction.to_error_state();
                    false
                }
                _ => return Err(pg_error(QueryError::Invalid("COPY is not served".into()))),
            }
        } else {
            true
        };
        if rows_follow {
            let mut state = portal.state().lock_owned().await;
            if let PortalExecutionState::Suspended(response) = &mut *state {
                let tag = response.command_tag().to_owned();
                let mut sent = 0;
                let mut more = true;
                while max_rows == 0 || sent < max_rows {
                    match response.data_rows().next().await {
                        Some(row) => {
                            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                            sent += 1;
                        }
                        None => {
                            more = false;
                            break;
                        }
                    }
                }
                if more {
                    client.send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new())).await?;
                } else {
                    *state = PortalExecutionState::Finished;
                    client.send(PgWireBackendMessage::CommandComplete(Tag::new(&tag).with_rows(sent).into())).await?;
                }
            } else {
                client.send(PgWireBackendMessage::CommandComplete(Tag::new("SELECT").with_rows(0).into())).await?;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction);
        Ok(())
    }
}
