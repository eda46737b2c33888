//! `index766 demo` (an in-process broker, a simulated province, and the pipeline, nothing to
//! install) and `index766 generate` (the same simulated stream, to any broker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::tools::produce::{EventProducer, ProduceError};
use crate::tools::simulate::{Nation, Province, Simulator};

#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Days of history before now.
    pub days: i64,
    /// Dossiers received on a working day (a fifth of that at weekends).
    pub per_day: u32,
    /// New dossiers a minute once the history is sent; 0 stops after the history.
    pub live_per_minute: u32,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the in-process Kafka broker did not start: {0}")]
    Broker(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Pipeline(#[from] crate::RunError),
}

pub(crate) const PROVINCE_CODE: &str = "H99";
pub(crate) const PROVINCE_NAME: &str = "Tỉnh Sông Hồng (mô phỏng)";

pub fn simulator(seed: u64) -> Simulator {
    Simulator::new(Province::new(PROVINCE_CODE, PROVINCE_NAME, seed), seed)
}

/// Sends the dossier and petition history, then live dossier events until `stop`; blocking (run
/// it on its own thread). Returns how many dossier events were delivered.
pub fn stream(
    sim: &mut Simulator,
    producer: &mut EventProducer,
    petitions: &mut EventProducer,
    options: &StreamOptions,
    stop: &CancellationToken,
) -> Result<u64, ProduceError> {
    let now = || chrono::Utc::now().timestamp();
    for event in sim.history(now(), options.days, options.per_day) {
        producer.send(&event)?;
    }
    for petition in sim.petition_history(now(), options.days, options.per_day) {
        petitions.send_raw(petition.petition_id.as_bytes(), &serde_json::to_vec(&petition).expect("serialises"))?;
    }
    petitions.finish()?;
    producer.finish()?;
    tracing::info!(days = options.days, "simulated history sent");
    if options.live_per_minute == 0 {
        return producer.finish();
    }
    let mut owed = 0.0;
    while !stop.is_cancelled() {
        std::thread::sleep(Duration::from_secs(1));
        owed += options.live_per_minute as f64 / 60.0;
        sim.receive_now(now(), owed as u32);
        owed -= owed.floor();
        for event in sim.due_events(now()) {
            producer.send(&event)?;
        }
    }
    producer.finish()
}

/// Writes the simulated stream to `brokers` (topics created by the caller), and the province's
/// unit registry and procedure catalog as `units.jsonl` and `procedures.jsonl` into `files_out`.
/// Blocking.
pub fn generate(
    brokers: &str,
    topics: (&str, &str),
    files_out: Option<PathBuf>,
    options: &StreamOptions,
    stop: &CancellationToken,
) -> Result<u64, DemoError> {
    let mut sim = simulator(options.seed);
    if let Some(dir) = files_out {
        write_province_files(&sim, &dir)?;
    }
    let mut producer = EventProducer::new(brokers, topics.0)?;
    let mut petitions = EventProducer::new(brokers, topics.1)?;
    Ok(stream(&mut sim, &mut producer, &mut petitions, options, stop)?)
}

/// What `generate-history` makes: about `dossiers` dossiers received over the `days` days before
/// now, in `provinces` provinces.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub provinces: usize,
    pub dossiers: u64,
    pub days: i64,
    pub seed: u64,
    /// The judging instant the history ends at (the wall clock if None).
    pub now: Option<index766_core::time::Instant>,
}

/// Where a generated history goes.
#[derive(Debug, Clone)]
pub enum HistoryOut {
    /// JSON lines, or Parquet if the name ends in `.parquet`.
    File(PathBuf),
    Topic {
        brokers: String,
        topic: String,
    },
}

