//! The whole pipeline on librdkafka's in-process mock cluster: fast, no broker process.

use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use index766::tools::produce::EventProducer;

use crate::scenario::{self, TOPICS};
use crate::support::{repo_root, sql, wait_for};

/// librdkafka's mock cluster with the scenario's topics, `partitions` each, and its bootstrap address.
fn mock_cluster(partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    for topic in TOPICS {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

// The mock cluster stays on the test's thread (block_on keeps this future there) and outlives
// every client: the pipeline is shut down inside run_pipeline_and_check before it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_the_scenario_from_the_mock_cluster() {
    let (cluster, bootstrap) = mock_cluster(3);
    scenario::produce(&bootstrap);
    scenario::run_pipeline_and_check(&bootstrap).await;
    a_changed_spec_changes_the_scores_after_a_restart(&bootstrap).await;
    drop(cluster);
}

/// The same stream, restarted with an edited spec file: 5.2 switched to the written decision's
/// threshold 0.8 and a new version. No rebuild; every row carries the new version.
async fn a_changed_spec_changes_the_scores_after_a_restart(bootstrap: &str) {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo_root().join("sql/scoring_spec.toml")).unwrap();
    let edited = shipped.replace("version = \"portal-2026.2\"", "version = \"written-2026.2\"").replace(
        "max_points = 4\nconversion = \"linear\"\nwhen_empty = \"zero\"\napplies = \"every_unit\"\nin_force_from = \"2022-06-23\"\n\n[[criterion]]\nid = \"5.3\"",
        "max_points = 4\nconversion = \"threshold\"\nthreshold = 0.8\nwhen_empty = \"zero\"\napplies = \"every_unit\"\nin_force_from = \"2022-06-23\"\n\n[[criterion]]\nid = \"5.3\"",
    );
    assert_ne!(shipped, edited, "the edit applies to the shipped spec");
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, edited).unwrap();
    let shutdown = CancellationToken::new();
    let config = scenario::config_with_spec(bootstrap, dir.path(), &spec_path);
    let pipeline = scenario::start_and_settle(config, &shutdown).await;
    let addr = pipeline.http_addr;
    scenario::wait_for_the_view(addr).await;
    let versions = sql(addr, "SELECT DISTINCT spec_version FROM scores UNION SELECT DISTINCT spec_version FROM totals");
    assert_eq!(versions, vec![json!({"spec_version": "written-2026.2"})]);
    // H44.01 in November: dossiers A (digitised) and B, C (not): 1/3 digitised.
    // Linear: 4 × 1/3 = 1.333; threshold 0.8: 4 × (1/3)/0.8 = 1.667.
    let row = sql(addr, "SELECT numerator, denominator, points FROM scores WHERE unit_code = 'H44.01' AND period = '2026-11' AND criterion = '5.2'");
    assert_eq!((row[0]["numerator"].as_i64(), row[0]["denominator"].as_i64()), (Some(1), Some(3)));
    assert!((row[0]["points"].as_f64().unwrap() - 4.0 / 3.0 / 0.8).abs() < 1e-9, "{row:?}");
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

