//! A plain batch reference: recomputes the dossier and procedure criteria of every unit and
//! period straight from the raw event log (de-duplicated, grouped by dossier, each unit scored on
//! the union of its subtree's dossiers), written independently of the incremental engine. The
//! engine must agree exactly on random streams that are shuffled, duplicated and late.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use index766_core::catalog::Catalog;
use index766_core::criteria::CRITERIA;
use index766_core::event::{flag, status, Channel, DossierEvent};
use index766_core::scoring::{score, Scorer};
use index766_core::spec::Spec;
use index766_core::state::State;
use index766_core::time::{Instant, Period, PeriodKind};
use index766_core::units::{Level, Registry, Unit};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One dossier, folded from its events in the most direct way.
struct Folded {
    unit: String,
    procedure: String,
    online: bool,
    received: Instant,
    due: Option<Instant>,
    completed: Option<Instant>,
    returned: Option<Instant>,
    abandoned: Option<Instant>,
    requests: Vec<Instant>,
    arrivals: Vec<Instant>,
    flags: u16,
}

fn fold(events: &[&DossierEvent]) -> Option<Folded> {
    let reception = events.iter().filter(|e| e.status == status::RECEIVED).min_by_key(|e| e.event_time)?;
    let first = |statuses: &[u8]| events.iter().filter(|e| statuses.contains(&e.status)).map(|e| e.event_time).min();
    Some(Folded {
        unit: reception.unit_code.clone(),
        procedure: reception.procedure_code.clone(),
        online: reception.channel == Channel::Online,
        received: reception.event_time,
        due: reception.due_at,
        completed: first(&[status::COMPLETED]),
        returned: first(&[status::RESULT_RETURNED]),
        abandoned: first(&[status::STOPPED, status::WITHDRAWN, status::REFUSED_AT_RECEPTION]),
        requests: events.iter().filter(|e| e.status == status::SUPPLEMENT_REQUESTED).map(|e| e.event_time).collect(),
        arrivals: events.iter().filter(|e| e.supplement_received).map(|e| e.event_time).collect(),
        flags: events.iter().fold(0, |f, e| f | e.flags),
    })
}

/// 2.1 for a period, judged at `now`, straight from domain reference §6.
fn on_time(d: &Folded, catalog: &Catalog, period: Period, now: Instant) -> bool {
    let legal =
        catalog.get(&d.procedure).and_then(|p| p.max_processing_days).map(|days| d.received + days as i64 * 86_400);
    if d.requests.len() > 1 {
        return false;
    }
    let Some(mut due) = d.due.or(legal) else { return true };
    let mut end = d.completed.or(d.returned).or(d.abandoned);
    if let Some(&request) = d.requests.first() {
        match d.arrivals.iter().filter(|&&a| a >= request).min() {
            Some(&arrival) => due += arrival - request,
            None => end = Some(end.map_or(request, |e| e.min(request))),
        }
    }
    match end {
        Some(end) => end <= due,
        None => now.min(period.end() - 1) <= due,
    }
}

/// (numerator, denominator) of each dossier criterion for a set of dossiers.
fn dossier_ratios(
    ds: &[&Folded],
    catalog: &Catalog,
    period: Period,
    now: Instant,
) -> HashMap<&'static str, (i64, i64)> {
    let mut out: HashMap<&'static str, (i64, i64)> = HashMap::new();
    for d in ds {
        let has = |bit: u16| d.flags & bit != 0;
        let needs_result = catalog.get(&d.procedure).is_some_and(|p| p.needs_written_result);
        let electronic = has(flag::ELECTRONIC_RESULT);
        let good = on_time(d, catalog, period, now);
        let mut add = |id: &'static str, counted: bool, num: i64| {
            if counted {
                let r = out.entry(id).or_default();
                r.0 += num;
                r.1 += 1;
            }
        };
        add("1.4", true, has(flag::SYNCED_TO_PORTAL) as i64);
        add("2.1", true, good as i64);
        add("2.2", d.completed.is_some(), d.completed.map_or(0, |c| (c - d.received).max(0)));
        add("3.3", true, (d.online && (!needs_result || electronic)) as i64);
        // A dossier with a fee: its fee list synced, or paid online (which needs a fee).
        add("4.3", has(flag::HAS_FEE) || has(flag::PAID_ONLINE), has(flag::PAID_ONLINE) as i64);
        add("5.1", needs_result && (d.completed.is_some() || d.returned.is_some()), electronic as i64);
        add("5.2", true, (has(flag::DIGITISED) && (!needs_result || electronic)) as i64);
        add("5.4", true, has(flag::REUSED_DATA) as i64);
        add("5.5", true, has(flag::PERSONAL_STORE) as i64);
        add("5.6", true, (has(flag::VNEID) || has(flag::POPULATION_DATA)) as i64);
        add("6.4", true, (good && !has(flag::DISLIKED) && !has(flag::COMPLAINED)) as i64);
    }
    out
}

