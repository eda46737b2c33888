//! The typed read API as its programs meet it: each resource answers what `/sql` says, a bad
//! parameter is a 400 that says what to fix, a unit out of reach a 404; its OpenAPI document,
//! fuzzed by schemathesis against the running pipeline, holds for every answer (no 500); and the
//! wall page, run in a real browser with a `wall` token, shows the province and cannot reach `/sql`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use index766::serve::access::Role;
use index766::serve::routes::ROUTES;
use index766::tools::produce::{ensure_topics, EventProducer};

use crate::access::make_token;
use crate::browser::Browser;
use crate::scenario;
use crate::support::{http_as, wait_for, Kafka};

fn get(addr: SocketAddr, token: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_as(addr, token, "GET", path, "");
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("GET {path}: not JSON: {body}")))
}

/// The rows of one resource's answer.
fn rows(addr: SocketAddr, token: &str, path: &str, key: &str) -> Vec<Value> {
    let (status, answer) = get(addr, token, path);
    assert_eq!(status, 200, "GET {path}: {answer}");
    answer[key].as_array().unwrap_or_else(|| panic!("GET {path}: no {key}: {answer}")).clone()
}

fn sql_as(addr: SocketAddr, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = http_as(addr, token, "POST", "/sql", query);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_api_answers_what_sql_says_and_holds_to_its_document() {
    let kafka = Kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let (wall_entry, wall) = make_token("wall-screen", &[Role::Wall], &[]);
    let (analyst_entry, analyst) = make_token("analyst", &[Role::Analyst], &[]);
    std::fs::write(dir.path().join("tokens.toml"), wall_entry + &analyst_entry).unwrap();
    let mut config = scenario::prefixed_config(&kafka.bootstrap, "api", &dir.path().join("snapshots"), false);
    config.access.tokens_file = dir.path().join("tokens.toml");
    ensure_topics(&kafka.bootstrap, &[&config.topics.events, &config.topics.dead_letter], 1).await.unwrap();
    let mut producer = EventProducer::new(&kafka.bootstrap, &config.topics.events).unwrap();
    for event in scenario::events() {
        producer.send(&event).unwrap();
    }
    let sent = producer.finish().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let addr = pipeline.http_addr;
    wait_for("every event in the view", Duration::from_secs(60), || {
        let seen = "SELECT denominator FROM scores WHERE unit_code = 'H44' AND period = '2026' AND criterion = '2.1'";
        (scenario::settled(&pipeline.metrics) >= sent
            && sql_as(addr, &analyst, seen).first().map(|r| r["denominator"].clone()) == Some(7.into()))
        .then_some(())
    })
    .await;

    // Each resource against the query an analyst would write.
    let current = "period_kind = 'month' AND is_current";
    let units = rows(addr, &wall, "/api/v1/units", "units");
    assert_eq!(
        units.len(),
        sql_as(addr, &analyst, "SELECT count(*) AS n FROM units")[0]["n"].as_u64().unwrap() as usize
    );
    let total = rows(addr, &wall, "/api/v1/totals", "totals");
    let expected =
        sql_as(addr, &analyst, &format!("SELECT unit_code, total, rank FROM totals WHERE depth = 0 AND {current}"));
    assert_eq!(
        (total.len(), &total[0]["unit_code"], &total[0]["total"]),
        (1, &expected[0]["unit_code"], &expected[0]["total"])
    );
    let ranking = rows(addr, &wall, "/api/v1/ranking?unit=H44", "ranking");
    let expected = sql_as(
        addr,
        &analyst,
        &format!("SELECT unit_code FROM totals WHERE parent_code = 'H44' AND {current} ORDER BY rank, unit_name"),
    );
    let codes = |rows: &[Value]| rows.iter().map(|r| r["unit_code"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(codes(&ranking), codes(&expected), "the children of H44, best first");
    let criteria = rows(addr, &wall, "/api/v1/criteria?unit=H44.01&period_kind=year&period=2026", "criteria");
    let expected =
        sql_as(addr, &analyst, "SELECT count(*) AS n FROM scores WHERE unit_code = 'H44.01' AND period = '2026'");
    assert_eq!(criteria.len() as u64, expected[0]["n"].as_u64().unwrap());
    assert!(
        criteria.windows(2).all(|w| w[0]["points_lost"].as_f64() >= w[1]["points_lost"].as_f64()),
        "the most lost first"
    );
    assert_eq!(rows(addr, &wall, "/api/v1/groups?unit=H44.01", "groups").len(), 6);
    assert!(!rows(addr, &wall, "/api/v1/gaps?unit=H44", "gaps").is_empty());
    let late = rows(addr, &wall, "/api/v1/dossiers?unit=H44.01&criterion=2.1&limit=1000", "dossiers");
    let expected =
        sql_as(addr, &analyst, "SELECT count(*) AS n FROM dossiers WHERE unit_code = 'H44.01' AND c2_1 = false");
    assert_eq!(late.len() as u64, expected[0]["n"].as_u64().unwrap(), "the dossiers that lost 2.1");
    assert!(!late.is_empty() && late.iter().all(|d| d["c2_1"] == false && d["unit_code"] == "H44.01"));
    let urgent = rows(addr, &wall, "/api/v1/dossiers?unit=H44&limit=3", "dossiers");
    assert_eq!(urgent.len(), 3, "limit");
    rows(addr, &wall, "/api/v1/alerts?state=all", "alerts");
    rows(addr, &wall, "/api/v1/history/daily?unit=H44&from=2026-11-01&to=2026-11-30", "days");
    rows(addr, &wall, "/api/v1/history/weekly", "weeks");

    // A bad request says what to fix; a value is bound, never spliced into the query.
    for (path, status, says) in [
        ("/api/v1/totals?period_kind=week", 400, "month, quarter, half_year, year"),
        ("/api/v1/totals?unit=NOPE", 404, "GET /api/v1/units"),
        ("/api/v1/totals?unit=H44&unit=H44.01", 400, "twice"),
        ("/api/v1/totals?colour=red", 400, "unit, period_kind, period"),
        ("/api/v1/totals?period=2026'%20OR%20'1", 400, "2026-Q4"),
        ("/api/v1/dossiers?limit=0", 400, "1 to 1000"),
        ("/api/v1/dossiers?criterion=9.9", 400, "2.1"),
        ("/api/v1/history/daily?from=yesterday", 400, "YYYY-MM-DD"),
        ("/api/v1/alerts?state=open", 400, "firing"),
        ("/api/v1/units?unit=H44", 400, "none"),
    ] {
        let (got, answer) = get(addr, &wall, path);
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(got == status && message.contains(says), "GET {path}: {got} {answer}, wanted {status} saying {says:?}");
    }
    let (status, _) = get(addr, &wall, "/api/v1/totals?unit=H44%27%20OR%20%271%27%3D%271");
    assert_eq!(status, 404, "an injected unit is just an unknown unit");

    // The document, fuzzed against the running pipeline: every answer as documented, no 500.
    let schemathesis = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap();
        format!("{home}/.cache/index766/tools/schemathesis-4.32.5/bin/schemathesis")
    });
    let out = std::process::Command::new(&schemathesis)
        .args([
            "run",
            &format!("http://{addr}/api/v1/openapi.json"),
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--workers",
            "1",
        ])
        .args(["--header", &format!("Authorization: Bearer {wall}"), "--no-color"])
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{schemathesis} does not run ({e}): tests/tools.sh installs it"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resources = ROUTES.iter().filter(|r| r.path.starts_with("/api/v1/") && !r.path.ends_with(".json")).count();
    assert!(report.contains(&format!("Tested: {resources}")), "it tested every resource:\n{report}");

    // The wall in a real browser, with a wall token: it shows the province, and /sql refuses it.
    let browser = Browser::open_at(&format!("http://{addr}/#token={wall}")).await;
    let shown = wait_for("the province on the wall", Duration::from_secs(20), || {
        let total = browser.execute("return document.querySelector('#province-total').textContent.trim()");
        (total.as_str().is_some_and(|t| t.replace(',', ".").parse::<f64>().is_ok())).then_some(total)
    })
    .await;
    // In Vietnamese (the browser asks for it): a decimal comma.
    assert_eq!(shown.as_str().unwrap(), format!("{:.2}", total[0]["total"].as_f64().unwrap()).replace('.', ","));
    assert_eq!(browser.execute("return location.hash"), "", "the token is taken out of the address");
    let errors = browser.execute("return document.querySelector('#error').textContent");
    assert_eq!(errors, "", "every section loaded");
    let refused = browser.execute_async(
        "const done = arguments[arguments.length - 1];
         fetch('/sql', {method: 'POST', headers: {Authorization: 'Bearer ' + sessionStorage.getItem('index766.token')}, body: 'SELECT * FROM dossiers'})
           .then(r => done(r.status), e => done(String(e)));",
    );
    assert_eq!(refused, 403, "the wall's token cannot query /sql");

    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
