//! Crash recovery on Apache Kafka: a stream of over 200,000 messages, from producers that batch
//! and compress with zstd as upstream systems do, is read by the
//! `index766` binary, killed with SIGKILL at random moments (some while a snapshot is being
//! written) and restarted each time; its final snapshot must equal, exactly, that of one
//! uninterrupted run over the same stream (every dossier and petition, the counters, the scores).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use index766::tools::produce::{ensure_topics, EventProducer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::support::{free_port, newest_manifest, snapshot_rows, Kafka};

const EVENTS: &str = "crash.dossier-events";
const PETITIONS: &str = "crash.petitions";
const DEAD_LETTERS: &str = "crash.dead-letter";
/// The simulated stream ends here; the pipeline judges as of this instant.
const AS_OF: &str = "2026-11-24T12:00:00+07:00";
const KILLS: usize = 12;

struct Stream {
    messages: u64,
    events: u64,
}

/// The simulated province's history (over 200,000 events), some events sent twice, some
/// malformed messages; and its petitions.
fn produce(bootstrap: &str, dir: &Path) -> Stream {
    let now = index766_core::time::parse_time(AS_OF).unwrap();
    let mut sim = index766::tools::demo::simulator(766);
    std::fs::write(dir.join("units.jsonl"), sim.province().registry_jsonl()).unwrap();
    std::fs::write(dir.join("procedures.jsonl"), sim.province().catalog_jsonl(now)).unwrap();
    let events = sim.history(now, 30, 2400);
    assert!(events.len() >= 200_000, "the stream has {} events", events.len());
    let mut producer = zstd_producer(bootstrap, EVENTS);
    let mut rng = StdRng::seed_from_u64(7);
    let mut messages = 0;
    for (i, event) in events.iter().enumerate() {
        producer.send(event).unwrap();
        if rng.random_ratio(1, 200) {
            producer.send(&events[rng.random_range(0..=i)]).unwrap();
            messages += 1;
        }
        if rng.random_ratio(1, 2000) {
            producer.send_raw(event.dossier_id.as_bytes(), b"{\"schema_version\": 1, truncated").unwrap();
            messages += 1;
        }
    }
    messages += producer.finish().map(|_| events.len() as u64).unwrap();
    let mut petitions = zstd_producer(bootstrap, PETITIONS);
    let petition_events = sim.petition_history(now, 30, 2400);
    for p in &petition_events {
        petitions.send_raw(p.petition_id.as_bytes(), &serde_json::to_vec(p).unwrap()).unwrap();
    }
    petitions.finish().unwrap();
    messages += petition_events.len() as u64;
    Stream { messages, events: events.len() as u64 }
}

/// Batches of up to 10,000 records (librdkafka's default), lingering 20 ms, compressed with zstd.
fn zstd_producer(bootstrap: &str, topic: &str) -> EventProducer {
    let mut config = rdkafka::ClientConfig::new();
    config.set("compression.type", "zstd").set("linger.ms", "20");
    EventProducer::with(&mut config, bootstrap, topic).unwrap()
}

fn config_text(bootstrap: &str, dir: &Path, snapshots: &Path, http_port: u16) -> String {
    let root = crate::support::repo_root();
    format!(
        "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n\"group.id\" = \"crash-test\"\n\
         [topics]\nevents = {EVENTS:?}\npetitions = {PETITIONS:?}\ncatalog = \"\"\nunits = \"\"\ndead_letter = {DEAD_LETTERS:?}\n\
         [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n\
         [scoring]\nspec_file = {:?}\nas_of = {AS_OF:?}\n\
         [sql]\nviews_dir = {:?}\npostgres_listen = \"\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [snapshot]\ndir = {snapshots:?}\ninterval_secs = 1\nkeep = 3\n",
        dir.join("units.jsonl"),
        dir.join("procedures.jsonl"),
        root.join("sql/scoring_spec.toml"),
        root.join("sql/views"),
    )
}

fn writing_snapshot(dir: &Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with(".staging-") || (name.starts_with("snapshot-") && !e.path().join("manifest.json").exists())
    })
}

struct Process {
    child: Child,
    log: PathBuf,
}

fn start_binary(config: &Path, log: PathBuf) -> Process {
    Process { child: crate::support::start_binary(config, &log, "info,rdkafka=warn"), log }
}

