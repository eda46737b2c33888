//! One dossier as the events so far describe it: merged in any order (earliest time wins, flags
//! only accumulate, event ids remembered so a repeat changes nothing), and what 2.1 makes of it.
//! The dossiers of the year are held in copy-on-write chunks a snapshot can share.

use std::sync::Arc;

use hashbrown::HashMap;

use crate::catalog::Procedure;
use crate::event::{status, Channel, DossierEvent};
use crate::time::{format_time, Instant, Period};

/// Codes seen on events, numbered so dossiers store four bytes instead of a string.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32>,
    pub(crate) names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What 2.1 makes of a dossier, independent of the period it is judged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never received at the one-stop desk (only submitted, or refused at reception): not counted.
    NotReceived,
    /// Judged once and for all: ended on time (true) or late (false).
    Decided(bool),
    /// Still open: on time while the judging instant is at or before this effective due date
    /// (None: no due date is known, so it cannot be late).
    OpenUntil(Option<Instant>),
}

impl Verdict {
    /// Whether the dossier counts as good for `period` when judged at `now`: an open dossier is
    /// judged at the end of its period, or now for the live period.
    pub fn on_time_in(self, period: Period, now: Instant) -> bool {
        self.on_time_at(now.min(period.last_instant()))
    }

    /// Whether the dossier counts as good when judged at instant `t`.
    pub fn on_time_at(self, t: Instant) -> bool {
        match self {
            Verdict::NotReceived => false,
            Verdict::Decided(on_time) => on_time,
            Verdict::OpenUntil(None) => true,
            Verdict::OpenUntil(Some(due)) => t <= due,
        }
    }
}

/// One dossier in about a hundred bytes: it is held for every dossier of the year.
#[derive(Debug, Clone)]
pub struct Dossier {
    pub id: Box<str>,
    pub last_status_time: Instant,
    pub received_at: When,
    pub due_at: When,
    pub completed_at: When,
    pub returned_at: When,
    /// Earliest of stopped (8), withdrawn (7) and refused at reception (3).
    pub abandoned_at: When,
    /// None while the dossier has no supplement request or arrival (most have none).
    pub supplements: Option<Box<Supplements>>,
    /// Fingerprints of the event ids applied: a repeated event changes nothing.
    pub seen_events: Box<[u64]>,
    /// Unit, procedure and channel come from the earliest reception event; before one arrives,
    /// from the first event.
    pub unit: u32,
    pub procedure: u32,
    pub flags: u16,
    pub channel: Channel,
    pub last_status: u8,
}

/// An optional instant in 8 bytes (`Option<i64>` takes 16); `i64::MIN` stands for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When(i64);

impl When {
    pub const NONE: When = When(i64::MIN);

    pub fn get(self) -> Option<Instant> {
        (self != When::NONE).then_some(self.0)
    }

    /// Keeps the earliest of the times seen: merging is then independent of arrival order.
    fn keep_earliest(&mut self, t: Instant) {
        if *self == When::NONE || t < self.0 {
            self.0 = t;
        }
    }
}

impl From<Option<Instant>> for When {
    fn from(t: Option<Instant>) -> When {
        t.map_or(When::NONE, When)
    }
}

/// The supplements asked of the applicant, and when they arrived.
#[derive(Debug, Clone, Default)]
pub struct Supplements {
    pub requests: Vec<Instant>,
    pub arrivals: Vec<Instant>,
}

impl Supplements {
    /// None when there is nothing to keep.
    pub fn boxed(requests: Vec<Instant>, arrivals: Vec<Instant>) -> Option<Box<Supplements>> {
        (!requests.is_empty() || !arrivals.is_empty()).then(|| Box::new(Supplements { requests, arrivals }))
    }
}

/// Keeps the earliest of the times seen: merging is then independent of arrival order.
pub(crate) fn earliest(slot: &mut Option<Instant>, t: Instant) {
    *slot = Some(slot.map_or(t, |old| old.min(t)));
}

