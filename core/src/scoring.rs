//! Turns the state's tallies into Index 766 scores the way the national portal does: dossier
//! numerators and denominators pooled over each unit's subtree, procedure criteria over the union
//! of the subtree's procedures, catalog criteria once at the root; ratios converted to points by
//! the scoring spec; groups and the total summed; ranks among siblings, deltas, and the gap to a
//! target total.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::criteria::{index_of, slot, Applies, CatalogClock, Facts, Figure, Source, CRITERIA};
use crate::judge::{Ratio, Tally};
use crate::spec::{Conversion, CriterionSpec, Spec};
use crate::state::State;
use crate::time::{Instant, Period, PeriodKind};
use crate::units::{Level, LevelSet, Registry};

#[derive(Debug, Clone, PartialEq)]
pub struct CriterionScore {
    /// Position in the registry.
    pub unit: usize,
    pub period: Period,
    /// Position in [`CRITERIA`].
    pub criterion: usize,
    pub numerator: i64,
    pub denominator: i64,
    /// None when the denominator is 0. For 2.2, the average processing time in days.
    pub ratio: Option<f64>,
    pub points: f64,
    pub max_points: f64,
}

impl CriterionScore {
    pub fn points_lost(&self) -> f64 {
        (self.max_points - self.points).max(0.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupScore {
    pub unit: usize,
    pub period: Period,
    pub group: u8,
    pub points: f64,
    pub max_points: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TotalScore {
    pub unit: usize,
    pub period: Period,
    pub total: f64,
    pub band: String,
    /// The unit's total in the period before (same kind); None if the unit received no dossier
    /// and no petition then (a total made only of empty-denominator rules compares with nothing).
    pub previous_total: Option<f64>,
    /// 1 + the number of siblings (units with the same parent) with a higher total.
    pub rank: u32,
    pub siblings: u32,
}

/// For a unit in a current period: what a criterion costs, and how many more good dossiers (or
/// procedures) it alone would need to lift the total to the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub unit: usize,
    pub period: Period,
    pub criterion: usize,
    pub points_lost: f64,
    /// 1 for the criterion that loses the most points in this unit and period.
    pub loss_rank: u32,
    /// None when this criterion alone cannot close the gap (or is not counted in items).
    pub good_needed: Option<i64>,
}

/// The scores of one period, for every unit. Shared between views while the period's figures
/// do not change.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodScores {
    pub period: Period,
    /// Whether the period contains the judging instant (judged at it, rather than at its end).
    pub current: bool,
    pub criteria: Vec<CriterionScore>,
    pub groups: Vec<GroupScore>,
    /// One per unit, in registry order.
    pub totals: Vec<TotalScore>,
    /// Current periods only.
    pub gaps: Vec<Gap>,
    /// Per unit: whether it received a dossier or a petition in the period (else its total
    /// compares with nothing).
    with_data: Vec<bool>,
}

#[derive(Debug, Default)]
pub struct Scoreboard {
    pub as_of: Instant,
    pub spec_version: String,
    pub target_total: f64,
    /// Every period scored, oldest first.
    pub periods: Vec<Arc<PeriodScores>>,
    /// Dossiers received under a unit code the registry does not know: kept in the state (not
    /// lost), and scored as soon as the registry lists the unit.
    pub unregistered_dossiers: i64,
}

impl Scoreboard {
    pub fn is_current(&self, period: Period) -> bool {
        period.start() <= self.as_of && self.as_of < period.end()
    }

    /// The periods that contain the judging instant.
    pub fn current(&self) -> impl Iterator<Item = &PeriodScores> {
        self.periods.iter().map(|p| &**p).filter(|p| p.current)
    }

    pub fn criteria(&self) -> impl Iterator<Item = &CriterionScore> {
        self.periods.iter().flat_map(|p| &p.criteria)
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupScore> {
        self.periods.iter().flat_map(|p| &p.groups)
    }

    pub fn totals(&self) -> impl Iterator<Item = &TotalScore> {
        self.periods.iter().flat_map(|p| &p.totals)
    }

    pub fn gaps(&self) -> impl Iterator<Item = &Gap> {
        self.periods.iter().flat_map(|p| &p.gaps)
    }
}

/// 6.1, 6.2, 6.3 (numerator, denominator) per (unit code, period), for the unit's own petitions.
pub type PetitionTallies<'a> = HashMap<(&'a str, Period), [(i64, i64); 3]>;

fn ratio(num: i64, den: i64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Per criterion (by position in [`CRITERIA`]), the ratio of those judged at the root.
type RootRatios = Vec<Ratio>;

/// The criteria judged at a root (a province or a ministry), from the catalog's procedures under
/// its authority and from `communes`, the communes below it; shown unchanged on every unit of
/// its tree.
fn root_ratios(catalog: &Catalog, root: Authority, communes: Ratio, period: Period, now: Instant) -> RootRatios {
    let clock = CatalogClock { period, now };
    let mut out = vec![Ratio::default(); CRITERIA.len()];
    for (criterion, ratio) in CRITERIA.iter().zip(&mut out) {
        match criterion.source {
            Source::Catalog(judge) => {
                for verdict in catalog.procedures().filter(|p| root.covers(p)).filter_map(|p| judge(p, &clock)) {
                    ratio.den += 1;
                    ratio.num += verdict as i64;
                }
            }
            Source::Communes => *ratio = communes,
            _ => {}
        }
    }
    out
}

/// Where a unit stands for the procedure criteria: its position and the levels in its subtree.
#[derive(Clone, Copy)]
struct Authority<'a> {
    registry: &'a Registry,
    unit: usize,
    levels: LevelSet,
}

impl Authority<'_> {
    /// A procedure is under the unit's authority when one of its implementing units is in the
    /// unit's subtree or, when the catalog names none, one of its levels is.
    fn covers(&self, p: &crate::catalog::Procedure) -> bool {
        if p.units.is_empty() {
            return self.levels.contains_any(&p.levels);
        }
        p.units.iter().filter_map(|code| self.registry.position(code)).any(|i| self.registry.is_within(i, self.unit))
    }
}

/// What a criterion is measured on for a unit, before conversion.
struct Measured<'a> {
    /// The unit's subtree: its dossiers, petitions and per-procedure facts.
    tally: &'a Tally,
    petitions: &'a [(i64, i64); 3],
    facts: &'a HashMap<&'a str, Facts>,
    /// The unit's root's criteria.
    root: &'a RootRatios,
    catalog: &'a Catalog,
    authority: Authority<'a>,
}

