//! Prometheus metrics: the score gauges the IOC wall reads, and the pipeline's health.
//! Names follow `index766_<noun>_<unit>`; every label takes values from a bounded set.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::config::MetricsConfig;
use crate::event::RejectReason;
use crate::scoring::PeriodScores;
use crate::spec::CRITERIA;
use crate::time::Period;
use crate::view::View;

pub struct Metrics {
    registry: Registry,
    limits: MetricsConfig,
    pub events_consumed: IntCounter,
    pub bytes_consumed: IntCounter,
    pub events_rejected: IntCounterVec,
    pub events_applied: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub broker_connected: IntGauge,
    pub dossiers_tracked: IntGauge,
    pub dossiers_unregistered_unit: IntGauge,
    pub view_published: Gauge,
    pub view_build_duration: Histogram,
    pub snapshot_last_success: Gauge,
    pub snapshot_duration: Histogram,
    pub checkpoint_copy_duration: Histogram,
    pub checkpoint_copy_longest: Gauge,
    pub snapshot_failures: IntCounter,
    pub snapshot_generation: IntGauge,
    pub snapshot_bytes: IntGauge,
    pub recovery_duration: Gauge,
    sql_queries: IntCounterVec,
    /// Query slots taken ([sql] max_concurrent): planning, streaming, or an open cursor.
    pub sql_queries_running: IntGauge,
    sql_query_duration: HistogramVec,
    pub alerts: IntCounterVec,
    pub alerts_firing: IntGaugeVec,
    pub alert_notifications_failed: IntCounterVec,
    snapshot_age: Gauge,
    scores: Mutex<ScoreSeries>,
    /// Unix seconds at start: the snapshot age counts from here until the first snapshot.
    started: f64,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new(limits: MetricsConfig) -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).unwrap());
        let m = Metrics {
            events_consumed: counter("index766_events_consumed_total", "Messages read from the events topic."),
            bytes_consumed: counter("index766_consumed_bytes_total", "Payload bytes read from the events topic."),
            events_rejected: register(
                &r,
                IntCounterVec::new(
                    Opts::new("index766_events_rejected_total", "Messages sent to the dead-letter topic, by reason (unknown_unit and unknown_procedure are kept and applied; the others dropped)."),
                    &["reason"],
                )
                .unwrap(),
            ),
            events_applied: counter("index766_events_applied_total", "Events applied to the state."),
            consumer_lag: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("index766_consumer_lag_messages", "High watermark minus next offset to read."),
                    &["topic", "partition"],
                )
                .unwrap(),
            ),
            broker_connected: register(
                &r,
                IntGauge::new("index766_broker_connected", "1 while the events topic's metadata can be read.").unwrap(),
            ),
            dossiers_tracked: register(&r, IntGauge::new("index766_dossiers_tracked", "Dossiers held in the state.").unwrap()),
            dossiers_unregistered_unit: register(
                &r,
                IntGauge::new(
                    "index766_dossiers_unregistered_unit",
                    "Received dossiers whose unit code is not in the registry (kept, scored once registered).",
                )
                .unwrap(),
            ),
            view_published: register(
                &r,
                Gauge::new("index766_view_published_timestamp_seconds", "When the SQL and metric view was last refreshed.").unwrap(),
            ),
            view_build_duration: register(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "index766_view_build_duration_seconds",
                    "Time to score the state and build the SQL tables of one published view.",
                ))
                .unwrap(),
            ),
            snapshot_duration: register(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "index766_snapshot_duration_seconds",
                    "Time to encode and durably write one snapshot generation.",
                ))
                .unwrap(),
            ),
            checkpoint_copy_duration: register(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "index766_checkpoint_copy_duration_seconds",
                    "Time ingest waits while the state is copied for a snapshot.",
                ))
                .unwrap(),
            ),
            checkpoint_copy_longest: register(
                &r,
                Gauge::new(
                    "index766_checkpoint_copy_longest_seconds",
                    "Longest time ingest has waited for a state copy for a snapshot since the start.",
                )
                .unwrap(),
            ),
            snapshot_failures: counter("index766_snapshot_failures_total", "Snapshots that could not be written."),
            sql_queries_running: register(
                &r,
                IntGauge::new(
                    "index766_sql_queries_running",
                    "SQL query slots taken: queries planning or streaming rows, and open cursors.",
                )
                .unwrap(),
            ),
            snapshot_generation: register(
                &r,
                IntGauge::new("index766_snapshot_generation", "Id of the newest durable snapshot generation.").unwrap(),
            ),
            snapshot_bytes: register(
                &r,
                IntGauge::new("index766_snapshot_bytes", "Size of the newest durable snapshot generation.").unwrap(),
            ),
            recovery_duration: register(
                &r,
                Gauge::new(
                    "index766_recovery_duration_seconds",
                    "Time at start to read, verify and restore the newest snapshot (0 without one).",
                )
                .unwrap(),
            ),
            snapshot_last_success: register(
                &r,
                Gauge::new("index766_snapshot_last_success_timestamp_seconds", "When the newest snapshot generation became durable.").unwrap(),
            ),
            sql_queries: register(
                &r,
                IntCounterVec::new(
                    Opts::new("index766_sql_queries_total", "SQL queries by interface (http, postgres) and outcome."),
                    &["interface", "outcome"],
                )
                .unwrap(),
            ),
            sql_query_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("index766_sql_query_duration_seconds", "SQL query latency, to the last row sent."),
                    &["interface", "outcome"],
                )
                .unwrap(),
            ),
            alerts: register(
                &r,
                IntCounterVec::new(Opts::new("index766_alerts_total", "Alerts fired and resolved, by rule."), &["rule", "outcome"]).unwrap(),
            ),
            alerts_firing: register(
                &r,
                IntGaugeVec::new(Opts::new("index766_alerts_firing", "Alerts firing now, by rule."), &["rule"]).unwrap(),
            ),
            alert_notifications_failed: register(
                &r,
                IntCounterVec::new(
                    Opts::new("index766_alert_notifications_failed_total", "Alerts that could not be delivered, by channel (kafka, webhook)."),
                    &["channel"],
                )
                .unwrap(),
            ),
            snapshot_age: register(
                &r,
                Gauge::new("index766_snapshot_age_seconds", "Seconds since the newest snapshot became durable (since start when none has).").unwrap(),
            ),
            scores: Mutex::new(ScoreSeries::default()),
            registry: r,
            limits,
            started: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        };
        // Every reason appears from the start, at 0, so rate() and alerts work before the first reject.
        for reason in RejectReason::ALL {
            m.events_rejected.with_label_values(&[reason.as_str()]);
        }
        m
    }

    /// Adds a ledger's counts to the counters: what the engine took in with a batch, or a
    /// snapshot's ledger at start (so they count every message once across restarts).
    pub fn count(&self, ledger: &crate::snapshot::Ledger) {
        self.events_consumed.inc_by(ledger.consumed);
        self.events_applied.inc_by(ledger.applied);
        for (reason, &n) in &ledger.rejected {
            self.events_rejected.with_label_values(&[reason.as_str()]).inc_by(n);
        }
    }

    /// Takes note of a freshly published view: its score gauges are built from it when /metrics is
    /// next read (a scrape reads far fewer views than the engine publishes).
    pub fn observe_view(&self, view: &Arc<View>, dossiers: usize) {
        self.scores.lock().expect("score series lock").latest = Some(view.clone());
        self.dossiers_tracked.set(dossiers as i64);
        self.dossiers_unregistered_unit.set(view.scoreboard.unregistered_dossiers);
        self.view_published.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    /// Messages not yet read, over every partition; None before ingest has measured any.
    pub fn total_lag(&self) -> Option<i64> {
        use prometheus::core::Collector;
        let families = self.consumer_lag.collect();
        let partitions: Vec<i64> =
            families.iter().flat_map(|family| family.get_metric()).map(|m| m.get_gauge().value() as i64).collect();
        (!partitions.is_empty()).then(|| partitions.iter().sum())
    }

    /// Counts one SQL query, with its duration to the last row.
    pub fn observe_query(&self, interface: &str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.sql_queries.with_label_values(&[interface, outcome]).inc();
        self.sql_query_duration.with_label_values(&[interface, outcome]).observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let since = match self.snapshot_last_success.get() {
            0.0 => self.started,
            t => t,
        };
        self.snapshot_age.set(now - since);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        let mut text = String::from_utf8(out).expect("exposition is UTF-8");
        text.push_str(self.scores.lock().expect("score series lock").text(&self.limits));
        text
    }
}