/// Retention deletes events the pipeline has not read yet while it is stopped (librdkafka's mock
/// broker keeps 5 MiB per partition): by default it refuses to start, naming the partition and the
/// gap; with `out_of_range = "earliest"` it goes on from the earliest offset held and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_lost_to_retention_stops_the_pipeline_with_what_to_do() {
    let (cluster, bootstrap) = mock_cluster(1);
    let dir = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        let mut config = scenario::config(&bootstrap, dir.path());
        if extra == "earliest" {
            config.ingest.out_of_range = index766::config::OutOfRange::Earliest;
        }
        config
    };
    let mut producer = EventProducer::new(&bootstrap, scenario::EVENTS_TOPIC).unwrap();
    for event in scenario::events().iter().take(5) {
        producer.send(event).unwrap();
    }
    producer.finish().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config(""), shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("the first events", Duration::from_secs(30), || (scenario::settled(&metrics) >= 5).then_some(())).await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // While it is stopped, 6 MiB more: the broker drops the oldest messages, unread ones included.
    // Incompressible bytes: the producer's lz4 would shrink 300 kB of one byte to almost nothing.
    let mut producer = EventProducer::new(&bootstrap, scenario::EVENTS_TOPIC).unwrap();
    let mut random = rand::rngs::StdRng::seed_from_u64(766);
    for _ in 0..20 {
        let mut filler = vec![0; 300_000];
        random.fill_bytes(&mut filler);
        producer.send_raw(b"filler", &filler).unwrap();
    }
    producer.finish().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config(""), shutdown.clone()).await.unwrap();
    let error = pipeline.wait().await.expect_err("a lost position stops the pipeline").to_string();
    assert!(shutdown.is_cancelled());
    for needed in [scenario::EVENTS_TOPIC, "[0]", "retention", "out_of_range = \"earliest\""] {
        assert!(error.contains(needed), "{needed:?} missing from: {error}");
    }

    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config("earliest"), shutdown.clone()).await.unwrap();
    let addr = pipeline.http_addr;
    let gap = format!("{}[0] resumed at", scenario::EVENTS_TOPIC);
    wait_for("the accepted gap in /healthz", Duration::from_secs(10), || {
        crate::support::http(addr, "GET", "/healthz", "").1.contains(&gap).then_some(())
    })
    .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    drop(cluster);
}

/// `start_from = "latest"` skips what was there before the first start, and the position it
/// resolved is in the first snapshot: killed before reading anything, a restart resumes there
/// rather than at a later end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_at_the_end_and_keeps_that_position() {
    let (cluster, bootstrap) = mock_cluster(1);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = scenario::config(&bootstrap, dir.path());
        config.ingest.start_from = index766::config::StartFrom::Latest;
        config
    };
    let events = scenario::events();
    let send = |range: std::ops::Range<usize>| {
        let mut producer = EventProducer::new(&bootstrap, scenario::EVENTS_TOPIC).unwrap();
        for event in &events[range] {
            producer.send(event).unwrap();
        }
        producer.finish().unwrap();
    };
    send(0..5);
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config(), shutdown.clone()).await.unwrap();
    let durable = pipeline.durable.clone();
    // Lag is reported once the partitions are assigned, after the resolved positions went out.
    let addr = pipeline.http_addr;
    wait_for("the partitions assigned", Duration::from_secs(30), || {
        let (_, exposition) = crate::support::http(addr, "GET", "/metrics", "");
        let lag = [("topic", scenario::EVENTS_TOPIC), ("partition", "0")];
        crate::support::metric(&exposition, "index766_consumer_lag_messages", &lag)
    })
    .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    assert_eq!(durable.borrow().get(&(scenario::EVENTS_TOPIC.to_owned(), 0)), Some(&5), "the end, kept");
    // Written while it was stopped: read after the restart, from the kept position.
    send(5..8);
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config(), shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("the three later events", Duration::from_secs(30), || (metrics.events_consumed.get() == 3).then_some(()))
        .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    drop(cluster);
}

/// A dead letter no broker will take (larger than the producer's `message.max.bytes`, librdkafka's
/// default 1,000,000 bytes) stops the pipeline with what to fix, instead of being retried forever
/// with ingest waiting behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_dead_letter_stops_the_pipeline_with_its_reason() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (cluster, bootstrap) = mock_cluster(1);
    let dir = tempfile::tempdir().unwrap();
    // Too large for [ingest] max_event_bytes, so dead-lettered as it is; a producer of the
    // test's own may send it.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let payload = vec![b'x'; 1_500_000];
    producer.send(BaseRecord::to(scenario::EVENTS_TOPIC).key("big").payload(&payload)).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(scenario::config(&bootstrap, dir.path()), shutdown.clone()).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), pipeline.wait())
        .await
        .expect("the pipeline stops instead of retrying the dead letter forever");
    let error = stopped.expect_err("a refused dead letter is an error").to_string();
    for needed in ["MessageSizeTooLarge", "index766.dead-letter", "message.max.bytes", "the pipeline stopped"] {
        assert!(error.contains(needed), "{needed:?} missing from: {error}");
    }
    assert!(shutdown.is_cancelled());
    drop(cluster);
}