impl Measured<'_> {
    fn ratio(&self, index: usize) -> Ratio {
        let criterion = &CRITERIA[index];
        let has = |code: &str, fact: crate::criteria::Fact| self.facts.get(code).is_some_and(|f| fact.of(f) > 0);
        match criterion.source {
            Source::Dossier(_) => self.tally.0[slot(index).expect("a dossier criterion has a slot")],
            Source::Procedures { applies, fact } => {
                let mut r = Ratio::default();
                for p in self.catalog.procedures().filter(|p| self.authority.covers(p) && applies(p)) {
                    r.den += 1;
                    r.num += has(&p.code, fact) as i64;
                }
                r
            }
            Source::ProceduresSeen { counted, good } => {
                let seen = self.facts.values().filter(|f| counted.of(f) > 0);
                Ratio { den: seen.clone().count() as i64, num: seen.filter(|f| good.of(f) > 0).count() as i64 }
            }
            Source::Catalog(_) | Source::Communes => self.root[index],
            Source::Petitions(slot) => Ratio { num: self.petitions[slot].0, den: self.petitions[slot].1 },
        }
    }

    /// (numerator, denominator, figure) of the criterion at `index`.
    fn measure(&self, index: usize) -> (i64, i64, Option<f64>) {
        let r = self.ratio(index);
        let value = match CRITERIA[index].figure {
            Figure::Ratio => ratio(r.num, r.den),
            Figure::RatioTimes(other) => {
                let other = self.ratio(index_of(other));
                ratio(r.num, r.den).zip(ratio(other.num, other.den)).map(|(a, b)| a * b)
            }
            Figure::MeanDays => ratio(r.num, r.den).map(|seconds| seconds / 86_400.0),
        };
        (r.num, r.den, value)
    }
}

/// Pools per-procedure facts up the tree: each unit gets the sums over its subtree.
fn pool_facts<'a>(registry: &Registry, mut own: Vec<HashMap<&'a str, Facts>>) -> Vec<HashMap<&'a str, Facts>> {
    for i in (0..registry.len()).rev() {
        if let Some(p) = registry.parent_of(i) {
            let child = std::mem::take(&mut own[i]);
            for (code, facts) in &child {
                let pooled = own[p].entry(code).or_default();
                for (a, b) in pooled.iter_mut().zip(facts) {
                    *a += b;
                }
            }
            own[i] = child;
        }
    }
    own
}

/// Sums petition tallies up the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PetitionSums([(i64, i64); 3]);

impl std::ops::AddAssign for PetitionSums {
    fn add_assign(&mut self, other: PetitionSums) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }
}

/// Scores every unit and period from scratch (see [`Scorer`] for scoring a stream of states).
pub fn score(
    registry: &Registry,
    state: &State,
    petitions: &PetitionTallies,
    spec: &Spec,
    target_total: f64,
) -> Scoreboard {
    let registry = Arc::new(registry.clone());
    Scorer::default().score(&registry, state, &BTreeSet::new(), petitions, spec, target_total)
}

/// Scores successive states, scoring again only the periods whose figures may have changed: those
/// with a touched month, new petition or catalog figures, or a change of being current; and the
/// period after each (its totals compare with them). A view then costs what changed, not the
/// whole history.
#[derive(Debug, Default)]
pub struct Scorer {
    basis: Option<Basis>,
    periods: HashMap<Period, Scored>,
}

/// What every cached period was scored against: when any of it changes, all are scored again.
#[derive(Debug)]
struct Basis {
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    spec_version: String,
    target_total: f64,
}