/// The score gauges of the newest view, as text exposition, built at most once per view.
#[derive(Default)]
struct ScoreSeries {
    latest: Option<Arc<View>>,
    /// The view last rendered, and its text.
    rendered: Option<(Arc<View>, String)>,
}

impl ScoreSeries {
    fn text(&mut self, limits: &MetricsConfig) -> &str {
        let Some(latest) = &self.latest else { return "" };
        if !self.rendered.as_ref().is_some_and(|(view, _)| Arc::ptr_eq(view, latest)) {
            self.rendered = Some((latest.clone(), score_text(latest, limits)));
        }
        self.rendered.as_ref().map_or("", |(_, text)| text)
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
                ("criterion", CRITERIA[score.criterion]),
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
        let registry = crate::units::Registry::parse(concat!(
            "{\"code\":\"P\",\"name\":\"P\",\"level\":\"province\"}\n",
            "{\"code\":\"A\",\"name\":\"A\",\"parent\":\"P\",\"level\":\"commune\"}\n",
        ))
        .unwrap();
        let state = crate::state::tests::state_at("2026-11-20T00:00:00+07:00");
        let view = Arc::new(View::build(
            Arc::new(registry),
            &crate::spec::tests::shipped(),
            80.0,
            &state,
            &Default::default(),
        ));
        let metrics = Metrics::new(MetricsConfig { score_depth: 1, criterion_depth: 0 });
        metrics.observe_view(&view, 0);
        let text = metrics.render();
        assert!(text.contains(r#"index766_total_points{period="month",unit="A"}"#));
        assert!(text.contains(r#"index766_score_points{criterion="2.1",period="month",unit="P"}"#));
        assert!(!text.contains(r#"index766_score_points{criterion="2.1",period="month",unit="A"}"#));
        let shallow = Metrics::new(MetricsConfig { score_depth: 0, criterion_depth: 0 });
        shallow.observe_view(&view, 0);
        assert!(!shallow.render().contains(r#"unit="A""#));
    }
}
