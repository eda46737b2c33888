//! `index766 alert-noise`: what a set of alert rules tells unit heads over a simulated month of the
//! demo province. Two months of dossiers (the month before is the baseline) go through the real
//! state, scoring and alert engine, judged every two hours as the pipeline judges each view, with
//! the figures of each day's end kept as the daily history keeps them. One department's one-stop
//! desk fails on a given day (`Simulator::fail_desk`); every other unit carries on as before, so
//! an alert about any other unit is noise.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;

use index766_core::catalog::Catalog;
use index766_core::event::decode;
use index766_core::spec::Spec;
use index766_core::state::State;
use index766_core::time::{local_date, Instant, Period};
use index766_core::units::Registry;

use crate::alerts::{view_figures, AlertEngine, Baselines, FigureMap, Transition};
use crate::config::alerts::Rule;
use crate::engine::view::{dossiers_schema, DossierRows, ViewBuilder};
use crate::lang::Language;
use crate::tools::demo::simulator;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// How often the rules are judged: the pipeline judges every view, but figures moved by two
/// hours of dossiers are what a firing or clearing turns on.
const JUDGED_EVERY: i64 = 2 * HOUR;

#[derive(Debug, Clone)]
pub struct NoiseOptions {
    /// The month measured (the one before it is simulated as its baseline).
    pub month: Period,
    /// Dossiers received on a working day.
    pub per_day: u32,
    pub seed: u64,
    /// The department whose desk fails (a registry code such as `H99.05`), the day of the
    /// measured month it fails on, at 08:00, and the held-back dossiers it enters then
    /// (`Simulator::fail_desk`).
    pub failing_unit: String,
    pub failing_day: u32,
    pub backlog: u32,
}

/// Alerts fired on one day of the measured month.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub day: NaiveDate,
    /// Fired for the failing unit.
    pub failure: u32,
    /// Fired for any other unit: noise.
    pub noise: u32,
}

#[derive(Debug, Clone)]
pub struct NoiseReport {
    pub days: Vec<Day>,
    pub failing_from: Instant,
    /// The first alert fired for the failing unit at or after the failure, and its rule.
    pub first_failure_alert: Option<(Instant, String)>,
    /// Noise alerts by rule.
    pub noise_by_rule: BTreeMap<String, u32>,
}

impl NoiseReport {
    pub fn noise(&self) -> u32 {
        self.days.iter().map(|d| d.noise).sum()
    }

    /// Hours from the failure to its first alert.
    pub fn hours_to_alert(&self) -> Option<f64> {
        self.first_failure_alert.as_ref().map(|(t, _)| (t - self.failing_from) as f64 / HOUR as f64)
    }

    /// The table the command prints and the note quotes.
    pub fn render(&self, title: &str) -> String {
        let mut out = format!("{title}\nday         failing unit  other units (noise)\n");
        for d in &self.days {
            out.push_str(&format!("{}  {:>12}  {:>19}\n", d.day.format("%d/%m/%Y"), d.failure, d.noise));
        }
        let first = match (&self.first_failure_alert, self.hours_to_alert()) {
            (Some((_, rule)), Some(hours)) => format!("{hours:.0} h after the failure, by {rule}"),
            _ => "never".into(),
        };
        let by_rule: Vec<String> = self.noise_by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out.push_str(&format!(
            "noise: {} alerts ({}); the failure's first alert: {first}\n",
            self.noise(),
            if by_rule.is_empty() { "none".into() } else { by_rule.join(", ") }
        ));
        out
    }
}