impl Basis {
    fn same(&self, other: &Basis) -> bool {
        Arc::ptr_eq(&self.registry, &other.registry)
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.spec_version == other.spec_version
            && self.target_total == other.target_total
    }
}

/// The inputs of a period's scores besides the state's tallies.
#[derive(Debug, PartialEq)]
struct Inputs {
    current: bool,
    /// Per unit, its own petitions.
    petitions: Vec<PetitionSums>,
    /// Per root, the criteria judged there (they move with the judging instant).
    catalog: BTreeMap<usize, RootRatios>,
}

#[derive(Debug)]
struct Scored {
    inputs: Inputs,
    scores: Arc<PeriodScores>,
}

impl Scorer {
    /// Scores the state; `touched` holds the months whose tallies changed since the last call
    /// (`State::take_touched`).
    pub fn score(
        &mut self,
        registry: &Arc<Registry>,
        state: &State,
        touched: &BTreeSet<Period>,
        petitions: &PetitionTallies,
        spec: &Spec,
        target_total: f64,
    ) -> Scoreboard {
        let basis = Basis {
            registry: registry.clone(),
            catalog: state.catalog().clone(),
            spec_version: spec.version.clone(),
            target_total,
        };
        if !self.basis.as_ref().is_some_and(|b| b.same(&basis)) {
            self.periods.clear();
            self.basis = Some(basis);
        }
        let now = state.now();
        let catalog = state.catalog();
        let board =
            Scoreboard { as_of: now, spec_version: spec.version.clone(), target_total, ..Scoreboard::default() };
        let position: Vec<Option<usize>> =
            (0..state.units.len() as u32).map(|u| registry.position(state.units.name(u))).collect();
        let mut periods: BTreeSet<Period> = state.tallies().keys().map(|&(_, p)| p).collect();
        periods.extend(petitions.keys().map(|&(_, p)| p));
        for p in Period::all_containing(now) {
            periods.extend([p, p.previous()]);
        }
        let mut own_petitions: BTreeMap<Period, Vec<PetitionSums>> = BTreeMap::new();
        for (&(code, period), &sums) in petitions {
            if let Some(pos) = registry.position(code) {
                own_petitions.entry(period).or_insert_with(|| vec![PetitionSums::default(); registry.len()])[pos] +=
                    PetitionSums(sums);
            }
        }
        let levels = registry.subtree_levels();
        let roots: Vec<usize> = (0..registry.len()).map(|i| registry.root_of(i)).collect();
        // 5.3 of each root: its communes that certify copies (the same in every period).
        let mut communes: BTreeMap<usize, Ratio> = roots.iter().map(|&r| (r, Ratio::default())).collect();
        for (i, u) in registry.units().iter().enumerate().filter(|(_, u)| u.level == Level::Commune) {
            let r = communes.get_mut(&roots[i]).expect("every root is listed");
            r.den += 1;
            r.num += u.certified_copies as i64;
        }
        let mut inputs: BTreeMap<Period, Inputs> = periods
            .iter()
            .map(|&period| {
                let catalog = communes
                    .iter()
                    .map(|(&r, &communes)| {
                        let authority = Authority { registry, unit: r, levels: levels[r] };
                        (r, root_ratios(catalog, authority, communes, period, now))
                    })
                    .collect();
                let petitions =
                    own_petitions.remove(&period).unwrap_or_else(|| vec![PetitionSums::default(); registry.len()]);
                (period, Inputs { current: board.is_current(period), petitions, catalog })
            })
            .collect();
        let changed: BTreeSet<Period> = inputs
            .iter()
            .filter(|&(&p, i)| {
                touched.iter().any(|&m| p.covers(m)) || self.periods.get(&p).is_none_or(|s| &s.inputs != i)
            })
            .map(|(&p, _)| p)
            .collect();
        let dirty: BTreeSet<Period> =
            periods.iter().copied().filter(|p| changed.contains(p) || changed.contains(&p.previous())).collect();
        self.periods.retain(|p, _| periods.contains(p) && !dirty.contains(p));

        let mut own_tallies: BTreeMap<Period, Vec<Tally>> = BTreeMap::new();
        let mut unregistered_dossiers = 0;
        for (&(unit, period), tally) in state.tallies() {
            match position[unit as usize] {
                Some(pos) if dirty.contains(&period) => {
                    own_tallies.entry(period).or_insert_with(|| vec![Tally::default(); registry.len()])[pos] += *tally
                }
                Some(_) => {}
                // Each dossier is in exactly one month: count it there.
                None if period.kind == PeriodKind::Month => unregistered_dossiers += tally.dossiers(),
                None => {}
            }
        }
        let mut own_facts: BTreeMap<Period, Vec<HashMap<&str, Facts>>> = BTreeMap::new();
        for (&(unit, period), per_procedure) in state.procedure_facts() {
            let Some(pos) = position[unit as usize].filter(|_| dirty.contains(&period)) else { continue };
            let slot = &mut own_facts.entry(period).or_insert_with(|| vec![HashMap::new(); registry.len()])[pos];
            for (&procedure, facts) in per_procedure {
                let pooled = slot.entry(state.procedures.name(procedure)).or_default();
                for (a, b) in pooled.iter_mut().zip(facts) {
                    *a += b;
                }
            }
        }
        // Oldest first, so that a period's previous one is scored before it.
        for &period in &dirty {
            let inputs = inputs.remove(&period).expect("every period has inputs");
            let own = Own {
                tallies: own_tallies.remove(&period).unwrap_or_else(|| vec![Tally::default(); registry.len()]),
                facts: own_facts.remove(&period).unwrap_or_else(|| vec![HashMap::new(); registry.len()]),
            };
            let previous = self.periods.get(&period.previous()).map(|s| &*s.scores);
            let context = Context { registry, catalog, spec, target_total, levels: &levels, roots: &roots };
            let scores = Arc::new(score_period(&context, period, &inputs, own, previous));
            self.periods.insert(period, Scored { inputs, scores });
        }
        Scoreboard {
            periods: periods.iter().map(|p| self.periods[p].scores.clone()).collect(),
            unregistered_dossiers,
            ..board
        }
    }
}

