//! The typed read API, `/api/v1/…`, for the wall and for any program that is not an analyst.
//! Each resource is a fixed query over the SQL tables with its parameters bound, never spliced
//! into the text, so it reads through the same unit scopes, query slots, per-principal shares and
//! audit trail as `/sql`; its answer is `{"<resource>": [rows]}`. `/api/v1/openapi.json`
//! describes them all from this same table, the answers' schemas from planning these very
//! queries: a column a table gains is in the document by itself.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::scalar::ScalarValue;
use serde_json::{json, Map, Value};

use crate::serve::access::Principal;
use crate::serve::query::{to_json, Bound};
use crate::serve::routes::{error, json_response, status_of, AppState, Caller, ROUTES};
use crate::serve::scope::Scope;

/// A query parameter of the API; each resource takes some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    Unit,
    PeriodKind,
    Period,
    Criterion,
    Limit,
    From,
    To,
    State,
}

const PERIOD_KINDS: [&str; 4] = ["month", "quarter", "half_year", "year"];
const ALERT_STATES: [&str; 3] = ["firing", "resolved", "all"];
const MAX_LIMIT: i64 = 1000;

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::Unit => "unit",
            Param::PeriodKind => "period_kind",
            Param::Period => "period",
            Param::Criterion => "criterion",
            Param::Limit => "limit",
            Param::From => "from",
            Param::To => "to",
            Param::State => "state",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Param::Unit => "a unit_code (GET /api/v1/units lists them); default: the province, or the first unit of a scoped token (dossiers and alerts: every unit the token may read)",
            Param::PeriodKind => "month (default), quarter, half_year or year",
            Param::Period => "a period of that kind, e.g. 2026-11, 2026-Q4, 2026-H2, 2026; default: the current one",
            Param::Criterion => "a dossier criterion, e.g. 2.1: only the dossiers it counts as lost; default: any loss, late or overdue",
            Param::Limit => "at most this many rows, 1 to 1000 (default 50)",
            Param::From => "the first day, YYYY-MM-DD (default: all that is kept)",
            Param::To => "the last day, YYYY-MM-DD (default: the newest kept)",
            Param::State => "firing (default), resolved or all",
        }
    }

    /// Its JSON Schema; `marks` are the dossier criteria there are.
    fn schema(self, example_unit: &str, marks: &[String]) -> Value {
        match self {
            Param::Unit => json!({"type": "string", "example": example_unit}),
            Param::PeriodKind => json!({"type": "string", "enum": PERIOD_KINDS, "default": "month"}),
            Param::Period => {
                json!({"type": "string", "pattern": "^[0-9]{4}(-[0-9]{2}|-Q[1-4]|-H[12])?$", "example": "2026-11"})
            }
            Param::Criterion => {
                json!({"type": "string", "enum": marks.iter().map(|m| criterion_of(m)).collect::<Vec<_>>()})
            }
            Param::Limit => json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
            Param::From | Param::To => json!({"type": "string", "format": "date", "example": "2026-11-01"}),
            Param::State => json!({"type": "string", "enum": ALERT_STATES, "default": "firing"}),
        }
    }
}

/// One resource of the API: where, the parameters it takes, its query.
pub(crate) struct Resource {
    pub path: &'static str,
    /// The name of its answer's array.
    key: &'static str,
    params: &'static [Param],
    query: fn(&Asked) -> Bound,
}

/// The parameters of a unit's figures for a period, and of its history between two days.
const OF_A_PERIOD: &[Param] = &[Param::Unit, Param::PeriodKind, Param::Period];
const BETWEEN_DAYS: &[Param] = &[Param::Unit, Param::PeriodKind, Param::From, Param::To];

