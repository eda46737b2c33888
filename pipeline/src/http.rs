//! One HTTP port: `/metrics` (Prometheus), `POST /sql` (DataFusion; JSON, CSV or Arrow IPC), `/healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::query::{Format, QueryError, SqlService};
use crate::view::View;

#[derive(Clone)]
pub struct AppState {
    pub view: watch::Receiver<Arc<View>>,
    pub metrics: Arc<Metrics>,
    pub sql: Arc<SqlService>,
    pub health: Arc<Health>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/sql", post(sql))
        .with_state(state)
}

async fn index() -> &'static str {
    "index766: real-time Index 766 scores\n\
     GET  /metrics  Prometheus metrics (index766_score_points{unit,period,criterion}, pipeline health)\n\
     POST /sql      SQL over units, scores, group_scores, totals, gaps, dossiers and the views; body: the query\n\
                    text, or {\"sql\": \"...\"}; Accept: application/json (default), text/csv,\n\
                    application/vnd.apache.arrow.stream\n\
     GET  /healthz  200 while the events topic is being read, 503 with the fault otherwise\n"
}

async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

async fn healthz(State(app): State<AppState>) -> Response {
    let as_of = crate::time::format_time(app.view.borrow().as_of);
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

async fn sql(State(app): State<AppState>, headers: HeaderMap, body: String) -> Response {
    let text = match sql_text(&headers, &body) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "empty query: POST the SQL text as the body".into()),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let view = app.view.borrow().clone();
    let started = std::time::Instant::now();
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let result = app.sql.query(&view, &text).await.and_then(|results| format.encode(&results));
    let outcome = if result.is_ok() { "ok" } else { "error" };
    app.metrics.sql_queries.with_label_values(&[outcome]).inc();
    app.metrics.sql_query_duration.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e @ QueryError::Timeout(_)) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    json_response(status, serde_json::json!({ "error": message }))
}
