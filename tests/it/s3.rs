//! Snapshots and history in an S3-compatible object store (moto's server over HTTP), so
//! replicas can share them: a pipeline writes there, a fresh one resumes from there.

use index766::persist::store::Store;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::scenario::{self, TOPICS};
use crate::support::{sql, S3Server};

fn with_s3(mut config: index766::Config, endpoint: &str) -> index766::Config {
    config.snapshot.url = "s3://index766/province-h44".into();
    for (key, value) in [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ] {
        config.snapshot.options.insert(key.into(), value.into());
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_history_live_in_an_object_store() {
    let s3 = S3Server::start("index766");
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    for topic in TOPICS {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let sent = scenario::produce(&bootstrap);
    let local = tempfile::tempdir().unwrap();
    let config = || with_s3(scenario::config(&bootstrap, local.path()), &s3.endpoint);

    let shutdown = CancellationToken::new();
    let pipeline = scenario::start_and_settle(config(), &shutdown).await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    assert!(std::fs::read_dir(local.path()).unwrap().next().is_none(), "nothing written to the local folder");
    let store = Store::open(local.path(), &config().snapshot.url, &config().snapshot.options).unwrap();
    let names = store.list("").await.unwrap();
    assert!(names.iter().any(|n| n.starts_with("snapshot-")) && names.contains(&"history".to_owned()), "{names:?}");

    // A fresh pipeline (another replica) resumes from the store: nothing is read twice, the
    // counters continue, and the week kept by the first is in SQL.
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config(), shutdown.clone()).await.unwrap();
    assert_eq!(pipeline.metrics.events_consumed.get(), sent, "the counters continue from the snapshot");
    let addr = pipeline.http_addr;
    scenario::wait_for_the_view(addr).await;
    let weeks = sql(addr, "SELECT DISTINCT CAST(week_start AS VARCHAR) AS week FROM weekly_totals");
    assert_eq!(weeks, vec![json!({"week": "2026-11-23"})]);
    let province = sql(
        addr,
        "SELECT total, previous_week_total FROM week_over_week WHERE unit_code = 'H44' AND period = '2026-11'",
    );
    assert_eq!(province.len(), 1);
    assert_eq!(province[0]["previous_week_total"], json!(null), "no week before the first");
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    drop(cluster);
}
