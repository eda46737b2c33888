//! Drop alerts for unit heads: rules from `[alerts]`, evaluated on every published view. A rule
//! compares a unit's total (or a group's points, or its rank among siblings of enough volume) with
//! last month as it stood on the same day of the month, with the same day last week (both from the
//! daily history), with the previous period, or with a target — like with like: a month-to-date
//! figure is never set against a complete month. It judges nothing before day `min_days` of the
//! period, fires past `fire_at` and clears only past `clear_at` (hysteresis), never on fewer than
//! `min_dossiers` dossiers, and not again within `cooldown_mins` of its last firing. Each firing and clearing goes to the alerts topic,
//! an Alertmanager webhook, `GET /api/v1/alerts` and the `alerts` SQL table, with the criteria that
//! lost the points. `tell` keeps the log (in the snapshot store, or shared by elected replicas
//! on Kafka: `election`) before it tells, so a restart neither forgets an active alert nor sends
//! it again.

pub(crate) mod election;
pub mod prometheus_rules;
pub mod restatements;
pub(crate) mod tell;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayAccessor, ArrayRef, Date32Array, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TypedDictionaryArray, UInt32Array, UInt8Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use serde::{Deserialize, Serialize};

use chrono::{Datelike, NaiveDate};
use index766_core::criteria::CRITERIA;
use index766_core::scoring::PeriodScores;
use index766_core::spec::Spec;
use index766_core::time::{format_time, local_date, Instant, Period, PeriodKind};
use index766_core::units::Registry;

use crate::config::alerts::{Condition, Measure, Rule};
use crate::engine::view::View;
use crate::lang::Language;
use crate::persist::history::HistoryTables;

impl Rule {
    /// The compared quantity: points (or places) lost against the baseline, or the value itself.
    fn gauge(&self, now: &Figures, before: &Figures) -> f64 {
        match self.when {
            Condition::DropVsPreviousPeriod | Condition::DropVsLastWeek | Condition::DropVsSamePointLastPeriod => {
                self.value(before) - self.value(now)
            }
            Condition::BelowTarget => self.value(now),
            Condition::RankLoss | Condition::RankLossVsSamePointLastPeriod => now.rank as f64 - before.rank as f64,
        }
    }

    fn fires(&self, gauge: f64) -> bool {
        if self.when.fires_low() {
            gauge < self.fire_at
        } else {
            gauge >= self.fire_at
        }
    }

    fn clears(&self, gauge: f64) -> bool {
        if self.when.fires_low() {
            gauge >= self.clear_at
        } else {
            gauge < self.clear_at
        }
    }

