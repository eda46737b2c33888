//! Per-unit, per-period tallies of every dossier-based criterion, kept as the dossiers change.
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
use crate::criteria::Facts;
use crate::dossier::{Dossier, Dossiers, DossiersCopy, Interner, Verdict};
use crate::event::{status, DossierEvent};
use crate::judge::Tally;
use crate::time::{Instant, Period, PeriodKind};

/// The hash `State::by_id` files a dossier id under.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<foldhash::fast::RandomState> = std::sync::LazyLock::new(Default::default);
    SEED.hash_one(id)
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
    /// Late events applied since this state was made: what happened in a month (its event time)
    /// but arrived after the month had ended, by the dossier's unit and month. What restates a
    /// closed period, as against a later step of a dossier it received.
    late_events: HashMap<(u32, Period), u64>,
    /// The newest event time applied: how far the stream has come (a replay is still in the past).
    newest_event: Instant,
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
            late_events: HashMap::new(),
            newest_event: Instant::MIN,
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
            listed: self.listed.clone(),
            now: self.now,
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
        let fp = crate::dossier::fingerprint(&event.event_id);
        let hash = id_hash(&event.dossier_id);
        let idx = match self.find(hash, &event.dossier_id) {
            Some(idx) => {
                let d = self.dossiers.get(idx);
                if d.seen_events.contains(&fp) {
                    return Applied::Duplicate;
                }
                if let Some(why) = d.impossible(event).filter(|_| refuse_impossible) {
                    return Applied::Impossible(why);
                }
                idx
            }
            None => self.insert(hash, event),
        };
        let before = self.contribution(idx);
        let earliest_reception = event.status == status::RECEIVED
            && self.dossiers.get(idx).received_at().is_none_or(|r| event.event_time < r);
        let codes =
            earliest_reception.then(|| (self.units.intern(&event.unit_code), self.procedure_id(&event.procedure_code)));
        self.dossiers.get_mut(idx).merge(event, fp, codes);
        let after = self.contribution(idx);
        self.shift(before, after);
        self.newest_event = self.newest_event.max(event.event_time);
        let d = self.dossiers.get(idx);
        if let Some(month) = d.received_at().map(|t| Period::containing(PeriodKind::Month, t)) {
            if month.end() <= self.now && event.event_time < month.end() {
                *self.late_events.entry((d.unit, month)).or_default() += 1;
            }
        }
        Applied::Changed
    }

    /// The newest event time applied (`Instant::MIN` before any).
    pub fn newest_event(&self) -> Instant {
        self.newest_event
    }

    /// The late events applied since this state was made: (unit code, month, how many).
    pub fn late_events(&self) -> impl Iterator<Item = (&str, Period, u64)> + '_ {
        self.late_events.iter().map(|(&(unit, month), &n)| (self.units.name(unit), month, n))
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
        let dossier =
            Dossier::new(event, self.units.intern(&event.unit_code), self.procedure_id(&event.procedure_code));
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
        let facts = crate::criteria::procedure_facts(d);
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
mod tests {
    use super::*;
    use crate::dossier::CHUNK;
    use crate::fixtures::{event, reception, state_at};
    use crate::time::{parse_time, PeriodKind};

    /// (received, on time) of 2.1 in November 2026.
    fn month(state: &State, unit: &str) -> (i64, i64) {
        let nov = Period { kind: PeriodKind::Month, year: 2026, index: 11 };
        let tally = state.tallies().get(&(state.units.get(unit).unwrap(), nov)).copied().unwrap_or_default();
        (tally.of("2.1").den, tally.of("2.1").num)
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
        assert_eq!(s.tallies()[&(0, q4)].of("2.1"), crate::judge::Ratio { num: 0, den: 1 });
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