/// Every resource; each has its route (role, description) in `routes::ROUTES`.
#[rustfmt::skip]
pub(crate) const RESOURCES: &[Resource] = &[
    Resource { path: "/api/v1/units", key: "units", params: &[], query: units },
    Resource { path: "/api/v1/periods", key: "periods", params: &[Param::Unit, Param::PeriodKind], query: periods },
    Resource { path: "/api/v1/totals", key: "totals", params: OF_A_PERIOD, query: totals },
    Resource { path: "/api/v1/ranking", key: "ranking", params: OF_A_PERIOD, query: ranking },
    Resource { path: "/api/v1/groups", key: "groups", params: OF_A_PERIOD, query: groups },
    Resource { path: "/api/v1/criteria", key: "criteria", params: OF_A_PERIOD, query: criteria },
    Resource { path: "/api/v1/gaps", key: "gaps", params: &[Param::Unit, Param::PeriodKind], query: gaps },
    Resource { path: "/api/v1/dossiers", key: "dossiers", params: &[Param::Unit, Param::Criterion, Param::Limit], query: dossiers },
    Resource { path: "/api/v1/alerts", key: "alerts", params: &[Param::Unit, Param::State], query: alerts },
    Resource { path: "/api/v1/history/daily", key: "days", params: BETWEEN_DAYS, query: daily },
    Resource { path: "/api/v1/history/daily_groups", key: "days", params: BETWEEN_DAYS, query: daily_groups },
    Resource { path: "/api/v1/history/weekly", key: "weeks", params: BETWEEN_DAYS, query: weekly },
];

pub(crate) fn resource(path: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.path == path)
}

/// What a request asks, checked; what it did not give holds the default.
pub(crate) struct Asked {
    unit: String,
    /// The unit as given: dossiers and alerts without one are those of every unit readable.
    given_unit: Option<String>,
    period_kind: &'static str,
    period: Option<String>,
    /// The dossiers' column of the criterion asked for (`c2_1`).
    criterion: Option<String>,
    limit: i64,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// `None`: every state.
    state: Option<&'static str>,
    /// The dossiers' criterion columns (`c1_4`, `c2_1`, …).
    marks: Vec<String>,
}

pub(crate) fn text(value: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(value.to_owned()))
}

pub(crate) fn day(date: NaiveDate) -> ScalarValue {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    ScalarValue::Date32(Some((date - epoch).num_days() as i32))
}

fn units(_: &Asked) -> Bound {
    let text = "SELECT unit_code, unit_name, parent_code, level, depth FROM units ORDER BY depth, unit_code".into();
    Bound { text, values: vec![], within: None }
}

/// The rows of a period table whose `unit_column` is the unit asked, for the period asked.
fn of_unit(table: &str, unit_column: &str, order: &str, asked: &Asked) -> Bound {
    let mut values = vec![("unit", text(&asked.unit)), ("period_kind", text(asked.period_kind))];
    let period = match &asked.period {
        Some(period) => {
            values.push(("period", text(period)));
            "period = $period"
        }
        None => "is_current",
    };
    let text = format!(
        "SELECT * FROM {table} WHERE {unit_column} = $unit AND period_kind = $period_kind AND {period} ORDER BY {order}"
    );
    Bound { text, values, within: None }
}

/// The periods of a kind the unit has figures for, newest first, and whether late events restated
/// them: what the wall's selector offers.
fn periods(asked: &Asked) -> Bound {
    let values = vec![("unit", text(&asked.unit)), ("period_kind", text(asked.period_kind))];
    let text = "SELECT t.period, t.period_start, t.is_current, r.period IS NOT NULL AS restated FROM totals t \
                LEFT JOIN (SELECT DISTINCT unit_code, period_kind, period FROM restatements) r \
                ON r.unit_code = t.unit_code AND r.period_kind = t.period_kind AND r.period = t.period \
                WHERE t.unit_code = $unit AND t.period_kind = $period_kind ORDER BY t.period_start DESC"
        .to_owned();
    Bound { text, values, within: None }
}

fn totals(asked: &Asked) -> Bound {
    of_unit("totals", "unit_code", "unit_code", asked)
}

fn ranking(asked: &Asked) -> Bound {
    of_unit("totals", "parent_code", "rank, unit_name", asked)
}

fn groups(asked: &Asked) -> Bound {
    of_unit("group_scores", "unit_code", "group_id", asked)
}

fn criteria(asked: &Asked) -> Bound {
    of_unit("scores", "unit_code", "points_lost DESC, group_id, criterion", asked)
}

fn gaps(asked: &Asked) -> Bound {
    of_unit("gaps", "unit_code", "loss_rank", asked)
}