/// What scoring any period needs.
struct Context<'a> {
    registry: &'a Registry,
    catalog: &'a Catalog,
    spec: &'a Spec,
    target_total: f64,
    levels: &'a [LevelSet],
    roots: &'a [usize],
}

/// A period's tallies and per-procedure facts of each unit's own dossiers, before pooling.
struct Own<'a> {
    tallies: Vec<Tally>,
    facts: Vec<HashMap<&'a str, Facts>>,
}

fn score_period(
    cx: &Context,
    period: Period,
    inputs: &Inputs,
    own: Own,
    previous: Option<&PeriodScores>,
) -> PeriodScores {
    let (registry, spec) = (cx.registry, cx.spec);
    let in_force = spec.for_period(period);
    let tallies = registry.pool_up(&own.tallies);
    let facts = pool_facts(registry, own.facts);
    let petition_sums = registry.pool_up(&inputs.petitions);
    let measured: Vec<Vec<(i64, i64, Option<f64>)>> = (0..registry.len())
        .map(|u| {
            let authority = Authority { registry, unit: u, levels: cx.levels[u] };
            let measured = Measured {
                tally: &tallies[u],
                petitions: &petition_sums[u].0,
                facts: &facts[u],
                root: &inputs.catalog[&cx.roots[u]],
                catalog: cx.catalog,
                authority,
            };
            in_force.iter().map(|c| measured.measure(c.index)).collect()
        })
        .collect();
    let mut scores = PeriodScores {
        period,
        current: inputs.current,
        criteria: Vec::with_capacity(registry.len() * in_force.len()),
        groups: Vec::new(),
        totals: Vec::with_capacity(registry.len()),
        gaps: Vec::new(),
        with_data: (0..registry.len())
            .map(|u| tallies[u].dossiers() > 0 || petition_sums[u].0[crate::petition::ON_TIME].1 > 0)
            .collect(),
    };
    let mut totals = Vec::with_capacity(registry.len());
    for unit in 0..registry.len() {
        let mut group_points: BTreeMap<u8, f64> = BTreeMap::new();
        for (k, c) in in_force.iter().enumerate() {
            let source = if c.applies == Applies::Root { cx.roots[unit] } else { unit };
            let (numerator, denominator, ratio) = measured[source][k];
            let points = c.points(ratio);
            *group_points.entry(c.group()).or_default() += points;
            scores.criteria.push(CriterionScore {
                unit,
                period,
                criterion: c.index,
                numerator,
                denominator,
                ratio,
                points,
                max_points: c.max_points,
            });
        }
        for (&group, &points) in &group_points {
            scores.groups.push(GroupScore { unit, period, group, points, max_points: spec.group(group).max_points });
        }
        totals.push(group_points.values().sum::<f64>());
    }
    scores.totals = rank_totals(registry, spec, period, &totals, previous);
    if scores.current {
        scores.gaps = gaps(&scores, spec, cx.target_total);
    }
    scores
}

/// Totals with their rank among siblings and the unit's total in the period before.
fn rank_totals(
    registry: &Registry,
    spec: &Spec,
    period: Period,
    totals: &[f64],
    previous: Option<&PeriodScores>,
) -> Vec<TotalScore> {
    let mut siblings: HashMap<Option<usize>, Vec<f64>> = HashMap::new();
    for (unit, &total) in totals.iter().enumerate() {
        siblings.entry(registry.parent_of(unit)).or_default().push(total);
    }
    totals
        .iter()
        .enumerate()
        .map(|(unit, &total)| {
            let peers = &siblings[&registry.parent_of(unit)];
            TotalScore {
                unit,
                period,
                total,
                band: spec.band(total).to_owned(),
                previous_total: previous.filter(|p| p.with_data[unit]).map(|p| p.totals[unit].total),
                rank: 1 + peers.iter().filter(|&&t| t > total).count() as u32,
                siblings: peers.len() as u32,
            }
        })
        .collect()
}

