//! Layered configuration: `config/default.toml` (compiled in) → the `--config` file →
//! `INDEX766__SECTION__KEY` environment variables. Unknown keys are errors, so a typo never
//! silently falls back to a default.

pub mod alerts;
pub mod kafka;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use index766_core::spec::{Spec, SpecError};
use serde::Deserialize;

pub(crate) const DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist: pass an existing file to --config")]
    Missing { path: PathBuf },
    #[error("invalid configuration: {0}\n(see pipeline/config/default.toml for every key and its meaning)")]
    Invalid(String),
    #[error("invalid configuration: {0}\n(see pipeline/config/default.toml for every key and its meaning)")]
    Rule(#[from] alerts::RuleError),
    #[error("invalid configuration: [petitions] holidays: {0}")]
    Holiday(#[from] index766_core::petition::HolidayError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// librdkafka client properties, passed through unchanged (a value may come from a file or
    /// the environment: see `kafka`).
    pub kafka: kafka::KafkaSettings,
    pub topics: TopicsConfig,
    pub ingest: IngestConfig,
    pub registry: RegistryConfig,
    pub catalog: CatalogConfig,
    pub petitions: PetitionsConfig,
    pub scoring: ScoringConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub sql: SqlConfig,
    pub snapshot: SnapshotConfig,
    pub alerts: alerts::AlertsConfig,
    pub access: AccessConfig,
    pub tls: TlsConfig,
    pub locale: LocaleConfig,
    pub reports: ReportsConfig,
}

/// `[reports]`: the weekly report written every Monday 00:00 (Vietnam time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Written for the units this deep in the tree and above: 0 the province, 1 also the
    /// departments and communes below it. Any unit's report can be asked for at any time.
    pub depth: u32,
}

/// `[locale]`: what users read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleConfig {
    /// "vi" (the default) or "en": alert texts, and the words of the wall and report as they move
    /// to the catalogues (`lang`).
    pub language: crate::lang::Language,
}

/// Sign-in (README "Security").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The API tokens' hashes, names and roles; empty: no sign-in.
    pub tokens_file: PathBuf,
    /// `"none"`: serve without sign-in on any address, said in so many words.
    pub authentication: String,
    pub oidc: OidcConfig,
}

/// OpenID Connect bearer tokens: JWTs the issuer signed (README "Security").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must name; empty: JWTs do not sign in.
    pub issuer: String,
    /// The `aud` it must be meant for: the client id the issuer knows index766 by.
    pub audience: String,
    /// The issuer's public keys (JWKS): from this URL, or else from this file.
    pub jwks_url: String,
    pub jwks_file: PathBuf,
    /// How often the keys are fetched again (and soon after a token names an unknown key).
    pub refresh_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The principal's name; without it, `sub`.
    pub name_claim: String,
    /// Dotted path to the roles (Keycloak: `realm_access.roles`); names other than index766's
    /// roles are ignored.
    pub roles_claim: String,
    /// The unit subtrees the principal is limited to; absent: the whole province.
    pub units_claim: String,
}

/// What the audit trail keeps of a query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditQueries {
    Text,
    /// Its SHA-256 only: the trail then shows who ran which query, not what it named.
    Hash,
}

/// Whether a TLS listener asks every connection for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    /// Asked for when `client_ca_file` is set; a connection without one signs in otherwise.
    Optional,
    /// Every connection must show one the CA signed (needs `client_ca_file`).
    Required,
}

/// Where a listener's TLS material lives, checked (`Config::tls_files`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain (PEM), the server's own first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must be signed by this CA (PEM); none: none are asked for.
    pub client_ca: Option<PathBuf>,
    /// With a client CA: whether every connection must present a certificate.
    pub client_certificate_required: bool,
}

/// TLS on the HTTP and PostgreSQL listeners (README "Security").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain and its key (PEM); empty: plain TCP.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates are verified against this CA (PEM); empty: none are asked for.
    pub client_ca_file: PathBuf,
    pub client_certificates: ClientCertificates,
    /// How often the files are looked at for a renewed certificate.
    pub reload_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub events: String,
    pub petitions: String,
    pub catalog: String,
    pub units: String,
    pub dead_letter: String,
}