/// FNV-1a: a stable 64-bit fingerprint of an event id (stable across builds, unlike std's hasher).
pub(crate) fn fingerprint(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Dossier {
    pub fn received_at(&self) -> Option<Instant> {
        self.received_at.get()
    }

    pub fn due_at(&self) -> Option<Instant> {
        self.due_at.get()
    }

    pub fn completed_at(&self) -> Option<Instant> {
        self.completed_at.get()
    }

    pub fn returned_at(&self) -> Option<Instant> {
        self.returned_at.get()
    }

    pub fn abandoned_at(&self) -> Option<Instant> {
        self.abandoned_at.get()
    }

    pub fn supplement_requests(&self) -> &[Instant] {
        self.supplements.as_ref().map_or(&[], |s| &s.requests)
    }

    pub fn supplement_arrivals(&self) -> &[Instant] {
        self.supplements.as_ref().map_or(&[], |s| &s.arrivals)
    }

    pub fn seen_events(&self) -> &[u64] {
        &self.seen_events
    }

    /// Remembers an event id's fingerprint; the list is kept at its exact length (a dossier has
    /// a handful of events, and there are millions of dossiers).
    fn remember(&mut self, fingerprint: u64) {
        self.seen_events = self.seen_events.iter().copied().chain([fingerprint]).collect();
    }

    fn supplements_mut(&mut self) -> &mut Supplements {
        self.supplements.get_or_insert_default()
    }

    /// A dossier first seen in `event`, its codes numbered `unit` and `procedure`.
    pub(crate) fn new(event: &DossierEvent, unit: u32, procedure: u32) -> Dossier {
        Dossier {
            id: event.dossier_id.as_str().into(),
            unit,
            procedure,
            channel: event.channel,
            last_status: event.status,
            last_status_time: event.event_time,
            received_at: When::NONE,
            due_at: When::NONE,
            completed_at: When::NONE,
            returned_at: When::NONE,
            abandoned_at: When::NONE,
            supplements: None,
            flags: 0,
            seen_events: Box::default(),
        }
    }

    /// Merges an event not seen before (its id's fingerprint `fp`). `codes` are the unit and
    /// procedure numbers when it is the earliest reception, whose unit, procedure, channel and
    /// due date then stand, whichever reception arrives first.
    pub(crate) fn merge(&mut self, event: &DossierEvent, fp: u64, codes: Option<(u32, u32)>) {
        self.remember(fp);
        self.flags |= event.flags;
        if event.event_time >= self.last_status_time {
            self.last_status = event.status;
            self.last_status_time = event.event_time;
        }
        let t = event.event_time;
        match event.status {
            status::RECEIVED => {
                if let Some((unit, procedure)) = codes {
                    (self.unit, self.procedure, self.channel, self.due_at) =
                        (unit, procedure, event.channel, event.due_at.into());
                }
                self.received_at.keep_earliest(t);
            }
            status::SUPPLEMENT_REQUESTED => self.supplements_mut().requests.push(t),
            status::PROCESSING if event.supplement_received => self.supplements_mut().arrivals.push(t),
            status::COMPLETED => self.completed_at.keep_earliest(t),
            status::RESULT_RETURNED => self.returned_at.keep_earliest(t),
            status::STOPPED | status::WITHDRAWN | status::REFUSED_AT_RECEPTION => self.abandoned_at.keep_earliest(t),
            _ => {}
        }
    }

    /// Why the event cannot have happened, given what is known of its dossier: the dossier would
    /// end before it began. A step that needs the dossier received (processing, supplement, fees,
    /// completion, return, stop) dated before its reception; or a first reception dated after the
    /// dossier was already completed or returned. Judged on arrival, so the first of two
    /// contradicting events stands.
    pub(crate) fn impossible(&self, event: &DossierEvent) -> Option<String> {
        let t = event.event_time;
        let after_reception = [
            status::PROCESSING,
            status::SUPPLEMENT_REQUESTED,
            status::FEES_REQUESTED,
            status::STOPPED,
            status::COMPLETED,
            status::RESULT_RETURNED,
        ];
        match (event.status, self.received_at(), self.completed_at().or(self.returned_at())) {
            (s, Some(received), _) if after_reception.contains(&s) && t < received => Some(format!(
                "status {s} at {} is before the dossier's reception at {}",
                format_time(t),
                format_time(received)
            )),
            (status::RECEIVED, None, Some(ended)) if t > ended => {
                Some(format!("reception at {} is after the dossier ended at {}", format_time(t), format_time(ended)))
            }
            _ => None,
        }
    }

    /// The end that 2.1 uses, by priority: completed; else result returned; else stopped,
    /// refused or withdrawn.
    pub fn end(&self) -> Option<Instant> {
        self.completed_at().or(self.returned_at()).or(self.abandoned_at())
    }

    /// `procedure` gives the legal maximum processing time, the due date of a dossier received
    /// without one (counted in calendar days from reception).
    pub fn verdict(&self, procedure: Option<&Procedure>) -> Verdict {
        let Some(received) = self.received_at() else {
            return Verdict::NotReceived;
        };
        let mut end = self.end();
        let legal_due = || procedure.and_then(|p| p.max_processing_days).map(|days| received + days as i64 * 86_400);
        let mut due = self.due_at().or_else(legal_due);
        match self.supplement_requests() {
            [] => {}
            &[requested] => match self.supplement_arrivals().iter().copied().filter(|&a| a >= requested).min() {
                // Waiting for the applicant does not count against the unit.
                Some(arrived) => due = due.map(|d| d + (arrived - requested)),
                // Still waiting: the dossier ends at the request.
                None => end = Some(end.map_or(requested, |e| e.min(requested))),
            },
            _ => return Verdict::Decided(false),
        }
        match (end, due) {
            (Some(end), Some(due)) => Verdict::Decided(end <= due),
            (Some(_), None) => Verdict::Decided(true),
            (None, due) => Verdict::OpenUntil(due),
        }
    }
}

/// Dossiers in chunks of a fixed size, shared copy-on-write: a snapshot takes a reference to
/// each chunk and encodes them on its own thread while the engine goes on (a chunk the engine
/// changes meanwhile is copied then, once). A fixed chunk never grows, so the store never moves.
#[derive(Debug, Clone, Default)]
pub struct Dossiers {
    chunks: Vec<Arc<Chunk>>,
}

/// 16,384 dossiers: copying one costs a few milliseconds.
pub(crate) const CHUNK: usize = 1 << 14;

#[derive(Debug)]
struct Chunk(Vec<Dossier>);

impl Clone for Chunk {
    fn clone(&self) -> Chunk {
        let mut copy = Vec::with_capacity(CHUNK);
        copy.extend_from_slice(&self.0);
        Chunk(copy)
    }
}

impl Dossiers {
    pub fn len(&self) -> usize {
        self.chunks.last().map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.0.len())
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn get(&self, idx: u32) -> &Dossier {
        let i = idx as usize;
        &self.chunks[i / CHUNK].0[i % CHUNK]
    }

    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut Dossier {
        let i = idx as usize;
        &mut Arc::make_mut(&mut self.chunks[i / CHUNK]).0[i % CHUNK]
    }

    pub(crate) fn push(&mut self, dossier: Dossier) -> u32 {
        let idx = self.len() as u32;
        if self.chunks.last().is_none_or(|last| last.0.len() == CHUNK) {
            self.chunks.push(Arc::new(Chunk(Vec::with_capacity(CHUNK))));
        }
        Arc::make_mut(self.chunks.last_mut().expect("a chunk was just made")).0.push(dossier);
        idx
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Dossier> + Clone {
        Counted { left: self.len(), inner: self.chunks.iter().flat_map(|chunk| chunk.0.iter()) }
    }
}

/// An iterator that knows how many items are left (Arrow's builders size their buffers by it).
#[derive(Clone)]
struct Counted<I> {
    left: usize,
    inner: I,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

/// The dossiers as they stood at an instant, with the names of their codes and the catalog entry
/// of each procedure: what the snapshot writer encodes and the `dossiers` table shows, built off
/// the engine's thread. Shared with the state until it changes them.
#[derive(Debug, Clone)]
pub struct DossiersCopy {
    pub dossiers: Dossiers,
    pub units: Vec<Box<str>>,
    pub procedures: Vec<Box<str>>,
    /// The catalog entry of each procedure (None: not listed).
    pub listed: Vec<Option<Procedure>>,
    /// The instant they are judged at.
    pub now: Instant,
}

impl DossiersCopy {
    pub fn procedure_of(&self, d: &Dossier) -> Option<&Procedure> {
        self.listed[d.procedure as usize].as_ref()
    }
}
