//! The single owner of the mutable state: admits or refuses each decoded input, applies
//! batches, moves the clock, publishes an immutable view for readers at a bounded rate, and
//! copies the state for the snapshot writer between two batches.

pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use index766_core::catalog::{Catalog, Procedure};
use index766_core::dossier::DossiersCopy;
use index766_core::event::{reject, DossierEvent, RejectReason, Rejection};
use index766_core::petition::{Calendar, PetitionEvent, Petitions};
use index766_core::spec::Spec;
use index766_core::state::{Applied, State};
use index766_core::time::{format_time, Clock, Instant};
use index766_core::units::{Registry, Unit};

use crate::engine::view::{DossierRequests, DossierRows, View, ViewBuilder};
use crate::ingest::dead_letter::{DeadLetter, DeadLetters, Undelivered};
use crate::ingest::{Batch, Input, Sourced};
use crate::persist::checkpoint;
use crate::persist::checkpoint::StateCopy;
use crate::persist::snapshot::Checkpoint;
use crate::position::{Ledger, Offsets};
use crate::supervise::{Part, Supervisor};
use crate::telemetry::metrics::Metrics;

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
    /// Where each partition stands, as far as the state has taken it in.
    pub offsets: Offsets,
    pub ledger: Ledger,
    pub dead_letters: Arc<DeadLetters>,
    /// Events dated further ahead of the clock than this are refused.
    pub max_future_secs: i64,
    /// To the snapshot writer; holds one copy at most: while it writes, later ticks are skipped.
    pub checkpoints: mpsc::Sender<StateCopy>,
    pub snapshot_every: Duration,
    pub shutdown: CancellationToken,
    /// Told when a dead letter is refused for good: the pipeline stops, saying what to fix.
    pub supervisor: Supervisor,
    /// Queries asking for the `dossiers` table (see `View::dossiers`), with the sender views carry.
    pub dossier_requests: (DossierRequests, mpsc::Receiver<oneshot::Sender<DossiersCopy>>),
    /// Keeps what the last view built, for the periods that have not changed since.
    pub views_built: ViewBuilder,
}