/// The dossiers of the unit's subtree behind its lost points, the most urgent first.
fn dossiers(asked: &Asked) -> Bound {
    // Column names come from the table's own schema, the limit is a checked number.
    let lost = match &asked.criterion {
        Some(column) => format!("{column} = false"),
        None => std::iter::once("timeliness IN ('late', 'open_overdue')".to_owned())
            .chain(asked.marks.iter().map(|m| format!("{m} = false")))
            .collect::<Vec<_>>()
            .join(" OR "),
    };
    let text = format!(
        "SELECT * FROM dossiers WHERE {lost} ORDER BY CASE timeliness WHEN 'open_overdue' THEN 0 WHEN 'late' THEN 1 \
         ELSE 2 END, due_at ASC NULLS LAST, dossier_id LIMIT {}",
        asked.limit
    );
    Bound { text, values: vec![], within: asked.given_unit.clone() }
}

/// The unit's subtree's drop alerts, the newest first.
fn alerts(asked: &Asked) -> Bound {
    let (filter, values) = match asked.state {
        Some(state) => ("WHERE state = $state", vec![("state", text(state))]),
        None => ("", vec![]),
    };
    let text = format!("SELECT * FROM alerts {filter} ORDER BY fired_at DESC, id");
    Bound { text, values, within: asked.given_unit.clone() }
}

/// A history table's rows of the unit asked, day by day (week by week) within the dates asked.
fn history(table: &str, column: &str, asked: &Asked) -> Bound {
    let mut values = vec![("unit", text(&asked.unit)), ("period_kind", text(asked.period_kind))];
    let mut text = format!("SELECT * FROM {table} WHERE unit_code = $unit AND period_kind = $period_kind");
    for (name, bound, op) in [("from", asked.from, ">="), ("to", asked.to, "<=")] {
        if let Some(date) = bound {
            values.push((name, day(date)));
            text += &format!(" AND {column} {op} ${name}");
        }
    }
    Bound { text: text + &format!(" ORDER BY {column}"), values, within: None }
}

fn daily(asked: &Asked) -> Bound {
    history("daily_totals", "day", asked)
}

fn daily_groups(asked: &Asked) -> Bound {
    history("daily_group_scores", "day", asked)
}

fn weekly(asked: &Asked) -> Bound {
    history("weekly_totals", "week_start", asked)
}

/// `c2_1` → `2.1`.
fn criterion_of(column: &str) -> String {
    column.trim_start_matches('c').replacen('_', ".", 1)
}

/// The dossiers' criterion columns, in criterion order.
fn marks() -> Vec<String> {
    let schema = crate::engine::view::dossiers_schema();
    let is_mark = |name: &str| {
        name.strip_prefix('c').and_then(|rest| rest.split_once('_')).is_some_and(|(group, number)| {
            !group.is_empty()
                && !number.is_empty()
                && group.bytes().all(|b| b.is_ascii_digit())
                && number.bytes().all(|b| b.is_ascii_digit())
        })
    };
    schema.fields().iter().map(|f| f.name().clone()).filter(|n| is_mark(n)).collect()
}

/// A refusal: its status and what to fix.
type Refusal = (StatusCode, String);

fn bad(message: String) -> Refusal {
    (StatusCode::BAD_REQUEST, message)
}