/// Criteria over procedures: the distinct procedures of the dossiers, against the catalog
/// procedures that apply to the levels in the unit's subtree.
fn procedure_ratios(ds: &[&Folded], catalog: &Catalog, levels: &HashSet<Level>) -> HashMap<&'static str, (i64, i64)> {
    let with = |pred: &dyn Fn(&Folded) -> bool| -> HashSet<&str> {
        ds.iter().filter(|d| pred(d)).map(|d| d.procedure.as_str()).collect()
    };
    let online = with(&|d| d.online);
    let fee_data = with(&|d| d.flags & flag::HAS_FEE != 0);
    let paid = with(&|d| d.flags & flag::PAID_ONLINE != 0);
    let fee_bearing: HashSet<&str> = fee_data.union(&paid).copied().collect();
    let population = with(&|d| d.flags & (flag::VNEID | flag::POPULATION_DATA) != 0);
    let applicable: Vec<_> = catalog.procedures().filter(|p| p.levels.iter().any(|l| levels.contains(l))).collect();
    let over = |filter: &dyn Fn(&index766_core::catalog::Procedure) -> bool, set: &HashSet<&str>| {
        let chosen: Vec<_> = applicable.iter().filter(|p| filter(p)).collect();
        (chosen.iter().filter(|p| set.contains(p.code.as_str())).count() as i64, chosen.len() as i64)
    };
    HashMap::from([
        ("3.2", over(&|p| p.online, &online)),
        ("4.1", over(&|p| p.has_fee, &fee_data)),
        ("5.7", over(&|p| p.for_citizens, &population)),
        // 4.1 on the synced fee data alone; 4.2 on payments among procedures with a fee-bearing dossier.
        ("4.2", (fee_bearing.intersection(&paid).count() as i64, fee_bearing.len() as i64)),
    ])
}

/// Every (unit, period, criterion) → (numerator, denominator) of the dossier and procedure
/// criteria, and of 5.3 (the province's communes offering electronic certified copies, shown on
/// every unit).
pub fn recompute(
    registry: &Registry,
    catalog: &Catalog,
    log: &[DossierEvent],
    now: Instant,
) -> BTreeMap<(String, Period, &'static str), (i64, i64)> {
    let mut seen = HashSet::new();
    let mut by_dossier: BTreeMap<&str, Vec<&DossierEvent>> = BTreeMap::new();
    for e in log {
        if seen.insert((e.dossier_id.as_str(), e.event_id.as_str())) {
            by_dossier.entry(&e.dossier_id).or_default().push(e);
        }
    }
    let dossiers: Vec<Folded> = by_dossier.values().filter_map(|events| fold(events)).collect();
    let units = registry.units();
    let in_subtree = |root: &str, code: &str| {
        let mut cursor = registry.position(code);
        while let Some(i) = cursor {
            if units[i].code == root {
                return true;
            }
            cursor = registry.parent_of(i);
        }
        false
    };
    let mut periods: HashSet<Period> = dossiers.iter().flat_map(|d| Period::all_containing(d.received)).collect();
    periods.extend(Period::all_containing(now));
    let communes: Vec<&Unit> = units.iter().filter(|u| u.level == Level::Commune).collect();
    let copies = (communes.iter().filter(|u| u.certified_copies).count() as i64, communes.len() as i64);
    let mut out = BTreeMap::new();
    for unit in units {
        let levels: HashSet<Level> =
            units.iter().filter(|u| in_subtree(&unit.code, &u.code)).map(|u| u.level).collect();
        for &period in &periods {
            let mine: Vec<&Folded> = dossiers
                .iter()
                .filter(|d| in_subtree(&unit.code, &d.unit) && Period::containing(period.kind, d.received) == period)
                .collect();
            let mut ratios = dossier_ratios(&mine, catalog, period, now);
            ratios.extend(procedure_ratios(&mine, catalog, &levels));
            for (id, r) in ratios {
                out.insert((unit.code.clone(), period, id), r);
            }
            out.insert((unit.code.clone(), period, "5.3"), copies);
        }
    }
    out
}

