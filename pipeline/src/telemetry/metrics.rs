//! Prometheus metrics of the pipeline's health: what every stage counts and measures. (The score
//! gauges the IOC wall reads are rendered from the newest view by `serve::exposition`.)
//! Names follow `index766_<noun>_<unit>`; every label takes values from a bounded set.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use index766_core::event::RejectReason;

pub struct Metrics {
    registry: Registry,
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
    /// 1 while this replica is the one that tells the alerts (always, when it runs alone).
    pub alert_sender: IntGauge,
    snapshot_age: Gauge,
    /// Unix seconds at start: the snapshot age counts from here until the first snapshot.
    started: f64,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
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
            alert_sender: register(
                &r,
                IntGauge::new("index766_alert_sender", "1 while this replica is the one that tells the alerts (replicas elect one).").unwrap(),
            ),
            snapshot_age: register(
                &r,
                Gauge::new("index766_snapshot_age_seconds", "Seconds since the newest snapshot became durable (since start when none has).").unwrap(),
            ),
            registry: r,
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
    pub fn count(&self, ledger: &crate::position::Ledger) {
        self.events_consumed.inc_by(ledger.consumed);
        self.events_applied.inc_by(ledger.applied);
        for (reason, &n) in &ledger.rejected {
            self.events_rejected.with_label_values(&[reason.as_str()]).inc_by(n);
        }
    }

    /// Takes note of a freshly published view: how many dossiers it covers, how many of them
    /// name a unit the registry lacks. Takes no lock: the engine calls it.
    pub(crate) fn observe_view(&self, dossiers: usize, unregistered_dossiers: i64) {
        self.dossiers_tracked.set(dossiers as i64);
        self.dossiers_unregistered_unit.set(unregistered_dossiers);
        self.view_published.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    /// Messages not yet read, over every partition; None before ingest has measured any.
    pub(crate) fn total_lag(&self) -> Option<i64> {
        use prometheus::core::Collector;
        let families = self.consumer_lag.collect();
        let partitions: Vec<i64> =
            families.iter().flat_map(|family| family.get_metric()).map(|m| m.get_gauge().value() as i64).collect();
        (!partitions.is_empty()).then(|| partitions.iter().sum())
    }

    /// Counts one SQL query, with its duration to the last row.
    pub(crate) fn observe_query(&self, interface: &str, ok: bool, seconds: f64) {
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
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}
