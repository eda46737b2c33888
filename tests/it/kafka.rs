//! What Apache Kafka does that a stand-in broker may not, each against Kafka itself (one KRaft
//! node, its jars fetched by tests/tools.sh): batches in every codec, transactions, the log
//! cleaner, retention, partitions added while running. SASL_SSL and mutual TLS are in `secured`.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use index766::config::{OutOfRange, StartFrom};
use index766::tools::produce::{ensure_topics, EventProducer};
use index766::Config;

use crate::scenario::{self, prefixed_config as config, received, settled, EVENTS_TOPIC, TOPICS};
use crate::support::{http, metric, sql, wait_for, Kafka};

/// The scenario's configuration, reading `<prefix>.dossier-events` (and, if `tables`, the
/// `<prefix>.procedures` and `<prefix>.units` tables); no petitions.
fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap()
}

/// Creates `topic` (one partition) with the given topic configuration.
async fn create_topic(bootstrap: &str, topic: &str, settings: &[(&str, &str)]) {
    let new = settings.iter().fold(NewTopic::new(topic, 1, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
    let created = admin(bootstrap).create_topics(&[new], &AdminOptions::new()).await.unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
}

fn a_reception(dossier: &str) -> Vec<u8> {
    let event = received(dossier, "2026-11-20T08:00:00+07:00", "2026-11-27T17:00:00+07:00", "H44.01");
    serde_json::to_vec(&event).unwrap()
}

/// The lag the pipeline reports for `topic`[0], once it reports one.
fn lag(addr: std::net::SocketAddr, topic: &str) -> Option<f64> {
    let (_, text) = http(addr, "GET", "/metrics", "");
    metric(&text, "index766_consumer_lag_messages", &[("topic", topic), ("partition", "0")])
}

/// Every message `topic`[0] holds now, from its first offset to its end.
fn whole_log(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("whole-log-{topic}"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut messages = Vec::new();
    loop {
        match consumer.poll(Duration::from_secs(10)).expect("the log within 10 s") {
            Ok(message) => messages.push(message.detach()),
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => return messages,
            Err(error) => panic!("reading {topic}: {error}"),
        }
    }
}

/// One topic whose batches use each codec Kafka producers offer: every event counts, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_every_codec_are_all_counted_exactly() {
    const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
    const EACH: usize = 400;
    let kafka = Kafka::shared();
    let prefix = "codecs";
    let events = format!("{prefix}.dossier-events");
    ensure_topics(&kafka.bootstrap, &[&events, &format!("{prefix}.dead-letter")], 1).await.unwrap();
    for codec in CODECS {
        // Batches of up to 100 records, lingering so that they fill.
        let mut batched = ClientConfig::new();
        batched.set("compression.type", codec).set("linger.ms", "50").set("batch.num.messages", "100");
        let mut producer = EventProducer::with(&mut batched, &kafka.bootstrap, &events).unwrap();
        for n in 0..EACH {
            let dossier = format!("{codec}-{n}");
            producer.send_raw(dossier.as_bytes(), &a_reception(&dossier)).unwrap();
        }
        producer.finish().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&kafka.bootstrap, prefix, dir.path(), false), shutdown.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    let total = (CODECS.len() * EACH) as u64;
    wait_for("every event applied", Duration::from_secs(60), || (metrics.events_applied.get() == total).then_some(()))
        .await;
    wait_for("the end of the topic", Duration::from_secs(30), || (lag(addr, &events) == Some(0.0)).then_some(())).await;
    assert_eq!(metrics.events_consumed.get(), total, "nothing read twice");
    let counted =
        sql(addr, "SELECT split_part(dossier_id, '-', 1) AS codec, count(*) AS n FROM dossiers GROUP BY 1 ORDER BY 1");
    let mut expected: Vec<_> = CODECS.iter().map(|c| json!({"codec": c, "n": EACH})).collect();
    expected.sort_by_key(|v| v["codec"].as_str().unwrap().to_owned());
    assert_eq!(counted, expected);
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

/// An upstream producer writing in transactions: what it aborts never counts, what it commits
/// counts once, and the pipeline reads past the transaction markers to the end of the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_never_count_and_committed_ones_count_once() {
    let kafka = Kafka::shared();
    let prefix = "transactions";
    let events = format!("{prefix}.dossier-events");
    ensure_topics(&kafka.bootstrap, &[&events, &format!("{prefix}.dead-letter")], 1).await.unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("transactional.id", "upstream-portal")
        .set("compression.type", "zstd")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    let transaction = |name: &str, count: usize, commit: bool| {
        producer.begin_transaction().unwrap();
        for n in 0..count {
            let dossier = format!("{name}-{n}");
            let payload = a_reception(&dossier);
            producer.send(BaseRecord::to(&events).key(&dossier).payload(&payload)).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(timeout).unwrap();
        if commit {
            producer.commit_transaction(timeout).unwrap();
        } else {
            producer.abort_transaction(timeout).unwrap();
        }
    };
    transaction("committed1", 50, true);
    transaction("aborted", 100, false);
    transaction("committed2", 50, true);

    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&kafka.bootstrap, prefix, dir.path(), false), shutdown.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    // The lag can read 0 before the first fetch: the committed events are awaited first, then
    // the end of the topic, past which an aborted event read would show.
    wait_for("the committed events", Duration::from_secs(60), || (metrics.events_consumed.get() >= 100).then_some(()))
        .await;
    wait_for("the end of the topic", Duration::from_secs(60), || (lag(addr, &events) == Some(0.0)).then_some(())).await;
    assert_eq!(metrics.events_consumed.get(), 100, "only the committed events are read");
    assert_eq!(metrics.events_applied.get(), 100);
    let counted =
        sql(addr, "SELECT split_part(dossier_id, '-', 1) AS txn, count(*) AS n FROM dossiers GROUP BY 1 ORDER BY 1");
    assert_eq!(counted, vec![json!({"txn": "committed1", "n": 50}), json!({"txn": "committed2", "n": 50})]);
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // A restart resumes after the last marker: nothing counted twice, the lag is still zero.
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&kafka.bootstrap, prefix, dir.path(), false), shutdown.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    // Its first reading may still count the last commit marker (1) before the consumer steps past it.
    wait_for("no lag after the restart", Duration::from_secs(30), || (lag(addr, &events) == Some(0.0)).then_some(()))
        .await;
    assert_eq!(metrics.events_consumed.get(), 100, "the counter continues from the snapshot");
    assert_eq!(sql(addr, "SELECT count(*) AS n FROM dossiers")[0]["n"], json!(100));
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

/// The units and catalog tables, as SQL answers: the units and every score they feed.
fn tables(addr: std::net::SocketAddr) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    (
        sql(addr, "SELECT * FROM units ORDER BY unit_code"),
        sql(addr, "SELECT unit_code, period, criterion, numerator, denominator, points FROM scores ORDER BY 1, 2, 3"),
    )
}

/// The catalog and units topics compacted by Kafka's log cleaner, tombstones included: a
/// pipeline reading the compacted log, from scratch or restarting from a snapshot taken before
/// the cleaner ran, builds the same tables as the one that read every version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compacted_catalog_and_units_give_the_same_tables() {
    let kafka = Kafka::shared();
    let prefix = "compacted";
    let (catalog, units) = (format!("{prefix}.procedures"), format!("{prefix}.units"));
    ensure_topics(&kafka.bootstrap, &[&format!("{prefix}.dossier-events"), &format!("{prefix}.dead-letter")], 1)
        .await
        .unwrap();
    // Segments roll every 100 ms and are cleaned as soon as anything in them is superseded.
    let compacted = [
        ("cleanup.policy", "compact"),
        ("segment.ms", "100"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "0"),
    ];
    create_topic(&kafka.bootstrap, &catalog, &compacted).await;
    create_topic(&kafka.bootstrap, &units, &compacted).await;
    let examples =
        std::fs::read_to_string(crate::support::repo_root().join("schemas/examples/procedures.jsonl")).unwrap();
    let procedures: Vec<serde_json::Value> = examples.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut producer = EventProducer::new(&kafka.bootstrap, &format!("{prefix}.dossier-events")).unwrap();
    for e in scenario::events() {
        producer.send(&e).unwrap();
    }
    producer.finish().unwrap();
    const ROUNDS: usize = 8;
    // A run until it has the last round's tables, and those tables.
    let settle = |config: Config| async move {
        let shutdown = CancellationToken::new();
        let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
        let addr = pipeline.http_addr;
        scenario::wait_for_the_view(addr).await;
        let last = vec![json!({"unit_name": format!("Xã Phú Lộc {}", ROUNDS - 1)})];
        wait_for("the last round", Duration::from_secs(30), || {
            (sql(addr, "SELECT unit_name FROM units WHERE unit_code = 'H44.101'") == last).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the view of the last round
        let got = tables(addr);
        shutdown.cancel();
        pipeline.wait().await.unwrap();
        got
    };
    // The first run follows the tables as they are written, while the cleaner compacts them. The
    // writer has a thread of its own: the run's checks block their thread, which must not be one
    // of the two runtime workers the pipeline serves them on.
    let first = tempfile::tempdir().unwrap();
    let (catalog_topic, units_topic) = (catalog.clone(), units.clone());
    let writer = std::thread::spawn(move || {
        let (catalog, units) = (catalog_topic, units_topic);
        let mut sent = 0;
        for round in 0..ROUNDS {
            let mut tables = EventProducer::new(&kafka.bootstrap, &catalog).unwrap();
            for p in &procedures {
                // Each round a procedure goes online or off: the catalog criteria move with it.
                let mut p = p.clone();
                p["online_level"] =
                    json!(if (round + p["code"].as_str().unwrap().len()) % 2 == 0 { "full" } else { "none" });
                tables.send_raw(p["code"].as_str().unwrap().as_bytes(), p.to_string().as_bytes()).unwrap();
            }
            let added = json!({"code": "9.999999", "name": format!("Thủ tục mới {round}"), "online_level": "none", "applicant_types": ["business"], "levels": ["department"]});
            tables.send_raw(b"9.999999", added.to_string().as_bytes()).unwrap();
            if round == ROUNDS - 2 {
                tables.send_raw(b"9.999999", b"").unwrap(); // a tombstone, then the code comes back
                tables.send_raw(b"2.000777", b"").unwrap(); // a tombstone for good
            }
            sent += tables.finish().unwrap();
            let mut registry = EventProducer::new(&kafka.bootstrap, &units).unwrap();
            let renamed =
                json!({"code": "H44.101", "name": format!("Xã Phú Lộc {round}"), "parent": "H44", "level": "commune"});
            registry.send_raw(b"H44.101", renamed.to_string().as_bytes()).unwrap();
            sent += registry.finish().unwrap();
            std::thread::sleep(Duration::from_millis(150)); // the next round lands in a new segment
        }
        sent
    });
    let every_version = settle(config(&kafka.bootstrap, prefix, first.path(), true)).await;
    let sent = writer.join().expect("the table writer");

    let cleaned = wait_for("the log cleaner", Duration::from_secs(60), || {
        let (c, u) = (whole_log(&kafka.bootstrap, &catalog), whole_log(&kafka.bootstrap, &units));
        (c.len() + u.len() <= sent as usize / 2).then_some((c.len(), u.len()))
    })
    .await;
    eprintln!("compaction: {sent} table messages cleaned to {cleaned:?} (catalog, units)");

    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(settle(config(&kafka.bootstrap, prefix, fresh.path(), true)).await, every_version, "from scratch");
    assert_eq!(settle(config(&kafka.bootstrap, prefix, first.path(), true)).await, every_version, "restarted");
}

/// Retention deletes events the pipeline has not read while it is stopped. By default it
/// refuses to start and names the partition; with `out_of_range = "earliest"` it reads on from
/// the earliest offset held, counts exactly what is there, and says what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deleted_by_retention_while_stopped_fail_or_resume_as_configured() {
    let kafka = Kafka::shared();
    let prefix = "retention";
    let events = format!("{prefix}.dossier-events");
    ensure_topics(&kafka.bootstrap, &[&format!("{prefix}.dead-letter")], 1).await.unwrap();
    create_topic(&kafka.bootstrap, &events, &[("segment.ms", "100")]).await;
    let send = |name: &str| {
        let mut producer = EventProducer::new(&kafka.bootstrap, &events).unwrap();
        for n in 0..20 {
            let dossier = format!("{name}-{n}");
            producer.send_raw(dossier.as_bytes(), &a_reception(&dossier)).unwrap();
        }
        producer.finish().unwrap();
    };
    send("read");
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&kafka.bootstrap, prefix, dir.path(), false), shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    wait_for("the first 20", Duration::from_secs(30), || (settled(&metrics) == 20).then_some(())).await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();

    // Stopped: 20 more, then retention by size shortened to a byte; the next 20 roll that
    // segment, and the broker deletes every segment but the newest (size-based retention keeps
    // it; time-based would roll and delete it too).
    send("unread");
    std::thread::sleep(Duration::from_millis(200));
    let short =
        AlterConfig::new(ResourceSpecifier::Topic(&events)).set("segment.ms", "100").set("retention.bytes", "1");
    let altered = admin(&kafka.bootstrap).alter_configs(&[short], &AdminOptions::new()).await.unwrap();
    assert!(altered.iter().all(|r| r.is_ok()), "{altered:?}");
    send("kept");
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    wait_for("retention to delete the first 40", Duration::from_secs(60), || {
        let (low, _) = probe.fetch_watermarks(&events, 0, Duration::from_secs(5)).unwrap();
        (low == 40).then_some(())
    })
    .await;

    let shutdown = CancellationToken::new();
    let pipeline =
        index766::Pipeline::start(config(&kafka.bootstrap, prefix, dir.path(), false), shutdown.clone()).await.unwrap();
    let error = pipeline.wait().await.expect_err("a lost position stops the pipeline").to_string();
    for needed in [format!("{events}[0]"), "offset 20".into(), "40 to 60".into(), "out_of_range = \"earliest\"".into()]
    {
        assert!(error.contains(&needed), "{needed:?} missing from: {error}");
    }

    let mut earliest = config(&kafka.bootstrap, prefix, dir.path(), false);
    earliest.ingest.out_of_range = OutOfRange::Earliest;
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(earliest, shutdown.clone()).await.unwrap();
    let (addr, metrics) = (pipeline.http_addr, pipeline.metrics.clone());
    wait_for("the 20 still held", Duration::from_secs(30), || (settled(&metrics) == 40).then_some(())).await;
    let (status, health) = http(addr, "GET", "/healthz", "");
    assert_eq!(status, 200, "{health}");
    assert!(health.contains(&format!("{events}[0] resumed at 40, not 20")), "{health}");
    let counted =
        sql(addr, "SELECT split_part(dossier_id, '-', 1) AS part, count(*) AS n FROM dossiers GROUP BY 1 ORDER BY 1");
    assert_eq!(counted, vec![json!({"part": "kept", "n": 20}), json!({"part": "read", "n": 20})]);
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}

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
    let added = admin(&kafka.bootstrap)
        .create_partitions(&[NewPartitions::new(EVENTS_TOPIC, 2)], &AdminOptions::new())
        .await
        .unwrap();
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
        let key = format!("K{n}");
        let payload = a_reception(&key);
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
