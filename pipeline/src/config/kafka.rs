//! The `[kafka]` table: librdkafka's properties as they are, except that a value may come from a
//! file or an environment variable (`"${file:/path}"`, `"${env:NAME}"`, Kafka's own config
//! provider syntax) so a Kubernetes Secret never has to be written into the config. The values of
//! secret properties are never shown: not by `Debug`, not in an error.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use serde::Deserialize;

use super::ConfigError;

#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct KafkaSettings(BTreeMap<String, String>);

/// Whether a property holds a credential (librdkafka's `sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, an inline key or JAAS-like config).
pub fn is_secret(property: &str) -> bool {
    property.ends_with("password")
        || property.contains("secret")
        || property == "ssl.key.pem"
        || property == "sasl.oauthbearer.config"
}

impl KafkaSettings {
    /// Every property with its value, files read and variables expanded. The error names the
    /// property and where its value was to come from, never the value.
    pub fn resolved(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.0.iter().map(|(key, value)| Ok((key.clone(), resolve(key, value)?))).collect()
    }
}

fn resolve(key: &str, value: &str) -> Result<String, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid(format!("[kafka] \"{key}\": {why}"));
    let Some(reference) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return Ok(value.to_owned());
    };
    match reference.split_once(':') {
        Some(("file", path)) => std::fs::read_to_string(path)
            // A file written by `echo` or a Secret editor ends with a newline that is not part of it.
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| invalid(format!("cannot read the file {path}: {e}"))),
        Some(("env", name)) => std::env::var(name)
            .map_err(|_| invalid(format!("the environment variable {name} is not set (or not UTF-8)"))),
        _ => Err(invalid(format!("{value} is neither ${{file:/path}} nor ${{env:NAME}}"))),
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.0.iter().map(|(k, v)| (k, if is_secret(k) && !v.starts_with("${") { "<hidden>" } else { v }));
        f.debug_map().entries(shown).finish()
    }
}

/// Read and changed like the table it is (tests and tools set properties).
impl Deref for KafkaSettings {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for KafkaSettings {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn values_come_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        std::env::set_var("INDEX766_TEST_KAFKA_USER", "index766");
        let kafka = settings(&[
            ("sasl.password", &format!("${{file:{}}}", file.display())),
            ("sasl.username", "${env:INDEX766_TEST_KAFKA_USER}"),
            ("security.protocol", "SASL_SSL"),
        ]);
        let resolved: BTreeMap<_, _> = kafka.resolved().unwrap().into_iter().collect();
        assert_eq!(resolved["sasl.password"], "s3cr3t", "the file's trailing newline is not part of it");
        assert_eq!(resolved["sasl.username"], "index766");
        assert_eq!(resolved["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn a_missing_file_or_variable_is_named_and_no_secret_is_shown() {
        let err = settings(&[("sasl.password", "${file:/nonexistent/pw}")]).resolved().unwrap_err().to_string();
        assert!(err.contains("\"sasl.password\"") && err.contains("/nonexistent/pw"), "{err}");
        let err = settings(&[("sasl.password", "${env:INDEX766_TEST_UNSET}")]).resolved().unwrap_err().to_string();
        assert!(err.contains("INDEX766_TEST_UNSET is not set"), "{err}");
        let err = settings(&[("sasl.password", "${vault:x}")]).resolved().unwrap_err().to_string();
        assert!(err.contains("neither"), "{err}");
        let shown = format!("{:?}", settings(&[("sasl.password", "hunter2"), ("ssl.key.password", "k3y")]));
        assert!(!shown.contains("hunter2") && !shown.contains("k3y"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }
}