/// Runs `rules` over the simulated month.
pub fn measure(rules: Vec<Rule>, options: &NoiseOptions) -> Result<NoiseReport, String> {
    let spec = Spec::shipped();
    let mut sim = simulator(options.seed);
    let baseline_month = options.month.previous();
    let (start, end) = (baseline_month.start(), options.month.end());
    let failing_from = options.month.start() + (options.failing_day as i64 - 1) * DAY + 8 * HOUR;
    sim.fail_desk(&options.failing_unit, failing_from, options.backlog)?;
    let registry = Arc::new(Registry::parse(&sim.province().registry_jsonl()).expect("the province's registry"));
    let catalog = Catalog::parse(&sim.province().catalog_jsonl(start)).expect("the province's catalog");
    let mut state = State::new(start, Arc::new(catalog));
    let mut builder = ViewBuilder::default();
    let mut engine = AlertEngine::new(rules, 0, Vec::new()).speaking(Language::En);
    let depth = engine.max_depth();
    let mut history: BTreeMap<NaiveDate, FigureMap> = BTreeMap::new();
    let mut days: BTreeMap<NaiveDate, Day> = BTreeMap::new();
    let mut report =
        NoiseReport { days: Vec::new(), failing_from, first_failure_alert: None, noise_by_rule: BTreeMap::new() };
    let no_dossiers = || DossierRows::Built(RecordBatch::new_empty(dossiers_schema()));
    let mut midnight = start;
    while midnight < end {
        sim.receive_day(midnight, options.per_day, midnight + DAY);
        for t in (1..=DAY / JUDGED_EVERY).map(|step| midnight + step * JUDGED_EVERY - 1) {
            for event in sim.due_events(t) {
                let bytes = serde_json::to_vec(&event).expect("a simulated event serialises");
                state.apply(&decode(&bytes, None, 65_536).expect("a simulated event decodes"));
            }
            state.advance_to(t);
            let touched = state.take_touched();
            let view =
                builder.build(registry.clone(), &spec, 80.0, &state, &touched, &Default::default(), no_dossiers());
            let (current, previous) = view_figures(&view, &spec, depth, Language::En);
            let kept = |day: Option<NaiveDate>| day.and_then(|d| history.get(&d)).cloned().unwrap_or_default();
            let (last_week, same_point) = engine.history_days(t);
            let baselines = Baselines { previous, last_week: kept(last_week), same_point: kept(same_point) };
            let changes = engine.evaluate(t, &current, &baselines);
            if t >= options.month.start() && t < options.month.end() {
                let day = days.entry(local_date(t)).or_insert(Day { day: local_date(t), failure: 0, noise: 0 });
                for alert in changes.iter().filter_map(|c| match c {
                    Transition::Fired(a) => Some(a),
                    Transition::Resolved(_) => None,
                }) {
                    if alert.unit_code == options.failing_unit && t >= failing_from {
                        day.failure += 1;
                        report.first_failure_alert.get_or_insert((t, alert.rule.clone()));
                    } else {
                        day.noise += 1;
                        *report.noise_by_rule.entry(alert.rule.clone()).or_default() += 1;
                    }
                }
            }
            // The day's last figures stand for it, as in the daily history.
            if t + JUDGED_EVERY > midnight + DAY {
                history.insert(local_date(t), current);
            }
        }
        midnight += DAY;
    }
    report.days = days.into_values().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use index766_core::time::{parse_time, PeriodKind};

    /// The rules shipped before alerts compared like with like: month-to-date against the
    /// complete month before, ranks among all siblings, judged from the first day.
    const OLD_DEFAULTS: &str = r#"
[alerts]
rules = [
  { name = "total_drop_vs_previous_period", when = "drop_vs_previous_period", fire_at = 5.0, clear_at = 2.0, min_dossiers = 30, cooldown_mins = 360, min_days = 0 },
  { name = "total_drop_vs_last_week", when = "drop_vs_last_week", fire_at = 5.0, clear_at = 2.0, min_dossiers = 30, cooldown_mins = 360, min_days = 0 },
  { name = "processing_progress_drop", when = "drop_vs_previous_period", measure = "group 2", fire_at = 3.0, clear_at = 1.0, min_dossiers = 30, cooldown_mins = 360, min_days = 0 },
  { name = "rank_loss", when = "rank_loss", fire_at = 10, clear_at = 5, min_dossiers = 100, cooldown_mins = 1440, min_days = 0 },
  { name = "province_below_target", when = "below_target", fire_at = 70.0, clear_at = 72.0, min_dossiers = 100, cooldown_mins = 1440, max_depth = 0, min_days = 0 },
]
"#;

    fn rules(toml: &str) -> Vec<Rule> {
        Config::from_toml(toml).unwrap().alert_rules(&Spec::shipped()).unwrap()
    }

    /// Over November 2026 of the demo province, department H99.05's desk fails on the 16th.
    #[test]
    fn the_shipped_rules_tell_the_failing_desk_within_a_day_and_nothing_else() {
        let november = Period::containing(PeriodKind::Month, parse_time("2026-11-15T00:00:00+07:00").unwrap());
        let options = NoiseOptions {
            month: november,
            per_day: 2000,
            seed: 7,
            failing_unit: "H99.05".into(),
            failing_day: 16,
            backlog: 200,
        };
        let (old, new) = std::thread::scope(|s| {
            let old = s.spawn(|| measure(rules(OLD_DEFAULTS), &options).unwrap());
            let new = measure(rules(""), &options).unwrap();
            (old.join().unwrap(), new)
        });
        eprintln!("{}\n{}", old.render("old defaults"), new.render("shipped defaults"));
        assert_eq!(new.noise(), 0, "the shipped rules fired on units that did not fail");
        let hours = new.hours_to_alert().expect("the shipped rules never told the failing desk");
        assert!(hours <= 24.0, "the failing desk was told {hours:.0} h after it failed");
        // The measurement sees noise where there is some: the old rules cried wolf all month.
        assert!(old.noise() > 100, "old defaults: {} noise alerts", old.noise());
    }
}
