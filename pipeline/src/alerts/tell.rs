//! Telling the alerts: the task that judges every published view by the rules and tells the
//! changes to the alerts topic and Alertmanager, keeping the log first, so a restart or a new
//! sender neither forgets an alert nor tells it twice. One replica keeps the log in its own
//! store; several elect one sender and share the log on Kafka (`election`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use chrono::NaiveDate;
use index766_core::spec::Spec;
use index766_core::time::{format_time, Instant};

use super::election::{Election, Sender};
use super::{figures_on, view_figures, Alert, AlertEngine, AlertState, Baselines, FigureMap, Transition};
use crate::engine::view::View;
use crate::ingest::client::Producer;
use crate::lang::Language;
use crate::persist::history::HistoryTables;
use crate::persist::store::{KeptJsonError, Store};
use crate::telemetry::metrics::Metrics;

const LOG_PATH: &str = "alerts/log.json";

/// The alert, as Alertmanager's API takes it (`POST /api/v2/alerts`): firing alerts end in the
/// future (they are re-sent before that), resolved ones now. `now` is the wall clock, which
/// Alertmanager runs on, even when scores are judged at a fixed instant.
pub(crate) fn alertmanager_json(
    alert: &Alert,
    resend: Duration,
    now: Instant,
    language: Language,
) -> serde_json::Value {
    let ends = match alert.state {
        AlertState::Resolved => format_time(now),
        AlertState::Firing => format_time(now + 4 * resend.as_secs() as i64),
    };
    let signed = |x: f64| if x >= 0.0 { format!("+{}", language.number(x, 2)) } else { language.number(x, 2) };
    let causes =
        alert.causes.iter().map(|c| format!("{} {} {}", c.criterion, c.name, signed(c.change))).collect::<Vec<_>>();
    serde_json::json!({
        "labels": {
            "alertname": alert.rule,
            "unit": alert.unit_code,
            "period": alert.period_kind,
            "measure": alert.measure,
            "condition": alert.condition.as_str(),
            "severity": "warning",
            "source": "index766",
        },
        "annotations": {
            "summary": alert.summary,
            "unit_name": alert.unit_name,
            "before": language.number(alert.before, 2),
            "after": language.number(alert.after, 2),
            "causes": causes.join("; "),
        },
        "startsAt": alert.fired_at,
        "endsAt": ends,
    })
}

/// Alertmanager's webhook (optional). Alertmanager merges what it is told again (same labels),
/// so a firing alert is re-posted freely; it notifies its receivers of changes only.
pub(crate) struct Webhook {
    pub target: Option<(reqwest::Client, String)>,
    pub resend: Duration,
    /// What the annotations are written in.
    pub language: Language,
}

impl Webhook {
    /// Posts alerts to Alertmanager, trying three times.
    async fn post(&self, alerts: &[&Alert], metrics: &Metrics) {
        let Some((client, url)) = &self.target else { return };
        if alerts.is_empty() {
            return;
        }
        let now = chrono::Utc::now().timestamp();
        let body = serde_json::Value::Array(
            alerts.iter().map(|a| alertmanager_json(a, self.resend, now, self.language)).collect(),
        );
        for attempt in 1..=3 {
            let request = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .timeout(Duration::from_secs(10));
            match request.send().await {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => tracing::warn!(status = %answer.status(), attempt, url, "webhook refused the alerts"),
                Err(error) => tracing::warn!(%error, attempt, url, "webhook unreachable"),
            }
            tokio::time::sleep(Duration::from_secs(attempt)).await;
        }
        metrics.alert_notifications_failed.with_label_values(&["webhook"]).inc();
        tracing::error!(url, "alerts not delivered to the webhook after 3 attempts");
    }
}

/// Where the log is kept and who writes the alerts topic.
pub(crate) enum Keeper {
    /// One replica: the log in its own store, the topic written by a plain producer.
    Alone { store: Store, topic: Option<(Producer, String)> },
    /// Several: the log on the election topic; the elected replica writes it and the alerts
    /// topic in one transaction (`sender` is Some while this replica is the sender).
    Elected { election: Election, sender: Option<Sender> },
}

/// Reads the alert log kept in the store (empty when there is none yet). A log that exists but
/// cannot be read stops the start: going on would forget the firing alerts and send them again.
pub(crate) async fn load_log(store: &Store) -> Result<Vec<Alert>, KeptJsonError> {
    Ok(store.get_json(LOG_PATH).await?.unwrap_or_default())
}

