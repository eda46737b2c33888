//! The single owner of the mutable state: applies decoded batches, moves the clock, and
//! publishes an immutable view for readers at a bounded rate.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use std::collections::BTreeMap;

use crate::catalog::{Catalog, Procedure};
use crate::ingest::{Batch, Input};
use crate::metrics::Metrics;
use crate::petition::{Calendar, Petitions};
use crate::spec::Spec;
use crate::state::{Applied, State};
use crate::time::Clock;
use crate::units::{Registry, Unit};
use crate::view::View;

pub struct Engine {
    pub state: State,
    pub petitions: Petitions,
    pub calendar: Calendar,
    /// The catalog as loaded and updated from its topic.
    pub catalog: Catalog,
    /// The units as loaded and updated from their topic; the registry is rebuilt from them.
    pub units: BTreeMap<String, Unit>,
    pub registry: Arc<Registry>,
    pub spec: Arc<Spec>,
    pub target_total: f64,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    pub views: watch::Sender<Arc<View>>,
    pub publish_every: Duration,
}

impl Engine {
    /// Runs until the source stops (on shutdown it sends its last, partial batch and drops its
    /// end of the channel), applying every batch; then publishes a final view and returns it.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>) -> Arc<View> {
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
            }
        }
        self.publish()
    }

    fn apply(&mut self, batch: Batch) {
        self.state.advance_to(self.clock.now());
        let (mut applied, mut duplicates) = (0, 0);
        let (mut catalog_changed, mut units_changed) = (false, false);
        for input in batch.inputs {
            let fresh = match input {
                Input::Dossier(event) => self.state.apply(&event) == Applied::Changed,
                Input::Petition(event, time) => self.petitions.apply(&event, time),
                Input::Procedure(code, record) => {
                    let procedure = record.map(|r| Procedure::from_record(&r).expect("validated at ingest"));
                    self.catalog.set(code, procedure);
                    catalog_changed = true;
                    true
                }
                Input::Unit(code, unit) => {
                    match unit {
                        Some(unit) => self.units.insert(code, unit),
                        None => self.units.remove(&code),
                    };
                    units_changed = true;
                    true
                }
            };
            if fresh {
                applied += 1;
            } else {
                duplicates += 1;
            }
        }
        if catalog_changed {
            self.state.set_catalog(Arc::new(self.catalog.clone()));
        }
        if units_changed {
            match Registry::new(self.units.values().cloned().collect()) {
                Ok(registry) => self.registry = Arc::new(registry),
                // A parent may arrive after its child: keep scoring on the last whole tree.
                Err(error) => {
                    tracing::warn!(%error, "unit registry update leaves the tree incomplete; keeping the previous tree")
                }
            }
        }
        self.metrics.events_applied.inc_by(applied);
        self.metrics.events_duplicate.inc_by(duplicates);
    }

    fn publish(&mut self) -> Arc<View> {
        let timer = self.metrics.view_build_duration.start_timer();
        let petitions = self.petitions.tallies(&self.calendar, self.state.now());
        let view = Arc::new(View::build(self.registry.clone(), &self.spec, self.target_total, &self.state, &petitions));
        timer.observe_duration();
        self.metrics.observe_view(&view, self.state.dossiers().len());
        self.views.send_replace(view.clone());
        view
    }
}