impl Engine {
    /// Runs until the source stops (on shutdown it sends its last, partial batch and drops its
    /// end of the channel), applying every batch; then publishes a final view and returns it,
    /// with the copy of the state the final snapshot is written from.
    /// The final copy is None when dead letters could not be delivered before shutdown: the
    /// previous snapshot then stands, and those messages are read again after the restart.
    pub async fn run(mut self, mut batches: mpsc::Receiver<Batch>) -> (Arc<View>, Option<StateCopy>) {
        let mut tick = tokio::time::interval(self.publish_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshot_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.snapshot_every, self.snapshot_every);
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        let (mut last_publish, mut last_build) = (tokio::time::Instant::now(), Duration::ZERO);
        let mut undelivered = false;
        let checkpoints = self.checkpoints.clone();
        loop {
            tokio::select! {
                Some(reply) = self.dossier_requests.1.recv() => answer(reply, &self.state),
                batch = batches.recv() => match batch {
                    Some(batch) => {
                        let letters = self.apply(batch);
                        dirty = true;
                        // Delivered before the next batch: a snapshot never covers an undelivered reject.
                        if let Err(why) = self.deliver(&letters).await {
                            if !matches!(why, Undelivered::ShuttingDown) {
                                self.supervisor.fail(Part::Engine, why.to_string());
                            }
                            undelivered = true;
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let now = self.clock.now();
                    if now > self.state.now() {
                        self.state.advance_to(now);
                        dirty = true;
                    }
                    // A view costs the engine time it does not spend on events: while events
                    // wait (a replay, a catch-up), building views never takes more than a tenth
                    // of it, however large the tree. Once ingest has caught up, that time is
                    // free: publish now.
                    let caught_up = batches.is_empty();
                    if dirty && (caught_up || last_publish.elapsed() >= last_build * 9) {
                        let started = tokio::time::Instant::now();
                        self.publish();
                        (last_publish, last_build) = (started, started.elapsed());
                        dirty = false;
                    }
                }
                _ = snapshot_tick.tick() => {
                    if let Ok(permit) = checkpoints.try_reserve() {
                        let view = self.publish();
                        permit.send(self.checkpoint(&view));
                    } else {
                        tracing::debug!("previous snapshot still being written; skipping this one");
                    }
                }
            }
        }
        let view = self.publish();
        let last = (!undelivered).then(|| self.checkpoint(&view));
        (view, last)
    }

    /// Delivers dead letters, which waits as long as their topic is unreachable; meanwhile queries
    /// of the `dossiers` table are still answered, from the state as it stands.
    async fn deliver(&mut self, letters: &[DeadLetter]) -> Result<(), Undelivered> {
        let (dead_letters, shutdown) = (self.dead_letters.clone(), self.shutdown.clone());
        let delivery = dead_letters.deliver(letters, &shutdown);
        tokio::pin!(delivery);
        loop {
            tokio::select! {
                delivered = &mut delivery => return delivered,
                Some(reply) = self.dossier_requests.1.recv() => answer(reply, &self.state),
            }
        }
    }

    /// A copy of everything a restart needs (the only time ingest waits on snapshots).
    fn checkpoint(&self, view: &View) -> StateCopy {
        let started = std::time::Instant::now();
        let rest = Checkpoint {
            tables: vec![
                (checkpoint::PETITIONS, vec![checkpoint::petitions_table(&self.petitions)]),
                ("scores", view.table("scores").to_vec()),
                ("group_scores", view.table("group_scores").to_vec()),
                ("totals", view.table("totals").to_vec()),
            ],
            offsets: self.offsets.clone(),
            ledger: self.ledger.clone(),
            judged_at: self.state.now(),
            spec_version: self.spec.version.clone(),
        };
        let copy = StateCopy { dossiers: self.state.copy_dossiers(), rest };
        let waited = started.elapsed().as_secs_f64();
        self.metrics.checkpoint_copy_duration.observe(waited);
        if waited > self.metrics.checkpoint_copy_longest.get() {
            self.metrics.checkpoint_copy_longest.set(waited);
        }
        copy
    }

    /// Applies a batch; returns the dead letters of the inputs refused or held.
    fn apply(&mut self, batch: Batch) -> Vec<DeadLetter> {
        self.state.advance_to(self.clock.now());
        let mut letters = Vec::new();
        // What reading the batch counted, and what applying it counts: into the ledger and the
        // metrics together.
        let mut counted = batch.ledger;
        let (mut catalog_changed, mut units_changed) = (false, false);
        for Sourced { input, origin, first_read } in batch.inputs {
            let outcome = match input {
                Input::Dossier(event) => self.admit_dossier(&event),
                Input::Petition(event, time) => self.admit_petition(&event, time),
                Input::Procedure(code, record) => {
                    let procedure = record.map(|r| Procedure::from_record(&r).expect("validated at ingest"));
                    self.catalog.set(code, procedure);
                    catalog_changed = true;
                    Ok(None)
                }
                Input::Unit(code, unit) => {
                    match unit {
                        Some(unit) => self.units.insert(code, unit),
                        None => self.units.remove(&code),
                    };
                    units_changed = true;
                    Ok(None)
                }
            };
            if !first_read {
                continue;
            }
            let rejection = match outcome {
                Ok(notice) => {
                    counted.applied += 1;
                    notice
                }
                Err(rejection) => Some(rejection),
            };
            if let Some(rejection) = rejection {
                counted.reject(rejection.reason.as_str());
                letters.push(DeadLetter { origin, rejection });
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
        self.offsets.extend(batch.next_offsets);
        self.ledger.add(&counted);
        self.metrics.count(&counted);
        letters
    }

    fn too_far_ahead(&self, t: Instant) -> Option<Rejection> {
        let limit = self.clock.now() + self.max_future_secs;
        (t > limit).then(|| {
            reject(
                RejectReason::FutureTimestamp,
                format!("event_time {} is after {} ([ingest] max_future_secs)", format_time(t), format_time(limit)),
            )
        })
    }

    /// An unknown unit is held, not dropped: the event is applied and counts as soon as the unit
    /// is registered (scores cover registered units only); the dead letter is a notice.
    fn unknown_unit(&self, code: &str) -> Option<Rejection> {
        self.registry.position(code).is_none().then(|| {
            reject(RejectReason::UnknownUnit, format!("unit {code:?} is not in the registry; held until it is"))
        })
    }

    /// Ok(notice) when applied (the notice says it is held for an unknown code), Err when refused.
    fn admit_dossier(&mut self, event: &DossierEvent) -> Result<Option<Rejection>, Rejection> {
        if let Some(rejection) = self.too_far_ahead(event.event_time) {
            return Err(rejection);
        }
        match self.state.admit(event) {
            Applied::Changed => {}
            Applied::Duplicate => {
                return Err(reject(
                    RejectReason::Duplicate,
                    format!("event {} was already applied to dossier {}", event.event_id, event.dossier_id),
                ))
            }
            Applied::Impossible(why) => return Err(reject(RejectReason::ImpossibleTransition, why)),
        }
        let unknown_procedure = || {
            (!self.catalog.is_empty() && self.catalog.get(&event.procedure_code).is_none()).then(|| {
                reject(
                    RejectReason::UnknownProcedure,
                    format!(
                        "procedure {:?} is not in the catalog; counted without its catalog facts",
                        event.procedure_code
                    ),
                )
            })
        };
        Ok(self.unknown_unit(&event.unit_code).or_else(unknown_procedure))
    }

    fn admit_petition(&mut self, event: &PetitionEvent, time: Instant) -> Result<Option<Rejection>, Rejection> {
        if let Some(rejection) = self.too_far_ahead(time) {
            return Err(rejection);
        }
        if !self.petitions.apply(event, time) {
            return Err(reject(
                RejectReason::Duplicate,
                format!("event {} was already applied to petition {}", event.event_id, event.petition_id),
            ));
        }
        Ok(self.unknown_unit(&event.unit_code))
    }

    fn publish(&mut self) -> Arc<View> {
        let timer = self.metrics.view_build_duration.start_timer();
        let petitions = self.petitions.tallies(&self.calendar, self.state.now());
        let rows = DossierRows::OnRequest(self.dossier_requests.0.clone());
        let touched = self.state.take_touched();
        let view = Arc::new(self.views_built.build(
            self.registry.clone(),
            &self.spec,
            self.target_total,
            &self.state,
            &touched,
            &petitions,
            rows,
        ));
        timer.observe_duration();
        self.metrics.observe_view(self.state.dossiers().len(), view.scoreboard.unregistered_dossiers);
        self.views.send_replace(view.clone());
        view
    }
}

/// Answers a query of the `dossiers` table with a copy of the dossiers (chunks shared, so it
/// costs the engine little); the query builds the table on its own thread.
fn answer(reply: oneshot::Sender<DossiersCopy>, state: &State) {
    let _ = reply.send(state.copy_dossiers()); // the query may have timed out meanwhile
}
