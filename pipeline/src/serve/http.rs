//! One HTTP port: the IOC dashboard (`/`), `/metrics` (Prometheus), `POST /sql` (DataFusion;
//! JSON, CSV or Arrow IPC, streamed), `/healthz`, and for the dashboard and unit heads
//! the typed read API `/api/v1/…` (`api`) and `/api/updates` (server-sent events: new scores, an alert fired or cleared).
//! Each route needs the role `routes::ROUTES` gives it (see `access`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::Stream;

use crate::lang::Language;
use crate::serve::access::{CertificateName, Credential, Denied, Gate, Need, Role};
use crate::serve::audit::AuditLog;
use crate::serve::query::{Encoder, Format, Rows};
use crate::serve::routes::{error, json_response, status_of, AppState, Caller, DOCUMENT, ROUTES};
use crate::serve::scope::Scope;
use crate::serve::sql_error::QueryError;
use crate::serve::{api, report};
use crate::telemetry::metrics::Metrics;

pub(crate) fn router(state: AppState) -> Router {
    let routes = ROUTES.iter().fold(Router::new(), |router, route| {
        let handler = match (route.method, route.path) {
            ("GET", "/") => get(dashboard),
            ("GET", "/api") => get(index),
            ("GET", DOCUMENT) => get(api::document),
            ("GET", path) if api::resource(path).is_some() => api::handler(api::resource(path).expect("just found")),
            ("GET", "/api/updates") => get(updates),
            ("GET", "/reports") => get(report::answer::list),
            ("GET", "/reports/weekly") => get(report::answer::weekly),
            ("GET", "/reports/kept") => get(report::answer::kept),
            ("GET", "/metrics") => get(metrics),
            ("GET", "/healthz") => get(healthz),
            ("GET", "/readyz") => get(readyz),
            ("POST", "/sql") => post(sql),
            _ => unreachable!("{} {} in ROUTES has no handler", route.method, route.path),
        };
        let gate = (state.gate.clone(), route.need);
        router.route(route.path, handler.route_layer(axum::middleware::from_fn_with_state(gate, admit)))
    });
    // The body is read whole before the query's own size check: room for a JSON wrapper.
    routes
        .layer(axum::extract::DefaultBodyLimit::max(state.sql.bounds().max_query_bytes * 2 + 4096))
        .layer(axum::middleware::from_fn_with_state(state.sql.audit(), audited))
        .with_state(state)
}

/// Every request's line in the audit trail, refusals and unknown paths included.
async fn audited(State(audit): State<Arc<AuditLog>>, request: Request, next: Next) -> Response {
    let (method, path, started) =
        (request.method().clone(), request.uri().path().to_owned(), std::time::Instant::now());
    let response = next.run(request).await;
    let caller = response.extensions().get::<Signed>().map(|signed| signed.0.as_str());
    audit.request(caller, method.as_str(), &path, response.status().as_u16(), started);
    response
}

/// Lets a request through to its route if its token (or else its connection's client
/// certificate) holds the role the route needs, with the principal for the handler; 401 without a
/// known credential, 403 without the role.
async fn admit(State((gate, need)): State<(Arc<Gate>, Need)>, mut request: Request, next: Next) -> Response {
    let token = bearer(request.headers());
    let certificate = request.extensions().get::<CertificateName>().map(|c| c.0.clone());
    let credential = token.as_deref().map(Credential::Token).or(certificate.as_deref().map(Credential::Certificate));
    let admitted = gate.admit(credential, need);
    // Who asked, for the audit line written outside this layer: a refused principal too.
    let signed = match &admitted {
        Ok(principal) => principal.as_ref().map(|p| Signed(p.name.clone())),
        Err(Denied::Forbidden { name, .. }) => Some(Signed(name.clone())),
        Err(_) => None,
    };
    let mut response = match admitted {
        Ok(principal) => {
            request.extensions_mut().insert(Caller(principal));
            next.run(request).await
        }
        Err(denied @ Denied::Forbidden { .. }) => error(StatusCode::FORBIDDEN, denied.to_string()),
        Err(denied) => {
            let mut response = error(StatusCode::UNAUTHORIZED, denied.to_string());
            let challenge = header::HeaderValue::from_static("Bearer realm=\"index766\"");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            response
        }
    };
    if let Some(signed) = signed {
        response.extensions_mut().insert(signed);
    }
    response
}

