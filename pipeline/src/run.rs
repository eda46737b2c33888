//! The running pipeline: its stages started and wired (ingest → engine → view, the snapshot
//! writer, the readers), resumed from the newest snapshot, and stopped in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use index766_core::catalog::{self, Catalog};
use index766_core::petition::Petitions;
use index766_core::spec;
use index766_core::state::State;
use index766_core::time::Clock;
use index766_core::units::{self, Registry};

use crate::alerts::election::Election;
use crate::alerts::restatements::{self, RestatementTask};
use crate::alerts::tell::{self, AlertTask, Keeper, Webhook};
use crate::alerts::AlertEngine;
use crate::config::{self, Config};
use crate::engine::view::View;
use crate::engine::{view, Engine};
use crate::ingest::dead_letter::DeadLetters;
use crate::ingest::{client, replay, IngestError, Source};
use crate::persist::audit_files::AuditFiles;
use crate::persist::checkpoint::StateCopy;
use crate::persist::history::{Cadence, History, HistoryTables};
use crate::persist::snapshot::{SnapshotError, Snapshots};
use crate::persist::store::KeptJsonError;
use crate::persist::store::{Store, StoreError};
use crate::persist::{checkpoint, snapshot};
use crate::position::{Ledger, Offsets};
use crate::serve::access::{Gate, Issuer, TokensError};
use crate::serve::audit::AuditLog;
use crate::serve::exposition::ScoreGauges;
use crate::serve::oidc::{Oidc, OidcError};
use crate::serve::report::kept::{Reports, WeeklyWriter};
use crate::serve::tls::{Tls, TlsError};
use crate::serve::{http, listen, postgres, query, routes, sql_error};
use crate::supervise::{Joined, Part, Stopped, Supervisor};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Registry(#[from] units::RegistryError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] sql_error::QueryError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Kept(#[from] KeptJsonError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("the final snapshot did not finish within [snapshot] shutdown_deadline_secs = {0}; unless it completed on the way out, the one before stands and events after it will be read again")]
    ShutdownDeadline(u64),
    #[error("the {} stopped: {}; the pipeline stopped with it (see the log above; the newest durable snapshot stands)", .0.part.as_str(), .0.why)]
    PartStopped(Stopped),
    #[error("cannot start the {part} thread: {source}")]
    Thread { part: &'static str, source: std::io::Error },
    #[error("cannot listen on {addr}: {source} (set [http] listen to a free address)")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Runs the pipeline until `shutdown` is cancelled; writes a last snapshot on the way out.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    Pipeline::start(config, shutdown).await?.wait().await
}

/// Where the pipeline's input comes from.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The config's topics, followed until shutdown.
    Topics,
    /// Event-log files, read once (see `replay`).
    Files(replay::Files),
}

/// A started pipeline (its parts run as tasks); tests use it to learn the HTTP address.
pub struct Pipeline {
    pub http_addr: SocketAddr,
    /// Where the PostgreSQL protocol is served, if it is.
    pub postgres_addr: Option<SocketAddr>,
    pub views: watch::Receiver<Arc<View>>,
    pub metrics: Arc<Metrics>,
    /// The newest durable snapshot's offsets, as they become durable.
    pub durable: watch::Receiver<Offsets>,
    shutdown_deadline: Duration,
    supervisor: Supervisor,
    ingest: Joined<Result<(), IngestError>>,
    engine: Joined<(Arc<View>, Option<StateCopy>)>,
    writer: Joined<SnapshotWriter>,
    http: Joined<()>,
    /// Its last lines are written once the listeners have stopped.
    audit: Arc<AuditLog>,
}

/// What a start resumes from: the newest snapshot's state, or nothing.
struct Resumed {
    state: State,
    petitions: Petitions,
    offsets: Offsets,
    ledger: Ledger,
}

