//! One hand-computed scenario, run by the mock-cluster test and by the real-broker test: a
//! small province, dossiers whose 2.1 outcome is worked out by hand below, duplicates, bad input.
//!
//! Judged as of 2026-11-24 12:00 (UTC+7). Registry: H44 ← H44.01, H44.02, H44.100, H44.101.
//!
//! | dossier | unit | received | due | what happened | Nov | Oct (closed) | Q4, 2026 (live) |
//! |---|---|---|---|---|---|---|---|
//! | A (example 1) | H44.01 | 11-03 | 11-10 17:00 | supplement 11-04 09:30 → 11-06 10:00 (due → 11-12 17:30), completed 11-11 | on time | | on time |
//! | B | H44.01 | 11-10 | 11-20 17:00 | still open | overdue (clock) | | overdue |
//! | C | H44.01 | 11-18 | 11-28 17:00 | still open | on time | | on time |
//! | D | H44.02 | 10-15 | 10-20 17:00 | completed 10-25 | | late | late |
//! | E | H44.02 | 11-02 | 11-05 17:00 | completed 11-04; every event sent twice | on time | | on time |
//! | F (example 2) | H44.100 | 11-05 | 11-06 17:00 | completed 11-07 | late | | late |
//! | G | H44.100 | 10-30 | 11-04 17:00 | still open | | on time (judged 10-31) | overdue |
//! | X | H44.999 | 11-03 | 11-10 17:00 | unit not in the registry | not scored | | |
//!
//! Plus two bad messages (malformed JSON, a status 11) for the dead-letter topic; the example
//! petitions (PA-0001 at H44.100 in November, handled on time; PA-0002 submitted in October,
//! transferred to H44.01, repeated, never answered: on time for October, late for Q4); a live
//! catalog update (procedure 9.999999 added, not online; 1.000001 removed by a tombstone), and a
//! live unit update (H44.101 renamed).

use std::path::Path;
use std::time::Duration;

use index766::tools::produce::EventProducer;
use index766::Config;
use index766_core::event::{Channel, WireEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{http, http_accepting, metric, read_topic, repo_root, sql, wait_for};

pub const AS_OF: &str = "2026-11-24T12:00:00+07:00";
pub const EVENTS_TOPIC: &str = "index766.dossier-events";
pub const DEAD_LETTER_TOPIC: &str = "index766.dead-letter";
pub const PETITIONS_TOPIC: &str = "index766.petitions";
pub const CATALOG_TOPIC: &str = "index766.procedures";
pub const UNITS_TOPIC: &str = "index766.units";
pub const TOPICS: [&str; 5] = [EVENTS_TOPIC, DEAD_LETTER_TOPIC, PETITIONS_TOPIC, CATALOG_TOPIC, UNITS_TOPIC];

/// (topic, key, value) of the messages on the petitions, catalog and units topics.
fn other_messages() -> Vec<(&'static str, String, Vec<u8>)> {
    let petitions = std::fs::read_to_string(repo_root().join("schemas/examples/petitions.jsonl")).unwrap();
    let mut out: Vec<(&'static str, String, Vec<u8>)> = petitions
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (PETITIONS_TOPIC, v["petition_id"].as_str().unwrap().to_owned(), l.as_bytes().to_vec())
        })
        .collect();
    let added = json!({"code": "9.999999", "name": "Thủ tục mới", "online_level": "none", "applicant_types": ["business"], "levels": ["department"]});
    out.push((CATALOG_TOPIC, "9.999999".into(), added.to_string().into_bytes()));
    out.push((CATALOG_TOPIC, "1.000001".into(), vec![]));
    let renamed = json!({"code": "H44.101", "name": "Xã Phú Lộc Mới", "parent": "H44", "level": "commune"});
    out.push((UNITS_TOPIC, "H44.101".into(), renamed.to_string().into_bytes()));
    out
}