impl TopicsConfig {
    /// Every topic named here, input or dead-letter.
    fn all(&self) -> [&str; 5] {
        [&self.events, &self.petitions, &self.catalog, &self.units, &self.dead_letter]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PetitionsConfig {
    pub holidays: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// What to do when a snapshot's position is no longer held by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutOfRange {
    Fail,
    Earliest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub start_from: StartFrom,
    pub out_of_range: OutOfRange,
    pub max_future_secs: i64,
    pub batch_max_events: usize,
    pub batch_linger_ms: u64,
    pub max_event_bytes: usize,
    /// The most messages left to read for `GET /readyz` to answer 200.
    pub ready_max_lag_messages: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub units_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    pub spec_file: PathBuf,
    pub target_total: f64,
    pub as_of: String,
    pub publish_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub header_timeout_secs: u64,
    /// The longest request head (request line and headers) read; a longer one gets 431.
    pub max_header_bytes: usize,
    pub idle_timeout_secs: u64,
    /// Host names (beside loopback addresses and the listen address) a browser may reach `POST /sql` by.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub score_depth: u32,
    pub criterion_depth: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// The PostgreSQL wire protocol's address; empty: not served.
    pub postgres_listen: String,
    pub views_dir: PathBuf,
    pub timeout_secs: u64,
    pub memory_limit_mib: usize,
    pub max_concurrent: usize,
    /// Queries one principal may have running or waiting for a slot at once.
    pub max_per_principal: usize,
    /// What the audit trail keeps of each query.
    pub audit_queries: AuditQueries,
    /// How often the trail's newest lines are written to the store, and how many days are kept.
    pub audit_flush_secs: u64,
    pub audit_keep_days: u64,
    pub max_query_bytes: usize,
    pub max_expression_depth: usize,
    pub max_plan_nodes: usize,
    pub max_value_mib: usize,
    pub threads: usize,
    pub postgres_max_connections: usize,
    pub postgres_idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    pub url: String,
    /// The replica's own prefix under `url` (or folder under `dir`); empty: none.
    pub replica: String,
    pub options: BTreeMap<String, String>,
    pub interval_secs: u64,
    pub keep: usize,
    pub shutdown_deadline_secs: u64,
}

impl SnapshotConfig {
    /// This replica's folder and URL: `dir` and `url`, each under `replica` when it is set.
    pub fn own_place(&self) -> (PathBuf, String) {
        match self.replica.as_str() {
            "" => (self.dir.clone(), self.url.clone()),
            replica if self.url.is_empty() => (self.dir.join(replica), String::new()),
            replica => (self.dir.join(replica), format!("{}/{replica}", self.url.trim_end_matches('/'))),
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing { path: path.to_owned() });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("INDEX766__").split("__"));
        Self::extract(figment)
    }

    /// Defaults with a TOML text layered on top; no environment (used by tests and the demo).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_layers(&[text])
    }

