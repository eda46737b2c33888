//! Every part of the running pipeline is a supervised task: the first that panics or fails is
//! logged with its name, shown in /healthz, and stops the whole pipeline, which writes what it
//! safely can and exits non-zero. No part can die while the others go on as if healthy.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::telemetry::health::Health;

/// A part of the pipeline, as logs, /healthz and the exit message name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ingest,
    Engine,
    SnapshotWriter,
    Alerts,
    Http,
    Postgres,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Ingest => "ingest",
            Part::Engine => "engine",
            Part::SnapshotWriter => "snapshot writer",
            Part::Alerts => "alerts",
            Part::Http => "http",
            Part::Postgres => "postgres",
        }
    }
}

/// The first part that stopped the pipeline, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub part: Part,
    pub why: String,
}

/// For tests: `INDEX766_INJECT_PANIC=<part>` (e.g. `alerts`) makes that part panic as it starts.
const INJECT_PANIC: &str = "INDEX766_INJECT_PANIC";

#[derive(Clone)]
pub struct Supervisor {
    shutdown: CancellationToken,
    health: Arc<Health>,
    stopped: Arc<Mutex<Option<Stopped>>>,
}

/// A supervised part's result: None if it panicked.
pub(crate) type Joined<T> = oneshot::Receiver<Option<T>>;

impl Supervisor {
    pub fn new(shutdown: CancellationToken, health: Arc<Health>) -> Supervisor {
        Supervisor { shutdown, health, stopped: Arc::default() }
    }

    /// Runs `task` on the shared runtime.
    pub fn spawn<T: Send + 'static>(&self, part: Part, task: impl Future<Output = T> + Send + 'static) -> Joined<T> {
        let (done, joined) = oneshot::channel();
        tokio::spawn(self.clone().watch(part, task, done));
        joined
    }

    /// Runs `task` on a thread and runtime of its own, which nothing else runs on.
    pub(crate) fn spawn_thread<T: Send + 'static>(
        &self,
        part: Part,
        task: impl Future<Output = T> + Send + 'static,
    ) -> std::io::Result<Joined<T>> {
        let (done, joined) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let watched = self.clone().watch(part, task, done);
        std::thread::Builder::new().name(part.as_str().replace(' ', "-")).spawn(move || runtime.block_on(watched))?;
        Ok(joined)
    }

    async fn watch<T>(self, part: Part, task: impl Future<Output = T>, done: oneshot::Sender<Option<T>>) {
        let injected = std::env::var(INJECT_PANIC).is_ok_and(|p| p == part.as_str());
        let guarded = async move {
            assert!(!injected, "{INJECT_PANIC}={} is set", part.as_str());
            task.await
        };
        let result = AssertUnwindSafe(guarded).catch_unwind().await;
        if let Err(panic) = &result {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            self.fail(part, format!("panicked: {message}"));
        }
        let _ = done.send(result.ok());
    }

    /// Records that `part` cannot go on, and stops the pipeline. The first reason stands.
    pub(crate) fn fail(&self, part: Part, why: String) {
        let mut stopped = self.stopped.lock().expect("supervisor lock");
        if stopped.is_none() {
            tracing::error!(part = part.as_str(), why, "a part of the pipeline stopped; stopping the pipeline");
            self.health.stopped(format!("{} stopped: {why}", part.as_str()));
            *stopped = Some(Stopped { part, why });
        }
        self.shutdown.cancel();
    }

    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped.lock().expect("supervisor lock").clone()
    }
}