/// Writes a national history (see `Nation::history`), and the registry and catalog as
/// `units.jsonl` and `procedures.jsonl` into `files_out`. Blocking; returns the events written.
pub fn generate_history(
    out: &HistoryOut,
    files_out: Option<&std::path::Path>,
    options: &HistoryOptions,
) -> Result<u64, DemoError> {
    let now = options.now.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let mut nation = Nation::new(options.provinces, options.seed);
    if let Some(dir) = files_out {
        write_files(dir, &[("units.jsonl", nation.registry_jsonl()), ("procedures.jsonl", nation.catalog_jsonl(now))])?;
    }
    let (days, dossiers) = (options.days, options.dossiers);
    match out {
        HistoryOut::Topic { brokers, topic } => {
            let mut producer = EventProducer::new(brokers, topic)?;
            let sent =
                nation.history(now, days, dossiers, |events| events.iter().try_for_each(|e| producer.send(e)))?;
            producer.finish()?;
            Ok(sent)
        }
        HistoryOut::File(path) => {
            let failed = |e: String| DemoError::Write { path: path.clone(), source: std::io::Error::other(e) };
            let mut lines = Vec::new();
            if path.extension().is_some_and(|e| e == "parquet") {
                let mut parquet = crate::ingest::replay::ParquetEvents::create(path).map_err(failed)?;
                let written = nation
                    .history(now, days, dossiers, |events| parquet.write_json_lines(json_lines(&events, &mut lines)));
                let written = written.map_err(failed)?;
                parquet.finish().map_err(failed)?;
                Ok(written)
            } else {
                let io = |source| DemoError::Write { path: path.clone(), source };
                let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
                let written = nation.history(now, days, dossiers, |events| {
                    std::io::Write::write_all(&mut file, json_lines(&events, &mut lines))
                });
                let written = written.map_err(io)?;
                std::io::Write::flush(&mut file).map_err(io)?;
                Ok(written)
            }
        }
    }
}

/// The events as JSON lines, written over `buffer`.
fn json_lines<'a>(events: &[index766_core::event::WireEvent], buffer: &'a mut Vec<u8>) -> &'a [u8] {
    buffer.clear();
    for e in events {
        serde_json::to_writer(&mut *buffer, e).expect("an event serialises");
        buffer.push(b'\n');
    }
    buffer
}

/// Writes (name, text) files into `dir`, creating it; returns their paths.
fn write_files(dir: &std::path::Path, files: &[(&str, String)]) -> Result<Vec<PathBuf>, DemoError> {
    std::fs::create_dir_all(dir).map_err(|source| DemoError::Write { path: dir.to_owned(), source })?;
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| DemoError::Write { path: path.clone(), source })?;
            Ok(path)
        })
        .collect()
}

/// The simulated province's registry and catalog, as files the pipeline loads; returns their paths.
fn write_province_files(sim: &Simulator, dir: &std::path::Path) -> Result<(PathBuf, PathBuf), DemoError> {
    let province = sim.province();
    let paths = write_files(
        dir,
        &[
            ("units.jsonl", province.registry_jsonl()),
            ("procedures.jsonl", province.catalog_jsonl(chrono::Utc::now().timestamp())),
        ],
    )?;
    Ok((paths[0].clone(), paths[1].clone()))
}

/// The in-process broker lives on its own thread (librdkafka's mock cluster must stay on the
/// thread that made it) until `stop` is sent; every client must be gone before that.
fn start_mock_broker(
    topics: Vec<String>,
) -> Result<(String, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>), DemoError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let cluster = match MockCluster::new(1) {
            Ok(cluster) => cluster,
            Err(e) => return ready_tx.send(Err(e.to_string())).unwrap_or(()),
        };
        // librdkafka's mock broker keeps at most 5 MiB (or 100,000 messages) per partition and
        // deletes older ones: 16 partitions hold the whole simulated history, even while the
        // pipeline is still reading it.
        for topic in &topics {
            if let Err(e) = cluster.create_topic(topic, 16, 1) {
                return ready_tx.send(Err(format!("creating {topic}: {e}"))).unwrap_or(());
            }
        }
        let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
        let _ = stop_rx.recv();
    });
    let bootstrap = ready_rx
        .recv()
        .map_err(|_| DemoError::Broker("the broker thread ended early".into()))?
        .map_err(DemoError::Broker)?;
    Ok((bootstrap, stop_tx, thread))
}

