//! The single owner of the mutable state: applies decoded batches, moves the clock, and
//! publishes an immutable view for readers at a bounded rate.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ingest::Batch;
use crate::metrics::Metrics;
use crate::spec::Spec;
use crate::state::{Applied, State};
use crate::time::Clock;
use crate::units::Registry;
use crate::view::View;

pub struct Engine {
    pub state: State,
    pub registry: Arc<Registry>,
    pub spec: Arc<Spec>,
    pub target_total: f64,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    pub views: watch::Sender<Arc<View>>,
    pub publish_every: Duration,
}

impl Engine {
    /// Runs until shutdown or until the source stops; applies whatever was already queued, then
    /// publishes a final view and returns it.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>, shutdown: CancellationToken) -> Arc<View> {
        let mut tick = tokio::time::interval(self.publish_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        loop {
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => { self.apply(batch); dirty = true; }
                    None => break,
                },
                _ = tick.tick() => {
                    let now = self.clock.now();
                    if now > self.state.now() {
                        self.state.advance_to(now);
                        dirty = true;
                    }
                    if dirty {
                        self.publish();
                        dirty = false;
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        batches.close();
        while let Ok(batch) = batches.try_recv() {
            self.apply(batch);
        }
        self.publish()
    }

    fn apply(&mut self, batch: Batch) {
        self.state.advance_to(self.clock.now());
        let mut duplicates = 0;
        for event in &batch.events {
            if self.state.apply(event) == Applied::Duplicate {
                duplicates += 1;
            }
        }
        self.metrics.events_applied.inc_by(batch.events.len() as u64 - duplicates);
        self.metrics.events_duplicate.inc_by(duplicates);
    }

    fn publish(&mut self) -> Arc<View> {
        let view = Arc::new(View::build(self.registry.clone(), &self.spec, self.target_total, &self.state));
        self.metrics.observe_view(&view, self.state.dossiers().len());
        self.views.send_replace(view.clone());
        view
    }
}
