//! The `[alerts]` section: where alerts go, and the drop rules, checked at load into [`Rule`]s
//! (the `alerts` stage judges the views by them).

use serde::{Deserialize, Serialize};

use index766_core::spec::Spec;
use index766_core::time::PeriodKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The measure fell by `fire_at` points or more against the previous period.
    DropVsPreviousPeriod,
    /// The measure fell by `fire_at` points or more against the same day last week.
    DropVsLastWeek,
    /// The measure fell by `fire_at` points or more against the previous month as it stood at the
    /// same day of the month (the daily history): month-to-date against month-to-date.
    DropVsSamePointLastPeriod,
    /// The measure is below `fire_at`.
    BelowTarget,
    /// The unit lost `fire_at` rank places or more against the previous period (complete): a
    /// month-to-date rank against a whole month's, so noisy in a month's first weeks.
    RankLoss,
    /// The unit lost `fire_at` rank places or more against the previous month at the same day of
    /// the month, ranked only among its siblings with `min_dossiers` dossiers or more.
    RankLossVsSamePointLastPeriod,
}

impl Condition {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Condition::DropVsPreviousPeriod => "drop_vs_previous_period",
            Condition::DropVsLastWeek => "drop_vs_last_week",
            Condition::DropVsSamePointLastPeriod => "drop_vs_same_point_last_period",
            Condition::BelowTarget => "below_target",
            Condition::RankLoss => "rank_loss",
            Condition::RankLossVsSamePointLastPeriod => "rank_loss_vs_same_point_last_period",
        }
    }

    /// Whether the baseline is the previous month at the same day of the month.
    pub(crate) fn same_point(self) -> bool {
        matches!(self, Condition::DropVsSamePointLastPeriod | Condition::RankLossVsSamePointLastPeriod)
    }

    /// Whether the rule compares ranks.
    pub(crate) fn ranks(self) -> bool {
        matches!(self, Condition::RankLoss | Condition::RankLossVsSamePointLastPeriod)
    }

    /// Below-target fires low and clears high; the others fire on a large loss and clear on a small one.
    pub(crate) fn fires_low(self) -> bool {
        self == Condition::BelowTarget
    }
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub when: Condition,
    /// "total", or "group N" (a group of the scoring spec).
    #[serde(default = "total")]
    pub measure: String,
    /// Which current period: month, quarter, half_year or year.
    #[serde(default = "month")]
    pub period: String,
    pub fire_at: f64,
    pub clear_at: f64,
    #[serde(default)]
    pub min_dossiers: i64,
    #[serde(default)]
    pub cooldown_mins: u64,
    /// Units down to this depth of the tree (0 = the province only).
    #[serde(default = "one")]
    pub max_depth: u32,
    /// Nothing is judged before this day of the period: a period's first days rest on too few
    /// dossiers to say anything.
    #[serde(default = "seven")]
    pub min_days: u32,
}

fn total() -> String {
    "total".into()
}
fn month() -> String {
    "month".into()
}
fn one() -> u32 {
    1
}
fn seven() -> u32 {
    7
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Kafka topic the alerts are written to (JSON, keyed by alert id). Empty: none.
    pub topic: String,
    /// Alertmanager's API (`http://alertmanager:9093/api/v2/alerts`). Empty: none.
    pub webhook_url: String,
    /// Firing alerts are sent to the webhook again this often (Alertmanager resolves alerts it
    /// stops hearing about), in seconds.
    pub resend_secs: u64,
    /// Resolved alerts kept in the log (API and SQL), newest first.
    pub keep_resolved: usize,
    /// Rules are judged only while ingest is this close to the end of the topics (in messages):
    /// figures half-way through a replay are not news for a unit head.
    pub max_lag_messages: i64,
    pub election: ElectionConfig,
    pub rules: Vec<RuleConfig>,
}

/// `[alerts.election]`: how replicas agree on the one that tells the alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionConfig {
    /// A one-partition topic: membership of its consumer group elects the sender, and it holds
    /// the shared alert log. Empty: this process tells the alerts alone (one replica).
    pub topic: String,
    /// A sender that stops answering loses the election after this long (Kafka's
    /// session.timeout.ms, which the brokers bound by group.min/max.session.timeout.ms).
    pub session_timeout_ms: u64,
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Total,
    Group(u8),
}

impl Measure {
    /// "total", or "group N" for a group the spec defines.
    fn parse(text: &str, spec: &Spec) -> Option<Measure> {
        match text.trim() {
            "total" => Some(Measure::Total),
            other => {
                let group = other.strip_prefix("group")?.trim().parse().ok()?;
                spec.groups.iter().any(|g| g.id == group).then_some(Measure::Group(group))
            }
        }
    }

    /// "total" or "group N", as rules, alerts and labels name it.
    pub(crate) fn label(self) -> String {
        match self {
            Measure::Total => "total".into(),
            Measure::Group(g) => format!("group {g}"),
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: Condition,
    pub measure: Measure,
    pub period: PeriodKind,
    pub fire_at: f64,
    pub clear_at: f64,
    pub min_dossiers: i64,
    pub cooldown_secs: i64,
    pub max_depth: u32,
    pub min_days: u32,
}

/// A rule the config cannot have: which, and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("[[alerts.rules]] {rule:?}: {fix}")]
pub struct RuleError {
    pub rule: String,
    pub fix: String,
}

impl Rule {
    /// Checks a rule from the config against the scoring spec (its groups); the error says
    /// which key to fix.
    pub(crate) fn from_config(c: &RuleConfig, spec: &Spec) -> Result<Rule, RuleError> {
        let at = |fix: &str| RuleError { rule: c.name.clone(), fix: fix.to_owned() };
        if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            return Err(at("name it with letters, digits and _ (it becomes the alertname)"));
        }
        let groups: Vec<String> = spec.groups.iter().map(|g| format!("\"group {}\"", g.id)).collect();
        let measure = Measure::parse(&c.measure, spec).ok_or_else(|| {
            at(&format!("measure must be \"total\" or a group of the scoring spec: {}", groups.join(", ")))
        })?;
        let period = PeriodKind::ALL
            .into_iter()
            .find(|k| k.as_str() == c.period)
            .ok_or_else(|| at("period must be month, quarter, half_year or year"))?;
        if c.when.same_point() && period != PeriodKind::Month {
            return Err(at(&format!(
                "{} compares with the same day of last month, which the daily history keeps (35 days): \
                 set period = \"month\"",
                c.when.as_str()
            )));
        }
        if c.when.ranks() && measure != Measure::Total {
            return Err(at(&format!("{} ranks totals: leave measure at \"total\"", c.when.as_str())));
        }
        let hysteresis_ok = if c.when.fires_low() { c.clear_at >= c.fire_at } else { c.clear_at <= c.fire_at };
        if !hysteresis_ok {
            return Err(at(if c.when.fires_low() {
                "below_target fires under fire_at and clears at or above clear_at: set clear_at >= fire_at"
            } else {
                "a loss fires at fire_at or more and clears under clear_at: set clear_at <= fire_at"
            }));
        }
        Ok(Rule {
            name: c.name.clone(),
            when: c.when,
            measure,
            period,
            fire_at: c.fire_at,
            clear_at: c.clear_at,
            min_dossiers: c.min_dossiers,
            cooldown_secs: (c.cooldown_mins * 60) as i64,
            max_depth: c.max_depth,
            min_days: c.min_days,
        })
    }
}