pub fn event(dossier: &str, seq: u32, status: u8, time: &str, unit: &str) -> WireEvent {
    WireEvent {
        schema_version: 1,
        event_id: format!("{dossier}#{seq}"),
        event_time: time.into(),
        dossier_id: dossier.into(),
        status,
        unit_code: unit.into(),
        procedure_code: "1.000001".into(),
        channel: Channel::Direct,
        due_at: None,
        supplement_received: false,
        fees: vec![],
        paid_online: 0,
        documents: vec![],
        result: None,
        vneid_authenticated: false,
        population_data_used: false,
        synced_to_portal: true,
        feedback: None,
    }
}

pub fn received(dossier: &str, time: &str, due: &str, unit: &str) -> WireEvent {
    WireEvent { due_at: Some(due.into()), ..event(dossier, 1, 2, time, unit) }
}

/// Every good message, in a deliberately scrambled order, duplicates included.
pub fn events() -> Vec<WireEvent> {
    let examples = std::fs::read_to_string(repo_root().join("schemas/examples/dossier-events.jsonl")).unwrap();
    let mut events: Vec<WireEvent> = examples.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    events.reverse(); // completions before receptions: order must not matter
    events.extend([
        received("B", "2026-11-10T08:00:00+07:00", "2026-11-20T17:00:00+07:00", "H44.01"),
        event("B", 2, 4, "2026-11-10T10:00:00+07:00", "H44.01"),
        received("C", "2026-11-18T08:00:00+07:00", "2026-11-28T17:00:00+07:00", "H44.01"),
        event("D", 2, 9, "2026-10-25T08:00:00+07:00", "H44.02"),
        received("D", "2026-10-15T08:00:00+07:00", "2026-10-20T17:00:00+07:00", "H44.02"),
        received("E", "2026-11-02T08:00:00+07:00", "2026-11-05T17:00:00+07:00", "H44.02"),
        event("E", 2, 9, "2026-11-04T08:00:00+07:00", "H44.02"),
        received("E", "2026-11-02T08:00:00+07:00", "2026-11-05T17:00:00+07:00", "H44.02"),
        event("E", 2, 9, "2026-11-04T08:00:00+07:00", "H44.02"),
        received("G", "2026-10-30T08:00:00+07:00", "2026-11-04T17:00:00+07:00", "H44.100"),
        received("X", "2026-11-03T08:00:00+07:00", "2026-11-10T17:00:00+07:00", "H44.999"),
    ]);
    events
}

pub const DUPLICATES: u64 = 2;

/// (key, payload) of messages that must go to the dead-letter topic.
pub fn bad_messages() -> Vec<(&'static [u8], Vec<u8>)> {
    let mut wrong_status =
        serde_json::to_value(received("Z", "2026-11-03T08:00:00+07:00", "2026-11-10T17:00:00+07:00", "H44.01"))
            .unwrap();
    wrong_status["status"] = json!(11);
    vec![(b"Y", b"{\"schema_version\": 1, oops".to_vec()), (b"Z", wrong_status.to_string().into_bytes())]
}

pub fn config(bootstrap: &str, snapshot_dir: &Path) -> Config {
    config_with_spec(bootstrap, snapshot_dir, &repo_root().join("sql/scoring_spec.toml"))
}

pub fn config_with_spec(bootstrap: &str, snapshot_dir: &Path, spec: &Path) -> Config {
    Config::from_toml(&format!(
        "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n\"group.id\" = \"index766-test\"\n\
         [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n[scoring]\nspec_file = {:?}\n\nas_of = {AS_OF:?}\npublish_interval_ms = 50\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[snapshot]\ndir = {snapshot_dir:?}\ninterval_secs = 3600\n\
         [sql]\nviews_dir = {:?}\npostgres_listen = \"127.0.0.1:0\"\n[metrics]\nscore_depth = 1\ncriterion_depth = 1\n",
        repo_root().join("schemas/examples/units.jsonl"),
        repo_root().join("schemas/examples/procedures.jsonl"),
        spec,
        repo_root().join("sql/views"),
    ))
    .unwrap()
}

