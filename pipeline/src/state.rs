//! Per-dossier state and per-unit, per-period tallies of every dossier-based criterion.
//!
//! The tallies always equal what a batch recomputation over all dossiers would give at the
//! current instant: every change to a dossier first retracts its old contribution, then adds the
//! new one; a deadline queue flips open dossiers to overdue when their due date passes, with no
//! event needed. Merging is order-independent (earliest time wins, flags only accumulate) and
//! event ids are remembered per dossier, so shuffled, late and duplicated events give the same
//! result as a clean stream.

use std::collections::BTreeSet;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};

use crate::catalog::{Catalog, Procedure};
use crate::event::{status, Channel, DossierEvent};
use crate::judge::{Facts, Tally};
use crate::time::{Instant, Period};

/// Codes seen on events, numbered so dossiers store four bytes instead of a string.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
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
    pub(crate) last_status_time: Instant,
    pub(crate) received_at: When,
    pub(crate) due_at: When,
    pub(crate) completed_at: When,
    pub(crate) returned_at: When,
    /// Earliest of stopped (8), withdrawn (7) and refused at reception (3).
    pub(crate) abandoned_at: When,
    /// None while the dossier has no supplement request or arrival (most have none).
    pub(crate) supplements: Option<Box<Supplements>>,
    /// Fingerprints of the event ids applied: a repeated event changes nothing.
    pub(crate) seen_events: Box<[u64]>,
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

/// The hash `State::by_id` files a dossier id under.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<foldhash::fast::RandomState> = std::sync::LazyLock::new(Default::default);
    SEED.hash_one(id)
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

