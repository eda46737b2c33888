//! Bad input and broker faults, on Apache Kafka.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use index766::tools::produce::{ensure_topics, EventProducer};
use index766::Config;
use index766_core::event::{RejectReason, WireEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::scenario::{event, header, received, settled, AS_OF};
use crate::support::{http, metric, read_topic, repo_root, snapshot_rows, sql, wait_for, Kafka};

fn config(bootstrap: &str, prefix: &str, snapshots: &std::path::Path, units_topic: bool) -> Config {
    let units = if units_topic { format!("{prefix}.units") } else { String::new() };
    Config::from_toml(&format!(
        "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n\"group.id\" = \"{prefix}\"\n\
         [topics]\nevents = \"{prefix}.dossier-events\"\npetitions = \"\"\ncatalog = \"\"\nunits = {units:?}\ndead_letter = \"{prefix}.dead-letter\"\n\
         [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n\
         [scoring]\nspec_file = {:?}\nas_of = {AS_OF:?}\npublish_interval_ms = 50\n\
         [sql]\nviews_dir = {:?}\npostgres_listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [snapshot]\ndir = {snapshots:?}\ninterval_secs = 1\n",
        repo_root().join("schemas/examples/units.jsonl"),
        repo_root().join("schemas/examples/procedures.jsonl"),
        repo_root().join("sql/scoring_spec.toml"),
        repo_root().join("sql/views"),
    ))
    .unwrap()
}

fn bytes(e: &WireEvent) -> Vec<u8> {
    serde_json::to_vec(e).unwrap()
}

/// (key, payload, the reason it is dead-lettered with, if any), in the order sent.
fn bad_input() -> Vec<(String, Vec<u8>, Option<RejectReason>)> {
    use RejectReason::*;
    let ok = |e: WireEvent| (e.dossier_id.clone(), bytes(&e), None);
    let bad = |e: WireEvent, reason| (e.dossier_id.clone(), bytes(&e), Some(reason));
    let g1 = received("G1", "2026-11-03T08:00:00+07:00", "2026-11-10T17:00:00+07:00", "H44.01");
    let mut wrong_status = serde_json::to_value(&g1).unwrap();
    wrong_status["status"] = json!(11);
    let mut wrong_channel = serde_json::to_value(&g1).unwrap();
    wrong_channel["channel"] = json!(9);
    let mut next_version = serde_json::to_value(&g1).unwrap();
    next_version["schema_version"] = json!(2);
    let raw = |key: &str, v: serde_json::Value, reason| (key.to_owned(), v.to_string().into_bytes(), Some(reason));
    let mut unknown_procedure = received("P1", "2026-11-04T08:00:00+07:00", "2026-11-12T17:00:00+07:00", "H44.01");
    unknown_procedure.procedure_code = "9.999999".into();
    vec![
        ok(g1.clone()),
        ok(event("G1", 2, 9, "2026-11-05T08:00:00+07:00", "H44.01")),
        ("M1".into(), b"{\"schema_version\": 1, oops".to_vec(), Some(MalformedJson)),
        ("M2".into(), b"\xff\xfe not even UTF-8".to_vec(), Some(MalformedJson)),
        raw("G1", wrong_status, SchemaViolation),
        raw("G1", wrong_channel, SchemaViolation),
        raw("G1", next_version, UnsupportedVersion),
        ("NOT-G1".into(), bytes(&g1), Some(KeyMismatch)),
        ("BIG".into(), vec![b' '; 70_000], Some(Oversized)),
        bad(g1.clone(), Duplicate),
        bad(g1, Duplicate),
        bad(received("F1", "2026-11-25T12:00:00+07:00", "2026-11-30T17:00:00+07:00", "H44.01"), FutureTimestamp),
        // Processing before the reception; a reception after the completion.
        bad(event("G1", 3, 4, "2026-11-01T08:00:00+07:00", "H44.01"), ImpossibleTransition),
        ok(event("I2", 2, 9, "2026-11-05T08:00:00+07:00", "H44.02")),
        bad(received("I2", "2026-11-06T08:00:00+07:00", "2026-11-10T17:00:00+07:00", "H44.02"), ImpossibleTransition),
        // Held, not dropped: applied, with a notice.
        bad(unknown_procedure, UnknownProcedure),
        bad(received("U1", "2026-11-04T08:00:00+07:00", "2026-11-12T17:00:00+07:00", "H44.777"), UnknownUnit),
        bad(event("U1", 2, 9, "2026-11-06T08:00:00+07:00", "H44.777"), UnknownUnit),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_dead_lettered_and_counted_exactly() {
    let broker = Kafka::shared();
    let prefix = "bad";
    let topics = ["bad.dossier-events", "bad.dead-letter", "bad.units"];
    ensure_topics(&broker.bootstrap, &topics, 2).await.unwrap();
    let input = bad_input();
    let mut producer = EventProducer::new(&broker.bootstrap, topics[0]).unwrap();
    for (key, payload, _) in &input {
        producer.send_raw(key.as_bytes(), payload).unwrap();
    }
    producer.finish().unwrap();
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for reason in input.iter().filter_map(|(_, _, r)| *r) {
        *expected.entry(reason.as_str()).or_default() += 1;
    }
    assert_eq!(expected.len(), RejectReason::ALL.len(), "every reason is exercised");
    let dead_letters: u64 = expected.values().sum();

    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&broker.bootstrap, prefix, dir.path(), true), shutdown.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    wait_for("every message settled", Duration::from_secs(60), || {
        (settled(&metrics) == input.len() as u64).then_some(())
    })
    .await;
    let (_, exposition) = http(addr, "GET", "/metrics", "");
    for reason in RejectReason::ALL {
        let counted = metric(&exposition, "index766_events_rejected_total", &[("reason", reason.as_str())]);
        assert_eq!(counted, Some(expected[reason.as_str()] as f64), "{}", reason.as_str());
    }
    let dead = read_topic(&broker.bootstrap, topics[1], dead_letters as usize);
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for message in &dead {
        let reason = header(message, "index766.reason");
        let source = header(message, "index766.source");
        let (topic, position) = source.split_once('/').expect("topic/partition/offset");
        assert_eq!(topic, topics[0]);
        let (partition, offset) = position.split_once('/').unwrap();
        assert!(partition.parse::<i32>().is_ok() && offset.parse::<i64>().is_ok(), "{source}");
        assert!(!header(message, "index766.detail").is_empty());
        let kept = reason.starts_with("unknown_");
        assert_eq!(header(message, "index766.disposition"), if kept { "kept" } else { "dropped" });
        *found.entry(reason).or_default() += 1;
    }
    assert_eq!(found, expected.iter().map(|(r, n)| (r.to_string(), *n)).collect());
    // The good dossier counts once; the impossible and future events changed nothing.
    let g1 = sql(addr, "SELECT timeliness FROM dossiers WHERE dossier_id = 'G1'");
    assert_eq!(g1, vec![json!({"timeliness": "on_time"})]);
    assert!(sql(addr, "SELECT * FROM dossiers WHERE dossier_id = 'F1'").is_empty(), "the future event was dropped");
    let i2 = sql(addr, "SELECT timeliness FROM dossiers WHERE dossier_id = 'I2'");
    assert_eq!(i2, vec![json!({"timeliness": "not_received"})], "the reception after the end was dropped");

    // The unknown unit's events were held: once the unit is registered, they count.
    let nov_21 = |unit: &str| {
        let rows = sql(addr, &format!("SELECT denominator FROM scores WHERE unit_code = '{unit}' AND period = '2026-11' AND criterion = '2.1'"));
        rows.first().map(|r| r["denominator"].as_i64().unwrap())
    };
    let province_before = nov_21("H44").unwrap();
    assert_eq!(nov_21("H44.777"), None);
    let mut units = EventProducer::new(&broker.bootstrap, topics[2]).unwrap();
    let unit = json!({"code": "H44.777", "name": "Xã Mới Lập", "parent": "H44", "level": "commune"});
    units.send_raw(b"H44.777", unit.to_string().as_bytes()).unwrap();
    units.finish().unwrap();
    wait_for("the new unit to be scored", Duration::from_secs(30), || (nov_21("H44.777") == Some(1)).then_some(()))
        .await;
    assert_eq!(nov_21("H44").unwrap(), province_before + 1);
    let applied = metrics.events_applied.get();
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // Across a restart: a repeat of an event applied before it is still a duplicate, counted
    // once more in the metric (which continues from the snapshot) and in the dead-letter topic.
    let mut producer = EventProducer::new(&broker.bootstrap, topics[0]).unwrap();
    let (key, payload, _) = &input[0];
    producer.send_raw(key.as_bytes(), payload).unwrap();
    producer.finish().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&broker.bootstrap, prefix, dir.path(), true), shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    let duplicates = || metrics.events_rejected.with_label_values(&["duplicate"]).get();
    wait_for("the repeat to be refused", Duration::from_secs(30), || (duplicates() == 3).then_some(())).await;
    assert_eq!(metrics.events_applied.get(), applied, "nothing new applied; the counter continued from the snapshot");
    assert_eq!(read_topic(&broker.bootstrap, topics[1], dead_letters as usize + 1).len(), dead_letters as usize + 1);
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_killed_in_the_middle_of_ingest_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A broker of its own: this test SIGKILLs it and starts it again on its data.
    let mut broker = Kafka::start();
    let prefix = "restart";
    let topics = ["restart.dossier-events", "restart.dead-letter"];
    ensure_topics(&broker.bootstrap, &topics, 2).await.unwrap();
    let now = index766_core::time::parse_time(AS_OF).unwrap();
    let mut sim = index766::tools::demo::simulator(99);
    // The province's own registry and catalog: its events are counted, not dead-lettered.
    std::fs::write(dir.path().join("units.jsonl"), sim.province().registry_jsonl()).unwrap();
    std::fs::write(dir.path().join("procedures.jsonl"), sim.province().catalog_jsonl(now)).unwrap();
    let events: Vec<(String, Vec<u8>)> =
        sim.history(now, 10, 1500).iter().map(|e| (e.dossier_id.clone(), bytes(e))).collect();
    let (first, second) = events.split_at(events.len() * 2 / 3);
    let produce = |bootstrap: &str, part: &[(String, Vec<u8>)]| {
        let mut producer = EventProducer::new(bootstrap, topics[0]).unwrap();
        for (key, payload) in part {
            producer.send_raw(key.as_bytes(), payload).unwrap();
        }
        producer.finish().unwrap();
    };
    produce(&broker.bootstrap, first);
    let with_units = |mut config: Config| {
        config.registry.units_file = dir.path().join("units.jsonl");
        config.catalog.file = dir.path().join("procedures.jsonl");
        config
    };

    let shutdown = CancellationToken::new();
    let snapshots = dir.path().join("snapshots");
    let pipeline =
        index766::Pipeline::start(with_units(config(&broker.bootstrap, prefix, &snapshots, false)), shutdown.clone())
            .await
            .unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    // Stop the broker as soon as ingest is under way, well before it has read the first part.
    let until = Instant::now() + Duration::from_secs(60);
    while metrics.events_consumed.get() < 1_000 {
        assert!(Instant::now() < until, "ingest did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let consumed_at_stop = metrics.events_consumed.get();
    broker.kill();
    assert!(consumed_at_stop < first.len() as u64, "the broker stopped mid-ingest ({consumed_at_stop} read)");
    eprintln!(
        "broker restart: stopped after {consumed_at_stop} of {} messages ({} more after it came back)",
        first.len(),
        second.len()
    );
    // Down: /healthz says so, the last scores are still served.
    wait_for("/healthz and the metrics to report the fault", Duration::from_secs(30), || {
        let (status, _) = http(addr, "GET", "/healthz", "");
        let (_, exposition) = http(addr, "GET", "/metrics", "");
        (status == 503 && metric(&exposition, "index766_broker_connected", &[]) == Some(0.0)).then_some(())
    })
    .await;
    assert!(!sql(addr, "SELECT count(*) AS n FROM dossiers").is_empty());
    // Back, with the rest of the stream written after it came back.
    broker.start_again();
    produce(&broker.bootstrap, second);
    wait_for("every event read after the restart", Duration::from_secs(180), || {
        (settled(&metrics) == events.len() as u64).then_some(())
    })
    .await;
    wait_for("/healthz to recover", Duration::from_secs(30), || {
        (http(addr, "GET", "/healthz", "").0 == 200).then_some(())
    })
    .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // The same stream read in one go, from scratch, gives the same snapshot.
    let reference = dir.path().join("reference");
    let shutdown = CancellationToken::new();
    let mut config = with_units(config(&broker.bootstrap, prefix, &reference, false));
    config.kafka.insert("group.id".into(), "restart-reference".into());
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("the reference run", Duration::from_secs(180), || {
        (settled(&metrics) == events.len() as u64).then_some(())
    })
    .await;
    // Most of the stream is scored (the rest are the simulator's deliberate repeats), so the
    // snapshots compared below are scores, not a queue of held events.
    assert!(metrics.events_applied.get() * 10 > events.len() as u64 * 9, "{} applied", metrics.events_applied.get());
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    assert_eq!(snapshot_rows(&snapshots), snapshot_rows(&reference));
}