/// The scenario's config on topics and a group of the test's own (`prefix.dossier-events`,
/// `prefix.dead-letter`, and with `tables` the catalog and units topics), no petitions.
pub fn prefixed_config(bootstrap: &str, prefix: &str, snapshots: &Path, tables: bool) -> Config {
    let mut config = config(bootstrap, snapshots);
    config.kafka.insert("group.id".into(), prefix.into());
    config.topics.events = format!("{prefix}.dossier-events");
    config.topics.dead_letter = format!("{prefix}.dead-letter");
    config.topics.petitions = String::new();
    (config.topics.catalog, config.topics.units) =
        if tables { (format!("{prefix}.procedures"), format!("{prefix}.units")) } else { Default::default() };
    config
}

/// Produces the scenario to `bootstrap` with the project's own producer.
pub fn produce(bootstrap: &str) -> u64 {
    let mut producer = EventProducer::new(bootstrap, EVENTS_TOPIC).unwrap();
    for e in events() {
        producer.send(&e).unwrap();
    }
    for (key, payload) in bad_messages() {
        producer.send_raw(key, &payload).unwrap();
    }
    let mut sent = producer.finish().unwrap();
    for (topic, key, value) in other_messages() {
        let mut producer = EventProducer::new(bootstrap, topic).unwrap();
        producer.send_raw(key.as_bytes(), &value).unwrap();
        sent += producer.finish().unwrap();
    }
    sent
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Runs the pipeline on `bootstrap` (the scenario already produced) and checks every figure.
/// Starts a pipeline and waits until it has applied (or rejected) every scenario message.
pub async fn start_and_settle(config: Config, shutdown: &CancellationToken) -> index766::Pipeline {
    let total = (events().len() + bad_messages().len() + other_messages().len()) as u64;
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("every message consumed and applied", Duration::from_secs(60), || {
        (settled(&metrics) == total).then_some(())
    })
    .await;
    pipeline
}

/// Messages applied or dropped so far (a kept reject is also applied: counted once).
pub fn settled(metrics: &index766::telemetry::metrics::Metrics) -> u64 {
    metrics.events_applied.get()
        + index766_core::event::RejectReason::ALL
            .iter()
            .filter(|r| !r.is_kept())
            .map(|r| metrics.events_rejected.with_label_values(&[r.as_str()]).get())
            .sum::<u64>()
}

/// Waits until the published view has scored the 7 dossiers H44 received in 2026. Views follow
/// ingest by a publish interval or more, while the `dossiers` table is read from the state itself.
pub async fn wait_for_the_view(addr: std::net::SocketAddr) {
    let query = "SELECT denominator FROM scores WHERE unit_code = 'H44' AND period = '2026' AND criterion = '2.1'";
    wait_for("the view with every dossier", Duration::from_secs(10), || {
        (sql(addr, query).first().map(|row| &row["denominator"]) == Some(&json!(7))).then_some(())
    })
    .await;
}

/// Runs the pipeline on `bootstrap` (the scenario already produced) and checks every figure.
pub async fn run_pipeline_and_check(bootstrap: &str) {
    let total = (events().len() + bad_messages().len() + other_messages().len()) as u64;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = start_and_settle(config(bootstrap, dir.path()), &shutdown).await;
    let addr = pipeline.http_addr;
    // The view is republished within publish_interval_ms of the last batch.
    let points = |unit: &str, period: &str| -> Vec<serde_json::Value> {
        sql(addr, &format!("SELECT numerator, denominator, ratio, points FROM scores WHERE unit_code = '{unit}' AND period = '{period}' AND criterion = '2.1'"))
    };
    wait_for_the_view(addr).await;
    assert_eq!(sql(addr, "SELECT count(*) AS n FROM dossiers")[0]["n"], json!(8));

    let row = |n: i64, d: i64, pts: f64| (n, d, pts);
    let expect = [
        ("H44", "2026-11", row(3, 5, 12.0)),
        ("H44.01", "2026-11", row(2, 3, 40.0 / 3.0)),
        ("H44.02", "2026-11", row(1, 1, 20.0)),
        ("H44.100", "2026-11", row(0, 1, 0.0)),
        ("H44.101", "2026-11", row(0, 0, 0.0)),
        ("H44", "2026-10", row(1, 2, 10.0)),
        ("H44.02", "2026-10", row(0, 1, 0.0)),
        ("H44.100", "2026-10", row(1, 1, 20.0)),
        ("H44", "2026-Q4", row(3, 7, 60.0 / 7.0)),
        ("H44.100", "2026-Q4", row(0, 2, 0.0)),
        ("H44", "2026", row(3, 7, 60.0 / 7.0)),
    ];
    for (unit, period, (n, d, pts)) in expect {
        let rows = points(unit, period);
        assert_eq!(rows.len(), 1, "{unit} {period}: {rows:?}");
        assert_eq!(
            (rows[0]["numerator"].as_i64(), rows[0]["denominator"].as_i64()),
            (Some(n), Some(d)),
            "{unit} {period}"
        );
        assert!(close(rows[0]["points"].as_f64().unwrap(), pts), "{unit} {period}: {} != {pts}", rows[0]["points"]);
    }
    assert_eq!(points("H44.101", "2026-11")[0]["ratio"], serde_json::Value::Null, "no dossiers, no ratio");
    // 5 units × 23 criteria × 8 periods: the live month, quarter, half-year and year, the ones
    // before each (2026-10, 2026-Q3, 2026-H1, 2025).
    assert_eq!(sql(addr, "SELECT count(*) AS n FROM scores")[0]["n"], json!(5 * 23 * 8));
    assert_eq!(sql(addr, "SELECT count(*) AS n FROM totals")[0]["n"], json!(5 * 8));
    assert_eq!(
        sql(addr, "SELECT count(DISTINCT spec_version) AS n, min(spec_version) AS v FROM scores")[0],
        json!({"n": 1, "v": "portal-2026.2"})
    );
    // Petitions: 6.1, 6.2, 6.3 as (numerator, denominator, points), worked out in the module doc.
    let petitions = |unit: &str, period: &str| -> Vec<(i64, i64, f64)> {
        sql(addr, &format!("SELECT numerator, denominator, points FROM scores WHERE unit_code = '{unit}' AND period = '{period}' AND criterion IN ('6.1', '6.2', '6.3') ORDER BY criterion"))
            .iter()
            .map(|r| (r["numerator"].as_i64().unwrap(), r["denominator"].as_i64().unwrap(), r["points"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(petitions("H44", "2026-11"), [(1, 1, 0.0), (1, 1, 6.0), (1, 1, 6.0)]);
    assert_eq!(petitions("H44", "2026-10"), [(1, 1, 0.0), (1, 1, 6.0), (0, 1, 0.0)]);
    assert_eq!(petitions("H44", "2026-Q4"), [(2, 2, 0.0), (1, 2, 3.0), (1, 2, 3.0)]);
    assert_eq!(petitions("H44.01", "2026-Q4"), [(1, 1, 0.0), (0, 1, 0.0), (0, 1, 0.0)]);
    assert_eq!(petitions("H44.101", "2026-11"), [(0, 0, 0.0), (0, 0, 6.0), (0, 0, 6.0)], "no petitions: full points");
    // 3.1 at the root, after the live catalog update: 2 of 4 procedures online, threshold 0.8.
    let online = sql(addr, "SELECT numerator, denominator, points FROM scores WHERE unit_code = 'H44.02' AND period = '2026-11' AND criterion = '3.1'");
    assert_eq!(online[0], json!({"numerator": 2, "denominator": 4, "points": 1.25}));
    assert_eq!(
        sql(addr, "SELECT unit_name FROM units WHERE unit_code = 'H44.101'")[0]["unit_name"],
        json!("Xã Phú Lộc Mới")
    );
    // The total is the sum of the six groups, the groups the sums of their criteria.
    let sums = sql(addr, "SELECT t.total, sum(g.points) AS groups FROM totals t JOIN group_scores g USING (unit_code, period) WHERE t.unit_code = 'H44' AND t.period = '2026-11' GROUP BY t.total");
    assert!(close(sums[0]["total"].as_f64().unwrap(), sums[0]["groups"].as_f64().unwrap()));
    let criteria_sum = sql(addr, "SELECT sum(points) AS p FROM scores WHERE unit_code = 'H44' AND period = '2026-11'")
        [0]["p"]
        .as_f64()
        .unwrap();
    assert!(close(criteria_sum, sums[0]["total"].as_f64().unwrap()));
    // Deltas against the period before when it had data (October did; Q3 did not), ranks among siblings.
    let deltas = sql(addr, "SELECT period, total, previous_total, delta FROM totals WHERE unit_code = 'H44' AND period IN ('2026-11', '2026-Q4') ORDER BY period");
    let (nov, q4) = (&deltas[0], &deltas[1]);
    assert!(close(
        nov["delta"].as_f64().unwrap(),
        nov["total"].as_f64().unwrap() - nov["previous_total"].as_f64().unwrap()
    ));
    assert_eq!((q4["previous_total"].clone(), q4["delta"].clone()), (json!(null), json!(null)));
    let ranks = sql(addr, "SELECT unit_code, rank, siblings FROM totals WHERE period = '2026-11' AND depth = 1 ORDER BY total DESC, unit_code");
    assert_eq!(ranks.len(), 4);
    assert!(ranks.iter().all(|r| r["siblings"] == json!(4)));
    assert_eq!(ranks[0]["rank"], json!(1));
    // 1.4: every scenario dossier of the province in November was synced.
    let synced = sql(addr, "SELECT numerator, denominator, points FROM scores WHERE unit_code = 'H44' AND period = '2026-11' AND criterion = '1.4'");
    assert_eq!(synced[0], json!({"numerator": 5, "denominator": 5, "points": 6.0}));
    assert_eq!(
        sql(addr, "SELECT dossier_id, timeliness FROM dossiers WHERE dossier_id IN ('B','C','G') ORDER BY dossier_id"),
        vec![
            json!({"dossier_id": "B", "timeliness": "open_overdue"}),
            json!({"dossier_id": "C", "timeliness": "open_in_time"}),
            json!({"dossier_id": "G", "timeliness": "open_overdue"})
        ]
    );
    assert_eq!(sql(addr, "SELECT u.unit_name FROM units u JOIN scores s USING (unit_code) WHERE s.period = '2026-11' AND s.criterion = '2.1' AND s.points = 20")[0]["unit_name"], json!("Sở Xây dựng"));

    let (status, exposition) = http(addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let gauge = |unit, period| {
        metric(&exposition, "index766_score_points", &[("unit", unit), ("period", period), ("criterion", "2.1")])
    };
    assert_eq!(gauge("H44", "month"), Some(12.0));
    assert!(close(gauge("H44", "quarter").unwrap(), 60.0 / 7.0));
    assert_eq!(gauge("H44.02", "month"), Some(20.0));
    assert_eq!(gauge("H44.101", "month"), Some(0.0));
    let gauge_total = metric(&exposition, "index766_total_points", &[("unit", "H44"), ("period", "month")]);
    let sql_total =
        sql(addr, "SELECT total FROM totals WHERE unit_code = 'H44' AND period = '2026-11'")[0]["total"].as_f64();
    assert_eq!(sql_total, gauge_total);
    assert_eq!(
        metric(&exposition, "index766_rank", &[("unit", "H44.01"), ("period", "month")]),
        sql(addr, "SELECT rank FROM totals WHERE unit_code = 'H44.01' AND period = '2026-11'")[0]["rank"].as_f64()
    );
    assert_eq!(metric(&exposition, "index766_events_consumed_total", &[]), Some(total as f64));
    // Dead letters: the two bad messages and E's two repeats are dropped; X (unit not in the
    // registry) and the 8 other events of procedure 1.000001 (removed from the catalog by its
    // topic, which is read before the events) are kept, with a notice.
    let expected = [
        ("duplicate", DUPLICATES),
        ("malformed_json", 1),
        ("schema_violation", 1),
        ("unknown_procedure", 8),
        ("unknown_unit", 1),
    ];
    for (reason, n) in expected {
        let counted = metric(&exposition, "index766_events_rejected_total", &[("reason", reason)]);
        assert_eq!(counted, Some(n as f64), "{reason}");
    }
    assert_eq!(metric(&exposition, "index766_dossiers_unregistered_unit", &[]), Some(1.0));
    let (status, health) = http(addr, "GET", "/healthz", "");
    assert_eq!(status, 200, "{health}");

    let dead = read_topic(bootstrap, DEAD_LETTER_TOPIC, 13);
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for m in &dead {
        *reasons.entry(header(m, "index766.reason")).or_default() += 1;
        assert!(header(m, "index766.source").starts_with(EVENTS_TOPIC));
        let kept = header(m, "index766.disposition") == "kept";
        assert_eq!(kept, header(m, "index766.reason").starts_with("unknown_"));
    }
    assert_eq!(reasons, expected.iter().map(|&(r, n)| (r.to_owned(), n)).collect());

    run_example_queries(addr);
    let (status, csv) = http_accepting(
        addr,
        "POST",
        "/sql",
        "SELECT unit_code, rank FROM totals WHERE period = '2026-11' AND depth = 0",
        "text/csv",
    );
    assert_eq!((status, csv.as_str()), (200, "unit_code,rank\nH44,1\n"));
    let (status, body) = http(addr, "POST", "/sql", "DROP TABLE scores");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("read-only"), "{body}");

    shutdown.cancel();
    pipeline.wait().await.unwrap();
    check_snapshot(&newest_snapshot(dir.path()).join("scores.parquet"));
}

/// Every query the README points analysts to runs; those over the live tables return rows on the
/// scenario (the history and the alert log are still empty here: no snapshot, no alert rule fired).
fn run_example_queries(addr: std::net::SocketAddr) {
    let dir = repo_root().join("sql/examples");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows = sql(addr, &text);
        let over_history = ["daily_", "weekly_", "week_over_week", "FROM alerts"].iter().any(|t| text.contains(t));
        assert!(over_history || !rows.is_empty(), "{} returned no rows", path.display());
        ran += 1;
    }
    assert_eq!(ran, 10, "the README's ten example queries");
}

pub fn header(message: &rdkafka::message::OwnedMessage, key: &str) -> String {
    use rdkafka::message::{Headers, Message};
    let headers = message.headers().expect("dead letters carry headers");
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no {key} header"))
}

/// The folder of the newest snapshot generation in `dir`.
pub fn newest_snapshot(dir: &Path) -> std::path::PathBuf {
    let mut generations: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("snapshot-"))
        .collect();
    generations.sort();
    generations.pop().unwrap_or_else(|| panic!("no snapshot in {}", dir.display()))
}

/// The shutdown snapshot's scores are a plain Parquet file with the same province figure.
fn check_snapshot(path: &Path) {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut found = None;
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let (units, periods, criteria, points) = (col("unit_code"), col("period"), col("criterion"), col("points"));
        let units = units.as_any().downcast_ref::<StringArray>().unwrap();
        let periods = periods.as_any().downcast_ref::<StringArray>().unwrap();
        let criteria = criteria.as_any().downcast_ref::<StringArray>().unwrap();
        let points = points.as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..batch.num_rows() {
            if units.value(i) == "H44" && periods.value(i) == "2026-11" && criteria.value(i) == "2.1" {
                found = Some(points.value(i));
            }
        }
    }
    assert_eq!(found, Some(12.0), "province November 2.1 points in {}", path.display());
}
