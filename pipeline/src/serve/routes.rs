//! What the HTTP port serves and what its handlers share: the route table with each route's
//! role (`http` builds its router from it, `access` tests read it), the handlers' state, the
//! caller a request signed in as, and the JSON answers and refusals.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::alerts::Alert;
use crate::engine::view::View;
use crate::lang::Language;
use crate::serve::access::{Gate, Need, Principal, Role};
use crate::serve::exposition::ScoreGauges;
use crate::serve::query::SqlService;
use crate::serve::report::kept::Reports;
use crate::serve::sql_error::QueryError;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct AppState {
    pub view: watch::Receiver<Arc<View>>,
    pub metrics: Arc<Metrics>,
    pub score_gauges: Arc<ScoreGauges>,
    pub sql: Arc<SqlService>,
    pub health: Arc<Health>,
    pub alerts: watch::Receiver<Arc<Vec<Alert>>>,
    /// Host names a browser may reach `POST /sql` by, besides loopback and IP addresses.
    pub allowed_hosts: Arc<Vec<String>>,
    pub gate: Arc<Gate>,
    /// `GET /readyz`: ready at most this many messages behind.
    pub ready_max_lag: i64,
    /// The wall's language when the reader asks for none (`[locale] language`).
    pub language: Language,
    pub reports: Arc<Reports>,
}

/// One surface of the HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    pub what: &'static str,
}

/// Where the OpenAPI document of `/api/v1` is served.
pub(crate) const DOCUMENT: &str = "/api/v1/openapi.json";

const WALL: Need = Need::Role(Role::Wall);

/// Every route, with the role it needs: the router is built from this table, the access check
/// reads it, and so do `/api`'s index and the access tests. A route outside it cannot be served.
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/", need: Need::Nobody, what: "the IOC dashboard (a static page; its data needs a token)" },
    Route { method: "GET", path: "/api", need: Need::Nobody, what: "this index" },
    Route { method: "GET", path: DOCUMENT, need: Need::Nobody, what: "the OpenAPI document of /api/v1" },
    Route { method: "GET", path: "/api/v1/units", need: WALL, what: "the unit tree: unit_code, unit_name, parent_code, level, depth" },
    Route { method: "GET", path: "/api/v1/periods", need: WALL, what: "the periods of a kind a unit has figures for, newest first" },
    Route { method: "GET", path: "/api/v1/totals", need: WALL, what: "a unit's total for a period: band, delta, rank among its siblings, target" },
    Route { method: "GET", path: "/api/v1/ranking", need: WALL, what: "the totals of a unit's children, best first" },
    Route { method: "GET", path: "/api/v1/groups", need: WALL, what: "a unit's six group scores for a period" },
    Route { method: "GET", path: "/api/v1/criteria", need: WALL, what: "a unit's criterion scores for a period, the most points lost first" },
    Route { method: "GET", path: "/api/v1/gaps", need: WALL, what: "what each criterion needs to bring a unit to its target (current periods)" },
    Route { method: "GET", path: "/api/v1/dossiers", need: WALL, what: "the dossiers of a unit's subtree behind its lost points, the most urgent first" },
    Route { method: "GET", path: "/api/v1/alerts", need: WALL, what: "drop alerts of a unit's subtree (state=firing, resolved or all)" },
    Route { method: "GET", path: "/api/v1/history/daily", need: WALL, what: "a unit's totals day by day (the last figures of each day)" },
    Route { method: "GET", path: "/api/v1/history/daily_groups", need: WALL, what: "a unit's six group scores day by day" },
    Route { method: "GET", path: "/api/v1/history/weekly", need: WALL, what: "a unit's totals week by week" },
    Route { method: "GET", path: "/reports", need: WALL, what: "the weekly reports kept (every Monday 00:00, Vietnam time), newest first, with their links" },
    Route {
        method: "GET",
        path: "/reports/weekly",
        need: WALL,
        what: "a unit's weekly report written now: ?unit=&week=2026-W45&period_kind=month&format=html|pdf|xlsx|json&lang=vi|en",
    },
    Route { method: "GET", path: "/reports/kept", need: WALL, what: "a kept weekly report: ?week=2026-W45 (default: the newest)&unit=&format=html|pdf|xlsx|json" },
    Route {
        method: "GET",
        path: "/api/updates",
        need: Need::Role(Role::Wall),
        what: "server-sent events: `view` when new scores are published, `alerts` when an alert fires or clears, each with {\"as_of\"}",
    },
    Route {
        method: "GET",
        path: "/metrics",
        need: Need::Role(Role::Operator),
        what: "Prometheus metrics (index766_total_points{unit,period}, ..., pipeline health)",
    },
    Route {
        method: "GET",
        path: "/healthz",
        need: Need::Nobody,
        what: "200 while the events topic is being read, 503 otherwise; the fault and notices for operator",
    },
    Route {
        method: "GET",
        path: "/readyz",
        need: Need::Nobody,
        what: "200 once the snapshot is restored and ingest has caught up ([ingest] ready_max_lag_messages), 503 before; {\"ready\", \"lag\"}",
    },
    Route {
        method: "POST",
        path: "/sql",
        need: Need::Role(Role::Analyst),
        what: "SQL over units, scores, group_scores, totals, gaps, dossiers, alerts, the daily_* and weekly_* \
               history and the views; body: the query text, or {\"sql\": \"...\"}; Accept: application/json \
               (default), text/csv, application/vnd.apache.arrow.stream",
    },
];

/// Who sent a request; `None` when sign-in is off or an open route was reached without a token.
#[derive(Clone)]
pub(crate) struct Caller(pub Option<Principal>);

/// The status a failed query is answered with.
pub(crate) fn status_of(e: &QueryError) -> StatusCode {
    match e {
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Busy(_) | QueryError::Memory(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        QueryError::Invalid(_) | QueryError::Refused(_) | QueryError::TooLarge(_) => StatusCode::BAD_REQUEST,
        QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    json_response(status, serde_json::json!({ "error": message }))
}