async fn resume(
    config: &Config,
    store: Store,
    now: index766_core::time::Instant,
    catalog: Arc<Catalog>,
    metrics: &Metrics,
) -> Result<(Snapshots, Resumed), RunError> {
    let started = std::time::Instant::now();
    let described = store.describe();
    let restore = |restored: &snapshot::Restored| -> Result<(State, Petitions), snapshot::Unrestorable> {
        let (dossiers, rows) = (restored.batches(checkpoint::DOSSIERS), restored.rows(checkpoint::DOSSIERS));
        let state = checkpoint::restore_state(now, catalog.clone(), rows, dossiers)?;
        Ok((state, checkpoint::read_petitions(&restored.table(checkpoint::PETITIONS)?)?))
    };
    let (snapshots, restored) = Snapshots::open(store, config.snapshot.keep, restore).await?;
    let Some((manifest, (state, petitions))) = restored else {
        tracing::info!(store = described, "no snapshot: starting from the topics");
        let state = State::new(now, catalog);
        return Ok((
            snapshots,
            Resumed { state, petitions: Default::default(), offsets: Default::default(), ledger: Default::default() },
        ));
    };
    // The snapshot's file and decoded tables (gigabytes at national scale) are freed by now; the
    // allocator would hand their pages back to the system only later, so a pod would show them
    // as its own for a while and risk its memory limit.
    return_freed_memory();
    let id = manifest.id;
    let ledger = manifest.ledger.clone();
    metrics.count(&ledger);
    metrics.snapshot_generation.set(id as i64);
    metrics.recovery_duration.set(started.elapsed().as_secs_f64());
    tracing::info!(
        snapshot = id,
        dossiers = state.dossiers().len(),
        petitions = petitions.len(),
        seconds = started.elapsed().as_secs_f64(),
        "resumed from snapshot"
    );
    Ok((snapshots, Resumed { state, petitions, offsets: manifest.offsets(), ledger }))
}

