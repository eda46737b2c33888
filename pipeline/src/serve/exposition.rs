//! The score gauges the IOC wall and Grafana read from `/metrics`: the figures of the newest
//! view, current periods only, units down to the configured depths.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use index766_core::criteria::CRITERIA;
use index766_core::scoring::PeriodScores;
use index766_core::time::Period;

use crate::config::MetricsConfig;
use crate::engine::view::View;

/// The score gauges of a view as text exposition, built at most once per view. Only scrapes
/// take its lock; the engine publishes views on a watch channel and never waits for a scrape.
pub(crate) struct ScoreGauges {
    limits: MetricsConfig,
    /// The view last rendered, and its text.
    rendered: Mutex<Option<(Arc<View>, Arc<str>)>>,
}

impl ScoreGauges {
    pub fn new(limits: MetricsConfig) -> ScoreGauges {
        ScoreGauges { limits, rendered: Mutex::new(None) }
    }

    /// The gauges of `view`, the newest published.
    pub fn text(&self, view: &Arc<View>) -> Arc<str> {
        let mut rendered = self.rendered.lock().expect("score gauges lock");
        match &*rendered {
            Some((shown, text)) if Arc::ptr_eq(shown, view) => text.clone(),
            _ => {
                let text: Arc<str> = score_text(view, &self.limits).into();
                *rendered = Some((view.clone(), text.clone()));
                text
            }
        }
    }
}

/// One gauge family of the exposition, its samples written as they come.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family { name, help, samples: String::new() }
    }

    /// Adds a sample; `labels` in the order of their names (as Prometheus clients write them).
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.samples.push_str(self.name);
        for (i, (name, value)) in labels.iter().enumerate() {
            let _ = write!(self.samples, "{}{name}=\"", if i == 0 { '{' } else { ',' });
            for c in value.chars() {
                match c {
                    '\\' => self.samples.push_str(r"\\"),
                    '"' => self.samples.push_str("\\\""),
                    '\n' => self.samples.push_str(r"\n"),
                    c => self.samples.push(c),
                }
            }
            self.samples.push('"');
        }
        let _ = writeln!(self.samples, "}} {value}");
    }

    fn write_to(&self, out: &mut String) {
        if !self.samples.is_empty() {
            let _ = write!(out, "# HELP {} {}\n# TYPE {} gauge\n", self.name, self.help, self.name);
            out.push_str(&self.samples);
        }
    }
}

/// The score gauges of a view in the text exposition: current periods only (the labels stay the
/// same when a month rolls over, so a wall's series continue), units down to the configured depths
/// only (to bound the series count). Written directly: tens of thousands of series at national
/// scale, which a client library's gauges would first hash, lock and copy one by one.
fn score_text(view: &View, limits: &MetricsConfig) -> String {
    let [
        mut score_points,
        mut score_ratio,
        mut group_points,
        mut total_points,
        mut rank,
        mut previous_total_points,
        mut previous_group_points,
        mut previous_rank,
        mut period_dossiers,
    ] = [
        ("index766_score_points", "Points of a criterion for a unit in the current period."),
        ("index766_score_ratio", "Ratio (0-1) of a criterion for a unit in the current period; absent when nothing was received."),
        ("index766_group_points", "Points of a group for a unit in the current period."),
        ("index766_total_points", "Index 766 total (0-100) of a unit in the current period."),
        ("index766_rank", "Rank of a unit's total among its siblings in the current period (1 = best)."),
        ("index766_previous_period_total_points", "Index 766 total of a unit in the period before the current one (what drop alerts compare with)."),
        ("index766_previous_period_group_points", "Points of a group for a unit in the period before the current one."),
        ("index766_previous_period_rank", "Rank of a unit among its siblings in the period before the current one."),
        ("index766_period_dossiers", "Dossiers behind a unit's figures in the current period (its largest criterion denominator): the alerts' minimum-volume guard."),
    ]
    .map(|(name, help)| Family::new(name, help));
    let units = view.registry.units();
    let board = &view.scoreboard;
    let depth = |unit: usize| view.registry.depth_of(unit);
    let (score_depth, criterion_depth) = (limits.score_depth, limits.criterion_depth);
    let by_period: HashMap<Period, &PeriodScores> = board.periods.iter().map(|p| (p.period, &**p)).collect();
    for current in board.current() {
        let period = current.period.kind.as_str();
        let previous = by_period.get(&current.period.previous());
        for score in current.criteria.iter().filter(|s| depth(s.unit) <= criterion_depth) {
            let labels = [
                ("criterion", CRITERIA[score.criterion].id),
                ("period", period),
                ("unit", units[score.unit].code.as_str()),
            ];
            score_points.sample(&labels, score.points);
            if let Some(r) = score.ratio {
                score_ratio.sample(&labels, r);
            }
        }
        let groups_before: HashMap<(usize, u8), f64> = previous
            .iter()
            .flat_map(|p| p.groups.iter().filter(|g| depth(g.unit) <= score_depth))
            .map(|g| ((g.unit, g.group), g.points))
            .collect();
        for g in current.groups.iter().filter(|g| depth(g.unit) <= score_depth) {
            let group = g.group.to_string();
            let labels = [("group", group.as_str()), ("period", period), ("unit", units[g.unit].code.as_str())];
            group_points.sample(&labels, g.points);
            if let Some(points) = groups_before.get(&(g.unit, g.group)) {
                previous_group_points.sample(&labels, points);
            }
        }
        for t in current.totals.iter().filter(|t| depth(t.unit) <= score_depth) {
            let labels = [("period", period), ("unit", units[t.unit].code.as_str())];
            total_points.sample(&labels, t.total);
            rank.sample(&labels, t.rank);
            if let Some(before) = previous.map(|p| &p.totals[t.unit]) {
                previous_total_points.sample(&labels, before.total);
                previous_rank.sample(&labels, before.rank);
            }
        }
        let mut volume: BTreeMap<usize, i64> = BTreeMap::new();
        for s in current.criteria.iter().filter(|s| depth(s.unit) <= score_depth) {
            let v = volume.entry(s.unit).or_default();
            *v = (*v).max(s.denominator);
        }
        for (unit, n) in volume {
            period_dossiers.sample(&[("period", period), ("unit", units[unit].code.as_str())], n);
        }
    }
    let mut out = String::new();
    for family in [
        &group_points,
        &period_dossiers,
        &previous_group_points,
        &previous_rank,
        &previous_total_points,
        &rank,
        &score_points,
        &score_ratio,
        &total_points,
    ] {
        family.write_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_stop_at_the_configured_depth() {
        let registry = index766_core::units::Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"commune\"}\n",
        ))
        .unwrap();
        let state = index766_core::fixtures::state_at("2026-11-20T00:00:00+07:00");
        let view = Arc::new(View::build(
            Arc::new(registry),
            &index766_core::spec::Spec::shipped(),
            80.0,
            &state,
            &Default::default(),
        ));
        let text = ScoreGauges::new(MetricsConfig { score_depth: 1, criterion_depth: 0 }).text(&view);
        assert!(text.contains(r#"index766_total_points{period="month",unit="A"}"#));
        assert!(text.contains(r#"index766_score_points{criterion="2.1",period="month",unit="P"}"#));
        assert!(!text.contains(r#"index766_score_points{criterion="2.1",period="month",unit="A"}"#));
        let shallow = ScoreGauges::new(MetricsConfig { score_depth: 0, criterion_depth: 0 });
        assert!(!shallow.text(&view).contains(r#"unit="A""#));
    }
}