    fn value(&self, f: &Figures) -> f64 {
        match self.when {
            when if when.ranks() => f.rank as f64,
            _ => match self.measure {
                Measure::Total => f.total,
                Measure::Group(g) => f.groups.get(&g).copied().unwrap_or(0.0),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// A criterion that lost points between the baseline and now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub criterion: String,
    pub name: String,
    pub before: f64,
    pub after: f64,
    pub change: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>/<unit>/<fired_at as unix seconds>`: unique, stable across restarts.
    pub id: String,
    pub rule: String,
    pub condition: Condition,
    pub unit_code: String,
    pub unit_name: String,
    pub measure: String,
    pub period_kind: String,
    pub period: String,
    pub state: AlertState,
    /// The baseline's value (previous period or same day last week; a rank for rank_loss).
    pub before: f64,
    /// The value when the alert fired (or cleared).
    pub after: f64,
    pub change: f64,
    pub fire_at: f64,
    pub clear_at: f64,
    /// Dossiers behind the figure (the largest denominator of the unit's criteria).
    pub dossiers: i64,
    pub causes: Vec<Cause>,
    pub summary: String,
    pub fired_at: String,
    pub resolved_at: Option<String>,
}

impl Alert {
    fn key(&self) -> (&str, &str) {
        (&self.rule, &self.unit_code)
    }
}

/// A unit's figures in one period: what rules compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub unit_name: String,
    /// The parent unit's code (empty for a root): ranks are among siblings.
    pub parent: String,
    pub depth: u32,
    pub period: String,
    pub total: f64,
    pub rank: u32,
    /// Points per group id.
    pub groups: BTreeMap<u8, f64>,
    /// (criterion, English name, points)
    pub criteria: Vec<(String, String, f64)>,
    pub dossiers: i64,
}

/// Figures by (unit code, period kind).
pub(crate) type FigureMap = HashMap<(String, String), Figures>;

/// What rules compare the current figures with.
#[derive(Debug, Default)]
pub(crate) struct Baselines {
    /// The periods just before the current ones, complete.
    pub previous: FigureMap,
    /// The same day last week (the daily history; empty if not kept).
    pub last_week: FigureMap,
    /// Last month as it stood on the same day of the month (the daily history; empty if not kept).
    pub same_point: FigureMap,
}

/// A change of an alert, to be told to every channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Fired(Alert),
    Resolved(Alert),
}

/// The rules and the alert log: a pure state machine over the figures it is shown.
pub(crate) struct AlertEngine {
    rules: Vec<Rule>,
    keep_resolved: usize,
    /// Firing alerts first, then resolved ones, newest first.
    log: Vec<Alert>,
    /// What alert texts are written in.
    language: Language,
}

impl AlertEngine {
    pub fn new(rules: Vec<Rule>, keep_resolved: usize, log: Vec<Alert>) -> AlertEngine {
        AlertEngine { rules, keep_resolved, log, language: Language::default() }
    }

    /// Writes the alerts' texts in `language`.
    pub(crate) fn speaking(self, language: Language) -> AlertEngine {
        AlertEngine { language, ..self }
    }

    pub(crate) fn language(&self) -> Language {
        self.language
    }

    pub fn log(&self) -> &[Alert] {
        &self.log
    }

    /// Takes the log as another sender kept it (elected replicas share one).
    pub(crate) fn replace_log(&mut self, log: Vec<Alert>) {
        self.log = log;
    }

    /// The days of the daily history the rules compare with at `now`: (last week's, last
    /// month's same point), each None if no rule needs it.
    pub(crate) fn history_days(&self, now: Instant) -> (Option<NaiveDate>, Option<NaiveDate>) {
        let needs = |f: &dyn Fn(Condition) -> bool| self.rules.iter().any(|r| f(r.when));
        (
            needs(&|c| c == Condition::DropVsLastWeek).then(|| local_date(now) - chrono::Duration::days(7)),
            needs(&Condition::same_point).then(|| same_day_last_month(local_date(now))),
        )
    }

    pub(crate) fn max_depth(&self) -> u32 {
        self.rules.iter().map(|r| r.max_depth).max().unwrap_or(0)
    }

    /// Judges every rule for every unit it covers at instant `now`: the `current` figures
    /// against their `baselines`.
    pub(crate) fn evaluate(&mut self, now: Instant, current: &FigureMap, baselines: &Baselines) -> Vec<Transition> {
        let mut changes = Vec::new();
        let mut units: Vec<&(String, String)> = current.keys().collect();
        units.sort();
        let previous_month = Period::containing(PeriodKind::Month, now).previous().to_string();
        for rule in &self.rules {
            if day_of_period(rule.period, now) < rule.min_days {
                continue;
            }
            let (current, compared): (Cow<FigureMap>, Cow<FigureMap>) = match rule.when {
                Condition::DropVsLastWeek => (Cow::Borrowed(current), Cow::Borrowed(&baselines.last_week)),
                Condition::DropVsSamePointLastPeriod => (Cow::Borrowed(current), Cow::Borrowed(&baselines.same_point)),
                Condition::RankLossVsSamePointLastPeriod => (
                    Cow::Owned(ranked_among_peers(current, rule.min_dossiers)),
                    Cow::Owned(ranked_among_peers(&baselines.same_point, rule.min_dossiers)),
                ),
                Condition::DropVsPreviousPeriod | Condition::RankLoss | Condition::BelowTarget => {
                    (Cow::Borrowed(current), Cow::Borrowed(&baselines.previous))
                }
            };
            for key in units.iter().filter(|(_, kind)| kind == rule.period.as_str()) {
                let Some(figures) = current.get(*key) else { continue };
                if figures.depth > rule.max_depth {
                    continue;
                }
                let before = match (compared.get(*key), rule.when) {
                    // A target needs no baseline: "before" is only shown, the figure itself if none.
                    (baseline, Condition::BelowTarget) => baseline.unwrap_or(figures),
                    // A baseline is a figure too: behind fewer than min_dossiers dossiers (a
                    // period without data, where every unit ties first) it proves nothing; last
                    // week's of another period (the month rolled over) is no baseline, nor is a
                    // same point of another month than the last.
                    (Some(b), when)
                        if b.dossiers >= rule.min_dossiers
                            && (when != Condition::DropVsLastWeek || b.period == figures.period)
                            && (!when.same_point() || b.period == previous_month) =>
                    {
                        b
                    }
                    _ => continue,
                };
                let gauge = rule.gauge(figures, before);
                let active =
                    self.log.iter().position(|a| a.state == AlertState::Firing && a.key() == (&rule.name, &key.0));
                match active {
                    Some(i) if rule.clears(gauge) => changes.push(Transition::Resolved(resolve(&mut self.log[i], now))),
                    Some(_) => {}
                    None if rule.fires(gauge)
                        && figures.dossiers >= rule.min_dossiers
                        && !self.cooling(rule, &key.0, now) =>
                    {
                        let alert = fire(rule, &key.0, figures, before, now, self.language);
                        changes.push(Transition::Fired(alert.clone()));
                        self.log.push(alert);
                    }
                    None => {}
                }
            }
        }
        // A firing alert whose rule is gone from the config, whose unit is no longer in the
        // rule's reach (removed from the registry, below a lowered max_depth), or whose period
        // has closed (a new month is not judged before its min_days) can never clear by its
        // rule: it is resolved rather than left firing for ever.
        for alert in self.log.iter_mut().filter(|a| a.state == AlertState::Firing) {
            let in_reach = self.rules.iter().find(|r| r.name == alert.rule).is_some_and(|rule| {
                current
                    .get(&(alert.unit_code.clone(), alert.period_kind.clone()))
                    .is_some_and(|f| f.depth <= rule.max_depth && f.period == alert.period)
            });
            if !in_reach {
                changes.push(Transition::Resolved(resolve(alert, now)));
            }
        }
        if !changes.is_empty() {
            self.tidy();
        }
        changes
    }

    /// Whether the rule fired for this unit less than its cooldown ago.
    fn cooling(&self, rule: &Rule, unit: &str, now: Instant) -> bool {
        self.log
            .iter()
            .filter(|a| a.key() == (&rule.name, unit))
            .any(|a| index766_core::time::parse_time(&a.fired_at).is_ok_and(|fired| now - fired < rule.cooldown_secs))
    }

    /// Firing first, then the newest resolved, at most `keep_resolved` of them.
    fn tidy(&mut self) {
        self.log.sort_by(|a, b| {
            (a.state == AlertState::Resolved, std::cmp::Reverse(&a.fired_at), &a.id).cmp(&(
                b.state == AlertState::Resolved,
                std::cmp::Reverse(&b.fired_at),
                &b.id,
            ))
        });
        let firing = self.log.iter().filter(|a| a.state == AlertState::Firing).count();
        self.log.truncate(firing + self.keep_resolved);
    }
}

/// Which day of its period `now` falls on (1 for the first), in Vietnam.
fn day_of_period(kind: PeriodKind, now: Instant) -> u32 {
    let start = local_date(Period::containing(kind, now).start());
    (local_date(now) - start).num_days() as u32 + 1
}

/// The same day of the month before (its last day when it is shorter: 31 March → 28 February).
pub(crate) fn same_day_last_month(day: NaiveDate) -> NaiveDate {
    let first_of_month = day.with_day(1).expect("every month has a first day");
    let last_month_end = first_of_month - chrono::Duration::days(1);
    last_month_end.with_day(day.day()).unwrap_or(last_month_end)
}

/// The figures with each unit ranked by total among its siblings of at least `min_dossiers`
/// dossiers (1 + how many score more), and those of fewer dossiers left out: a commune with a
/// handful of dossiers jumps twenty places on one late dossier, which says nothing of the others.
fn ranked_among_peers(figures: &FigureMap, min_dossiers: i64) -> FigureMap {
    let ranked: FigureMap =
        figures.iter().filter(|(_, f)| f.dossiers >= min_dossiers).map(|(k, f)| (k.clone(), f.clone())).collect();
    let mut peers: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    for ((_, kind), f) in &ranked {
        peers.entry((f.parent.as_str(), kind.as_str())).or_default().push(f.total);
    }
    let mut out = ranked.clone();
    for ((_, kind), f) in out.iter_mut() {
        let totals = &peers[&(f.parent.as_str(), kind.as_str())];
        f.rank = 1 + totals.iter().filter(|&&t| t > f.total).count() as u32;
    }
    out
}

fn resolve(alert: &mut Alert, now: Instant) -> Alert {
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(format_time(now));
    alert.clone()
}

fn fire(rule: &Rule, unit: &str, now_figures: &Figures, before: &Figures, now: Instant, language: Language) -> Alert {
    let (b, a) = (rule.value(before), rule.value(now_figures));
    let in_measure = |criterion: &str| match rule.measure {
        Measure::Group(g) => criterion.starts_with(&format!("{g}.")),
        Measure::Total => true,
    };
    let mut causes: Vec<Cause> = now_figures
        .criteria
        .iter()
        .filter(|(c, _, _)| in_measure(c))
        .filter_map(|(criterion, name, after)| {
            let (_, _, before) = before.criteria.iter().find(|(c, _, _)| c == criterion)?;
            (after < before).then(|| Cause {
                criterion: criterion.clone(),
                name: name.clone(),
                before: *before,
                after: *after,
                change: after - before,
            })
        })
        .collect();
    causes.sort_by(|x, y| x.change.total_cmp(&y.change).then_with(|| x.criterion.cmp(&y.criterion)));
    causes.truncate(5);
    let baseline = language.say(
        match rule.when {
            Condition::DropVsLastWeek => "alert.last_week",
            Condition::DropVsSamePointLastPeriod | Condition::RankLossVsSamePointLastPeriod => "alert.same_point",
            _ => "alert.previous_period",
        },
        &[],
    );
    let measure = match rule.measure {
        Measure::Total => language.say("alert.total", &[]),
        Measure::Group(g) => language.say("alert.group", &[("group", &g.to_string())]),
    };
    let points = |x: f64| language.number(x, 2);
    let unit_name = now_figures.unit_name.as_str();
    let summary = match rule.when {
        Condition::RankLoss | Condition::RankLossVsSamePointLastPeriod => language.say(
            "alert.rank_loss",
            &[("unit", unit_name), ("before", &b.to_string()), ("after", &a.to_string()), ("baseline", &baseline)],
        ),
        Condition::BelowTarget => language.say(
            "alert.below_target",
            &[("unit", unit_name), ("measure", &measure), ("after", &points(a)), ("target", &points(rule.fire_at))],
        ),
        _ => language.say(
            "alert.drop",
            &[
                ("unit", unit_name),
                ("measure", &measure),
                ("lost", &points(b - a)),
                ("baseline", &baseline),
                ("before", &points(b)),
                ("after", &points(a)),
            ],
        ),
    };
    let what = rule.measure.label();
    Alert {
        id: format!("{}/{unit}/{now}", rule.name),
        rule: rule.name.clone(),
        condition: rule.when,
        unit_code: unit.to_owned(),
        unit_name: now_figures.unit_name.clone(),
        measure: what,
        period_kind: rule.period.as_str().to_owned(),
        period: now_figures.period.clone(),
        state: AlertState::Firing,
        before: b,
        after: a,
        change: a - b,
        fire_at: rule.fire_at,
        clear_at: rule.clear_at,
        dossiers: now_figures.dossiers,
        causes,
        summary,
        fired_at: format_time(now),
        resolved_at: None,
    }
}

/// Reads figures out of the score tables of a day of history: rows of `totals`,
/// `group_scores` and `scores` that `keep` selects, for units down to `max_depth`. A batch
/// without the expected columns (history kept under an older layout) is left out.
pub fn figures(
    totals: &[RecordBatch],
    groups: &[RecordBatch],
    scores: &[RecordBatch],
    max_depth: u32,
    keep: &dyn Fn(&RecordBatch, usize) -> bool,
) -> FigureMap {
    let mut map = FigureMap::new();
    let key = |b: &RecordBatch, i: usize| {
        let text = |name| text(b, name).map_or(String::new(), |c| c.value(i).to_owned());
        (text("unit_code"), text("period_kind"))
    };
    for (b, i) in selected_rows(totals, max_depth, keep) {
        let parent = text(b, "parent_code").map_or(String::new(), |c| c.value(i).to_owned());
        let (Some(name), Some(depth), Some(period), Some(total), Some(rank)) = (
            text(b, "unit_name"),
            column::<UInt32Array>(b, "depth"),
            text(b, "period"),
            column::<Float64Array>(b, "total"),
            column::<UInt32Array>(b, "rank"),
        ) else {
            continue;
        };
        let f = map.entry(key(b, i)).or_default();
        (f.unit_name, f.depth, f.period) = (name.value(i).to_owned(), depth.value(i), period.value(i).to_owned());
        f.parent = parent;
        (f.total, f.rank) = (total.value(i), rank.value(i));
    }
    for (b, i) in selected_rows(groups, max_depth, keep) {
        let (Some(group), Some(points)) = (column::<UInt8Array>(b, "group_id"), column::<Float64Array>(b, "points"))
        else {
            continue;
        };
        if let Some(f) = map.get_mut(&key(b, i)) {
            f.groups.insert(group.value(i), points.value(i));
        }
    }
    for (b, i) in selected_rows(scores, max_depth, keep) {
        let (Some(criterion), Some(name), Some(points), Some(denominator)) = (
            text(b, "criterion"),
            text(b, "criterion_name_en"),
            column::<Float64Array>(b, "points"),
            column::<Int64Array>(b, "denominator"),
        ) else {
            continue;
        };
        if let Some(f) = map.get_mut(&key(b, i)) {
            f.criteria.push((criterion.value(i).to_owned(), name.value(i).to_owned(), points.value(i)));
            f.dossiers = f.dossiers.max(denominator.value(i));
        }
    }
    map
}

/// The rows of `batches` down to `max_depth` that `keep` selects; batches without the key
/// columns are left out.
fn selected_rows<'a>(
    batches: &'a [RecordBatch],
    max_depth: u32,
    keep: &dyn Fn(&RecordBatch, usize) -> bool,
) -> Vec<(&'a RecordBatch, usize)> {
    let mut rows = Vec::new();
    for b in batches {
        let (Some(depth), Some(_), Some(_)) =
            (column::<UInt32Array>(b, "depth"), text(b, "unit_code"), text(b, "period_kind"))
        else {
            continue;
        };
        rows.extend((0..b.num_rows()).filter(|&i| depth.value(i) <= max_depth && keep(b, i)).map(|i| (b, i)));
    }
    rows
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>())
}

/// A text column, plain or with its repeated values stored once (as the view's are; history
/// written before that has plain text).
enum Text<'a> {
    Plain(&'a StringArray),
    Repeated(TypedDictionaryArray<'a, Int32Type, StringArray>),
}

impl<'a> Text<'a> {
    /// The text in row `i`, empty for a null (a root's parent), whose slot may hold any value.
    fn value(&self, i: usize) -> &'a str {
        match self {
            Text::Plain(strings) if strings.is_null(i) => "",
            Text::Plain(strings) => strings.value(i),
            Text::Repeated(repeated) if repeated.keys().is_null(i) => "",
            Text::Repeated(repeated) => repeated.value(i),
        }
    }
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Option<Text<'a>> {
    let c = batch.column_by_name(name)?;
    if let Some(strings) = c.as_any().downcast_ref::<StringArray>() {
        return Some(Text::Plain(strings));
    }
    let repeated = c.as_any().downcast_ref::<DictionaryArray<Int32Type>>()?;
    Some(Text::Repeated(repeated.downcast_dict::<StringArray>()?))
}

/// The figures of a view, from its typed scoreboard: its current periods, and the periods just
/// before them.
/// Criteria are named in `language`.
pub(crate) fn view_figures(view: &View, spec: &Spec, max_depth: u32, language: Language) -> (FigureMap, FigureMap) {
    let previous: Vec<Period> = PeriodKind::ALL.iter().map(|&k| Period::containing(k, view.as_of).previous()).collect();
    let board = &view.scoreboard;
    let of = |keep: &dyn Fn(&PeriodScores) -> bool| {
        let mut map = FigureMap::new();
        for scores in board.periods.iter().filter(|p| keep(p)) {
            add_figures(&mut map, &view.registry, spec, scores, max_depth, language);
        }
        map
    };
    (of(&|p| p.current), of(&|p| previous.contains(&p.period)))
}

/// Adds one period's figures of the units down to `max_depth`.
fn add_figures(
    map: &mut FigureMap,
    registry: &Registry,
    spec: &Spec,
    scores: &PeriodScores,
    max_depth: u32,
    language: Language,
) {
    let in_force = spec.for_period(scores.period);
    let kind = scores.period.kind.as_str();
    let key = |unit: usize| (registry.units()[unit].code.clone(), kind.to_owned());
    let within = |unit: usize| registry.depth_of(unit) <= max_depth;
    for t in scores.totals.iter().filter(|t| within(t.unit)) {
        let f = map.entry(key(t.unit)).or_default();
        f.unit_name.clone_from(&registry.units()[t.unit].name);
        f.parent = registry.units()[t.unit].parent.clone().unwrap_or_default();
        (f.depth, f.period) = (registry.depth_of(t.unit), scores.period.to_string());
        (f.total, f.rank) = (t.total, t.rank);
    }
    for g in scores.groups.iter().filter(|g| within(g.unit)) {
        if let Some(f) = map.get_mut(&key(g.unit)) {
            f.groups.insert(g.group, g.points);
        }
    }
    for c in scores.criteria.iter().filter(|c| within(c.unit)) {
        let Some(f) = map.get_mut(&key(c.unit)) else { continue };
        let name = in_force.iter().find(|e| e.index == c.criterion).map_or("", |e| match language {
            Language::Vi => e.name_vi.as_str(),
            Language::En => e.name_en.as_str(),
        });
        f.criteria.push((CRITERIA[c.criterion].id.to_owned(), name.to_owned(), c.points));
        f.dossiers = f.dossiers.max(c.denominator);
    }
}

/// The figures the daily history kept for `day` (the last snapshot of that day).
pub(crate) fn figures_on(history: &HistoryTables, day: NaiveDate, max_depth: u32) -> FigureMap {
    let days_since_epoch = (day - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    let table = |name: &str| history.iter().find(|(n, _)| *n == name).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
    let on_day =
        |b: &RecordBatch, i: usize| column::<Date32Array>(b, "day").is_some_and(|c| c.value(i) == days_since_epoch);
    figures(table("daily_totals"), table("daily_group_scores"), table("daily_scores"), max_depth, &on_day)
}

/// The alert log as the `alerts` SQL table.
pub fn table(log: &[Alert]) -> RecordBatch {
    let text =
        |f: &dyn Fn(&Alert) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(log.iter().map(f))) };
    let float = |f: &dyn Fn(&Alert) -> f64| -> ArrayRef { Arc::new(Float64Array::from_iter_values(log.iter().map(f))) };
    let field = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    let causes =
        |a: &Alert| a.causes.iter().map(|c| format!("{} {:+.2}", c.criterion, c.change)).collect::<Vec<_>>().join(", ");
    let schema = Schema::new(vec![
        field("id", DataType::Utf8, false),
        field("rule", DataType::Utf8, false),
        field("condition", DataType::Utf8, false),
        field("unit_code", DataType::Utf8, false),
        field("unit_name", DataType::Utf8, false),
        field("measure", DataType::Utf8, false),
        field("period_kind", DataType::Utf8, false),
        field("period", DataType::Utf8, false),
        field("state", DataType::Utf8, false),
        field("before", DataType::Float64, false),
        field("after", DataType::Float64, false),
        field("change", DataType::Float64, false),
        field("dossiers", DataType::Int64, false),
        field("causes", DataType::Utf8, false),
        field("summary", DataType::Utf8, false),
        field("fired_at", DataType::Utf8, false),
        field("resolved_at", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        text(&|a| a.id.clone()),
        text(&|a| a.rule.clone()),
        text(&|a| a.condition.as_str().to_owned()),
        text(&|a| a.unit_code.clone()),
        text(&|a| a.unit_name.clone()),
        text(&|a| a.measure.clone()),
        text(&|a| a.period_kind.clone()),
        text(&|a| a.period.clone()),
        text(&|a| if a.state == AlertState::Firing { "firing".into() } else { "resolved".into() }),
        float(&|a| a.before),
        float(&|a| a.after),
        float(&|a| a.change),
        Arc::new(Int64Array::from_iter_values(log.iter().map(|a| a.dossiers))),
        text(&causes),
        text(&|a| a.summary.clone()),
        text(&|a| a.fired_at.clone()),
        Arc::new(StringArray::from(log.iter().map(|a| a.resolved_at.clone()).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match their schema")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::alerts::RuleConfig;

    fn rule(when: Condition, fire_at: f64, clear_at: f64) -> Rule {
        Rule::from_config(
            &RuleConfig {
                name: "r".into(),
                when,
                measure: "total".into(),
                period: "month".into(),
                fire_at,
                clear_at,
                min_dossiers: 20,
                cooldown_mins: 60,
                max_depth: 1,
                min_days: 7,
            },
            &Spec::shipped(),
        )
        .unwrap()
    }

    /// The live figures come from the typed scoreboard, last week's from the history's Arrow
    /// tables: read from the same view, both must agree, or a drop against last week would be
    /// a difference in reading rather than in scores.
    #[test]
    fn the_scoreboard_and_its_tables_give_the_same_figures() {
        use datafusion::arrow::array::BooleanArray;
        use index766_core::event::status;
        use index766_core::fixtures::{event, province_and_department, reception, state_at};
        let registry = province_and_department();
        let mut state = state_at("2026-11-20T00:00:00+07:00");
        for (n, (month, done)) in [("10", "2026-10-06"), ("11", "2026-11-09"), ("11", "2026-11-03")].iter().enumerate()
        {
            let id = format!("D{n}");
            let mut r = reception(
                &format!("r{n}"),
                &id,
                &format!("2026-{month}-02T08:00:00+07:00"),
                &format!("2026-{month}-04T17:00:00+07:00"),
            );
            r.unit_code = "A".into();
            let mut c = event(&format!("c{n}"), &id, status::COMPLETED, &format!("{done}T08:00:00+07:00"));
            c.unit_code = "A".into();
            state.apply(&r);
            state.apply(&c);
        }
        let spec = Spec::shipped();
        let view = View::build(registry, &spec, 80.0, &state, &Default::default());
        let (current, previous) = view_figures(&view, &spec, 1, Language::En);
        let tables = |name| view.table(name);
        let is_current =
            |b: &RecordBatch, i: usize| column::<BooleanArray>(b, "is_current").is_some_and(|c| c.value(i));
        let read = figures(tables("totals"), tables("group_scores"), tables("scores"), 1, &is_current);
        assert_eq!(current.len(), 8, "two units, four period kinds");
        assert_eq!(current, read);
        let october = |b: &RecordBatch, i: usize| text(b, "period").is_some_and(|c| c.value(i) == "2026-10");
        let month = |m: &FigureMap| m[&("A".to_owned(), "month".to_owned())].clone();
        let read = figures(tables("totals"), tables("group_scores"), tables("scores"), 1, &october);
        assert_eq!(month(&previous), month(&read));
        assert_eq!(month(&current).groups.len(), 6);
        assert!(
            month(&current).total > month(&previous).total,
            "October's one dossier was late, November has one on time"
        );
    }

    /// Baselines of the previous period only.
    fn previous(map: &FigureMap) -> Baselines {
        Baselines { previous: map.clone(), ..Default::default() }
    }

    fn unit(total: f64, dossiers: i64) -> FigureMap {
        let criteria = vec![
            ("2.1".to_owned(), "On time".to_owned(), total / 5.0),
            ("6.1".to_owned(), "Satisfaction".to_owned(), 8.0),
        ];
        let f = Figures {
            unit_name: "Sở Tư pháp".into(),
            period: "2026-11".into(),
            total,
            rank: 1,
            criteria,
            dossiers,
            ..Default::default()
        };
        FigureMap::from([(("H99.03".to_owned(), "month".to_owned()), f)])
    }

    #[test]
    fn a_drop_fires_once_holds_through_the_band_and_clears_past_it() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new());
        let before = unit(80.0, 100);
        let at = |minutes: i64| 1_800_000_000 + minutes * 60;
        assert!(engine.evaluate(at(0), &unit(77.0, 100), &previous(&before)).is_empty(), "3 points: no alert");
        let fired = engine.evaluate(at(1), &unit(74.0, 100), &previous(&before));
        let [Transition::Fired(alert)] = fired.as_slice() else { panic!("{fired:?}") };
        assert_eq!((alert.before, alert.after, alert.change), (80.0, 74.0, -6.0));
        assert_eq!(alert.causes.len(), 1, "only 2.1 lost points: {:?}", alert.causes);
        assert_eq!(alert.causes[0].criterion, "2.1");
        assert!(engine.evaluate(at(2), &unit(73.0, 100), &previous(&before)).is_empty(), "still firing: not again");
        let cleared = engine.evaluate(at(3), &unit(78.5, 100), &previous(&before));
        assert!(matches!(cleared.as_slice(), [Transition::Resolved(_)]), "1.5 lost is under clear_at: {cleared:?}");
    }

    /// Summaries in Vietnamese by default, in English by choice, numbers each language's way;
    /// Alertmanager's annotations alike.
    #[test]
    fn alert_texts_speak_the_configured_language() {
        let fired = |language| {
            let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new())
                .speaking(language);
            let changes = engine.evaluate(1_800_000_000, &unit(74.5, 100), &previous(&unit(80.0, 100)));
            let [Transition::Fired(alert)] = changes.as_slice() else { panic!("{changes:?}") };
            alert.clone()
        };
        let vi = fired(Language::default());
        assert_eq!(vi.summary, "Sở Tư pháp: tổng điểm giảm 5,50 điểm so với kỳ trước (80,00 → 74,50)");
        let annotations = &tell::alertmanager_json(&vi, Duration::from_secs(60), 0, Language::Vi)["annotations"];
        assert_eq!((annotations["before"].as_str(), annotations["after"].as_str()), (Some("80,00"), Some("74,50")));
        assert!(annotations["causes"].as_str().unwrap().ends_with("-1,10"), "{annotations}");
        let en = fired(Language::En);
        assert_eq!(en.summary, "Sở Tư pháp: total fell 5.50 points against the previous period (80.00 → 74.50)");
    }

    #[test]
    fn hysteresis_volume_and_cooldown() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new());
        let before = unit(80.0, 100);
        let at = |minutes: i64| 1_800_000_000 + minutes * 60;
        assert!(
            engine.evaluate(at(0), &unit(70.0, 19), &previous(&before)).is_empty(),
            "19 dossiers: under the volume guard"
        );
        assert_eq!(engine.evaluate(at(1), &unit(70.0, 20), &previous(&before)).len(), 1);
        assert!(
            engine.evaluate(at(2), &unit(77.5, 20), &previous(&before)).is_empty(),
            "2.5 lost: inside the band, holds"
        );
        let cleared = engine.evaluate(at(3), &unit(78.5, 20), &previous(&before));
        assert!(matches!(cleared.as_slice(), [Transition::Resolved(a)] if a.resolved_at.is_some()), "{cleared:?}");
        assert!(
            engine.evaluate(at(30), &unit(70.0, 20), &previous(&before)).is_empty(),
            "within the 60-minute cooldown"
        );
        assert_eq!(engine.evaluate(at(62), &unit(70.0, 20), &previous(&before)).len(), 1, "after the cooldown");
        assert_eq!(engine.log().len(), 2);
        assert_eq!(engine.log()[0].state, AlertState::Firing, "firing first");
    }

    #[test]
    fn below_target_and_rank_loss() {
        let mut below = AlertEngine::new(vec![rule(Condition::BelowTarget, 75.0, 76.0)], 10, Vec::new());
        let now = 1_800_000_000;
        assert_eq!(below.evaluate(now, &unit(74.9, 50), &previous(&unit(80.0, 50))).len(), 1);
        assert!(below.evaluate(now, &unit(75.5, 50), &previous(&unit(80.0, 50))).is_empty());
        assert_eq!(below.evaluate(now, &unit(76.0, 50), &previous(&unit(80.0, 50))).len(), 1);
    }

    /// Siblings of one province: (code, total, dossiers) in `period`.
    /// A month's alert does not outlive it: the next month is not judged before min_days, so
    /// nothing else would ever clear it.
    #[test]
    fn an_alert_still_firing_when_its_month_closes_is_resolved() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new());
        let november_20 = index766_core::time::parse_time("2026-11-20T09:00:00+07:00").unwrap();
        assert_eq!(engine.evaluate(november_20, &unit(70.0, 50), &previous(&unit(80.0, 50))).len(), 1);
        let mut december = unit(60.0, 50);
        december.values_mut().for_each(|f| f.period = "2026-12".into());
        let december_2 = index766_core::time::parse_time("2026-12-02T09:00:00+07:00").unwrap();
        let changes = engine.evaluate(december_2, &december, &previous(&unit(70.0, 50)));
        assert!(matches!(changes.as_slice(), [Transition::Resolved(a)] if a.period == "2026-11"), "{changes:?}");
    }

    fn siblings(period: &str, units: &[(&str, f64, i64)]) -> FigureMap {
        let figures = |&(code, total, dossiers): &(&str, f64, i64)| {
            let f = Figures {
                unit_name: code.into(),
                parent: "H99".into(),
                depth: 1,
                period: period.into(),
                total,
                dossiers,
                ..Default::default()
            };
            ((code.to_owned(), "month".to_owned()), f)
        };
        units.iter().map(figures).collect()
    }

    /// Ranks are taken among the siblings with the rule's volume, against last month at the
    /// same day: a unit of a handful of dossiers neither moves nor is moved.
    #[test]
    fn rank_loss_ranks_only_peers_of_enough_volume_against_the_same_point() {
        let now = 1_800_000_000; // 15 January 2027
        let mut rank = AlertEngine::new(vec![rule(Condition::RankLossVsSamePointLastPeriod, 3.0, 1.0)], 10, Vec::new());
        let last_month =
            siblings("2026-12", &[("A", 90.0, 50), ("B", 85.0, 50), ("C", 80.0, 50), ("D", 75.0, 50), ("E", 70.0, 50)]);
        let same_point = |m: &FigureMap| Baselines { same_point: m.clone(), ..Default::default() };
        // A fell behind four peers, and three tiny units scored above it too: fourth of five
        // peers it is not, fifth of five is a fall of four places, not seven.
        let now_figures = siblings(
            "2027-01",
            &[
                ("A", 60.0, 50),
                ("B", 85.0, 50),
                ("C", 80.0, 50),
                ("D", 75.0, 50),
                ("E", 70.0, 50),
                ("t1", 99.0, 3),
                ("t2", 98.0, 3),
                ("t3", 97.0, 3),
            ],
        );
        let fired = rank.evaluate(now, &now_figures, &same_point(&last_month));
        let [Transition::Fired(a)] = fired.as_slice() else { panic!("{fired:?}") };
        assert_eq!((a.unit_code.as_str(), a.before, a.after), ("A", 1.0, 5.0));
        // The complete previous period is not its baseline.
        let mut rank = AlertEngine::new(vec![rule(Condition::RankLossVsSamePointLastPeriod, 3.0, 1.0)], 10, Vec::new());
        assert!(rank.evaluate(now, &now_figures, &previous(&last_month)).is_empty());
        // rank_loss keeps the view's ranks (among all siblings) against the previous period's.
        let mut old = AlertEngine::new(vec![rule(Condition::RankLoss, 3.0, 1.0)], 10, Vec::new());
        let mut ranked = now_figures.clone();
        ranked.values_mut().for_each(|f| f.rank = 5);
        let fired = old.evaluate(now, &ranked, &previous(&last_month));
        assert_eq!(fired.len(), 5, "{fired:?}");
        // A same point of an older month is no baseline.
        assert!(rank
            .evaluate(
                now,
                &now_figures,
                &same_point(&siblings(
                    "2026-11",
                    &[("A", 90.0, 50), ("B", 85.0, 50), ("C", 80.0, 50), ("D", 75.0, 50), ("E", 70.0, 50)]
                ))
            )
            .is_empty());
    }

    #[test]
    fn the_same_point_compares_month_to_date_and_waits_for_min_days() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsSamePointLastPeriod, 5.0, 2.0)], 10, Vec::new());
        let last_month = siblings("2026-12", &[("A", 80.0, 50)]);
        let baselines = Baselines {
            same_point: last_month,
            previous: siblings("2026-12", &[("A", 95.0, 50)]),
            ..Default::default()
        };
        let day = |d: i64| index766_core::time::parse_time(&format!("2027-01-{d:02}T10:00:00+07:00")).unwrap();
        assert!(
            engine.evaluate(day(6), &siblings("2027-01", &[("A", 70.0, 50)]), &baselines).is_empty(),
            "day 6 < min_days 7"
        );
        assert!(
            engine.evaluate(day(7), &siblings("2027-01", &[("A", 76.0, 50)]), &baselines).is_empty(),
            "4 points under the same point (19 under the complete month)"
        );
        let fired = engine.evaluate(day(8), &siblings("2027-01", &[("A", 74.0, 50)]), &baselines);
        let [Transition::Fired(a)] = fired.as_slice() else { panic!("{fired:?}") };
        assert_eq!((a.before, a.after), (80.0, 74.0));
        assert!(a.summary.contains("cùng thời điểm tháng trước"), "{}", a.summary);
    }

    #[test]
    fn the_same_day_last_month_is_clamped_to_its_end() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(same_day_last_month(d(2026, 11, 15)), d(2026, 10, 15));
        assert_eq!(same_day_last_month(d(2026, 3, 31)), d(2026, 2, 28));
        assert_eq!(same_day_last_month(d(2027, 1, 3)), d(2026, 12, 3));
    }

    #[test]
    fn an_alert_out_of_its_rules_reach_is_resolved_and_targets_need_no_baseline() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new());
        let now = 1_800_000_000;
        assert_eq!(engine.evaluate(now, &unit(70.0, 50), &previous(&unit(80.0, 50))).len(), 1);
        // The unit left the registry: nothing to judge it by any more.
        let gone = engine.evaluate(now + 60, &FigureMap::new(), &previous(&FigureMap::new()));
        assert!(matches!(gone.as_slice(), [Transition::Resolved(_)]), "{gone:?}");
        // The rule was removed from the config.
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsPreviousPeriod, 5.0, 2.0)], 10, Vec::new());
        engine.evaluate(now, &unit(70.0, 50), &previous(&unit(80.0, 50)));
        let mut restarted = AlertEngine::new(Vec::new(), 10, engine.log().to_vec());
        assert_eq!(restarted.evaluate(now + 60, &unit(70.0, 50), &previous(&unit(80.0, 50))).len(), 1);
        assert!(restarted.log().iter().all(|a| a.state == AlertState::Resolved));
        // Below target in a unit's first period: no previous period, still judged.
        let mut below = AlertEngine::new(vec![rule(Condition::BelowTarget, 75.0, 76.0)], 10, Vec::new());
        assert_eq!(below.evaluate(now, &unit(60.0, 50), &previous(&FigureMap::new())).len(), 1);
    }

    #[test]
    fn a_previous_period_without_data_is_no_baseline() {
        let mut rank = AlertEngine::new(vec![rule(Condition::RankLossVsSamePointLastPeriod, 3.0, 1.0)], 10, Vec::new());
        let peers = [("A", 60.0, 50), ("B", 85.0, 50), ("C", 80.0, 50), ("D", 75.0, 50), ("E", 70.0, 50)];
        // December had no dossiers: every unit tied first.
        let empty = siblings("2026-12", &peers.map(|(code, _, _)| (code, 0.0, 0)));
        let baselines = Baselines { same_point: empty, ..Default::default() };
        assert!(rank.evaluate(1_800_000_000, &siblings("2027-01", &peers), &baselines).is_empty());
    }

    #[test]
    fn last_week_of_another_month_is_no_baseline() {
        let mut engine = AlertEngine::new(vec![rule(Condition::DropVsLastWeek, 5.0, 2.0)], 10, Vec::new());
        let mut last_week = unit(90.0, 50);
        last_week.values_mut().for_each(|f| f.period = "2026-10".into());
        let against = |last_week: FigureMap| Baselines { last_week, ..Default::default() };
        assert!(engine.evaluate(1_800_000_000, &unit(70.0, 50), &against(last_week)).is_empty());
        assert_eq!(engine.evaluate(1_800_000_000, &unit(70.0, 50), &against(unit(80.0, 50))).len(), 1);
    }

    #[test]
    fn bad_rules_say_what_to_fix() {
        let mut c = RuleConfig {
            name: "x".into(),
            when: Condition::DropVsPreviousPeriod,
            measure: "group 7".into(),
            period: "month".into(),
            fire_at: 5.0,
            clear_at: 2.0,
            min_dossiers: 0,
            cooldown_mins: 0,
            max_depth: 1,
            min_days: 7,
        };
        let spec = Spec::shipped();
        let error = Rule::from_config(&c, &spec).unwrap_err().to_string();
        assert!(
            error.contains("\"group 1\", \"group 2\", \"group 3\", \"group 4\", \"group 5\", \"group 6\""),
            "{error}"
        );
        c.measure = "group 2".into();
        c.clear_at = 6.0;
        assert!(Rule::from_config(&c, &spec).unwrap_err().to_string().contains("clear_at <= fire_at"));
        c.when = Condition::BelowTarget;
        assert!(Rule::from_config(&c, &spec).is_ok());
    }
}