/// Checks the request's parameters against what `resource` takes, and fills in the defaults.
fn asked(
    resource: &Resource,
    pairs: Vec<(String, String)>,
    app: &AppState,
    caller: Option<&Principal>,
) -> Result<Asked, Refusal> {
    let mut given: Vec<(Param, String)> = Vec::new();
    for (name, value) in pairs {
        let Some(&param) = resource.params.iter().find(|p| p.name() == name) else {
            let takes: Vec<&str> = resource.params.iter().map(|p| p.name()).collect();
            return Err(bad(format!(
                "{} takes no parameter {name:?}; it takes: {}",
                resource.path,
                if takes.is_empty() { "none".to_owned() } else { takes.join(", ") }
            )));
        };
        if given.iter().any(|(p, _)| *p == param) {
            return Err(bad(format!("{name} is given twice: give it once")));
        }
        given.push((param, value));
    }
    let value = |param: Param| given.iter().find(|(p, _)| *p == param).map(|(_, v)| v.as_str());
    let one_of = |param: Param, allowed: &[&'static str], default: &'static str| -> Result<&'static str, Refusal> {
        let Some(value) = value(param) else { return Ok(default) };
        allowed
            .iter()
            .copied()
            .find(|a| *a == value)
            .ok_or_else(|| bad(format!("{}={value:?}: use {}", param.name(), allowed.join(", "))))
    };
    let date = |param: Param| -> Result<Option<NaiveDate>, Refusal> {
        value(param)
            .map(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d"))
            .transpose()
            .map_err(|_| bad(format!("{}: a day as YYYY-MM-DD, e.g. 2026-11-01", param.name())))
    };
    let marks = marks();
    let criterion = match value(Param::Criterion) {
        None => None,
        Some(id) => Some(marks.iter().find(|m| criterion_of(m) == id).cloned().ok_or_else(|| {
            let known: Vec<String> = marks.iter().map(|m| criterion_of(m)).collect();
            bad(format!("criterion={id:?}: the dossier criteria are {}", known.join(", ")))
        })?),
    };
    let limit = match value(Param::Limit) {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit={v:?}: a number from 1 to {MAX_LIMIT}")))?,
    };
    let period = value(Param::Period).map(str::to_owned);
    if let Some(period) = &period {
        if !is_period(period) {
            return Err(bad(format!("period={period:?}: e.g. 2026-11, 2026-Q4, 2026-H2 or 2026")));
        }
    }
    Ok(Asked {
        unit: unit(value(Param::Unit), app, caller)?,
        given_unit: value(Param::Unit).map(str::to_owned),
        period_kind: one_of(Param::PeriodKind, &PERIOD_KINDS, "month")?,
        period,
        criterion,
        limit,
        from: date(Param::From)?,
        to: date(Param::To)?,
        state: Some(one_of(Param::State, &ALERT_STATES, "firing")?).filter(|s| *s != "all"),
        marks,
    })
}

fn is_period(text: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('-') {
        None => digits(text, 4),
        Some((year, rest)) => {
            digits(year, 4) && (digits(rest, 2) || matches!(rest, "Q1" | "Q2" | "Q3" | "Q4" | "H1" | "H2"))
        }
    }
}

/// The unit asked for, if the caller may read it; else the caller's first unit, or the province.
/// A unit out of scope is answered like one that does not exist.
pub(crate) fn unit(asked: Option<&str>, app: &AppState, caller: Option<&Principal>) -> Result<String, Refusal> {
    let registry = app.view.borrow().registry.clone();
    let scope = Scope::for_principal(caller, &registry);
    let readable = |code: &str| registry.position(code).is_some() && scope.as_ref().is_none_or(|s| s.keeps(code));
    match asked {
        Some(code) if readable(code) => Ok(code.to_owned()),
        Some(code) => Err((
            StatusCode::NOT_FOUND,
            format!("unit={code:?} is not a unit you may read: GET /api/v1/units lists them"),
        )),
        None => {
            let first = match caller.filter(|p| !p.units.is_empty()) {
                Some(principal) => principal.units.iter().find(|c| readable(c)).cloned(),
                None => registry.units().iter().find(|u| u.parent.is_none()).map(|u| u.code.clone()),
            };
            first.ok_or_else(|| (StatusCode::NOT_FOUND, "no unit is known yet: the unit registry is empty".into()))
        }
    }
}

/// `GET` on one resource.
pub(crate) async fn answer(
    resource: &'static Resource,
    app: AppState,
    caller: Option<Principal>,
    pairs: Vec<(String, String)>,
) -> Response {
    let asked = match asked(resource, pairs, &app, caller.as_ref()) {
        Ok(asked) => asked,
        Err((status, message)) => return error(status, message),
    };
    let bound = (resource.query)(&asked);
    let rows = match app.sql.read(&bound, caller.as_ref()).await.and_then(|results| to_json(&results.batches)) {
        Ok(rows) => rows,
        Err(e) => return error(status_of(&e), e.to_string()),
    };
    let mut body = format!("{{{}:", Value::from(resource.key)).into_bytes();
    body.extend(rows);
    body.push(b'}');
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The handler of one resource's route.
pub(crate) fn handler(resource: &'static Resource) -> axum::routing::MethodRouter<AppState> {
    axum::routing::get(
        move |State(app): State<AppState>,
              Extension(Caller(caller)): Extension<Caller>,
              Query(pairs): Query<Vec<(String, String)>>| answer(resource, app, caller, pairs),
    )
}

/// The OpenAPI document of the API, as the running tables make it.
pub(crate) async fn document(State(app): State<AppState>) -> Response {
    let registry = app.view.borrow().registry.clone();
    let example = registry.units().iter().find(|u| u.parent.is_none()).map(|u| u.code.clone()).unwrap_or_default();
    let marks = marks();
    let example_asked = Asked {
        unit: example.clone(),
        given_unit: None,
        period_kind: "month",
        period: Some("2026-11".into()),
        criterion: None,
        limit: 50,
        from: None,
        to: None,
        state: Some("firing"),
        marks: marks.clone(),
    };
    let mut paths = Map::new();
    for resource in RESOURCES {
        let columns = match app.sql.columns(&(resource.query)(&example_asked).text).await {
            Ok(columns) => columns,
            Err(e) => return error(status_of(&e), format!("{}: {e}", resource.path)),
        };
        let row = row_schema(columns.fields().iter().map(|f| f.as_ref()));
        let what = ROUTES.iter().find(|r| r.path == resource.path).map_or("", |r| r.what);
        let parameters: Vec<Value> = resource
            .params
            .iter()
            .map(|p| json!({"name": p.name(), "in": "query", "required": false, "description": p.about(), "schema": p.schema(&example, &marks)}))
            .collect();
        let answer = json!({"type": "object", "required": [resource.key], "additionalProperties": false,
                            "properties": {resource.key: {"type": "array", "items": row}}});
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "the rows", "content": {"application/json": {"schema": answer}}}),
        );
        for (status, why) in REFUSALS {
            responses.insert(status.into(), json!({"description": why, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        paths.insert(
            resource.path.into(),
            json!({"get": {"summary": what, "operationId": resource.key, "parameters": parameters, "responses": responses}}),
        );
    }
    json_response(
        StatusCode::OK,
        json!({
            "openapi": "3.0.3",
            "info": {"title": "index766 read API", "version": "1", "description": "Index 766 scores, gaps, dossiers, alerts and history, scoped to what the token may read (README \"Security\")."},
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
            },
        }),
    )
}

const REFUSALS: [(&str, &str); 7] = [
    ("400", "a parameter the resource does not take, or a value it does not accept"),
    ("401", "no token, or one that is not known"),
    ("403", "the token lacks the wall role"),
    ("404", "a unit that does not exist or is out of the token's scope"),
    ("429", "the token's share of queries is taken ([sql] max_per_principal)"),
    ("503", "every query slot stayed busy, or the query memory is spent"),
    ("504", "the query ran past [sql] timeout_secs"),
];

/// The JSON Schema of a row as the JSON answers write it: every column present, nulls written.
fn row_schema<'a>(fields: impl Iterator<Item = &'a Field>) -> Value {
    let (mut properties, mut required) = (Map::new(), Vec::new());
    for field in fields {
        let (kind, always_nullable) = json_type(field.data_type());
        let mut schema = json!({ "type": kind });
        if field.is_nullable() || always_nullable {
            schema["nullable"] = json!(true);
        }
        properties.insert(field.name().clone(), schema);
        required.push(field.name().clone());
    }
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

/// A column's JSON type, and whether it may be null though the column is not (a float that is
/// not finite is written as null).
fn json_type(data_type: &DataType) -> (&'static str, bool) {
    match data_type {
        DataType::Boolean => ("boolean", false),
        t if t.is_integer() => ("integer", false),
        t if t.is_floating() => ("number", true),
        DataType::Dictionary(_, value) => json_type(value),
        _ => ("string", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_its_route_and_every_api_route_its_resource() {
        for resource in RESOURCES {
            assert!(
                ROUTES.iter().any(|r| r.path == resource.path && r.method == "GET"),
                "{} has no route",
                resource.path
            );
        }
        for route in
            ROUTES.iter().filter(|r| r.path.starts_with("/api/v1/") && r.path != crate::serve::routes::DOCUMENT)
        {
            assert!(resource(route.path).is_some(), "{} has no resource", route.path);
        }
    }

    #[test]
    fn periods_and_criteria_are_read_as_the_tables_write_them() {
        for good in ["2026", "2026-11", "2026-Q4", "2026-H2"] {
            assert!(is_period(good), "{good}");
        }
        for bad in ["", "26", "2026-1", "2026-Q5", "2026-11-01", "x' OR '1"] {
            assert!(!is_period(bad), "{bad}");
        }
        let marks = marks();
        assert!(marks.contains(&"c2_1".to_owned()) && !marks.iter().any(|m| m == "channel"), "{marks:?}");
        assert_eq!(criterion_of("c2_1"), "2.1");
    }
}