/// The alert task: evaluates on every published view, keeps the log, tells the channels.
pub(crate) struct AlertTask {
    pub engine: AlertEngine,
    /// The spec the views are scored by (criteria names in alerts).
    pub spec: Arc<Spec>,
    pub max_lag: i64,
    pub views: watch::Receiver<Arc<View>>,
    pub history: watch::Receiver<Arc<HistoryTables>>,
    pub log: watch::Sender<Arc<Vec<Alert>>>,
    pub keeper: Keeper,
    pub webhook: Webhook,
    pub metrics: Arc<Metrics>,
}

/// What woke the task.
enum Wake {
    View,
    Resend,
    /// The election changed (this replica lost or won the partition, or the mirror moved).
    Election,
}

impl AlertTask {
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.metrics.alert_sender.set(i64::from(self.sends()));
        self.publish();
        let mut resend = tokio::time::interval(self.webhook.resend);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        loop {
            if !self.sends() {
                // A follower mirrors the sender's log until the group names it.
                let Keeper::Elected { election, .. } = &mut self.keeper else { unreachable!("alone, it sends") };
                let wake = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = election.assigned.changed() => changed,
                    changed = election.mirrored.changed() => changed,
                };
                if wake.is_err() {
                    return;
                }
                self.follow_or_take_over().await;
                continue;
            }
            let wake = tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = self.views.changed() => match changed {
                    Ok(()) => Wake::View,
                    Err(_) => return,
                },
                _ = resend.tick() => Wake::Resend,
                lost = lost_election(&mut self.keeper) => lost,
            };
            // The work itself gives way to shutdown too: a channel that does not answer (a
            // topic that does not exist) cannot keep the task alive after the pipeline stops.
            let work = async {
                match wake {
                    Wake::Resend => self.resend().await,
                    Wake::View => {
                        self.evaluate().await;
                        // At most once a second: views come every publish interval, and a rule
                        // needs no finer grain (the newest view is judged next; none is queued).
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Wake::Election => self.follow_or_take_over().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = work => {}
            }
        }
    }

    /// Whether this replica tells the alerts now.
    fn sends(&self) -> bool {
        match &self.keeper {
            Keeper::Alone { .. } => true,
            Keeper::Elected { sender, .. } => sender.is_some(),
        }
    }

    /// After a change of the election: steps down if the partition went elsewhere; takes over
    /// if it came here; else shows the sender's newest log.
    async fn follow_or_take_over(&mut self) {
        let Keeper::Elected { election, sender } = &mut self.keeper else { return };
        let assigned = *election.assigned.borrow_and_update();
        if !assigned {
            if sender.take().is_some() {
                tracing::warn!("alert sender election: another replica tells the alerts now");
            }
            let mirrored = election.mirrored.borrow_and_update().log.to_vec();
            self.metrics.alert_sender.set(0);
            self.engine.replace_log(mirrored);
            return self.publish();
        }
        if sender.is_some() {
            return;
        }
        let started = std::time::Instant::now();
        match election.take_over().await {
            Ok((taken, log)) => {
                *sender = Some(taken);
                tracing::warn!(
                    seconds = started.elapsed().as_secs_f64(),
                    alerts = log.len(),
                    "alert sender election: this replica tells the alerts now"
                );
                self.metrics.alert_sender.set(1);
                self.engine.replace_log(log);
                self.publish();
                // Judged at once: the one before may have died before telling the newest view.
                self.views.mark_changed();
                // The one before may have kept alerts it had not yet posted: Alertmanager takes
                // the whole log again and notifies only what it had not heard.
                let told: Vec<&Alert> = self.engine.log().iter().collect();
                self.webhook.post(&told, &self.metrics).await;
            }
            Err(error) => {
                tracing::error!(%error, "alert sender election: cannot take over; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                election.assigned.mark_changed();
            }
        }
    }

    async fn resend(&mut self) {
        let firing: Vec<&Alert> = self.engine.log().iter().filter(|a| a.state == AlertState::Firing).collect();
        self.webhook.post(&firing, &self.metrics).await;
        // The log is written again too, so an election topic with time retention keeps it.
        if let Keeper::Elected { sender: Some(sender), .. } = &self.keeper {
            if let Err(error) = sender.write(self.engine.log(), &[]).await {
                self.step_down(error);
            }
        }
    }

    async fn evaluate(&mut self) {
        let view = self.views.borrow_and_update().clone();
        // Until ingest has measured its lag, it is not known to be caught up.
        if self.metrics.total_lag().is_none_or(|lag| lag > self.max_lag) {
            return;
        }
        let depth = self.engine.max_depth();
        let (current, previous) = view_figures(&view, &self.spec, depth, self.engine.language());
        let baselines = {
            let history = self.history.borrow();
            let kept = |day: Option<NaiveDate>| day.map_or_else(FigureMap::new, |d| figures_on(&history, d, depth));
            let (last_week, same_point) = self.engine.history_days(view.as_of);
            Baselines { previous, last_week: kept(last_week), same_point: kept(same_point) }
        };
        let changes = self.engine.evaluate(view.as_of, &current, &baselines);
        if changes.is_empty() {
            return;
        }
        let told: Vec<&Alert> = changes
            .iter()
            .map(|c| match c {
                Transition::Fired(a) | Transition::Resolved(a) => a,
            })
            .collect();
        // Kept before it is told, so a restart (or the next sender) never tells it twice.
        match &self.keeper {
            Keeper::Alone { store, topic } => {
                let bytes = serde_json::to_vec_pretty(self.engine.log()).expect("alerts serialize");
                if let Err(error) = store.put(LOG_PATH, bytes).await {
                    tracing::error!(%error, "alert log not kept; a restart may send these alerts again");
                }
                let to_topic = told.iter().map(|a| to_topic(topic, a, &self.metrics));
                // Both channels at once: a slow broker does not hold Alertmanager back.
                futures::join!(futures::future::join_all(to_topic), self.webhook.post(&told, &self.metrics));
            }
            Keeper::Elected { sender: Some(sender), .. } => {
                if let Err(error) = sender.write(self.engine.log(), &told).await {
                    self.metrics.alert_notifications_failed.with_label_values(&["kafka"]).inc();
                    // Not kept, not told: the next sender (or this one again) judges them anew.
                    return self.step_down(error);
                }
                self.webhook.post(&told, &self.metrics).await;
            }
            Keeper::Elected { sender: None, .. } => unreachable!("only the sender evaluates"),
        }
        for (change, alert) in changes.iter().zip(&told) {
            let outcome = if matches!(change, Transition::Fired(_)) { "fired" } else { "resolved" };
            tracing::warn!(alert = alert.id, summary = alert.summary, outcome, "alert");
            self.metrics.alerts.with_label_values(&[&alert.rule, outcome]).inc();
        }
        self.publish();
    }

    /// The log could not be written: this replica stops telling until it has taken over again
    /// (from the log as committed), whether it was fenced by a newer sender or the write failed.
    fn step_down(&mut self, error: rdkafka::error::KafkaError) {
        tracing::error!(%error, "alert log not written to the election topic; not telling these alerts");
        if let Keeper::Elected { election, sender } = &mut self.keeper {
            *sender = None;
            self.metrics.alert_sender.set(0);
            election.assigned.mark_changed();
        }
    }

    fn publish(&self) {
        let log = self.engine.log();
        let mut firing: HashMap<&str, i64> = HashMap::new();
        for alert in log.iter().filter(|a| a.state == AlertState::Firing) {
            *firing.entry(&alert.rule).or_default() += 1;
        }
        self.metrics.alerts_firing.reset();
        for (rule, n) in firing {
            self.metrics.alerts_firing.with_label_values(&[rule]).set(n);
        }
        self.log.send_replace(Arc::new(log.to_vec()));
    }
}

/// Resolves when an elected sender's replica is no longer assigned the partition; never alone.
async fn lost_election(keeper: &mut Keeper) -> Wake {
    match keeper {
        Keeper::Elected { election, .. } => {
            let _ = election.assigned.wait_for(|assigned| !assigned).await;
            Wake::Election
        }
        Keeper::Alone { .. } => std::future::pending().await,
    }
}

/// Writes an alert to the alerts topic with the plain producer of a single replica.
async fn to_topic(topic: &Option<(Producer, String)>, alert: &Alert, metrics: &Metrics) {
    let Some((producer, topic)) = topic else { return };
    let payload = serde_json::to_vec(alert).expect("alerts serialize");
    let record = FutureRecord::to(topic).key(&alert.id).payload(&payload);
    if let Err((error, _)) = producer.send(record, Duration::from_secs(30)).await {
        metrics.alert_notifications_failed.with_label_values(&["kafka"]).inc();
        tracing::error!(%error, alert = alert.id, topic, "alert not written to its topic");
    }
}