/// The name a request signed in with, on its response for the audit line.
#[derive(Clone)]
struct Signed(String);

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The IOC page: one self-contained file, so the wall needs nothing but this port, in the
/// language the reader asks for (`?lang=`, else the browser's, else `[locale] language`).
async fn dashboard(
    State(state): State<AppState>,
    Query(asked): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    match Language::choose(asked.get("lang").map(String::as_str), accept, state.language) {
        Ok(language) => {
            let headers = [(header::CONTENT_LANGUAGE, language.tag()), (header::VARY, "Accept-Language")];
            (headers, Html(wall(language))).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// The page with its `{{name}}`s filled from the language's `[wall]` words, once per language.
fn wall(language: Language) -> &'static str {
    static PAGES: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    PAGES[language as usize].get_or_init(|| {
        let words = language.words("wall");
        let filled = |name: &str| match name {
            "tag" => language.tag().to_owned(),
            "other_tag" => language.other().tag().to_owned(),
            "words" => serde_json::to_string(words).expect("words serialise"),
            name => words.get(name).cloned().unwrap_or_else(|| panic!("ioc.html's {{{{{name}}}}} is not in [wall]")),
        };
        let mut page = include_str!("web/ioc.html");
        let mut out = String::with_capacity(page.len() + 4096);
        while let Some(start) = page.find("{{") {
            let end = start + page[start..].find("}}").expect("a {{ closes");
            out.push_str(&page[..start]);
            out.push_str(&filled(&page[start + 2..end]));
            page = &page[end + 2..];
        }
        out + page
    })
}

async fn index() -> String {
    let mut text = String::from("index766: real-time Index 766 scores\n");
    for route in ROUTES {
        text += &format!("{:<5}{:<14}[{}] {}\n", route.method, route.path, route.need.name(), route.what);
    }
    text + "PostgreSQL wire protocol on [sql] postgres_listen (psql -h HOST -p 5766 -U NAME; [analyst])\n\
            Roles: README \"Security\"; without [access] tokens_file every surface is open.\n"
}

/// One `view` event now, then one each time the engine publishes new scores (`view`) or an alert
/// fires or clears (`alerts`), each with the scores' `as_of`.
async fn updates(State(app): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watched = (app.view.clone(), app.alerts.clone(), true);
    let events = futures::stream::unfold(watched, |(mut views, mut alerts, first)| async move {
        let name = match first {
            true => "view",
            false => tokio::select! {
                changed = views.changed() => changed.ok().map(|()| "view")?,
                changed = alerts.changed() => changed.ok().map(|()| "alerts")?,
            },
        };
        alerts.borrow_and_update();
        let as_of = index766_core::time::format_time(views.borrow_and_update().as_of);
        let event = Event::default().event(name).data(serde_json::json!({ "as_of": as_of }).to_string());
        Some((Ok(event), (views, alerts, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn metrics(State(app): State<AppState>, Extension(Caller(caller)): Extension<Caller>) -> Response {
    // Off the async workers: the first read after a view builds its score gauges.
    let view = app.view.borrow().clone();
    let scope = Scope::for_principal(caller.as_ref(), &view.registry);
    let text = tokio::task::spawn_blocking(move || {
        let text = app.metrics.render() + &app.score_gauges.text(&view);
        match scope {
            Some(scope) => scope.exposition(&text),
            None => text,
        }
    })
    .await
    .expect("rendering does not panic");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Whether this replica should be sent readers: its snapshot is restored (the port opens only
/// then) and it has read all but `[ingest] ready_max_lag_messages` of its partitions.
async fn readyz(State(app): State<AppState>) -> Response {
    match app.metrics.total_lag() {
        Some(lag) if lag <= app.ready_max_lag => {
            json_response(StatusCode::OK, serde_json::json!({"ready": true, "lag": lag}))
        }
        lag => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "lag": lag, "ready_max_lag_messages": app.ready_max_lag}),
        ),
    }
}

/// The status code for anyone (probes); what is wrong, and the notices, for operators.
async fn healthz(State(app): State<AppState>, Extension(Caller(caller)): Extension<Caller>) -> Response {
    let as_of = index766_core::time::format_time(app.view.borrow().as_of);
    if !app.gate.shows(caller.as_ref(), Role::Operator) {
        return match app.health.status() {
            Ok(()) => json_response(StatusCode::OK, serde_json::json!({"status": "ok", "scores_as_of": as_of})),
            Err(_) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "degraded", "scores_as_of": as_of}),
            ),
        };
    }
    let notices = app.health.notices();
    match app.health.status() {
        Ok(()) => json_response(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "scores_as_of": as_of, "notices": notices}),
        ),
        Err(fault) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "degraded", "fault": fault, "scores_as_of": as_of, "serving": "the last published scores", "notices": notices}),
        ),
    }
}