/// Returns the pages of freed memory to the system now rather than at the allocator's leisure.
fn return_freed_memory() {
    // SAFETY: mi_collect only releases memory mimalloc no longer hands out; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

impl Pipeline {
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Pipeline, RunError> {
        Pipeline::start_with(config, Feed::Topics, shutdown).await
    }

    pub async fn start_with(config: Config, feed: Feed, shutdown: CancellationToken) -> Result<Pipeline, RunError> {
        if let Feed::Files(files) = &feed {
            replay::FileSource::check(files)?;
        }
        let config = Arc::new(config);
        let clock = Arc::new(match config.as_of()? {
            Some(t) => Clock::fixed(t),
            None => Clock::Wall,
        });
        let registry = Arc::new(match config.registry.units_file.as_os_str().is_empty() {
            true => Registry::parse(units::EXAMPLE)?,
            false => Registry::load(&config.registry.units_file)?,
        });
        let spec = Arc::new(config.spec()?);
        let catalog = Arc::new(match config.catalog.file.as_os_str().is_empty() {
            true => Catalog::default(),
            false => Catalog::load(&config.catalog.file)?,
        });
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let supervisor = Supervisor::new(shutdown.clone(), health.clone());
        let (dir, url) = config.snapshot.own_place();
        let store = Store::open(&dir, &url, &config.snapshot.options)?;
        let (snapshots, resumed) = resume(&config, store.clone(), clock.now(), catalog.clone(), &metrics).await?;
        let target_total = config.scoring.target_total;
        let calendar = config.calendar()?;
        let petition_tallies = resumed.petitions.tallies(&calendar, resumed.state.now());
        let (dossier_requests, dossier_queue) = mpsc::channel(16);
        let mut views_built = view::ViewBuilder::default();
        let first_view = views_built.build(
            registry.clone(),
            &spec,
            target_total,
            &resumed.state,
            &Default::default(),
            &petition_tallies,
            view::DossierRows::OnRequest(dossier_requests.clone()),
        );
        let history = vec![
            History::load(Cadence::Daily, store.clone()).await?,
            History::load(Cadence::Weekly, store.clone()).await?,
        ];
        let (history_tx, history_rx) = watch::channel(Arc::new(all_tables(&history)));
        let (view_tx, views) = watch::channel(Arc::new(first_view));
        let (keeper, log) = match !config.alerts.election.topic.is_empty() && matches!(feed, Feed::Topics) {
            true => (
                Keeper::Elected { election: Election::join(&config, &health, &shutdown).await?, sender: None },
                Vec::new(),
            ),
            false => {
                // A producer of its own: alerts waiting on their topic never hold back the
                // dead letters, which ingest waits for.
                let topic = match config.alerts.topic.is_empty() || matches!(feed, Feed::Files(_)) {
                    true => None,
                    false => Some((client::producer(&config, &health)?, config.alerts.topic.clone())),
                };
                (Keeper::Alone { store: store.clone(), topic }, tell::load_log(&store).await?)
            }
        };
        let alert_engine = AlertEngine::new(config.alert_rules(&spec)?, config.alerts.keep_resolved, log)
            .speaking(config.locale.language);
        let (alerts_tx, alerts_rx) = watch::channel(Arc::new(alert_engine.log().to_vec()));
        let audit = AuditLog::new(Some(AuditFiles::new(store.clone(), config.sql.audit_keep_days)));
        let flushes = Duration::from_secs(config.sql.audit_flush_secs);
        drop(tokio::spawn(audit.clone().keep_flushing(flushes, shutdown.clone())));
        let restatement_log = restatements::load(&store).await?;
        let (restatements_tx, restatements_rx) = watch::channel(Arc::new(restatement_log.rows.clone()));
        let sources = query::LiveSources {
            view: views.clone(),
            history: history_rx.clone(),
            alerts: alerts_rx.clone(),
            restatements: restatements_rx,
            audit: audit.clone(),
        };
        let sql = Arc::new(query::SqlService::start(&config.sql, sources, metrics.sql_queries_running.clone()).await?);

        let listen = |addr: SocketAddr| async move {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr, source })?;
            let bound = listener.local_addr().map_err(|source| RunError::Listen { addr, source })?;
            Ok::<_, RunError>((listener, bound))
        };
        let oidc = match config.signs_in_with_jwt() {
            true => {
                let oidc = Oidc::start(&config.access.oidc).await?;
                drop(tokio::spawn(oidc.clone().keep_fresh(shutdown.clone())));
                Some(oidc as Arc<dyn Issuer>)
            }
            false => None,
        };
        let tokens_file = Some(config.access.tokens_file.as_path()).filter(|path| !path.as_os_str().is_empty());
        let gate = Arc::new(Gate::new(tokens_file, oidc)?);
        let beyond_loopback = std::iter::once(Some(config.http.listen))
            .chain([config.postgres_listen()?])
            .flatten()
            .any(|addr| !addr.ip().is_loopback());
        if gate.signs_in() && beyond_loopback && config.tls_files()?.is_none() {
            tracing::warn!("tokens cross the network in the clear: set [tls] cert_file and key_file unless a proxy in front speaks TLS");
        }
        // One TLS configuration per listener: each offers its own protocol to clients that ask.
        let tls = |protocol: &'static [u8]| -> Result<Option<Arc<Tls>>, RunError> {
            let Some(files) = config.tls_files()? else { return Ok(None) };
            let tls = Arc::new(Tls::load(files, protocol)?);
            let every = Duration::from_secs(config.tls.reload_secs);
            drop(tokio::spawn(tls.clone().keep_fresh(every, shutdown.clone())));
            Ok(Some(tls))
        };
        let (listener, http_addr) = listen(config.http.listen).await?;
        let postgres_addr = match config.postgres_listen()? {
            Some(addr) => {
                let (listener, bound) = listen(addr).await?;
                let tls = tls(b"postgresql")?;
                let (sql, gate, metrics, shutdown, failed) =
                    (sql.clone(), gate.clone(), metrics.clone(), shutdown.clone(), supervisor.clone());
                let limits = postgres::Limits {
                    max_connections: config.sql.postgres_max_connections,
                    idle_timeout: Duration::from_secs(config.sql.postgres_idle_timeout_secs),
                };
                let serving = async move {
                    if let Err(error) = postgres::serve(listener, sql, gate, metrics, limits, tls, shutdown).await {
                        failed.fail(Part::Postgres, format!("the listener failed: {error}"));
                    }
                };
                // Its result is the supervisor's to see; nothing waits for it.
                drop(supervisor.spawn(Part::Postgres, serving));
                Some(bound)
            }
            None => None,
        };
        let reports = Arc::new(Reports { sql: sql.clone(), spec: spec.clone(), store: store.clone() });
        let weekly_writer = WeeklyWriter {
            reports: reports.clone(),
            views: views.clone(),
            clock: clock.clone(),
            depth: config.reports.depth,
            language: config.locale.language,
        };
        drop(tokio::spawn(weekly_writer.run(shutdown.clone())));
        let app = http::router(routes::AppState {
            view: views.clone(),
            metrics: metrics.clone(),
            score_gauges: Arc::new(ScoreGauges::new(config.metrics.clone())),
            sql,
            health: health.clone(),
            alerts: alerts_rx,
            allowed_hosts: Arc::new(config.http.allowed_hosts.clone()),
            gate,
            ready_max_lag: config.ingest.ready_max_lag_messages,
            language: config.locale.language,
            reports,
        });
        let limits = listen::HttpLimits {
            max_connections: config.http.max_connections,
            header_timeout: Duration::from_secs(config.http.header_timeout_secs),
            max_header_bytes: config.http.max_header_bytes,
            idle_timeout: Duration::from_secs(config.http.idle_timeout_secs),
        };
        let http = {
            let serving = listen::serve(listener, app, limits, tls(b"http/1.1")?, audit.clone(), shutdown.clone());
            let failed = supervisor.clone();
            supervisor.spawn(Part::Http, async move {
                if let Err(error) = serving.await {
                    failed.fail(Part::Http, format!("the listener failed: {error}"));
                }
            })
        };

        let alert_task = AlertTask {
            engine: alert_engine,
            spec: spec.clone(),
            max_lag: config.alerts.max_lag_messages,
            views: views.clone(),
            history: history_rx,
            log: alerts_tx,
            keeper,
            webhook: Webhook {
                target: (!config.alerts.webhook_url.is_empty())
                    .then(|| (reqwest::Client::new(), config.alerts.webhook_url.clone())),
                resend: Duration::from_secs(config.alerts.resend_secs),
                language: config.locale.language,
            },
            metrics: metrics.clone(),
        };
        // Its result is the supervisor's to see; nothing waits for it.
        drop(supervisor.spawn(Part::Alerts, alert_task.run(shutdown.clone())));
        let restatement_task = RestatementTask {
            log: restatement_log,
            views: views.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            max_lag: config.alerts.max_lag_messages,
            rows: restatements_tx,
        };
        drop(tokio::spawn(restatement_task.run(shutdown.clone())));
        let dead_letters = Arc::new(match &feed {
            Feed::Topics => DeadLetters::topic(
                client::producer(&config, &health)?,
                config.topics.dead_letter.clone(),
                health.clone(),
            ),
            Feed::Files(files) => DeadLetters::file(&files.dead_letters).map_err(|e| IngestError::File {
                path: files.dead_letters.clone(),
                reason: format!("cannot open the dead-letter file: {e}"),
            })?,
        });
        let (durable_tx, durable) = watch::channel(resumed.offsets.clone());
        let (batch_tx, batch_rx) = mpsc::channel(8);
        let reading = match feed {
            Feed::Topics => {
                let source = Source {
                    config: config.clone(),
                    metrics: metrics.clone(),
                    health,
                    dead_letters: dead_letters.clone(),
                    resume: resumed.offsets.clone(),
                    durable: durable.clone(),
                };
                source.run(batch_tx, shutdown.clone()).boxed()
            }
            Feed::Files(files) => {
                health.connected();
                let source = replay::FileSource {
                    files,
                    batch_max_events: config.ingest.batch_max_events,
                    max_message_bytes: config.ingest.max_event_bytes,
                    resume: resumed.offsets.clone(),
                    metrics: metrics.clone(),
                    dead_letters: dead_letters.clone(),
                };
                source.run(batch_tx, shutdown.clone()).boxed()
            }
        };
        let ingest = supervisor.spawn(Part::Ingest, {
            let supervisor = supervisor.clone();
            async move {
                let result = reading.await;
                if let Err(error) = &result {
                    // A source that cannot go on stops the pipeline, with its message.
                    supervisor.fail(Part::Ingest, error.to_string());
                }
                result
            }
        });
        let (checkpoint_tx, checkpoint_rx) = mpsc::channel(1);
        let engine = Engine {
            state: resumed.state,
            petitions: resumed.petitions,
            calendar,
            catalog: (*catalog).clone(),
            units: registry.units().iter().map(|u| (u.code.clone(), u.clone())).collect(),
            registry,
            spec,
            target_total,
            clock,
            metrics: metrics.clone(),
            views: view_tx,
            publish_every: Duration::from_millis(config.scoring.publish_interval_ms.max(10)),
            offsets: resumed.offsets,
            ledger: resumed.ledger,
            dead_letters,
            max_future_secs: config.ingest.max_future_secs,
            checkpoints: checkpoint_tx,
            snapshot_every: Duration::from_secs(config.snapshot.interval_secs),
            shutdown: shutdown.clone(),
            supervisor: supervisor.clone(),
            dossier_requests: (dossier_requests, dossier_queue),
            views_built,
        };
        // A thread of its own: a scrape, a query or a slow task elsewhere never delays the engine.
        let engine = supervisor
            .spawn_thread(Part::Engine, engine.run(batch_rx))
            .map_err(|source| RunError::Thread { part: Part::Engine.as_str(), source })?;
        let writer = SnapshotWriter {
            snapshots,
            history,
            durable: durable_tx,
            history_tables: history_tx,
            metrics: metrics.clone(),
        };
        let writer = supervisor.spawn(Part::SnapshotWriter, writer.run(checkpoint_rx));
        tracing::info!(%http_addr, topic = config.topics.events, "index766 started");
        Ok(Pipeline {
            http_addr,
            postgres_addr,
            views,
            metrics,
            durable,
            shutdown_deadline: Duration::from_secs(config.snapshot.shutdown_deadline_secs),
            supervisor,
            ingest,
            engine,
            writer,
            http,
            audit,
        })
    }

    /// Waits for shutdown, then writes the final snapshot from the final state, within the
    /// configured deadline.
    /// If a part stopped the pipeline, the final snapshot is still written when the engine and
    /// the writer are whole, and the part is named in the error.
    pub async fn wait(self) -> Result<(), RunError> {
        let stopped = || self.supervisor.stopped().map(RunError::PartStopped);
        // A sender dropped unsent is a part that panicked before it could answer.
        let ingest = self.ingest.await.ok().flatten();
        let last = self.engine.await.ok().flatten().and_then(|(_, last)| last);
        let writer = self.writer.await.ok().flatten();
        let (Some(last), Some(mut writer)) = (last, writer) else {
            if let Some(stopped) = stopped() {
                return Err(stopped);
            }
            tracing::error!("no final snapshot: dead letters were not delivered; the previous snapshot stands");
            return ingest.unwrap_or(Ok(())).map_err(Into::into);
        };
        match tokio::time::timeout(self.shutdown_deadline, writer.write(last)).await {
            Ok(result) => {
                let manifest = result?;
                tracing::info!(snapshot = manifest.id, "final snapshot written");
            }
            Err(_) => return Err(RunError::ShutdownDeadline(self.shutdown_deadline.as_secs())),
        }
        // Connections still streaming (a client that stopped reading) are not waited for long.
        if tokio::time::timeout(Duration::from_secs(5), self.http).await.is_err() {
            tracing::warn!("http connections still open 5 s after shutdown; closed");
        }
        if let Err(error) = self.audit.flush().await {
            tracing::error!(%error, "the audit trail's last lines were not written to the store (they are in the log)");
        }
        if let Some(stopped) = stopped() {
            return Err(stopped);
        }
        ingest.unwrap_or(Ok(()))?;
        Ok(())
    }
}

