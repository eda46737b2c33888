//! `index766 replay`: the pipeline fed from event-log files scores exactly as it does from Kafka,
//! whether the files are JSON lines or Parquet; bad lines are dead-lettered to a file; a replay
//! resumed from its snapshot counts nothing twice.

use std::path::Path;

use index766::ingest::replay::Files;
use index766::tools::demo::{generate_history, HistoryOptions, HistoryOut};
use index766::{Config, Feed, Pipeline};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::scenario::{config, settled, AS_OF, EVENTS_TOPIC, TOPICS};
use crate::support::{snapshot_rows, wait_for};

/// The scenario's config, with the generated nation's registry and catalog.
fn nation_config(bootstrap: &str, dir: &Path, snapshots: &str) -> Config {
    let mut config = config(bootstrap, &dir.join(snapshots));
    config.registry.units_file = dir.join("units.jsonl");
    config.catalog.file = dir.join("procedures.jsonl");
    config
}

/// Replays `files` into the snapshot folder `snapshots`; returns (events read, applied).
async fn replay(dir: &Path, snapshots: &str, files: &[&Path]) -> (u64, u64) {
    let files = Files {
        paths: files.iter().map(|f| f.to_path_buf()).collect(),
        dead_letters: dir.join(format!("{snapshots}.dead-letters.jsonl")),
        keep_serving: false,
    };
    let config = nation_config("", dir, snapshots);
    let pipeline = Pipeline::start_with(config, Feed::Files(files), CancellationToken::new()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    // Ends by itself once the files are read, with its final snapshot.
    pipeline.wait().await.unwrap();
    (metrics.events_consumed.get(), metrics.events_applied.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_files_scores_as_the_broker_does() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let options = HistoryOptions {
        provinces: 3,
        dossiers: 3_000,
        days: 20,
        seed: 5,
        now: Some(index766_core::time::parse_time(AS_OF).unwrap()),
    };
    let jsonl = dir.join("events.jsonl");
    let parquet = dir.join("events.parquet");
    let events = generate_history(&HistoryOut::File(jsonl.clone()), Some(dir), &options).unwrap();
    assert_eq!(
        generate_history(&HistoryOut::File(parquet.clone()), None, &options).unwrap(),
        events,
        "one seed, one history"
    );
    assert!(events > 10_000, "{events} events");
    // Two bad lines and a blank one after the history.
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text += "{not json\n\n{\"schema_version\": 2}\n";
    std::fs::write(&jsonl, text).unwrap();

    let (read, applied) = replay(dir, "from-jsonl", &[&jsonl]).await;
    let counted = (read, applied);
    assert_eq!(read, events + 2, "every line but the blank one is a message");
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("from-jsonl.dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len() as u64, read - applied, "one dead letter per event not applied");
    let reasons = |reason: &str| letters.iter().filter(|l| l["reason"] == reason).count();
    assert_eq!((reasons("malformed_json"), reasons("unsupported_version")), (1, 1));
    assert_eq!(reasons("duplicate") + 2, letters.len(), "the rest are the simulator's repeats");
    let bad = letters.iter().find(|l| l["reason"] == "malformed_json").unwrap();
    assert_eq!(bad["payload"], "{not json");
    assert_eq!(bad["source"], format!("{}/0/{events}", jsonl.display()));

    // Parquet: the same rows, the same scores.
    let (read, _) = replay(dir, "from-parquet", &[&parquet]).await;
    assert_eq!(read, events);
    let from_jsonl = snapshot_rows(&dir.join("from-jsonl"));
    assert_eq!(snapshot_rows(&dir.join("from-parquet")), from_jsonl);

    // Kafka (the in-process mock cluster): the same stream gives the same snapshot.
    let cluster = MockCluster::new(1).unwrap();
    for topic in TOPICS {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let mut producer = index766::tools::produce::EventProducer::new(&bootstrap, EVENTS_TOPIC).unwrap();
    for line in std::fs::read_to_string(&jsonl).unwrap().lines().filter(|l| !l.is_empty()) {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["dossier_id"].as_str().map(String::from));
        producer.send_raw(key.unwrap_or_default().as_bytes(), line.as_bytes()).unwrap();
    }
    producer.finish().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::start(nation_config(&bootstrap, dir, "from-kafka"), shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("every event from the broker", std::time::Duration::from_secs(60), || {
        (settled(&metrics) == events + 2).then_some(())
    })
    .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    drop(cluster);
    assert_eq!(snapshot_rows(&dir.join("from-kafka")), from_jsonl);

    // Replayed again on its own snapshot: every line was counted before, nothing is read again
    // (the counters go on from the snapshot's).
    assert_eq!(replay(dir, "from-jsonl", &[&jsonl]).await, counted);
    assert_eq!(snapshot_rows(&dir.join("from-jsonl")), from_jsonl);
}

/// `replay --serve`: once the files are read the pipeline goes on serving until it is stopped,
/// then writes its final snapshot and ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_serves_keeps_serving_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let options = HistoryOptions {
        provinces: 1,
        dossiers: 500,
        days: 5,
        seed: 9,
        now: Some(index766_core::time::parse_time(AS_OF).unwrap()),
    };
    let jsonl = dir.join("events.jsonl");
    generate_history(&HistoryOut::File(jsonl.clone()), Some(dir), &options).unwrap();
    let files = Files { paths: vec![jsonl], dead_letters: dir.join("dead-letters.jsonl"), keep_serving: true };
    let stop = CancellationToken::new();
    let pipeline =
        Pipeline::start_with(nation_config("", dir, "served"), Feed::Files(files), stop.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    let waiting = tokio::spawn(pipeline.wait());
    wait_for("the files are scored", std::time::Duration::from_secs(60), || {
        (metrics.events_applied.get() > 0).then_some(())
    })
    .await;
    // Past the point where the old code stopped (about 5 s after the files), it still answers.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    assert!(!waiting.is_finished(), "the pipeline stopped after the files instead of serving");
    let rows = crate::support::sql(addr, "SELECT count(*) AS n FROM dossiers");
    assert!(rows[0]["n"].as_u64().unwrap() > 0, "{rows:?}");
    stop.cancel();
    waiting.await.unwrap().expect("a clean stop with its final snapshot");
}