/// How many more good items would lift `c` enough to add `needed` points, if it can alone.
fn good_needed(c: &CriterionSpec, s: &CriterionScore, needed: f64, multiplier: f64) -> Option<i64> {
    if needed <= 0.0 {
        return Some(0);
    }
    let a_mean = c.criterion().figure == Figure::MeanDays;
    if matches!(c.conversion, Conversion::Shown | Conversion::Full) || s.denominator == 0 || a_mean {
        return None;
    }
    let target_points = s.points + needed;
    if target_points > c.max_points + 1e-9 || multiplier <= 0.0 {
        return None;
    }
    let target_ratio = target_points / c.max_points * c.full_points_ratio();
    let items = (target_ratio * s.denominator as f64 / multiplier - 1e-9).ceil() as i64;
    let more = (items - s.numerator).max(0);
    (s.numerator + more <= s.denominator).then_some(more)
}

fn gaps(scores: &PeriodScores, spec: &Spec, target_total: f64) -> Vec<Gap> {
    let in_force = spec.for_period(scores.period);
    let mut out = Vec::new();
    for unit_scores in scores.criteria.chunk_by(|a, b| a.unit == b.unit) {
        let total = scores.totals[unit_scores[0].unit].total;
        out.extend(unit_gaps(unit_scores, &in_force, total, target_total));
    }
    out
}

