//! index766: Index 766 (Decision 766/QĐ-TTg) scores, live, from Kafka dossier events.
//!
//! Data flows one way: `ingest` (Kafka → decoded events) → `engine` (owns the `state`, which
//! sums what `judge` makes of each dossier) → `view` (immutable tables built by `scoring` under
//! the `spec`, with the `catalog` and `units`) → readers: `query` (SQL), `metrics`, `snapshot`
//! (Parquet), served by `http`.

pub mod catalog;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod health;
pub mod http;
pub mod ingest;
pub mod judge;
pub mod metrics;
pub mod petition;
pub mod produce;
pub mod query;
pub mod scoring;
pub mod simulate;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod time;
pub mod units;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::spec::Spec;
use crate::state::State;
use crate::time::Clock;
use crate::units::Registry;
use crate::view::View;

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
    Ingest(#[from] ingest::IngestError),
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("cannot listen on {addr}: {source} (set [http] listen to a free address)")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Runs the pipeline until `shutdown` is cancelled; writes a last snapshot on the way out.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    Pipeline::start(config, shutdown).await?.wait().await
}

/// A started pipeline (its parts run as tasks); tests use it to learn the HTTP address.
pub struct Pipeline {
    pub http_addr: SocketAddr,
    pub views: watch::Receiver<Arc<View>>,
    pub metrics: Arc<Metrics>,
    snapshot_dir: PathBuf,
    ingest: JoinHandle<Result<(), ingest::IngestError>>,
    engine: JoinHandle<Arc<View>>,
    snapshots: JoinHandle<()>,
    http: JoinHandle<std::io::Result<()>>,
}

impl Pipeline {
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Pipeline, RunError> {
        let config = Arc::new(config);
        let clock = Arc::new(match config.as_of()? {
            Some(t) => Clock::fixed(t),
            None => Clock::Wall,
        });
        let registry = Arc::new(Registry::load(&config.registry.units_file)?);
        let spec = Arc::new(Spec::load(&config.scoring.spec_file)?);
        let catalog = Arc::new(match config.catalog.file.as_os_str().is_empty() {
            true => Catalog::default(),
            false => Catalog::load(&config.catalog.file)?,
        });
        let metrics = Arc::new(Metrics::new(config.metrics.clone()));
        let health = Arc::new(Health::default());
        let state = State::new(clock.now(), catalog.clone());
        let target_total = config.scoring.target_total;
        let first_view = View::build(registry.clone(), &spec, target_total, &state, &Default::default());
        let (view_tx, views) = watch::channel(Arc::new(first_view));
        let sql = Arc::new(query::SqlService::new(&config.sql)?);
        let initial = views.borrow().clone();
        sql.check_views(&initial).await?;

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| RunError::Listen { addr: config.http.listen, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| RunError::Listen { addr: config.http.listen, source })?;
        let app =
            http::router(http::AppState { view: views.clone(), metrics: metrics.clone(), sql, health: health.clone() });
        let http = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await }
        });

        let (batch_tx, batch_rx) = mpsc::channel(8);
        let ingest = tokio::spawn(ingest::run(config.clone(), metrics.clone(), health, batch_tx, shutdown.clone()));
        let engine = Engine {
            state,
            petitions: Default::default(),
            calendar: petition::Calendar::new(&config.petitions.holidays).map_err(config::ConfigError::Invalid)?,
            catalog: (*catalog).clone(),
            units: registry.units().iter().map(|u| (u.code.clone(), u.clone())).collect(),
            registry,
            spec,
            target_total,
            clock,
            metrics: metrics.clone(),
            views: view_tx,
            publish_every: Duration::from_millis(config.scoring.publish_interval_ms.max(10)),
        };
        let engine = tokio::spawn(engine.run(batch_rx));
        let snapshots = tokio::spawn(snapshot_every(
            config.snapshot.dir.clone(),
            Duration::from_secs(config.snapshot.interval_secs),
            views.clone(),
            metrics.clone(),
            shutdown,
        ));
        tracing::info!(%http_addr, topic = config.topics.events, "index766 started");
        Ok(Pipeline {
            http_addr,
            views,
            metrics,
            snapshot_dir: config.snapshot.dir.clone(),
            ingest,
            engine,
            snapshots,
            http,
        })
    }

    /// Waits for shutdown, then writes the final snapshot from the final view.
    pub async fn wait(self) -> Result<(), RunError> {
        let ingest = self.ingest.await.expect("ingest task does not panic");
        let final_view = self.engine.await.expect("engine task does not panic");
        let _ = self.snapshots.await;
        let path = write_snapshot(self.snapshot_dir, final_view, &self.metrics).await?;
        tracing::info!(path = %path.display(), "final snapshot written");
        if let Err(error) = self.http.await.expect("http task does not panic") {
            tracing::warn!(%error, "http server stopped with an error");
        }
        ingest?;
        Ok(())
    }
}

async fn write_snapshot(dir: PathBuf, view: Arc<View>, metrics: &Metrics) -> Result<PathBuf, snapshot::SnapshotError> {
    let timer = metrics.snapshot_duration.start_timer();
    let path = tokio::task::spawn_blocking(move || snapshot::write_scores(&dir, view.table("scores")))
        .await
        .expect("snapshot task does not panic")?;
    timer.observe_duration();
    metrics.snapshot_last_success.set(chrono::Utc::now().timestamp() as f64);
    Ok(path)
}

async fn snapshot_every(
    dir: PathBuf,
    every: Duration,
    views: watch::Receiver<Arc<View>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let view = views.borrow().clone();
                if let Err(error) = write_snapshot(dir.clone(), view, &metrics).await {
                    tracing::error!(%error, "snapshot failed; will retry at the next interval");
                }
            }
        }
    }
}