/// A random tree of units, three levels deep.
fn random_registry(rng: &mut StdRng) -> Registry {
    let unit = |code: &str, parent: Option<&str>, level, certified_copies| Unit {
        code: code.into(),
        name: code.into(),
        parent: parent.map(Into::into),
        level,
        certified_copies,
    };
    let mut units = vec![unit("P", None, Level::Province, false)];
    for d in 0..rng.random_range(1..4) {
        let district = format!("P.{d}");
        units.push(unit(&district, Some("P"), Level::District, false));
        for c in 0..rng.random_range(0..4) {
            let copies = rng.random_bool(0.4);
            units.push(unit(&format!("{district}.{c}"), Some(&district), Level::Commune, copies));
        }
    }
    Registry::new(units).unwrap()
}

const CATALOG: &str = concat!(
    r#"{"code":"A","name":"a","online_level":"full","fee":1000,"needs_written_result":true,"applicant_types":["citizen"],"max_processing_days":3,"levels":["commune"]}"#,
    "\n",
    r#"{"code":"B","name":"b","online_level":"none","applicant_types":["business"],"max_processing_days":10,"levels":["district"]}"#,
    "\n",
    r#"{"code":"C","name":"c","online_level":"partial","fee":5000,"applicant_types":["citizen","business"],"levels":["district","commune"]}"#,
    "\n",
);

const DAY: i64 = 86_400;

/// A random lifecycle log: dossiers received over two months around a quarter boundary, with
/// supplements, fees, results, feedback, unknown units; then duplicated and shuffled.
fn random_log(rng: &mut StdRng, registry: &Registry, start: Instant, dossiers: usize) -> Vec<DossierEvent> {
    let units: Vec<String> = registry.units().iter().map(|u| u.code.clone()).chain(["GHOST".to_string()]).collect();
    let mut log = Vec::new();
    for n in 0..dossiers {
        let id = format!("D{n}");
        let unit = units[rng.random_range(0..units.len())].clone();
        let procedure = ["A", "B", "C", "Z"][rng.random_range(0..4)].to_string();
        let channel = if rng.random_bool(0.5) { Channel::Online } else { Channel::Direct };
        let received = start + rng.random_range(0..60 * DAY);
        let mut seq = 0;
        let mut push = |status: u8, t: Instant, edit: &dyn Fn(&mut DossierEvent)| {
            seq += 1;
            let mut e = DossierEvent {
                event_id: format!("{id}#{seq}"),
                event_time: t,
                dossier_id: id.clone(),
                status,
                unit_code: unit.clone(),
                procedure_code: procedure.clone(),
                channel,
                due_at: None,
                supplement_received: false,
                flags: 0,
            };
            edit(&mut e);
            log.push(e);
        };
        let flags: u16 = rng.random::<u16>() & 0x7ff;
        let due = rng.random_bool(0.8).then(|| received + rng.random_range(1..10) * DAY);
        if rng.random_bool(0.95) {
            push(status::RECEIVED, received, &|e| {
                e.due_at = due;
                e.flags = flags & !(flag::DISLIKED | flag::COMPLAINED);
            });
        }
        let mut t = received;
        for _ in 0..rng.random_range(0..4) {
            t += rng.random_range(0..3 * DAY);
            let step =
                [status::PROCESSING, status::SUPPLEMENT_REQUESTED, status::FEES_REQUESTED][rng.random_range(0..3)];
            let arrived = step == status::PROCESSING && rng.random_bool(0.5);
            push(step, t, &|e| e.supplement_received = arrived);
        }
        let end = [
            status::COMPLETED,
            status::RESULT_RETURNED,
            status::STOPPED,
            status::WITHDRAWN,
            status::REFUSED_AT_RECEPTION,
            0,
        ][rng.random_range(0..6)];
        if end != 0 {
            t += rng.random_range(0..8 * DAY);
            push(end, t, &|e| e.flags = flags & (flag::ELECTRONIC_RESULT | flag::PERSONAL_STORE));
        }
        if rng.random_bool(0.1) {
            push(status::RESULT_RETURNED, t + 20 * DAY, &|e| e.flags = flags & (flag::DISLIKED | flag::COMPLAINED));
        }
    }
    let duplicates: Vec<DossierEvent> = log.iter().filter(|_| rng.random_bool(0.1)).cloned().collect();
    log.extend(duplicates);
    log.shuffle(rng);
    log
}

