//! Against Apache Kafka itself (one KRaft node, its jars fetched by tests/tools.sh).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use index766::config::StartFrom;
use index766::tools::produce::ensure_topics;

use crate::scenario::{self, EVENTS_TOPIC, TOPICS};
use crate::support::{http, metric, sql, wait_for, Kafka};

/// A partition added while the pipeline runs with `start_from = latest` starts at the end it had
/// when it was found, and that position is kept: what arrives in it while the pipeline is
/// stopped is read after the restart, not skipped by starting at a later end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_under_start_from_latest_resumes_exactly() {
    let kafka = Kafka::start();
    ensure_topics(&kafka.bootstrap, &TOPICS, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = scenario::config(&kafka.bootstrap, dir.path());
    config.ingest.start_from = StartFrom::Latest;

    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config.clone(), shutdown.clone()).await.unwrap();
    let addr = pipeline.http_addr;
    let lag_of = |partition: &str| {
        let (_, text) = http(addr, "GET", "/metrics", "");
        metric(&text, "index766_consumer_lag_messages", &[("topic", EVENTS_TOPIC), ("partition", partition)])
    };
    wait_for("partition 0 watched", Duration::from_secs(30), || lag_of("0")).await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    let added = admin.create_partitions(&[NewPartitions::new(EVENTS_TOPIC, 2)], &AdminOptions::new()).await.unwrap();
    assert!(added.iter().all(|r| r.is_ok()), "{added:?}");
    // Its lag is reported once the partition is read.
    wait_for("the added partition read", Duration::from_secs(30), || lag_of("1")).await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // While the pipeline is stopped: 10 dossiers into the added partition, 5 into the first.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "zstd")
        .create()
        .unwrap();
    for n in 0..15 {
        let event =
            scenario::received(&format!("K{n}"), "2026-11-20T08:00:00+07:00", "2026-11-27T17:00:00+07:00", "H44.01");
        let payload = serde_json::to_vec(&event).unwrap();
        let key = format!("K{n}");
        let record = BaseRecord::to(EVENTS_TOPIC).key(&key).payload(&payload).partition(if n < 10 { 1 } else { 0 });
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("the 15 events applied", Duration::from_secs(30), || (metrics.events_applied.get() >= 15).then_some(()))
        .await;
    assert_eq!(sql(pipeline.http_addr, "SELECT count(*) AS n FROM dossiers")[0]["n"], serde_json::json!(15));
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