/// Where the demo serves its users.
pub struct Addresses {
    pub http: SocketAddr,
    pub postgres: SocketAddr,
    /// A TOML text layered over the demo's own settings (limits, alert rules …).
    pub overrides: String,
}

pub async fn demo(
    addresses: Addresses,
    data_dir: PathBuf,
    options: StreamOptions,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let defaults = crate::Config::from_toml("").map_err(crate::RunError::from)?;
    let (bootstrap, stop_broker, broker) = start_mock_broker(vec![
        defaults.topics.events.clone(),
        defaults.topics.petitions.clone(),
        defaults.topics.dead_letter.clone(),
        defaults.alerts.topic.clone(),
    ])?;

    let mut sim = simulator(options.seed);
    let (units, procedures) = write_province_files(&sim, &data_dir)?;
    let snapshots = data_dir.join("snapshots");
    // The in-process broker is new at every start: snapshots of an earlier demo hold offsets of a
    // broker that is gone, so each demo starts afresh.
    if let Err(source) = std::fs::remove_dir_all(&snapshots) {
        if source.kind() != std::io::ErrorKind::NotFound {
            return Err(DemoError::Write { path: snapshots, source });
        }
    }
    let (http, postgres) = (addresses.http, addresses.postgres);
    let config = crate::Config::from_layers(&[
        &format!(
            "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n[registry]\nunits_file = {units:?}\n\
             [catalog]\nfile = {procedures:?}\n\
             [http]\nlisten = \"{http}\"\n[sql]\npostgres_listen = \"{postgres}\"\n[snapshot]\ndir = {snapshots:?}\ninterval_secs = 30\n"
        ),
        &addresses.overrides,
    ])
    .map_err(crate::RunError::from)?;
    let (topic, petitions_topic) = (config.topics.events.clone(), config.topics.petitions.clone());
    let pipeline = crate::Pipeline::start(config, shutdown.clone()).await?;
    let url = format!("http://{}", pipeline.http_addr);
    let postgres = pipeline.postgres_addr.unwrap_or(postgres);
    println!(
        "index766 demo: {PROVINCE_NAME} ({PROVINCE_CODE}), {} units, {} days of history at {}/day, then {}/min live\n\
         \x20 dashboard  {url}/\n\
         \x20 metrics    {url}/metrics\n\
         \x20 SQL        curl -s {url}/sql -d \"SELECT unit_name, period, total, band, delta, rank FROM totals WHERE is_current ORDER BY total LIMIT 10\"\n\
         \x20 psql       psql -h {} -p {} -U ioc -c \"SELECT * FROM unit_ranking LIMIT 10\"\n\
         \x20 alerts     {url}/api/v1/alerts\n\
         \x20 health     {url}/healthz\n\
         \x20 snapshots  {}\n\
         \x20 units      {}\n\
         Ctrl-C stops it.",
        sim.province().units.len(),
        options.days,
        options.per_day,
        options.live_per_minute,
        postgres.ip(),
        postgres.port(),
        snapshots.display(),
        units.display(),
    );

    let generator = tokio::task::spawn_blocking({
        let stop = shutdown.clone();
        move || -> Result<u64, ProduceError> {
            let mut producer = EventProducer::new(&bootstrap, &topic)?;
            let mut petitions = EventProducer::new(&bootstrap, &petitions_topic)?;
            stream(&mut sim, &mut producer, &mut petitions, &options, &stop)
        }
    });
    let pipeline_result = pipeline.wait().await;
    let generated = generator.await.expect("generator does not panic");
    let _ = stop_broker.send(());
    let _ = broker.join();
    pipeline_result?;
    let delivered = generated?;
    println!("index766 demo stopped: {delivered} simulated events delivered; final snapshot written.");
    Ok(())
}