    /// Defaults with TOML texts layered on top in order, each overriding the ones before; no environment.
    pub(crate) fn from_layers(texts: &[&str]) -> Result<Config, ConfigError> {
        let layered = texts.iter().fold(Figment::from(Toml::string(DEFAULTS)), |f, text| f.merge(Toml::string(text)));
        Self::extract(layered)
    }

    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.kafka.contains_key("bootstrap.servers") {
            return Err(ConfigError::Invalid("[kafka] needs \"bootstrap.servers\"".into()));
        }
        self.kafka.resolved()?;
        if self.http.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid("[http] max_header_bytes must be at least 8192".into()));
        }
        if self.ingest.batch_max_events == 0 {
            return Err(ConfigError::Invalid("[ingest] batch_max_events must be at least 1".into()));
        }
        let at_least_one = [
            ("[sql] max_concurrent", self.sql.max_concurrent as u64),
            ("[sql] max_per_principal", self.sql.max_per_principal as u64),
            ("[sql] audit_flush_secs", self.sql.audit_flush_secs),
            ("[sql] audit_keep_days", self.sql.audit_keep_days),
            ("[sql] max_query_bytes", self.sql.max_query_bytes as u64),
            ("[sql] max_expression_depth", self.sql.max_expression_depth as u64),
            ("[sql] max_plan_nodes", self.sql.max_plan_nodes as u64),
            ("[sql] max_value_mib", self.sql.max_value_mib as u64),
            ("[sql] threads", self.sql.threads as u64),
            ("[sql] postgres_max_connections", self.sql.postgres_max_connections as u64),
            ("[sql] postgres_idle_timeout_secs", self.sql.postgres_idle_timeout_secs),
            ("[http] max_connections", self.http.max_connections as u64),
            ("[http] header_timeout_secs", self.http.header_timeout_secs),
            ("[http] idle_timeout_secs", self.http.idle_timeout_secs),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
        }
        if self.http.idle_timeout_secs <= self.sql.timeout_secs {
            return Err(ConfigError::Invalid(format!(
                "[http] idle_timeout_secs = {} must be longer than [sql] timeout_secs = {}: a query may be silent that long",
                self.http.idle_timeout_secs, self.sql.timeout_secs
            )));
        }
        if !(0.0..=100.0).contains(&self.scoring.target_total) {
            return Err(ConfigError::Invalid("[scoring] target_total must be between 0 and 100".into()));
        }
        let replica = &self.snapshot.replica;
        if !replica.is_empty()
            && (replica.starts_with('.') || !replica.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(ConfigError::Invalid(format!(
                "[snapshot] replica = {replica:?}: name it with letters, digits, '.', '_' and '-' (not starting with '.'), as a pod name is"
            )));
        }
        if self.snapshot.interval_secs == 0 {
            return Err(ConfigError::Invalid("[snapshot] interval_secs must be at least 1".into()));
        }
        if self.snapshot.keep < 2 {
            return Err(ConfigError::Invalid(
                "[snapshot] keep must be at least 2: the one before the newest is the fallback".into(),
            ));
        }
        if self.ingest.max_future_secs < 0 {
            return Err(ConfigError::Invalid("[ingest] max_future_secs must be 0 or more".into()));
        }
        self.as_of()?;
        self.postgres_listen()?;
        if self.alerts.resend_secs == 0 {
            return Err(ConfigError::Invalid("[alerts] resend_secs must be at least 1".into()));
        }
        let election = &self.alerts.election;
        if !election.topic.is_empty() {
            if election.topic == self.alerts.topic || self.topics.all().contains(&election.topic.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "[alerts.election] topic = {:?} is another topic of the pipeline: give the election a topic of its own",
                    election.topic
                )));
            }
            if !(1000..=1_800_000).contains(&election.session_timeout_ms) {
                return Err(ConfigError::Invalid(
                    "[alerts.election] session_timeout_ms must be between 1000 and 1800000 (and within the brokers' group.min/max.session.timeout.ms)".into(),
                ));
            }
        }
        self.calendar()?;
        self.tls_files()?;
        self.check_access()
    }

    /// The listeners' TLS files; `None`: plain TCP.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let tls = &self.tls;
        let set = |path: &PathBuf| !path.as_os_str().is_empty();
        let required = tls.client_certificates == ClientCertificates::Required;
        if required && !set(&tls.client_ca_file) {
            // Without a CA no certificate is asked for: "required" would silently mean none.
            return Err(ConfigError::Invalid(
                "[tls] client_certificates = \"required\" needs client_ca_file, the CA the certificates are checked against".into(),
            ));
        }
        match (set(&tls.cert_file), set(&tls.key_file)) {
            (false, false) if set(&tls.client_ca_file) => Err(ConfigError::Invalid(
                "[tls] client_ca_file needs cert_file and key_file: client certificates come with TLS".into(),
            )),
            (false, false) => Ok(None),
            (true, true) if tls.reload_secs == 0 => {
                Err(ConfigError::Invalid("[tls] reload_secs must be at least 1".into()))
            }
            (true, true) => Ok(Some(TlsFiles {
                cert: tls.cert_file.clone(),
                key: tls.key_file.clone(),
                client_ca: set(&tls.client_ca_file).then(|| tls.client_ca_file.clone()),
                client_certificate_required: required,
            })),
            _ => Err(ConfigError::Invalid("[tls] cert_file and key_file go together: set both, or neither".into())),
        }
    }

    /// Open listeners only on loopback, unless the config says `authentication = "none"`.
    fn check_access(&self) -> Result<(), ConfigError> {
        self.check_oidc()?;
        let signs_in = !self.access.tokens_file.as_os_str().is_empty() || self.signs_in_with_jwt();
        match self.access.authentication.as_str() {
            "none" if signs_in => Err(ConfigError::Invalid(
                "[access] authentication = \"none\" and a tokens_file or [access.oidc] issuer contradict each other: remove one".into(),
            )),
            "none" => Ok(()),
            "" if signs_in => Ok(()),
            "" => {
                let listeners = [("[http] listen", Some(self.http.listen)), ("[sql] postgres_listen", self.postgres_listen()?)];
                let open = listeners.into_iter().find_map(|(key, addr)| Some((key, addr.filter(|a| !a.ip().is_loopback())?)));
                match open {
                    Some((key, addr)) => Err(ConfigError::Invalid(format!(
                        "{key} = {addr} is reachable from other machines, and nobody signs in: set [access] \
                         tokens_file (README \"Security\": index766 token makes one), or say [access] \
                         authentication = \"none\" if a gateway in front of it signs clients in"
                    ))),
                    None => Ok(()),
                }
            }
            other => Err(ConfigError::Invalid(format!(
                "[access] authentication = {other:?}: leave it empty (sign in with tokens_file; loopback may be open) or say \"none\""
            ))),
        }
    }

    pub fn signs_in_with_jwt(&self) -> bool {
        !self.access.oidc.issuer.is_empty()
    }

    fn check_oidc(&self) -> Result<(), ConfigError> {
        let oidc = &self.access.oidc;
        let invalid = |message: &str| Err(ConfigError::Invalid(format!("[access.oidc] {message}")));
        if !self.signs_in_with_jwt() {
            return match oidc.audience.is_empty() && oidc.jwks_url.is_empty() && oidc.jwks_file.as_os_str().is_empty() {
                true => Ok(()),
                false => {
                    invalid("audience and the keys are set but issuer is empty: set issuer, the iss of the tokens")
                }
            };
        }
        if oidc.audience.is_empty() {
            return invalid("audience is empty: set the client id the issuer puts in the tokens' aud");
        }
        if oidc.jwks_url.is_empty() == oidc.jwks_file.as_os_str().is_empty() {
            return invalid("set one of jwks_url (the issuer's JWKS endpoint) and jwks_file");
        }
        if oidc.refresh_secs == 0 {
            return invalid("refresh_secs must be at least 1");
        }
        if oidc.name_claim.is_empty() || oidc.roles_claim.is_empty() || oidc.units_claim.is_empty() {
            return invalid("name_claim, roles_claim and units_claim each name a claim: none may be empty");
        }
        if !oidc.jwks_url.is_empty() {
            // Keys fetched in the clear can be swapped on the way, and then anyone signs in.
            let url = reqwest::Url::parse(&oidc.jwks_url)
                .map_err(|e| ConfigError::Invalid(format!("[access.oidc] jwks_url {:?}: {e}", oidc.jwks_url)))?;
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return invalid("jwks_url must be https:// (plain http only on loopback)");
            }
        }
        Ok(())
    }

    /// The working-day calendar of `[petitions] holidays`.
    pub fn calendar(&self) -> Result<index766_core::petition::Calendar, ConfigError> {
        Ok(index766_core::petition::Calendar::new(&self.petitions.holidays)?)
    }

    /// The scoring spec `[scoring] spec_file` names, or the built-in one.
    pub fn spec(&self) -> Result<Spec, SpecError> {
        match self.scoring.spec_file.as_os_str().is_empty() {
            true => Ok(Spec::shipped()),
            false => Spec::load(&self.scoring.spec_file),
        }
    }

    /// The `[[alerts.rules]]`, checked against the spec they measure; two rules may not share a
    /// name.
    pub fn alert_rules(&self, spec: &Spec) -> Result<Vec<alerts::Rule>, ConfigError> {
        let rules =
            self.alerts.rules.iter().map(|c| alerts::Rule::from_config(c, spec)).collect::<Result<Vec<_>, _>>()?;
        if let Some(twice) = rules.iter().find(|r| rules.iter().filter(|o| o.name == r.name).count() > 1) {
            return Err(ConfigError::Invalid(format!(
                "[[alerts.rules]]: two rules are named {:?}; rename one",
                twice.name
            )));
        }
        Ok(rules)
    }

    /// `[sql] postgres_listen`, if the PostgreSQL protocol is served.
    pub(crate) fn postgres_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.sql.postgres_listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "[sql] postgres_listen = {text:?} is not an address like 127.0.0.1:5766 (or \"\" to turn it off)"
            ))
        })
    }

    /// The fixed judging instant, if `[scoring] as_of` is set.
    pub fn as_of(&self) -> Result<Option<i64>, ConfigError> {
        let text = self.scoring.as_of.trim();
        if text.is_empty() {
            return Ok(None);
        }
        index766_core::time::parse_time(text).map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "[scoring] as_of = {text:?} is not an RFC 3339 time with offset, e.g. 2026-11-24T17:00:00+07:00"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_shipped_example_load() {
        Config::from_toml("").expect("defaults load");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut loaded = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
        assert!(loaded >= 2, "default.toml and example.toml at least");
    }

    /// Replicas sharing one store each get a prefix of their own; an election needs a topic of its own.
    #[test]
    fn replicas_keep_their_own_prefix_and_elect_on_a_topic_of_their_own() {
        let shared = Config::from_toml("[snapshot]\nurl = \"s3://b/index766/\"\nreplica = \"index766-1\"").unwrap();
        assert_eq!(shared.snapshot.own_place().1, "s3://b/index766/index766-1");
        let alone = Config::from_toml("[snapshot]\ndir = \"/data\"").unwrap();
        assert_eq!(alone.snapshot.own_place(), (PathBuf::from("/data"), String::new()));
        let err = Config::from_toml("[snapshot]\nreplica = \"../other\"").unwrap_err().to_string();
        assert!(err.contains("[snapshot] replica"), "{err}");
        let err = Config::from_toml("[alerts.election]\ntopic = \"index766.alerts\"").unwrap_err().to_string();
        assert!(err.contains("a topic of its own"), "{err}");
        let err =
            Config::from_toml("[alerts.election]\ntopic = \"e\"\nsession_timeout_ms = 10").unwrap_err().to_string();
        assert!(err.contains("session_timeout_ms"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_say_what_to_fix() {
        let err = Config::from_toml("[ingest]\nbatch_max = 5").unwrap_err().to_string();
        assert!(err.contains("batch_max"), "{err}");
        let err = Config::from_toml("[ingest]\nstart_from = \"end\"").unwrap_err().to_string();
        assert!(err.contains("start_from") || err.contains("earliest"), "{err}");
        let err = Config::from_toml("[scoring]\nas_of = \"yesterday\"").unwrap_err().to_string();
        assert!(err.contains("as_of"), "{err}");
        let tls = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let err = Config::from_toml(&format!("{tls}client_certificates = \"required\"")).unwrap_err().to_string();
        assert!(err.contains("client_ca_file"), "required client certificates without a CA: {err}");
        let err = Config::from_toml(&format!("{tls}client_certificates = \"maybe\"")).unwrap_err().to_string();
        assert!(err.contains("client_certificates") && err.contains("required"), "{err}");
    }

    #[test]
    fn single_sign_on_needs_an_audience_and_keys_fetched_safely() {
        let oidc = "[access.oidc]\nissuer = \"https://sso.example.vn/realms/hn\"\n";
        let fails = |extra: &str| Config::from_toml(&format!("{oidc}{extra}")).unwrap_err().to_string();
        assert!(fails("jwks_file = \"k.json\"").contains("audience"));
        assert!(fails("audience = \"index766\"").contains("jwks_url"));
        let audience = "audience = \"index766\"\n";
        let err = fails(&format!("{audience}jwks_url = \"http://sso.example.vn/certs\""));
        assert!(err.contains("https://"), "keys in the clear: {err}");
        Config::from_toml(&format!("{oidc}{audience}jwks_url = \"http://127.0.0.1:8080/certs\"")).unwrap();
        let open = "[http]\nlisten = \"0.0.0.0:8766\"\n";
        Config::from_toml(&format!("{open}{oidc}{audience}jwks_url = \"https://sso.example.vn/certs\"")).unwrap();
        let err = Config::from_toml("[access.oidc]\naudience = \"index766\"").unwrap_err().to_string();
        assert!(err.contains("issuer is empty"), "{err}");
    }

    #[test]
    fn an_open_listener_beyond_loopback_is_refused_unless_said() {
        let err = Config::from_toml("[http]\nlisten = \"0.0.0.0:8766\"").unwrap_err().to_string();
        assert!(err.contains("[http] listen = 0.0.0.0:8766") && err.contains("tokens_file"), "{err}");
        let err = Config::from_toml("[sql]\npostgres_listen = \"10.0.0.5:5766\"").unwrap_err().to_string();
        assert!(err.contains("[sql] postgres_listen"), "{err}");
        Config::from_toml("[http]\nlisten = \"0.0.0.0:8766\"\n[access]\nauthentication = \"none\"").unwrap();
        Config::from_toml("[http]\nlisten = \"0.0.0.0:8766\"\n[access]\ntokens_file = \"/etc/index766/tokens.toml\"")
            .unwrap();
        let err = Config::from_toml("[access]\nauthentication = \"off\"").unwrap_err().to_string();
        assert!(err.contains("\"off\""), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/index766.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/index766.toml"));
    }
}