/// Every history table, daily and weekly, for SQL and the alerts.
fn all_tables(history: &[History]) -> HistoryTables {
    history.iter().flat_map(|h| h.tables()).collect()
}

/// Writes the copies of the state the engine hands over, one at a time, then the day's and the
/// week's history.
struct SnapshotWriter {
    snapshots: Snapshots,
    history: Vec<History>,
    /// The offsets of the newest durable snapshot (committed to the consumer group by ingest).
    durable: watch::Sender<Offsets>,
    history_tables: watch::Sender<Arc<HistoryTables>>,
    metrics: Arc<Metrics>,
}

impl SnapshotWriter {
    async fn write(&mut self, copy: StateCopy) -> Result<snapshot::Manifest, SnapshotError> {
        let timer = self.metrics.snapshot_duration.start_timer();
        let checkpoint = tokio::task::spawn_blocking(|| copy.into_checkpoint()).await.expect("encoding does not panic");
        let (offsets, judged_at, tables) =
            (checkpoint.offsets.clone(), checkpoint.judged_at, checkpoint.tables.clone());
        let manifest = self.snapshots.write(checkpoint).await.inspect_err(|_| self.metrics.snapshot_failures.inc())?;
        timer.observe_duration();
        self.metrics.snapshot_last_success.set(chrono::Utc::now().timestamp() as f64);
        self.metrics.snapshot_generation.set(manifest.id as i64);
        self.metrics.snapshot_bytes.set(manifest.files.iter().map(|f| f.bytes).sum::<u64>() as i64);
        self.durable.send_replace(offsets);
        // The snapshot is durable whatever becomes of the history.
        for history in &mut self.history {
            if let Err(error) = history.record(&tables, judged_at).await {
                tracing::error!(%error, "history not written; the next snapshot tries again");
            }
        }
        self.history_tables.send_replace(Arc::new(all_tables(&self.history)));
        Ok(manifest)
    }

    /// Runs until the engine stops; returns itself for the final snapshot.
    async fn run(mut self, mut checkpoints: mpsc::Receiver<StateCopy>) -> SnapshotWriter {
        while let Some(checkpoint) = checkpoints.recv().await {
            if let Err(error) = self.write(checkpoint).await {
                tracing::error!(%error, "snapshot failed; will retry at the next interval");
            }
        }
        self
    }
}