/// Seconds the process took to restore its snapshot, from its log.
fn recovery_seconds(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("resumed from snapshot"))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("seconds=")?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_it_ends_exactly_where_an_uninterrupted_run_ends() {
    let broker = Kafka::shared();
    ensure_topics(&broker.bootstrap, &[EVENTS, PETITIONS, DEAD_LETTERS], 4).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let produced = Instant::now();
    let stream = produce(&broker.bootstrap, dir.path());
    eprintln!(
        "crash test: {} messages ({} events) produced in {:?}",
        stream.messages,
        stream.events,
        produced.elapsed()
    );

    // The uninterrupted run, in process.
    let reference = dir.path().join("reference");
    let config = index766::Config::from_toml(&config_text(&broker.bootstrap, dir.path(), &reference, 0)).unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let metrics = pipeline.metrics.clone();
    crate::support::wait_for("the uninterrupted run to read everything", Duration::from_secs(600), || {
        (metrics.events_consumed.get() == stream.messages && crate::scenario::settled(&metrics) == stream.messages)
            .then_some(())
    })
    .await;
    shutdown.cancel();
    pipeline.wait().await.unwrap();
    let expected = newest_manifest(&reference).unwrap();
    eprintln!("crash test: uninterrupted run done at {:?}", produced.elapsed());
    assert_eq!(expected.ledger.consumed, stream.messages);

    // The run killed again and again.
    let crashed = dir.path().join("crashed");
    let config_path = dir.path().join("crash.toml");
    let http_port = free_port();
    std::fs::write(&config_path, config_text(&broker.bootstrap, dir.path(), &crashed, http_port)).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let (mut during_snapshot, mut recoveries) = (0, Vec::new());
    let mut progress = Vec::new();
    for kill in 0..KILLS {
        let before = newest_manifest(&crashed).map_or(0, |m| m.ledger.consumed);
        let mut process = start_binary(&config_path, dir.path().join(format!("run-{kill}.log")));
        let started = Instant::now();
        // Each run first makes some progress of its own (a snapshot counting more than the one
        // it resumed from), so the kills spread over the whole stream.
        while newest_manifest(&crashed).is_none_or(|m| m.ledger.consumed == before)
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if kill % 2 == 0 {
            // Wait for the next snapshot to be in the middle of being written, then kill.
            while !writing_snapshot(&crashed) && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        }
        process.child.kill().unwrap();
        process.child.wait().unwrap();
        during_snapshot += writing_snapshot(&crashed) as usize;
        recoveries.extend(recovery_seconds(&process.log));
        progress.push(newest_manifest(&crashed).map_or(0, |m| m.ledger.consumed));
    }
    eprintln!("crash test: messages counted by the newest snapshot after each kill: {progress:?}");
    eprintln!("crash test: kills done at {:?}", produced.elapsed());
    let killed_at = newest_manifest(&crashed).map_or(0, |m| m.ledger.consumed);
    let mut last = start_binary(&config_path, dir.path().join("final.log"));
    crate::support::wait_for("the last run to serve", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", http_port)).ok()
    })
    .await;
    crate::support::wait_for("the restarted run to read everything", Duration::from_secs(600), || {
        newest_manifest(&crashed).is_some_and(|m| m.ledger.consumed == stream.messages).then_some(())
    })
    .await;
    let pid = last.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = last.child.wait().unwrap();
    let log = std::fs::read_to_string(&last.log).unwrap_or_default();
    assert!(status.success(), "the final run exits cleanly on SIGTERM: {status}\n{log}");
    recoveries.extend(recovery_seconds(&last.log));

    let got = newest_manifest(&crashed).unwrap();
    eprintln!(
        "crash test: ledger {:?}; {KILLS} kills ({during_snapshot} while a snapshot was being written), {} snapshot generations \
         written by the killed runs and the last, {killed_at} messages counted before the last start, \
         recovery times {recoveries:?} s",
        got.ledger,
        got.id
    );
    assert!(during_snapshot >= 3, "only {during_snapshot} kills landed during a snapshot write");
    assert!(recoveries.len() >= KILLS / 2, "most restarts resumed from a snapshot: {recoveries:?}");
    assert_eq!(got.ledger, expected.ledger, "counters");
    assert_eq!(got.offsets, expected.offsets, "positions");
    assert_eq!(got.judged_at, expected.judged_at);
    let (got_rows, expected_rows) = (snapshot_rows(&crashed), snapshot_rows(&reference));
    assert_eq!(
        got_rows.keys().collect::<Vec<_>>(),
        ["dossiers.parquet", "group_scores.parquet", "petitions.parquet", "scores.parquet", "totals.parquet"]
    );
    for (table, rows) in &expected_rows {
        assert!(!rows.is_empty(), "{table} is empty");
        if got_rows[table] != *rows {
            let differing: Vec<_> = got_rows[table].iter().filter(|r| !rows.contains(r)).take(3).collect();
            let missing: Vec<_> = rows.iter().filter(|r| !got_rows[table].contains(r)).take(3).collect();
            panic!("{table} differs from the uninterrupted run's: {} vs {} rows; only in the crashed run: {differing:#?}; only in the uninterrupted run: {missing:#?}", got_rows[table].len(), rows.len());
        }
    }
}
