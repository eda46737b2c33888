//! The report's routes: `GET /reports` (the kept weeks a caller may read), `GET /reports/weekly`
//! (any unit's, written now), `GET /reports/kept` (one kept file).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;

use index766_core::time::PeriodKind;

use crate::lang::Language;
use crate::serve::access::Principal;
use crate::serve::api;
use crate::serve::report::kept::Format;
use crate::serve::report::{newest_week, Asked, ReportError, Week};
use crate::serve::routes::{error, json_response, status_of, AppState, Caller};
use crate::serve::scope::Scope;

type Pairs = Vec<(String, String)>;

/// A refusal: its status and what to fix.
type Refusal = (StatusCode, String);

fn bad(message: String) -> Refusal {
    (StatusCode::BAD_REQUEST, message)
}

fn answered(result: Result<Response, Refusal>) -> Response {
    result.unwrap_or_else(|(status, message)| error(status, message))
}

/// The value of each parameter a route takes; a parameter it does not take, or given twice, is refused.
fn params<'a>(pairs: &'a Pairs, takes: &[&str], path: &str) -> Result<Vec<Option<&'a str>>, Refusal> {
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !takes.contains(&name.as_str()) {
            return Err(bad(format!("{path} takes no parameter {name:?}; it takes: {}", takes.join(", "))));
        }
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(bad(format!("{name} is given twice: give it once")));
        }
    }
    Ok(takes.iter().map(|t| pairs.iter().find(|(n, _)| n == t).map(|(_, v)| v.as_str())).collect())
}

fn week(value: Option<&str>) -> Result<Option<Week>, Refusal> {
    value.map(Week::parse).transpose().map_err(bad)
}

fn format(value: Option<&str>) -> Result<Format, Refusal> {
    Format::parse(value.unwrap_or("html")).map_err(bad)
}

fn period_kind(value: Option<&str>) -> Result<PeriodKind, Refusal> {
    let Some(text) = value else { return Ok(PeriodKind::Month) };
    PeriodKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| bad(format!("period_kind={text:?}: use month, quarter, half_year or year")))
}

fn from_report(e: ReportError) -> Refusal {
    match e {
        ReportError::Query(e) => (status_of(&e), e.to_string()),
        missing => (StatusCode::NOT_FOUND, missing.to_string()),
    }
}

fn file(format: Format, name: String, bytes: Vec<u8>, language: Language) -> Response {
    let disposition = match format {
        Format::Html | Format::Json => format!("inline; filename=\"{name}.{}\"", format.extension()),
        Format::Pdf | Format::Xlsx => format!("attachment; filename=\"{name}.{}\"", format.extension()),
    };
    let headers = [
        (header::CONTENT_TYPE, format.content_type().to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_LANGUAGE, language.tag().to_owned()),
    ];
    (StatusCode::OK, headers, bytes).into_response()
}

/// `GET /reports/weekly?unit=&week=&period_kind=&format=&lang=`.
pub(crate) async fn weekly(
    State(app): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    Query(pairs): Query<Pairs>,
    headers: HeaderMap,
) -> Response {
    answered(write_now(app, caller, pairs, headers).await)
}

async fn write_now(
    app: AppState,
    caller: Option<Principal>,
    pairs: Pairs,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let given = params(&pairs, &["unit", "week", "period_kind", "format", "lang"], "/reports/weekly")?;
    let unit = api::unit(given[0], &app, caller.as_ref())?;
    let (asked_week, period_kind, format) = (week(given[1])?, period_kind(given[2])?, format(given[3])?);
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    let language = Language::choose(given[4], accept, app.language).map_err(bad)?;
    let week = match asked_week {
        Some(week) => week,
        None => newest_week(&app.reports.sql, &unit, caller.as_ref())
            .await
            .map_err(|e| (status_of(&e), e.to_string()))?
            .ok_or_else(|| from_report(ReportError::NoWeeks { unit: unit.clone() }))?,
    };
    let report = app.reports.gather(&Asked { unit, week, period_kind }, caller.as_ref()).await.map_err(from_report)?;
    let bytes = format.write(&report, language).map_err(|message| (StatusCode::INTERNAL_SERVER_ERROR, message))?;
    Ok(file(format, format!("index766-{}-{}", report.unit_code, report.week), bytes, language))
}

/// `GET /reports`: the kept weeks, newest first, with the units the caller may read.
pub(crate) async fn list(State(app): State<AppState>, Extension(Caller(caller)): Extension<Caller>) -> Response {
    let registry = app.view.borrow().registry.clone();
    let scope = Scope::for_principal(caller.as_ref(), &registry);
    let reports: Vec<serde_json::Value> = app
        .reports
        .kept()
        .await
        .into_iter()
        .flat_map(|kept| {
            let scope = scope.clone();
            kept.units.clone().into_iter().filter(move |(code, _)| scope.as_ref().is_none_or(|s| s.keeps(code))).map(
                move |(code, name)| {
                    let link = |format: Format| {
                        format!("/reports/kept?week={}&unit={code}&format={}", kept.week, format.extension())
                    };
                    json!({
                        "week": kept.week, "week_start": kept.week_start, "language": kept.language.tag(),
                        "written_at": kept.written_at, "unit_code": code, "unit_name": name,
                        "html": link(Format::Html), "pdf": link(Format::Pdf), "xlsx": link(Format::Xlsx), "json": link(Format::Json),
                    })
                },
            )
        })
        .collect();
    json_response(StatusCode::OK, json!({ "reports": reports }))
}

/// `GET /reports/kept?week=&unit=&format=`: a file the Monday writer kept (default: the newest week).
pub(crate) async fn kept(
    State(app): State<AppState>,
    Extension(Caller(caller)): Extension<Caller>,
    Query(pairs): Query<Pairs>,
) -> Response {
    answered(kept_file(app, caller, pairs).await)
}

async fn kept_file(app: AppState, caller: Option<Principal>, pairs: Pairs) -> Result<Response, Refusal> {
    let given = params(&pairs, &["week", "unit", "format"], "/reports/kept")?;
    let unit = api::unit(given[1], &app, caller.as_ref())?;
    let (asked_week, format) = (week(given[0])?, format(given[2])?);
    // The week asked for, else the newest that kept this unit's.
    let kept = app
        .reports
        .kept()
        .await
        .into_iter()
        .find(|k| {
            asked_week.is_none_or(|w| k.week_start == w.monday.to_string())
                && k.units.iter().any(|(code, _)| *code == unit)
        })
        .ok_or_else(|| {
            let which = asked_week.map_or("yet".to_owned(), |w| format!("for {w}"));
            (
                StatusCode::NOT_FOUND,
                format!("no weekly report of {unit} is kept {which}: GET /reports lists those kept"),
            )
        })?;
    let internal = |message: String| (StatusCode::INTERNAL_SERVER_ERROR, message);
    let week = Week::parse(&kept.week).map_err(|_| internal(format!("a kept index names the week {:?}", kept.week)))?;
    let bytes = app
        .reports
        .kept_file(week, &unit, format)
        .await
        .map_err(|e| internal(format!("the kept report cannot be read from the store: {e}")))?;
    Ok(file(format, format!("index766-{unit}-{week}"), bytes.to_vec(), kept.language))
}