/// Why the event cannot have happened, given what is known of its dossier: the dossier would
/// end before it began. A step that needs the dossier received (processing, supplement, fees,
/// completion, return, stop) dated before its reception; or a first reception dated after the
/// dossier was already completed or returned. Judged on arrival, so the first of two
/// contradicting events stands.
fn impossible(d: &Dossier, event: &DossierEvent) -> Option<String> {
    let t = event.event_time;
    let after_reception = [
        status::PROCESSING,
        status::SUPPLEMENT_REQUESTED,
        status::FEES_REQUESTED,
        status::STOPPED,
        status::COMPLETED,
        status::RESULT_RETURNED,
    ];
    match (event.status, d.received_at(), d.completed_at().or(d.returned_at())) {
        (s, Some(received), _) if after_reception.contains(&s) && t < received => Some(format!(
            "status {s} at {} is before the dossier's reception at {}",
            crate::time::format_time(t),
            crate::time::format_time(received)
        )),
        (status::RECEIVED, None, Some(ended)) if t > ended => Some(format!(
            "reception at {} is after the dossier ended at {}",
            crate::time::format_time(t),
            crate::time::format_time(ended)
        )),
        _ => None,
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
const CHUNK: usize = 1 << 14;

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

    fn get_mut(&mut self, idx: u32) -> &mut Dossier {
        let i = idx as usize;
        &mut Arc::make_mut(&mut self.chunks[i / CHUNK]).0[i % CHUNK]
    }

    fn push(&mut self, dossier: Dossier) -> u32 {
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

/// The dossiers as they stood at a checkpoint, with the names of their codes: what the snapshot
/// writer encodes, off the engine's thread.
#[derive(Debug, Clone)]
pub struct DossiersCopy {
    pub dossiers: Dossiers,
    pub units: Vec<Box<str>>,
    pub procedures: Vec<Box<str>>,
}

/// What one dossier adds to the tallies of its unit, for each period containing its reception.
#[derive(Debug, PartialEq)]
struct Contribution {
    dossier: u32,
    unit: u32,
    procedure: u32,
    periods: [Period; 4],
    /// Whether it is on time in each period.
    on_time: [bool; 4],
    /// Its tally when late, and when on time.
    tallies: [Tally; 2],
    facts: Facts,
    /// The effective due date of a dossier still open.
    open_until: Option<Instant>,
}

impl Contribution {
    /// Its tally in the `i`th of its periods.
    fn tally(&self, i: usize) -> &Tally {
        &self.tallies[self.on_time[i] as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Duplicate,
    /// Refused by `State::admit`, with why.
    Impossible(String),
}

#[derive(Debug)]
pub struct State {
    now: Instant,
    pub units: Interner,
    pub procedures: Interner,
    catalog: Arc<Catalog>,
    /// The catalog entry of each interned procedure (None: not listed), so judging a dossier
    /// looks nothing up by name.
    listed: Vec<Option<Procedure>>,
    dossiers: Dossiers,
    /// Positions in `dossiers`, found by the hash of the dossier id (kept once, in the dossier).
    by_id: HashTable<u32>,
    tallies: HashMap<(u32, Period), Tally>,
    /// Per unit and period, per procedure: how many dossiers show each fact.
    procedure_facts: HashMap<(u32, Period), HashMap<u32, Facts>>,
    /// (effective due date, dossier) of open dossiers not yet overdue; stale entries are skipped.
    deadlines: BTreeSet<(Instant, u32)>,
    /// Months whose dossiers' tallies changed since `take_touched`: the periods to score again.
    touched: BTreeSet<Period>,
}

impl State {
    pub fn new(now: Instant, catalog: Arc<Catalog>) -> State {
        State {
            now,
            units: Interner::default(),
            procedures: Interner::default(),
            catalog,
            listed: Vec::new(),
            dossiers: Dossiers::default(),
            by_id: HashTable::new(),
            tallies: HashMap::new(),
            procedure_facts: HashMap::new(),
            deadlines: BTreeSet::new(),
            touched: BTreeSet::new(),
        }
    }

    /// Makes room for `more` dossiers (a restore knows how many it brings).
    pub fn reserve(&mut self, more: usize) {
        let dossiers = &self.dossiers;
        self.by_id.reserve(more, |&idx| id_hash(&dossiers.get(idx).id));
    }

    /// Adds a dossier read back from a snapshot, its codes given by name; it counts once
    /// `rejudge_all` has run.
    pub fn restore_dossier(&mut self, mut dossier: Dossier, unit: &str, procedure: &str) {
        dossier.unit = self.units.intern(unit);
        dossier.procedure = self.procedure_id(procedure);
        self.add(id_hash(&dossier.id), dossier);
    }

    /// Judges every dossier afresh: the tallies, the deadlines and the touched months are rebuilt.
    pub fn rejudge_all(&mut self) {
        self.tallies.clear();
        self.procedure_facts.clear();
        self.deadlines.clear();
        for idx in 0..self.dossiers.len() as u32 {
            if let Some(contribution) = self.contribution(idx) {
                self.count(&contribution, 1);
            }
        }
    }

    /// The dossiers and the names of their codes, shared with the state until it changes them.
    pub fn copy_dossiers(&self) -> DossiersCopy {
        DossiersCopy {
            dossiers: self.dossiers.clone(),
            units: self.units.names.clone(),
            procedures: self.procedures.names.clone(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn dossiers(&self) -> &Dossiers {
        &self.dossiers
    }

    pub fn tallies(&self) -> &HashMap<(u32, Period), Tally> {
        &self.tallies
    }

    pub fn procedure_facts(&self) -> &HashMap<(u32, Period), HashMap<u32, Facts>> {
        &self.procedure_facts
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The months (of reception) whose tallies changed since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<Period> {
        std::mem::take(&mut self.touched)
    }

    /// The catalog entry of a dossier's procedure, if the catalog lists it.
    pub fn procedure_of(&self, d: &Dossier) -> Option<&Procedure> {
        self.listed[d.procedure as usize].as_ref()
    }

    /// The number of a procedure code, its catalog entry noted the first time it is seen.
    fn procedure_id(&mut self, code: &str) -> u32 {
        let id = self.procedures.intern(code);
        if id as usize == self.listed.len() {
            self.listed.push(self.catalog.get(code).cloned());
        }
        id
    }

    /// Replaces the catalog; every dossier is re-judged against it.
    pub fn set_catalog(&mut self, catalog: Arc<Catalog>) {
        self.listed = self.procedures.names.iter().map(|code| catalog.get(code).cloned()).collect();
        self.catalog = catalog;
        self.rejudge_all();
    }

    /// Applies an event, as `apply`, unless it cannot have happened (see `impossible`).
    pub fn admit(&mut self, event: &DossierEvent) -> Applied {
        self.apply_checked(event, true)
    }

    /// Applies an event (a repeated event id changes nothing).
    pub fn apply(&mut self, event: &DossierEvent) -> Applied {
        self.apply_checked(event, false)
    }

    fn apply_checked(&mut self, event: &DossierEvent, refuse_impossible: bool) -> Applied {
        let fp = fingerprint(&event.event_id);
        let hash = id_hash(&event.dossier_id);
        let idx = match self.find(hash, &event.dossier_id) {
            Some(idx) => {
                let d = self.dossiers.get(idx);
                if d.seen_events.contains(&fp) {
                    return Applied::Duplicate;
                }
                if let Some(why) = impossible(d, event).filter(|_| refuse_impossible) {
                    return Applied::Impossible(why);
                }
                idx
            }
            None => self.insert(hash, event),
        };
        let before = self.contribution(idx);
        // The earliest reception sets the unit, procedure, channel and due date: with two, the
        // earlier one's stand, whichever arrives first.
        let earliest_reception = event.status == status::RECEIVED
            && self.dossiers.get(idx).received_at().is_none_or(|r| event.event_time < r);
        let codes =
            earliest_reception.then(|| (self.units.intern(&event.unit_code), self.procedure_id(&event.procedure_code)));
        let d = self.dossiers.get_mut(idx);
        d.remember(fp);
        d.flags |= event.flags;
        if event.event_time >= d.last_status_time {
            d.last_status = event.status;
            d.last_status_time = event.event_time;
        }
        let t = event.event_time;
        match event.status {
            status::RECEIVED => {
                if let Some((unit, procedure)) = codes {
                    (d.unit, d.procedure, d.channel, d.due_at) = (unit, procedure, event.channel, event.due_at.into());
                }
                d.received_at.keep_earliest(t);
            }
            status::SUPPLEMENT_REQUESTED => d.supplements_mut().requests.push(t),
            status::PROCESSING if event.supplement_received => d.supplements_mut().arrivals.push(t),
            status::COMPLETED => d.completed_at.keep_earliest(t),
            status::RESULT_RETURNED => d.returned_at.keep_earliest(t),
            status::STOPPED | status::WITHDRAWN | status::REFUSED_AT_RECEPTION => d.abandoned_at.keep_earliest(t),
            _ => {}
        }
        let after = self.contribution(idx);
        self.shift(before, after);
        Applied::Changed
    }

    /// The position of dossier `id`, whose `id_hash` is `hash`.
    fn find(&self, hash: u64, id: &str) -> Option<u32> {
        self.by_id.find(hash, |&idx| &*self.dossiers.get(idx).id == id).copied()
    }

    /// Stores a new dossier and files its position under `hash`, its id's hash.
    fn add(&mut self, hash: u64, dossier: Dossier) -> u32 {
        let idx = self.dossiers.push(dossier);
        let dossiers = &self.dossiers;
        self.by_id.insert_unique(hash, idx, |&i| id_hash(&dossiers.get(i).id));
        idx
    }

    fn insert(&mut self, hash: u64, event: &DossierEvent) -> u32 {
        let dossier = Dossier {
            id: event.dossier_id.as_str().into(),
            unit: self.units.intern(&event.unit_code),
            procedure: self.procedure_id(&event.procedure_code),
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
        };
        self.add(hash, dossier)
    }

    /// What the dossier adds to the tallies at the current instant; None before its reception.
    fn contribution(&self, idx: u32) -> Option<Contribution> {
        let d = self.dossiers.get(idx);
        let received = d.received_at()?;
        let procedure = self.procedure_of(d);
        let verdict = d.verdict(procedure);
        let periods = Period::all_containing(received);
        let on_time = periods.map(|period| verdict.on_time_in(period, self.now));
        // A tally differs between periods only by whether the dossier is on time in it.
        let tallies = [false, true].map(|on_time| crate::judge::tally(d, on_time, procedure));
        let open_until = match verdict {
            Verdict::OpenUntil(due) => due,
            _ => None,
        };
        let facts = crate::judge::procedure_facts(d);
        Some(Contribution {
            dossier: idx,
            unit: d.unit,
            procedure: d.procedure,
            periods,
            on_time,
            tallies,
            facts,
            open_until,
        })
    }

    /// Adds (`sign` = 1) or removes (-1) a contribution.
    fn count(&mut self, c: &Contribution, sign: i64) {
        self.touched.insert(c.periods[0]);
        for (i, period) in c.periods.into_iter().enumerate() {
            *self.tallies.entry((c.unit, period)).or_default() += c.tally(i).scaled(sign);
            let per_procedure = self.procedure_facts.entry((c.unit, period)).or_default();
            for (count, fact) in per_procedure.entry(c.procedure).or_default().iter_mut().zip(c.facts) {
                *count += fact * sign;
            }
        }
        self.watch_deadline(c, sign);
    }

    /// Replaces a dossier's contribution `before` by `after`. Most events change it little or
    /// not at all: in the same unit, procedure and months only the difference is added.
    fn shift(&mut self, before: Option<Contribution>, after: Option<Contribution>) {
        let (b, a) = match (before, after) {
            (Some(b), Some(a)) if (b.unit, b.procedure, b.periods) == (a.unit, a.procedure, a.periods) => (b, a),
            (before, after) => {
                before.iter().for_each(|b| self.count(b, -1));
                after.iter().for_each(|a| self.count(a, 1));
                return;
            }
        };
        if a == b {
            return;
        }
        self.touched.insert(a.periods[0]);
        let facts_changed = a.facts != b.facts;
        for (i, period) in a.periods.into_iter().enumerate() {
            let (new, old) = (a.tally(i), b.tally(i));
            if new != old {
                let tally = self.tallies.entry((a.unit, period)).or_default();
                *tally += *new;
                *tally += old.scaled(-1);
            }
            if facts_changed {
                let per_procedure = self.procedure_facts.entry((a.unit, period)).or_default();
                let counts = per_procedure.entry(a.procedure).or_default();
                for ((count, new), old) in counts.iter_mut().zip(a.facts).zip(b.facts) {
                    *count += new - old;
                }
            }
        }
        self.watch_deadline(&a, 1);
    }

    /// Files an open dossier under its due date, to turn it overdue when the date passes.
    fn watch_deadline(&mut self, c: &Contribution, sign: i64) {
        if let (1, Some(due)) = (sign, c.open_until) {
            if due >= self.now {
                self.deadlines.insert((due, c.dossier));
            }
        }
    }

    /// Moves the judging instant forward, turning open dossiers overdue as their due date passes.
    pub fn advance_to(&mut self, now: Instant) {
        if now <= self.now {
            return;
        }
        let mut flipping = Vec::new();
        while let Some(&(due, idx)) = self.deadlines.first() {
            if due >= now {
                break;
            }
            self.deadlines.pop_first();
            let d = self.dossiers.get(idx);
            if d.verdict(self.procedure_of(d)) == Verdict::OpenUntil(Some(due)) {
                flipping.push(idx);
            }
        }
        let before: Vec<Contribution> = flipping.iter().filter_map(|&idx| self.contribution(idx)).collect();
        self.now = now;
        for before in before {
            let after = self.contribution(before.dossier);
            self.shift(Some(before), after);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::{parse_time, PeriodKind};

    pub fn event(id: &str, dossier: &str, status: u8, time: &str) -> DossierEvent {
        DossierEvent {
            event_id: id.into(),
            event_time: parse_time(time).unwrap(),
            dossier_id: dossier.into(),
            status,
            unit_code: "U1".into(),
            procedure_code: "P1".into(),
            channel: Channel::Direct,
            due_at: None,
            supplement_received: false,
            flags: 0,
        }
    }

    pub fn reception(id: &str, dossier: &str, time: &str, due: &str) -> DossierEvent {
        DossierEvent { due_at: Some(parse_time(due).unwrap()), ..event(id, dossier, status::RECEIVED, time) }
    }

    /// (received, on time) of 2.1 in November 2026.
    fn month(state: &State, unit: &str) -> (i64, i64) {
        let nov = Period { kind: PeriodKind::Month, year: 2026, index: 11 };
        let tally = state.tallies().get(&(state.units.get(unit).unwrap(), nov)).copied().unwrap_or_default();
        (tally.0[crate::judge::ON_TIME].den, tally.0[crate::judge::ON_TIME].num)
    }

    pub fn state_at(t: &str) -> State {
        State::new(at(t), Arc::default())
    }

    fn at(t: &str) -> Instant {
        parse_time(t).unwrap()
    }

    #[test]
    fn open_dossier_turns_overdue_when_its_due_date_passes_without_an_event() {
        let mut s = state_at("2026-11-03T09:00:00+07:00");
        s.apply(&reception("a", "D1", "2026-11-03T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (1, 1));
        s.advance_to(at("2026-11-05T17:00:00+07:00"));
        assert_eq!(month(&s, "U1").1, 1, "on time while now <= due");
        s.advance_to(at("2026-11-05T17:00:01+07:00"));
        assert_eq!(month(&s, "U1"), (1, 0));
        // Completed late: stays late.
        s.apply(&event("b", "D1", status::COMPLETED, "2026-11-06T10:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (1, 0));
    }

    #[test]
    fn closed_period_judges_open_dossiers_at_its_end() {
        // Received 30 Nov, due 2 Dec, still open on 10 Dec: on time for November (judged at its
        // end), overdue for the live quarter.
        let mut s = state_at("2026-11-30T09:00:00+07:00");
        s.apply(&reception("a", "D1", "2026-11-30T08:00:00+07:00", "2026-12-02T17:00:00+07:00"));
        s.advance_to(at("2026-12-10T00:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (1, 1));
        let q4 = Period { kind: PeriodKind::Quarter, year: 2026, index: 4 };
        assert_eq!(s.tallies()[&(0, q4)].0[crate::judge::ON_TIME], crate::judge::Ratio { num: 0, den: 1 });
    }

    #[test]
    fn supplement_wait_is_not_counted_and_two_requests_are_late() {
        let mut s = state_at("2026-11-20T00:00:00+07:00");
        // Due 5 Nov; waited 3 days for the applicant; completed 7 Nov: on time (effective due 8 Nov).
        s.apply(&reception("a", "D1", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        s.apply(&event("b", "D1", status::SUPPLEMENT_REQUESTED, "2026-11-02T08:00:00+07:00"));
        let arrival = DossierEvent {
            supplement_received: true,
            ..event("c", "D1", status::PROCESSING, "2026-11-05T08:00:00+07:00")
        };
        s.apply(&arrival);
        s.apply(&event("d", "D1", status::COMPLETED, "2026-11-07T08:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (1, 1));
        // Still waiting for a supplement requested before the due date: ends at the request, on time.
        s.apply(&reception("e", "D2", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        s.apply(&event("f", "D2", status::SUPPLEMENT_REQUESTED, "2026-11-04T08:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (2, 2));
        // Two requests: late, even though completed early.
        s.apply(&reception("g", "D3", "2026-11-01T08:00:00+07:00", "2026-11-30T17:00:00+07:00"));
        s.apply(&event("h", "D3", status::SUPPLEMENT_REQUESTED, "2026-11-02T08:00:00+07:00"));
        s.apply(&event("i", "D3", status::SUPPLEMENT_REQUESTED, "2026-11-03T08:00:00+07:00"));
        s.apply(&event("j", "D3", status::COMPLETED, "2026-11-04T08:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (3, 2));
    }

    #[test]
    fn end_priority_completed_before_returned_before_stopped() {
        let mut s = state_at("2026-11-20T00:00:00+07:00");
        s.apply(&reception("a", "D1", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        s.apply(&event("b", "D1", status::RESULT_RETURNED, "2026-11-06T08:00:00+07:00"));
        assert_eq!(month(&s, "U1").1, 0, "returned late, no completion known");
        s.apply(&event("c", "D1", status::COMPLETED, "2026-11-05T08:00:00+07:00"));
        assert_eq!(month(&s, "U1").1, 1, "completion on time takes priority");
        s.apply(&reception("d", "D2", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        s.apply(&event("e", "D2", status::WITHDRAWN, "2026-11-03T08:00:00+07:00"));
        assert_eq!(month(&s, "U1"), (2, 2));
    }

    #[test]
    fn refused_at_reception_is_not_counted() {
        let mut s = state_at("2026-11-20T00:00:00+07:00");
        s.apply(&event("a", "D1", status::SUBMITTED_ONLINE, "2026-11-01T08:00:00+07:00"));
        s.apply(&event("b", "D1", status::REFUSED_AT_RECEPTION, "2026-11-01T09:00:00+07:00"));
        assert!(s.tallies().is_empty());
    }

    #[test]
    fn a_dossier_fits_in_about_a_hundred_bytes() {
        // The memory figure of BENCHMARKS.md depends on it: a field added here costs 10 MB per
        // 10 million dossiers.
        assert!(std::mem::size_of::<Dossier>() <= 104, "{}", std::mem::size_of::<Dossier>());
    }

    #[test]
    fn a_copy_keeps_the_dossiers_as_they_were_when_taken() {
        let mut s = state_at("2026-11-20T00:00:00+07:00");
        // More than a chunk, so that the copy spans chunks and the state grows past them.
        for i in 0..=CHUNK {
            s.apply(&reception(
                &format!("r{i}"),
                &format!("D{i}"),
                "2026-11-01T08:00:00+07:00",
                "2026-11-05T17:00:00+07:00",
            ));
        }
        let copy = s.copy_dossiers();
        s.apply(&event("c0", "D0", status::COMPLETED, "2026-11-03T08:00:00+07:00"));
        s.apply(&reception("new", "D-new", "2026-11-02T08:00:00+07:00", "2026-11-05T17:00:00+07:00"));
        assert_eq!((copy.dossiers.len(), s.dossiers().len()), (CHUNK + 1, CHUNK + 2));
        assert_eq!(copy.dossiers.get(0).completed_at(), None);
        assert!(s.dossiers().get(0).completed_at().is_some());
        assert_eq!(s.dossiers().iter().len(), CHUNK + 2);
        // Found by id in every chunk.
        let again = |id: &str, d: &str| reception(id, d, "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00");
        assert_eq!(s.apply(&again("r0", "D0")), Applied::Duplicate);
        assert_eq!(s.apply(&again(&format!("r{CHUNK}"), &format!("D{CHUNK}"))), Applied::Duplicate);
    }

    #[test]
    fn order_and_duplicates_do_not_change_the_result() {
        let events = [
            reception("a", "D1", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"),
            event("b", "D1", status::SUPPLEMENT_REQUESTED, "2026-11-02T08:00:00+07:00"),
            DossierEvent {
                supplement_received: true,
                ..event("c", "D1", status::PROCESSING, "2026-11-04T08:00:00+07:00")
            },
            event("d", "D1", status::COMPLETED, "2026-11-06T08:00:00+07:00"),
            reception("e", "D2", "2026-11-10T08:00:00+07:00", "2026-11-12T17:00:00+07:00"),
            event("f", "D2", status::RESULT_RETURNED, "2026-11-13T08:00:00+07:00"),
        ];
        let run = |order: &[usize]| {
            let mut s = state_at("2026-11-20T00:00:00+07:00");
            for &i in order {
                s.apply(&events[i]);
            }
            month(&s, "U1")
        };
        let expected = (2, 1);
        assert_eq!(run(&[0, 1, 2, 3, 4, 5]), expected);
        assert_eq!(run(&[5, 3, 1, 4, 2, 0]), expected);
        assert_eq!(run(&[3, 3, 0, 1, 1, 2, 5, 4, 0, 5]), expected);
    }

    type Counts = (Vec<((u32, Period), Tally)>, Vec<((u32, Period, u32), Facts)>);

    /// The tallies and facts, without the entries that came back to zero.
    fn counts(s: &State) -> Counts {
        let mut tallies: Vec<_> =
            s.tallies().iter().filter(|(_, t)| **t != Tally::default()).map(|(k, t)| (*k, *t)).collect();
        let mut facts: Vec<_> = s
            .procedure_facts()
            .iter()
            .flat_map(|(&(unit, period), per)| per.iter().map(move |(&p, f)| ((unit, period, p), *f)))
            .filter(|(_, f)| *f != Facts::default())
            .collect();
        tallies.sort_by_key(|(k, _)| *k);
        facts.sort_by_key(|(k, _)| *k);
        (tallies, facts)
    }

    #[test]
    fn tallies_kept_event_by_event_equal_a_judgement_afresh() {
        use crate::event::flag;
        let mut s = state_at("2026-11-03T00:00:00+07:00");
        let other_unit = |e: DossierEvent| DossierEvent { unit_code: "U2".into(), procedure_code: "P2".into(), ..e };
        for e in [
            reception("a", "D1", "2026-11-01T08:00:00+07:00", "2026-11-05T17:00:00+07:00"),
            DossierEvent {
                flags: crate::event::flag::SYNCED_TO_PORTAL,
                ..event("b", "D1", status::PROCESSING, "2026-11-01T09:00:00+07:00")
            },
            // An earlier reception moves D1 to another unit, procedure and month.
            other_unit(reception("c", "D1", "2026-10-30T08:00:00+07:00", "2026-11-04T17:00:00+07:00")),
            reception("d", "D2", "2026-11-02T08:00:00+07:00", "2026-11-06T17:00:00+07:00"),
            event("e", "D2", status::SUPPLEMENT_REQUESTED, "2026-11-02T10:00:00+07:00"),
            DossierEvent {
                flags: flag::HAS_FEE | flag::VNEID,
                ..event("h", "D2", status::FEES_REQUESTED, "2026-11-02T10:30:00+07:00")
            },
            event("f", "D3", status::COMPLETED, "2026-11-02T11:00:00+07:00"),
            reception("g", "D3", "2026-11-01T11:00:00+07:00", "2026-11-02T10:00:00+07:00"),
        ] {
            s.apply(&e);
        }
        s.advance_to(at("2026-11-20T00:00:00+07:00")); // D1 and D2 turn overdue
        let kept = counts(&s);
        assert!(kept.0.iter().any(|((unit, _), _)| *unit == s.units.get("U2").unwrap()), "D1 moved to U2");
        s.rejudge_all();
        assert_eq!(kept, counts(&s));
    }
}