/// One unit's gaps from its criterion scores (one period, `total` their sum): the criteria by
/// points lost, each with the good items that alone would bring the unit to `target_total`.
/// The weekly report works them out this way from the kept weekly figures.
pub fn unit_gaps(
    unit_scores: &[CriterionScore],
    in_force: &[&CriterionSpec],
    total: f64,
    target_total: f64,
) -> Vec<Gap> {
    let needed = target_total - total;
    let ratio_of = |id: &str| unit_scores.iter().find(|s| CRITERIA[s.criterion].id == id).and_then(|s| s.ratio);
    let mut ranked: Vec<&CriterionScore> = unit_scores.iter().collect();
    ranked.sort_by(|a, b| b.points_lost().total_cmp(&a.points_lost()).then(a.criterion.cmp(&b.criterion)));
    ranked
        .into_iter()
        .enumerate()
        .map(|(rank, s)| {
            let c = in_force.iter().find(|c| c.index == s.criterion).expect("scores come from the spec");
            // A ratio times another's moves by that other ratio per good item.
            let multiplier = match c.criterion().figure {
                Figure::RatioTimes(other) => ratio_of(other).unwrap_or(0.0),
                _ => 1.0,
            };
            Gap {
                unit: s.unit,
                period: s.period,
                criterion: s.criterion,
                points_lost: s.points_lost(),
                loss_rank: rank as u32 + 1,
                good_needed: good_needed(c, s, needed, multiplier),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::event::status;
    use crate::fixtures::{event, reception, state_at};

    pub fn spec() -> Spec {
        Spec::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/scoring_spec.toml")).unwrap()
    }

    #[test]
    fn parent_pools_dossiers_rather_than_averaging_children() {
        let registry = Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"Province\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"commune\"}\n",
            "{\"code\":\"B\",\"name\":\"B\",\"parent\":\"P\",\"level\":\"commune\"}\n",
        ))
        .unwrap();
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        // A: 1 dossier, on time. B: 3 dossiers, 1 on time. Average of children would be
        // (1 + 1/3)/2 = 0.667; pooled is 2/4 = 0.5.
        let mut n = 0;
        let mut add = |unit: &str, on_time: bool| {
            n += 1;
            let id = format!("D{n}");
            let mut r = reception(&format!("r{n}"), &id, "2026-11-02T08:00:00+07:00", "2026-11-04T17:00:00+07:00");
            r.unit_code = unit.into();
            let done = if on_time { "2026-11-03T08:00:00+07:00" } else { "2026-11-06T08:00:00+07:00" };
            let mut c = event(&format!("c{n}"), &id, status::COMPLETED, done);
            c.unit_code = unit.into();
            state.apply(&r);
            state.apply(&c);
        };
        add("A", true);
        add("B", true);
        add("B", false);
        add("B", false);
        let mut unknown = reception("x", "DX", "2026-11-02T08:00:00+07:00", "2026-11-04T17:00:00+07:00");
        unknown.unit_code = "Z".into();
        state.apply(&unknown);

        let board = score(&registry, &state, &Default::default(), &spec(), 80.0);
        assert_eq!(board.unregistered_dossiers, 1);
        let on_time = |code: &str| {
            let pos = registry.position(code).unwrap();
            board
                .criteria()
                .find(|s| {
                    s.unit == pos
                        && board.is_current(s.period)
                        && s.period.kind == PeriodKind::Month
                        && CRITERIA[s.criterion].id == "2.1"
                })
                .unwrap()
                .clone()
        };
        assert_eq!((on_time("P").numerator, on_time("P").denominator), (2, 4));
        assert_eq!(on_time("P").points, 10.0);
        assert_eq!(on_time("A").points, 20.0);
        assert!((on_time("B").points - 20.0 / 3.0).abs() < 1e-12);
    }

    /// Fee data synced to the portal and online payment are two facts (the portal counted 93
    /// procedures with an online payment but 56 with synced fee data): X's dossier synced its
    /// fee list and was not paid online; W's and V's were paid online without a synced fee list.
    /// 4.1 (synced fee data ÷ fee procedures) is 1/3, 4.2 (paid online ÷ procedures with
    /// fee-bearing dossiers) 2/3, 4.3 (dossiers paid online ÷ fee-bearing dossiers) 2/3.
    #[test]
    fn paid_online_without_synced_fee_data_counts_for_4_2_and_not_4_1() {
        let registry = Registry::parse("{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n").unwrap();
        let procedure = |code: &str| {
            format!(
                r#"{{"code":"{code}","name":"{code}","online_level":"full","fee":20000,"applicant_types":["citizen"],"levels":["province"]}}"#
            )
        };
        let catalog = Catalog::parse(&["X", "W", "V"].map(procedure).join("\n")).unwrap();
        let mut state =
            State::new(crate::time::parse_time("2026-11-24T12:00:00+07:00").unwrap(), std::sync::Arc::new(catalog));
        for (procedure, fee_facts) in
            [("X", r#""fees":[{"amount":20000}]"#), ("W", r#""paid_online":1"#), ("V", r#""paid_online":2"#)]
        {
            let wire = format!(
                r#"{{"schema_version":1,"event_id":"{procedure}-1","event_time":"2026-11-03T08:00:00+07:00","dossier_id":"{procedure}-d","status":2,"unit_code":"P","procedure_code":"{procedure}","channel":2,{fee_facts}}}"#
            );
            state.apply(&crate::event::decode(wire.as_bytes(), None, 65536).unwrap());
        }
        let board = score(&registry, &state, &Default::default(), &spec(), 80.0);
        let ratio = |id: &str| {
            let s = board
                .criteria()
                .find(|s| {
                    board.is_current(s.period) && s.period.kind == PeriodKind::Month && CRITERIA[s.criterion].id == id
                })
                .unwrap();
            (s.numerator, s.denominator)
        };
        assert_eq!(ratio("4.1"), (1, 3), "only X synced its fee data");
        assert_eq!(ratio("4.2"), (2, 3), "W and V were paid online");
        assert_eq!(ratio("4.3"), (2, 3));
    }

    /// 5.3 scores the root's communes that offer electronic certified copies, linearly (the
    /// portal's figures: not a flat 2 points), and shows it on every unit; a tree without
    /// communes keeps full points.
    #[test]
    fn certified_copies_score_the_share_of_communes_offering_them() {
        let registry = Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"department\"}\n",
            "{\"code\":\"B\",\"name\":\"B\",\"parent\":\"P\",\"level\":\"commune\",\"certified_copies\":true}\n",
            "{\"code\":\"C\",\"name\":\"C\",\"parent\":\"P\",\"level\":\"commune\"}\n",
            "{\"code\":\"D\",\"name\":\"D\",\"parent\":\"P\",\"level\":\"commune\"}\n",
            "{\"code\":\"E\",\"name\":\"E\",\"parent\":\"P\",\"level\":\"commune\"}\n",
            "{\"code\":\"M\",\"name\":\"M\",\"level\":\"ministry\"}\n",
        ))
        .unwrap();
        let state = state_at("2026-11-24T12:00:00+07:00");
        let board = score(&registry, &state, &Default::default(), &spec(), 80.0);
        let copies = |unit: &str| {
            let pos = registry.position(unit).unwrap();
            let s = board
                .criteria()
                .find(|s| {
                    s.unit == pos
                        && board.is_current(s.period)
                        && s.period.kind == PeriodKind::Month
                        && CRITERIA[s.criterion].id == "5.3"
                })
                .unwrap();
            (s.numerator, s.denominator, s.points)
        };
        // One commune of four: 2 × 1/4, on the province and on every unit below it.
        for unit in ["P", "A", "B", "C"] {
            assert_eq!(copies(unit), (1, 4, 0.5), "{unit}");
        }
        assert_eq!(copies("M"), (0, 0, 2.0), "a ministry has no communes: full points");
    }

    /// A worked example of every criterion, computed by hand (numbers in the comments).
    ///
    /// November 2026, judged 24 Nov 12:00. P (province) ← A (department), B (commune, offers
    /// certified copies). Catalog: X online, fee, written result, citizens, departments, decision
    /// and publication on time, complete; Y not online, no fee, businesses, communes, decision and
    /// publication late, incomplete; Z partly online, fee, citizens, departments and communes,
    /// public since 2025, complete. Dossiers:
    /// D1 A·X online, due 5th, completed 4th (2 days), electronic result synced to the personal
    ///    store; synced, paid online, digitised, re-used, VNeID.
    /// D2 A·X direct, due 6th, completed 9th (6 days, late), paper result; synced, fee unpaid
    ///    online, digitised; disliked later.
    /// D3 B·Y online, due 30th, open; not synced; population data.
    /// D4 B·Z direct, due 12th, open (overdue); synced, fee unpaid online, re-used.
    #[test]
    fn worked_example_of_every_criterion() {
        use crate::event::{flag, Channel};
        let registry = Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"department\"}\n",
            "{\"code\":\"B\",\"name\":\"B\",\"parent\":\"P\",\"level\":\"commune\",\"certified_copies\":true}\n",
        ))
        .unwrap();
        let catalog = Catalog::parse(concat!(
            r#"{"code":"X","name":"x","online_level":"full","fee":1000,"needs_written_result":true,"applicant_types":["citizen"],"max_processing_days":3,"levels":["department"],"decision_issued_at":"2026-11-05T09:00:00+07:00","decision_due_at":"2026-11-10T17:00:00+07:00","made_public_at":"2026-11-06T09:00:00+07:00","public_due_at":"2026-11-08T17:00:00+07:00","record_complete":true}"#, "\n",
            r#"{"code":"Y","name":"y","online_level":"none","applicant_types":["business"],"max_processing_days":20,"levels":["commune"],"decision_issued_at":"2026-11-12T09:00:00+07:00","decision_due_at":"2026-11-10T17:00:00+07:00","made_public_at":"2026-11-20T09:00:00+07:00","public_due_at":"2026-11-15T17:00:00+07:00"}"#, "\n",
            r#"{"code":"Z","name":"z","online_level":"partial","fee":5000,"applicant_types":["citizen"],"levels":["department","commune"],"made_public_at":"2025-01-01T09:00:00+07:00","record_complete":true}"#, "\n",
        ))
        .unwrap();
        let t = |s: &str| crate::time::parse_time(s).unwrap();
        let mut state = State::new(t("2026-11-24T12:00:00+07:00"), std::sync::Arc::new(catalog));
        let mut n = 0;
        let mut emit = |dossier: &str,
                        unit: &str,
                        proc: &str,
                        channel: Channel,
                        status: u8,
                        time: &str,
                        due: Option<&str>,
                        flags: u16| {
            n += 1;
            let mut e = event(&format!("e{n}"), dossier, status, time);
            (e.unit_code, e.procedure_code, e.channel, e.flags) = (unit.into(), proc.into(), channel, flags);
            e.due_at = due.map(t);
            state.apply(&e);
        };
        use Channel::{Direct, Online};
        let d1 = flag::SYNCED_TO_PORTAL
            | flag::HAS_FEE
            | flag::PAID_ONLINE
            | flag::DIGITISED
            | flag::REUSED_DATA
            | flag::VNEID;
        emit(
            "D1",
            "A",
            "X",
            Online,
            status::RECEIVED,
            "2026-11-02T08:00:00+07:00",
            Some("2026-11-05T17:00:00+07:00"),
            d1,
        );
        emit("D1", "A", "X", Online, status::COMPLETED, "2026-11-04T08:00:00+07:00", None, 0);
        emit(
            "D1",
            "A",
            "X",
            Online,
            status::RESULT_RETURNED,
            "2026-11-04T10:00:00+07:00",
            None,
            flag::ELECTRONIC_RESULT | flag::PERSONAL_STORE,
        );
        let d2 = flag::SYNCED_TO_PORTAL | flag::HAS_FEE | flag::DIGITISED;
        emit(
            "D2",
            "A",
            "X",
            Direct,
            status::RECEIVED,
            "2026-11-03T08:00:00+07:00",
            Some("2026-11-06T17:00:00+07:00"),
            d2,
        );
        emit("D2", "A", "X", Direct, status::COMPLETED, "2026-11-09T08:00:00+07:00", None, 0);
        emit("D2", "A", "X", Direct, status::RESULT_RETURNED, "2026-11-15T08:00:00+07:00", None, flag::DISLIKED);
        emit(
            "D3",
            "B",
            "Y",
            Online,
            status::RECEIVED,
            "2026-11-10T08:00:00+07:00",
            Some("2026-11-30T17:00:00+07:00"),
            flag::POPULATION_DATA,
        );
        let d4 = flag::SYNCED_TO_PORTAL | flag::HAS_FEE | flag::REUSED_DATA;
        emit(
            "D4",
            "B",
            "Z",
            Direct,
            status::RECEIVED,
            "2026-11-11T08:00:00+07:00",
            Some("2026-11-12T17:00:00+07:00"),
            d4,
        );

        let spec = spec();
        let board = score(&registry, &state, &Default::default(), &spec, 60.0);
        let nov = Period::containing(PeriodKind::Month, t("2026-11-15T00:00:00+07:00"));
        let row = |unit: &str, id: &str| {
            let pos = registry.position(unit).unwrap();
            let s =
                board.criteria().find(|s| s.unit == pos && s.period == nov && CRITERIA[s.criterion].id == id).unwrap();
            (s.numerator, s.denominator, s.points)
        };
        let expected: [(&str, i64, i64, f64); 23] = [
            ("1.1", 1, 2, 3.0),                   // X on time, Y late: 6 × 1/2
            ("1.2", 1, 2, 2.0),                   // made public in Nov: X on time, Y late: 4 × 1/2
            ("1.3", 2, 3, 4.0 / 3.0),             // public now: X, Y, Z; complete X, Z: 2 × 2/3
            ("1.4", 3, 4, 4.5),                   // D3 not synced: 6 × 3/4
            ("2.1", 2, 4, 10.0),                  // D1 on time, D3 open in time; D2 late, D4 overdue
            ("2.2", 691_200, 2, 0.0),             // (2 + 6 days) / 2 completed: shown only
            ("3.1", 2, 3, 2.0 / 0.8 * 2.0 / 3.0), // X, Z online of 3; threshold 0.8
            ("3.2", 1, 2, 2.0),                   // online X, Z apply; only X had an online dossier
            ("3.3", 2, 4, 4.5),                   // D1 (electronic result), D3: 1/2 × 1.4's 3/4 = 0.375 of 0.5
            ("4.1", 2, 2, 2.0),                   // X and Z carry fee data
            ("4.2", 1, 2, 1.25),                  // X paid online, Z not: 0.5 of 0.8
            ("4.3", 1, 3, 2.0),                   // D1 paid online of D1, D2, D4
            ("5.1", 1, 2, 3.0),                   // X needs a written result: D1 electronic, D2 not
            ("5.2", 1, 4, 1.0),                   // D1 only (D2 digitised but paper result for X)
            ("5.3", 1, 1, 2.0),                   // the one commune, B, offers copies: 2 × 1/1
            ("5.4", 2, 4, 1.25),                  // D1, D4 re-use data: 0.5 of 0.8
            ("5.5", 1, 4, 1.0),                   // D1's result in the personal store
            ("5.6", 2, 4, 1.0),                   // D1 VNeID, D3 population data
            ("5.7", 1, 2, 1.0),                   // citizen procedures X, Z; X had VNeID data
            ("6.1", 0, 0, 0.0),                   // no petitions: shown only
            ("6.2", 0, 0, 6.0),                   // no petitions: full points
            ("6.3", 0, 0, 6.0),
            ("6.4", 2, 4, 6.0 * 0.5 / 0.9), // D1, D3 (D2 late and disliked, D4 overdue): 0.5 of 0.9
        ];
        for (id, num, den, points) in expected {
            let (n, d, p) = row("P", id);
            assert_eq!((n, d), (num, den), "P {id}");
            assert!((p - points).abs() < 1e-9, "P {id}: {p} != {points}");
        }
        assert_eq!(row("A", "2.1"), (1, 2, 10.0));
        assert_eq!(row("B", "3.2"), (0, 1, 0.0), "for B only Z applies, with no online dossier");
        assert_eq!(row("B", "1.1"), row("P", "1.1"), "catalog criteria are the root's on every unit");
        let total = board.totals().find(|t| t.unit == 0 && t.period == nov).unwrap();
        assert!((total.total - (59.0 + 5.0 / 6.0)).abs() < 1e-9, "{}", total.total);
        assert_eq!(total.band, "average");
        let groups: Vec<f64> = board.groups().filter(|g| g.unit == 0 && g.period == nov).map(|g| g.points).collect();
        assert_eq!(groups.len(), 6);
        assert!((groups.iter().sum::<f64>() - total.total).abs() < 1e-9);
        // Target 60: 1/6 point short. One more good dossier on 2.1 (3/4 → 15 points) would do;
        // one more procedure published on time would too (1.1: 2/2 → 6).
        let gap =
            |id: &str| board.gaps().find(|g| g.unit == 0 && g.period == nov && CRITERIA[g.criterion].id == id).unwrap();
        assert_eq!(gap("2.1").good_needed, Some(1));
        assert_eq!(gap("1.1").good_needed, Some(1));
        assert_eq!(gap("2.2").good_needed, None);
        assert_eq!(gap("2.1").loss_rank, 1, "2.1 loses 10 points, the most");
    }

    #[test]
    fn a_procedure_with_named_units_counts_only_for_them_and_above() {
        let registry = Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"department\"}\n",
            "{\"code\":\"B\",\"name\":\"B\",\"parent\":\"P\",\"level\":\"department\"}\n",
        ))
        .unwrap();
        let catalog = Catalog::parse(
            r#"{"code":"W","name":"w","online_level":"full","applicant_types":["citizen"],"levels":["department"],"units":["A"]}"#,
        )
        .unwrap();
        let levels = registry.subtree_levels();
        let den = |code: &str| {
            let unit = registry.position(code).unwrap();
            let measured = Measured {
                tally: &Tally::default(),
                petitions: &[(0, 0); 3],
                facts: &HashMap::new(),
                root: &vec![Ratio::default(); CRITERIA.len()],
                catalog: &catalog,
                authority: Authority { registry: &registry, unit, levels: levels[unit] },
            };
            measured.ratio(CRITERIA.iter().position(|c| c.id == "3.2").unwrap()).den
        };
        assert_eq!((den("P"), den("A"), den("B")), (1, 1, 0));
    }
}
