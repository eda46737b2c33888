//! The users' surfaces, end to end on Apache Kafka: the real `psql` over the
//! PostgreSQL protocol, `/metrics`, a scripted score drop that fires exactly one alert on each
//! channel (Kafka topic, a real Alertmanager, `/api/v1/alerts`, the `alerts` SQL table) and clears
//! with hysteresis, and the IOC page in a real headless Chromium (driven through ChromeDriver);
//! and the shipped Prometheus rules under the real `promtool`.
//!
//! The drop, judged as of 2026-11-24 12:00 (UTC+7), one rule: a unit's month points for group 2
//! (processing progress: criterion 2.1, dossiers on time) falling 5 points or more against
//! October fires, under 2 clears. (Group 2, not the total: the example catalog already costs
//! November 5 points of group 1 against October.) Sở Tư pháp (H44.01) has 20 dossiers on time in
//! October and 20 in November: no change. Then 20 late ones in November: 2.1 falls from 20 to 10
//! points → fires. Then 50 on time (2.1 at 70/90: a 4.4-point loss, inside the band) → holds.
//! Then 200 on time (270/290: 1.4) → clears. Sở Xây dựng (H44.02) has 200 on time each month,
//! so the province's group 2 moves too little to alert.

use std::path::Path;
use std::time::Duration;

use index766::tools::produce::{ensure_topics, EventProducer};
use index766_core::event::WireEvent;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::browser::Lang;
use crate::scenario::{event, received, AS_OF};
use crate::support::{http, http_json, metric, read_topic, repo_root, sql, wait_for, Kafka, Server};

const RULE: &str = "processing_drop";

/// The events and dead-letter topics of `prefix` (2 partitions), and a producer to the events.
pub(crate) async fn topics(broker: &Kafka, prefix: &str) -> Producer {
    let events = format!("{prefix}.events");
    ensure_topics(&broker.bootstrap, &[&events, &format!("{prefix}.dead-letter")], 2).await.unwrap();
    Producer::to(&broker.bootstrap, &events)
}

/// Waits until the pipeline has applied `n` events.
pub(crate) async fn all_applied(metrics: std::sync::Arc<index766::telemetry::metrics::Metrics>, n: u64) {
    wait_for("every event applied", Duration::from_secs(60), || (metrics.events_applied.get() == n).then_some(()))
        .await;
}

pub(crate) fn config(
    bootstrap: &str,
    prefix: &str,
    alertmanager: std::net::SocketAddr,
    dir: &Path,
) -> index766::Config {
    index766::Config::from_toml(&format!(
        "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n\"group.id\" = \"{prefix}\"\n\
         [topics]\nevents = \"{prefix}.events\"\npetitions = \"\"\ncatalog = \"\"\nunits = \"\"\ndead_letter = \"{prefix}.dead-letter\"\n\
         [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n\
         [scoring]\nspec_file = {:?}\nas_of = {AS_OF:?}\npublish_interval_ms = 50\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[sql]\npostgres_listen = \"127.0.0.1:0\"\nviews_dir = {:?}\n\
         [snapshot]\ndir = {:?}\ninterval_secs = 1\n\
         [alerts]\ntopic = \"{prefix}.alerts\"\nwebhook_url = \"http://{alertmanager}/api/v2/alerts\"\nresend_secs = 3600\n\
         [[alerts.rules]]\nname = \"{RULE}\"\nwhen = \"drop_vs_previous_period\"\nmeasure = \"group 2\"\nperiod = \"month\"\n\
         fire_at = 5.0\nclear_at = 2.0\nmin_dossiers = 10\ncooldown_mins = 0\nmax_depth = 1\nmin_days = 0\n",
        repo_root().join("schemas/examples/units.jsonl"),
        repo_root().join("schemas/examples/procedures.jsonl"),
        repo_root().join("sql/scoring_spec.toml"),
        repo_root().join("sql/views"),
        dir.join("snapshots"),
    ))
    .unwrap()
}