#[test]
fn the_incremental_engine_agrees_with_the_batch_reference_on_random_streams() {
    let spec = Spec::shipped();
    let catalog = Arc::new(Catalog::parse(CATALOG).unwrap());
    let start = index766_core::time::parse_time("2026-08-20T00:00:00+07:00").unwrap();
    let mut compared = 0;
    for seed in 0..12 {
        let mut rng = StdRng::seed_from_u64(seed);
        let registry = random_registry(&mut rng);
        let log = random_log(&mut rng, &registry, start, 250);
        // Events arrive while the clock runs: late events land in periods that are already closed.
        let end = start + 80 * DAY;
        let mut state = State::new(start, catalog.clone());
        // Scored along the way too, as the engine does: only the periods that changed are scored again.
        let (mut scorer, shared) = (Scorer::default(), Arc::new(registry.clone()));
        let mut rescore = |state: &mut State| {
            let touched = state.take_touched();
            scorer.score(&shared, state, &touched, &Default::default(), &spec, 80.0)
        };
        for (i, event) in log.iter().enumerate() {
            state.advance_to(start + (end - start) * i as i64 / log.len() as i64);
            state.apply(event);
            if i % 97 == 0 {
                rescore(&mut state);
            }
        }
        state.advance_to(end);
        let board = score(&registry, &state, &Default::default(), &spec, 80.0);
        let incremental = rescore(&mut state);
        assert!(
            incremental.periods.iter().map(|p| &**p).eq(board.periods.iter().map(|p| &**p)),
            "seed {seed}: scoring only the changed periods gives the scores of scoring them all"
        );
        let expected = recompute(&registry, &catalog, &log, end);
        let units = registry.units();
        for s in board.criteria() {
            let id = CRITERIA[s.criterion].id;
            let key = (units[s.unit].code.clone(), s.period, id);
            let Some(&(num, den)) = expected.get(&key) else { continue };
            assert_eq!((s.numerator, s.denominator), (num, den), "seed {seed}: {key:?}");
            let ratio = (den > 0).then(|| num as f64 / den as f64);
            if !matches!(id, "2.2" | "3.3") {
                let entry = spec.for_period(s.period).into_iter().find(|c| c.id == id).unwrap();
                assert!((s.points - entry.points(ratio)).abs() < 1e-9, "seed {seed}: {key:?} points");
            }
            compared += 1;
        }
        // Every period the reference scores, the engine scores too.
        let scored: HashSet<(String, Period)> =
            board.criteria().map(|s| (units[s.unit].code.clone(), s.period)).collect();
        for (unit, period, _) in expected.keys() {
            assert!(scored.contains(&(unit.clone(), *period)), "seed {seed}: {unit} {period} not scored");
        }
        assert!(board.criteria().any(|s| s.period.kind == PeriodKind::Quarter && s.period.index == 3));
    }
    assert!(compared > 5_000, "compared {compared} rows");
}