/// The query is the body as text, or `{"sql": "..."}` when sent as JSON.
fn sql_text(headers: &HeaderMap, body: &str) -> Result<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Ok(body.to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Request {
        sql: String,
    }
    serde_json::from_str::<Request>(body)
        .map(|r| r.sql)
        .map_err(|e| format!("a JSON body must be {{\"sql\": \"SELECT ...\"}}: {e}"))
}

/// A state-free POST must come from this site: a page elsewhere that the wall's browser visits
/// could otherwise send it (a `text/plain` POST needs no CORS preflight). The Host must be an
/// address, localhost or an allowed name (a DNS-rebinding page carries its own name), and an
/// Origin, when sent, must be the Host itself or an allowed name.
fn same_site(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let name_of = |authority: &str| -> String {
        let authority = authority.trim().to_ascii_lowercase();
        match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or("").to_owned(),
            None => authority.rsplit_once(':').map_or(authority.clone(), |(host, _)| host.to_owned()),
        }
    };
    let trusted = |name: &str| {
        name == "localhost"
            || name.parse::<std::net::IpAddr>().is_ok()
            || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !trusted(&name_of(host)) {
        return Err(format!(
            "Host {host:?} is not this server's: add it to [http] allowed_hosts if the page is served under that name"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !(authority.eq_ignore_ascii_case(host)
            || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name_of(authority))))
        {
            return Err(format!(
                "a query from the page at {origin:?} is refused: POST /sql from this server's own pages, \
                 or add the page's host to [http] allowed_hosts"
            ));
        }
    }
    Ok(())
}

async fn sql(
    State(app): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(message) = same_site(&headers, &app.allowed_hosts) {
        return error(StatusCode::FORBIDDEN, message);
    }
    let text = match sql_text(&headers, &body) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "empty query: POST the SQL text as the body".into()),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let started = std::time::Instant::now();
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let started_rows =
        app.sql.query(&text, caller.as_ref()).await.and_then(|rows| Ok((format.encoder(&rows.schema)?, rows)));
    let (encoder, rows) = match started_rows {
        Ok(started_rows) => started_rows,
        Err(e) => {
            app.metrics.observe_query("http", false, started.elapsed().as_secs_f64());
            return error(status_of(&e), e.to_string());
        }
    };
    let body = Body::from_stream(stream_rows(rows, encoder, app.metrics.clone(), started));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// The rows, encoded batch by batch as they come; a failure after the first row ends the body
/// early (the status is sent by then), and is counted.
fn stream_rows(
    rows: Rows,
    encoder: Encoder,
    metrics: Arc<Metrics>,
    started: std::time::Instant,
) -> impl Stream<Item = Result<Bytes, QueryError>> {
    futures::stream::unfold(Some((rows, Some(encoder))), move |running| {
        let metrics = metrics.clone();
        async move {
            let (mut rows, mut encoder) = running?;
            let encoded = match rows.next().await {
                Some(batch) => batch.and_then(|b| encoder.as_mut().expect("open until the end").batch(&b)),
                None => {
                    let tail = encoder.take().expect("finished once").finish();
                    metrics.observe_query("http", tail.is_ok(), started.elapsed().as_secs_f64());
                    return Some((tail.map(Bytes::from), None));
                }
            };
            match encoded {
                Ok(bytes) => Some((Ok(Bytes::from(bytes)), Some((rows, encoder)))),
                Err(e) => {
                    metrics.observe_query("http", false, started.elapsed().as_secs_f64());
                    tracing::warn!(error = %e, "SQL result stream ended early");
                    Some((Err(e), None))
                }
            }
        }
    })
}