/// `n` dossiers of `unit` received on `day` (YYYY-MM-DD), due 5 days later, completed after
/// `days_taken` days: on time under 5, late over.
pub(crate) fn dossiers(tag: &str, unit: &str, day: &str, n: usize, days_taken: u32) -> Vec<WireEvent> {
    let at = |offset: u32| {
        let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap() + chrono::Duration::days(offset.into());
        format!("{date}T09:00:00+07:00")
    };
    (0..n)
        .flat_map(|i| {
            let id = format!("{tag}-{unit}-{i}");
            [received(&id, &at(0), &at(5), unit), event(&id, 2, 9, &at(days_taken), unit)]
        })
        .collect()
}

/// How far H44.01's group 2 points for November are below October's, from `/sql`.
fn drop_of_h44_01(addr: std::net::SocketAddr) -> f64 {
    let rows = sql(
        addr,
        "SELECT o.points - n.points AS lost FROM group_scores n JOIN group_scores o \
         ON o.unit_code = n.unit_code AND o.group_id = n.group_id AND o.period = '2026-10' \
         WHERE n.unit_code = 'H44.01' AND n.period = '2026-11' AND n.group_id = 2",
    );
    rows[0]["lost"].as_f64().unwrap()
}

fn alerts_api(addr: std::net::SocketAddr, state: &str) -> Vec<Value> {
    let (status, body) = http(addr, "GET", &format!("/api/v1/alerts?state={state}"), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["alerts"].as_array().unwrap().clone()
}

/// Alerts Alertmanager holds as active.
fn alertmanager_active(alertmanager: std::net::SocketAddr) -> Vec<Value> {
    let (status, body) = http_json(alertmanager, "GET", "/api/v2/alerts?active=true", &Value::Null);
    assert_eq!(status, 200, "Alertmanager: {body}");
    body.as_array().unwrap().clone()
}

fn psql(port: u16, query: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "analyst",
            "-d",
            "index766",
            "-X",
            "-A",
            "-t",
            "-F",
            "|",
        ])
        .args(["-c", query])
        .output()
        .expect("psql runs (tests/run.sh installs postgresql-client)")
}

/// Queries over the extended protocol with psycopg 3 (server-side parameters, a prepared
/// statement); tests/run.sh installs it.
fn extended_protocol(port: u16) -> Value {
    let script = format!(
        r#"
import json, psycopg
with psycopg.connect("host=127.0.0.1 port={port} user=grafana dbname=index766") as conn:
    cur = conn.cursor()
    cur.execute("SELECT unit_code, rank FROM totals WHERE is_current AND period_kind = %s AND depth = %s ORDER BY unit_code", ("month", 1), prepare=True)
    ranks = [list(r) for r in cur.fetchall()]
    try:
        cur.execute("CREATE TABLE x AS SELECT %s AS one", (1,))
        refused = ""
    except psycopg.Error as e:
        refused = str(e)
print(json.dumps({{"ranks": ranks, "refused": refused}}))
"#
    );
    run_psycopg(&script)
}

/// Runs a Python script with psycopg on its path (tests/run.sh installs it); its standard output
/// is JSON.
fn run_psycopg(script: &str) -> Value {
    let home = std::env::var("HOME").unwrap_or_default();
    let path =
        std::env::var("PSYCOPG_PYTHONPATH").unwrap_or_else(|_| format!("{home}/.cache/index766/tools/psycopg-3.2.12"));
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "psycopg (from {path}; tests/run.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs every PostgreSQL panel of the shipped Grafana dashboard through psycopg, with `$unit` and
/// `$period` filled in as Grafana fills them: (title, query, rows).
fn grafana_panels(port: u16, unit: &str, period: &str) -> Vec<(String, String, usize)> {
    let dashboard = repo_root().join("helm/index766/files/grafana-dashboard.json");
    let script = format!(
        r#"
import json, psycopg
dashboard = json.load(open({dashboard:?}))
out = []
with psycopg.connect("host=127.0.0.1 port={port} user=grafana dbname=index766") as conn:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if "rawSql" in target:
                query = target["rawSql"].replace("$unit", {unit:?}).replace("$period", {period:?})
                out.append([panel["title"], query, len(conn.execute(query).fetchall())])
print(json.dumps(out))
"#
    );
    let value = run_psycopg(&script);
    serde_json::from_value(value).expect("(title, query, rows) triples")
}

pub(crate) struct Producer {
    pub inner: EventProducer,
    pub sent: u64,
}

impl Producer {
    pub fn to(bootstrap: &str, topic: &str) -> Producer {
        Producer { inner: EventProducer::new(bootstrap, topic).unwrap(), sent: 0 }
    }

    pub fn send(&mut self, events: &[WireEvent]) {
        for e in events {
            self.inner.send(e).unwrap();
        }
        self.inner.finish().unwrap();
        self.sent += events.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metrics_alerts_and_the_dashboard_follow_a_scripted_drop() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Kafka::shared();
    let prefix = "serving";
    let alerts_topic = format!("{prefix}.alerts");
    ensure_topics(
        &broker.bootstrap,
        &[&format!("{prefix}.events"), &format!("{prefix}.dead-letter"), &alerts_topic],
        2,
    )
    .await
    .unwrap();
    let am_dir = dir.path().join("alertmanager");
    std::fs::create_dir_all(&am_dir).unwrap();
    std::fs::write(am_dir.join("am.yml"), "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n").unwrap();
    let alertmanager = Server::start("prometheus-alertmanager", |port| {
        vec![
            format!("--config.file={}", am_dir.join("am.yml").display()),
            format!("--storage.path={}", am_dir.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ]
    });

    let mut producer = Producer::to(&broker.bootstrap, &format!("{prefix}.events"));
    let mut base = dossiers("oct", "H44.01", "2026-10-05", 20, 2);
    base.extend(dossiers("nov", "H44.01", "2026-11-02", 20, 2));
    base.extend(dossiers("oct", "H44.02", "2026-10-06", 200, 1));
    base.extend(dossiers("nov", "H44.02", "2026-11-03", 200, 1));
    producer.send(&base);

    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&broker.bootstrap, prefix, alertmanager.addr, dir.path()), shutdown.clone())
            .await
            .unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    let pg_port = pipeline.postgres_addr.expect("the PostgreSQL protocol is served").port();
    let applied = |n: u64| {
        let metrics = metrics.clone();
        async move {
            wait_for("every event applied", Duration::from_secs(60), || {
                (metrics.events_applied.get() == n).then_some(())
            })
            .await;
            // The view that follows the last batch is published within publish_interval_ms; the
            // alert engine judges it within a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    };
    applied(producer.sent).await;
    // Caught up: ready for readers (the lag is measured every few seconds).
    wait_for("/readyz with nothing left to read", Duration::from_secs(30), || {
        let (status, body) = http(addr, "GET", "/readyz", "");
        (status == 200 && body.contains("\"ready\":true") && body.contains("\"lag\":0")).then_some(())
    })
    .await;
    assert!(drop_of_h44_01(addr).abs() < 1e-9, "October and November alike");
    assert!(alerts_api(addr, "all").is_empty(), "no alert before the drop");

    // psql queries the views over the PostgreSQL protocol, and gets what /sql gets.
    let ranking = psql(
        pg_port,
        "SELECT unit_code, rank, round(total, 4) FROM unit_ranking WHERE period = '2026-11' ORDER BY unit_code",
    );
    assert!(ranking.status.success(), "psql: {}", String::from_utf8_lossy(&ranking.stderr));
    let over_http = sql(
        addr,
        "SELECT unit_code, rank, round(total, 4) AS t FROM unit_ranking WHERE period = '2026-11' ORDER BY unit_code",
    );
    let expected: String =
        over_http.iter().map(|r| format!("{}|{}|{}\n", r["unit_code"].as_str().unwrap(), r["rank"], r["t"])).collect();
    assert_eq!(String::from_utf8_lossy(&ranking.stdout), expected);
    assert_eq!(over_http.len(), 5, "the province and its four units");
    // Writes are refused by what they would run, however they are dressed.
    let copied_to = dir.path().join("copied.csv");
    for write in [
        "DROP TABLE totals".to_owned(),
        "SELECT unit_code INTO mine FROM totals".to_owned(),
        format!("EXPLAIN ANALYZE COPY (SELECT 1) TO '{}'", copied_to.display()),
        "SET timezone = 'UTC'".to_owned(),
        "SET \"datafusion.execution.batch_size\" = 1".to_owned(),
    ] {
        let refused = psql(pg_port, &write);
        assert!(
            !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("read-only"),
            "{write}: {refused:?}"
        );
    }
    assert!(!copied_to.exists(), "nothing written by COPY");
    assert!(psql(pg_port, "SET application_name = 'dbeaver'").status.success(), "client session variables are fine");
    // The extended protocol (bound parameters, a prepared statement), as JDBC and Grafana use it.
    let extended = extended_protocol(pg_port);
    let ranks = sql(addr, "SELECT unit_code, rank FROM totals WHERE is_current AND period_kind = 'month' AND depth = 1 ORDER BY unit_code");
    let expected: Vec<Value> = ranks.iter().map(|r| serde_json::json!([r["unit_code"], r["rank"]])).collect();
    assert_eq!(extended["ranks"], Value::Array(expected), "{extended}");
    assert!(extended["refused"].as_str().unwrap().contains("read-only"), "{extended}");
    let catalog = psql(pg_port, "\\d weekly_totals");
    assert!(
        String::from_utf8_lossy(&catalog.stdout).contains("week_start"),
        "psql's \\d reads pg_catalog: {catalog:?}"
    );

    // The drop: exactly one alert, on every channel.
    producer.send(&dossiers("late", "H44.01", "2026-11-09", 20, 9));
    applied(producer.sent).await;
    let lost = drop_of_h44_01(addr);
    assert!(lost >= 5.0, "the late dossiers cost {lost} points");
    let firing = wait_for("the alert in /api/v1/alerts", Duration::from_secs(10), || {
        let alerts = alerts_api(addr, "firing");
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let alert = &firing[0];
    assert_eq!((alert["unit_code"].as_str(), alert["rule"].as_str()), (Some("H44.01"), Some(RULE)));
    // An alert keeps the figures of the view it fired on. The pipeline may publish a view between
    // two of its batches, with only part of the late dossiers in it: the drop it fired on is then
    // smaller than the final one, and exactly the final one when it saw all 40 November dossiers.
    let fired_drop = alert["before"].as_f64().unwrap() - alert["after"].as_f64().unwrap();
    assert!((fired_drop + alert["change"].as_f64().unwrap()).abs() < 1e-9, "{alert}");
    assert!((5.0..=lost + 1e-9).contains(&fired_drop), "fired at {fired_drop} of the {lost} lost: {alert}");
    if alert["dossiers"] == 40 {
        assert!((fired_drop - lost).abs() < 1e-9, "{alert}");
    }
    assert!(alert["causes"].as_str().unwrap().starts_with("2.1 -"), "the late dossiers lost 2.1's points: {alert}");
    let in_sql = sql(addr, "SELECT unit_code, rule, state, causes FROM alerts");
    assert_eq!(in_sql.len(), 1, "{in_sql:?}");
    assert_eq!(in_sql[0]["state"], "firing");
    // The Grafana dashboard's PostgreSQL panels, as Grafana sends them (variables filled in),
    // over the extended protocol: each gives the rows SQL over HTTP gives.
    let panels = grafana_panels(pg_port, "H44", "month");
    let rows_of = |title: &str| panels.iter().find(|(t, _, _)| t.starts_with(title)).map(|(_, _, rows)| *rows);
    for (title, query, rows) in &panels {
        assert_eq!(*rows, sql(addr, query).len(), "{title}: {query}");
    }
    assert_eq!(rows_of("Units under"), Some(4), "{panels:?}");
    assert_eq!(rows_of("Alerts firing"), Some(1), "{panels:?}");
    assert!(rows_of("Criteria losing").is_some_and(|n| n > 0), "{panels:?}");
    let on_topic = read_topic(&broker.bootstrap, &alerts_topic, 1);
    let told: Value = serde_json::from_slice(rdkafka::Message::payload(&on_topic[0]).unwrap()).unwrap();
    assert_eq!((told["unit_code"].as_str(), told["state"].as_str()), (Some("H44.01"), Some("firing")));
    let in_alertmanager = wait_for("the alert in Alertmanager", Duration::from_secs(10), || {
        let active = alertmanager_active(alertmanager.addr);
        (!active.is_empty()).then_some(active)
    })
    .await;
    assert_eq!(in_alertmanager.len(), 1, "{in_alertmanager:?}");
    assert_eq!(in_alertmanager[0]["labels"]["alertname"], RULE);
    assert_eq!(in_alertmanager[0]["labels"]["unit"], "H44.01");

    // /metrics: the gauges the wall and Prometheus rules read, in an exposition Prometheus parses
    // (the score families are written by hand).
    let exposition = http(addr, "GET", "/metrics", "").1;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (tests/run.sh installs Debian's prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let total_now = sql(
        addr,
        "SELECT total, previous_total FROM totals WHERE is_current AND period_kind = 'month' AND unit_code = 'H44.01'",
    );
    let labels = [("unit", "H44.01"), ("period", "month")];
    assert_eq!(metric(&exposition, "index766_total_points", &labels), total_now[0]["total"].as_f64());
    assert_eq!(
        metric(&exposition, "index766_previous_period_total_points", &labels),
        total_now[0]["previous_total"].as_f64()
    );
    assert_eq!(metric(&exposition, "index766_period_dossiers", &labels), Some(40.0), "20 on time and 20 late");
    assert_eq!(metric(&exposition, "index766_alerts_firing", &[("rule", RULE)]), Some(1.0));
    assert!(metric(&exposition, "index766_snapshot_age_seconds", &[]).is_some());
    assert!(
        metric(&exposition, "index766_sql_queries_total", &[("interface", "postgres"), ("outcome", "ok")]).unwrap()
            >= 1.0
    );

    // The IOC page, in a real browser, shows what /sql says, and the alert: in Vietnamese, as the
    // browser's Accept-Language asks, and in English with ?lang=en.
    let english = crate::browser::Browser::open_at(&format!("http://{addr}/?lang=en")).await;
    crate::browser::check_dashboard(&english, addr, Some("H44.01"), Lang::En).await;
    let english_shot = english.screenshot("ioc-wall-en");
    drop(english);
    let browser = crate::browser::Browser::open(addr).await;
    crate::browser::check_dashboard(&browser, addr, Some("H44.01"), Lang::Vi).await;
    let shot = browser.screenshot("ioc-wall-vi");
    let sizes = crate::browser::check_phone_and_4k(&browser).await;
    wait_for("a day of history", Duration::from_secs(30), || {
        (sql(addr, "SELECT count(*) AS n FROM weekly_totals")[0]["n"].as_u64() > Some(0)).then_some(())
    })
    .await;
    crate::browser::check_trends_and_a_past_period(&browser, addr, Lang::Vi, "2026-10").await;
    // The wall's reports panel asks for the selected unit's report with the page's token and language.
    let written = browser.execute_async(
        "const done = arguments[arguments.length - 1];
         signedIn('/reports/weekly', { unit: state.selected, format: 'json', lang: LANG })
           .then((r) => r.json()).then((r) => done(r.unit_code + ' ' + r.week), (e) => done(String(e)));",
    );
    let selected = browser.execute("return state.selected");
    assert_eq!(written, Value::from(format!("{} 2026-W48", selected.as_str().unwrap())), "the wall's report");
    browser.execute("const s = document.querySelector('#period'); s.selectedIndex = 0; s.dispatchEvent(new Event('change')); return 1");
    let (status, refused) = http(addr, "GET", "/?lang=fr", "");
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("lang=vi or lang=en"), "{refused}");

    // Back inside the band: the alert holds, nothing new is sent.
    producer.send(&dossiers("better", "H44.01", "2026-11-16", 50, 2));
    applied(producer.sent).await;
    let lost = drop_of_h44_01(addr);
    assert!((2.0..5.0).contains(&lost), "inside the hysteresis band: {lost}");
    assert_eq!(alerts_api(addr, "all").len(), 1);
    assert_eq!(alerts_api(addr, "firing").len(), 1, "still firing at {lost} points lost");
    read_topic(&broker.bootstrap, &alerts_topic, 1);

    // Past the clearing threshold: resolved, once, everywhere; the page follows without reloading.
    let refreshes = browser.refreshes();
    producer.send(&dossiers("recovered", "H44.01", "2026-11-18", 200, 2));
    applied(producer.sent).await;
    assert!(drop_of_h44_01(addr) < 2.0);
    let resolved = wait_for("the alert resolved", Duration::from_secs(10), || {
        let alerts = alerts_api(addr, "resolved");
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(resolved.len(), 1);
    assert!(alerts_api(addr, "firing").is_empty());
    assert!(resolved[0]["resolved_at"].is_string());
    assert_eq!(sql(addr, "SELECT state FROM alerts")[0]["state"], "resolved");
    let on_topic = read_topic(&broker.bootstrap, &alerts_topic, 2);
    let told: Value = serde_json::from_slice(rdkafka::Message::payload(&on_topic[1]).unwrap()).unwrap();
    assert_eq!((told["id"].clone(), told["state"].as_str()), (alert["id"].clone(), Some("resolved")));
    wait_for("Alertmanager to see it resolved", Duration::from_secs(10), || {
        alertmanager_active(alertmanager.addr).is_empty().then_some(())
    })
    .await;
    wait_for("the page to refresh by itself", Duration::from_secs(20), || {
        (browser.refreshes() > refreshes).then_some(())
    })
    .await;
    crate::browser::check_dashboard(&browser, addr, None, Lang::Vi).await;
    assert!(browser.same_document(), "updated live, without a reload");
    println!("wall screenshots: {} {} {:?}", shot.display(), english_shot.display(), sizes);

    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

/// The shipped rules file is what `index766 prometheus-rules` makes of the default rules, and it
/// passes `promtool check rules` and the unit tests beside it (fire, hold in the band, clear,
/// volume guard) under the real `promtool test rules`.
#[test]
fn the_prometheus_rules_are_the_alert_rules_and_pass_promtool() {
    let root = repo_root();
    let shipped_path = root.join("helm/index766/files/index766-alerts.rules.yml");
    let rules = index766::Config::from_toml("").unwrap().alert_rules(&index766_core::spec::Spec::shipped()).unwrap();
    let generated = index766::alerts::prometheus_rules::render(&rules, index766::lang::Language::Vi);
    let shipped = std::fs::read_to_string(&shipped_path).unwrap_or_default();
    assert_eq!(
        shipped,
        generated,
        "{} is stale: cargo run -p index766 -- prometheus-rules > helm/index766/files/index766-alerts.rules.yml",
        shipped_path.display()
    );
    for args in [vec!["check", "rules"], vec!["test", "rules"]] {
        let file = if args[0] == "check" {
            shipped_path.clone()
        } else {
            root.join("helm/index766/files/index766-alerts.test.yml")
        };
        let out = std::process::Command::new("promtool")
            .args(&args)
            .arg(&file)
            .output()
            .expect("promtool runs (tests/run.sh installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?} {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Late events into a closed month restate it: one row per unit whose total moved, with the
/// total before and after (as SQL showed them), the criteria that moved and the late events;
/// the wall's period list marks the month; a restart keeps the rows and records none again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_restate_a_closed_month_once_and_a_restart_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Kafka::shared();
    let prefix = "restate";
    let mut producer = topics(broker, prefix).await;
    let mut base = dossiers("oct", "H44.01", "2026-10-05", 20, 2);
    base.extend(dossiers("oct", "H44.02", "2026-10-06", 50, 1));
    base.extend(dossiers("nov", "H44.02", "2026-11-03", 50, 1));
    // Received this morning (the clock is 2026-11-24 12:00): the stream is current, not a replay.
    base.extend(dossiers("today", "H44.02", "2026-11-24", 5, 0));
    producer.send(&base);
    // No alert rules here: nothing to tell Alertmanager (port 9 answers nothing).
    let nowhere: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let start = |shutdown: CancellationToken| {
        let config = config(&broker.bootstrap, prefix, nowhere, dir.path());
        async move { index766::Pipeline::start(config, shutdown).await.unwrap() }
    };
    let october = |addr| {
        let rows = sql(addr, "SELECT unit_code, total FROM totals WHERE period = '2026-10' AND unit_code IN ('H44', 'H44.01') ORDER BY unit_code");
        rows.iter().map(|r| r["total"].as_f64().unwrap()).collect::<Vec<_>>()
    };
    let log = dir.path().join("snapshots/restatements/log.json");

    let shutdown = CancellationToken::new();
    let pipeline = start(shutdown.clone()).await;
    let addr = pipeline.http_addr;
    all_applied(pipeline.metrics.clone(), producer.sent).await;
    // October's standing is kept once ingest has caught up.
    wait_for("October's standing kept", Duration::from_secs(30), || log.exists().then_some(())).await;
    let before = october(addr);
    assert!(sql(addr, "SELECT * FROM restatements").is_empty(), "closing a month restates nothing");

    // 20 October dossiers of H44.01 arrive late, all handled late: 40 late events.
    producer.send(&dossiers("late-oct", "H44.01", "2026-10-07", 20, 9));
    all_applied(pipeline.metrics.clone(), producer.sent).await;
    let after = october(addr);
    assert!(after[1] < before[1] - 1.0, "the late dossiers cost October points: {before:?} → {after:?}");
    let rows = wait_for("the restatements", Duration::from_secs(30), || {
        let rows = sql(addr, "SELECT * FROM restatements ORDER BY unit_code");
        (rows.len() == 2).then_some(rows)
    })
    .await;
    for (row, (unit, was, is)) in rows.iter().zip([("H44", before[0], after[0]), ("H44.01", before[1], after[1])]) {
        assert_eq!(
            (row["unit_code"].as_str(), row["period_kind"].as_str(), row["period"].as_str()),
            (Some(unit), Some("month"), Some("2026-10")),
            "{row}"
        );
        assert!(
            (row["before"].as_f64().unwrap() - was).abs() < 1e-9 && (row["after"].as_f64().unwrap() - is).abs() < 1e-9,
            "{row}: {was} → {is}"
        );
        assert_eq!(row["late_events"], 40, "{row}");
        assert!(row["criteria"].as_str().unwrap().contains("2.1 -"), "on-time handling (2.1) moved: {row}");
    }
    let (status, periods) = http(addr, "GET", "/api/v1/periods?unit=H44.01", "");
    assert_eq!(status, 200, "{periods}");
    let periods: Value = serde_json::from_str(&periods).unwrap();
    let restated: Vec<&str> = periods["periods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["restated"] == true)
        .map(|p| p["period"].as_str().unwrap())
        .collect();
    assert_eq!(restated, ["2026-10"], "{periods}");
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // After a restart (snapshot, then the topic from the committed offsets): the same two rows.
    let shutdown = CancellationToken::new();
    let pipeline = start(shutdown.clone()).await;
    let addr = pipeline.http_addr;
    wait_for("ingest caught up again (/readyz)", Duration::from_secs(60), || {
        (http(addr, "GET", "/readyz", "").0 == 200).then_some(())
    })
    .await;
    // The task judges at most once a second once caught up: a few of its turns.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = sql(addr, "SELECT * FROM restatements ORDER BY unit_code");
    assert_eq!(kept, rows, "the restart keeps the rows and records none again");
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // A log that cannot be read stops the start, saying which and what to do.
    std::fs::write(&log, "{ not json").unwrap();
    let config = config(&broker.bootstrap, prefix, nowhere, dir.path());
    let refused = index766::Pipeline::start(config, CancellationToken::new()).await.err().expect("refused").to_string();
    assert!(refused.contains("restatements/log.json") && refused.contains("fix or remove it"), "{refused}");
}
