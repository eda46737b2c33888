//! OpenID Connect bearer tokens, for single sign-on (Keycloak and the like). A JWT is a principal
//! when one of the issuer's keys (its JWKS, from a URL or a file, fetched again every
//! `refresh_secs`) verifies its signature, and it names the configured issuer and audience and has
//! not expired. Its name, roles and unit scopes come from claims the config names.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::OidcConfig;
use crate::serve::access::{Denied, Issuer, Principal, Role};

/// Signatures by a public key only: a shared-secret algorithm (HS256) would let anyone who holds
/// the "public" set sign, and `none` signs nothing.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A failed fetch or an unknown key id is looked at again after this long, not at once: a flood
/// of tokens naming made-up keys must not become a flood of requests to the issuer.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("[access.oidc] jwks_file {path}: {message}")]
    File { path: String, message: String },
    #[error("[access.oidc] jwks_url {url}: {message}")]
    Url { url: String, message: String },
}

/// The issuer's keys by key id; a key without an id is tried for tokens that name none.
#[derive(Default)]
struct Keys {
    by_id: HashMap<String, DecodingKey>,
    without_id: Vec<DecodingKey>,
}

pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<Keys>,
    /// A token named a key id the set does not hold: the issuer may have rotated its keys.
    stale: Notify,
    client: reqwest::Client,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

impl Oidc {
    /// The issuer's keys read once. A file that cannot be read is a config mistake and stops the
    /// start; an issuer that does not answer only delays JWT sign-ins (the refresher tries again),
    /// so that tokens from the file still work while Keycloak restarts.
    pub async fn start(config: &OidcConfig) -> Result<Arc<Oidc>, OidcError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Url { url: config.jwks_url.clone(), message: e.to_string() })?;
        let oidc = Arc::new(Oidc { config: config.clone(), keys: RwLock::default(), stale: Notify::new(), client });
        match oidc.fetch().await {
            Ok(keys) => *oidc.keys.write().expect("never poisoned") = keys,
            Err(error @ OidcError::File { .. }) => return Err(error),
            Err(error) => tracing::warn!(%error, "no JWT signs in until the issuer's keys are fetched"),
        }
        Ok(oidc)
    }

    /// Fetches the keys every `refresh_secs`, and soon after a token names a key it does not hold.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) {
        let every = Duration::from_secs(self.config.refresh_secs);
        let mut fetched = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                () = self.stale.notified() => tokio::time::sleep(RETRY.saturating_sub(fetched.elapsed())).await,
            }
            fetched = Instant::now();
            match self.fetch().await {
                Ok(keys) => *self.keys.write().expect("never poisoned") = keys,
                Err(error) => {
                    tracing::warn!(%error, "the issuer's keys were not refreshed; the last ones stay");
                    self.stale.notify_one();
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Keys, OidcError> {
        if !self.config.jwks_url.is_empty() {
            let url = &self.config.jwks_url;
            let failed = |message: String| OidcError::Url { url: url.clone(), message };
            let response = self.client.get(url).send().await.map_err(|e| failed(e.to_string()))?;
            let response = response.error_for_status().map_err(|e| failed(e.to_string()))?;
            let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
            return keys(&body).map_err(failed);
        }
        let path = &self.config.jwks_file;
        let failed = |message: String| OidcError::File { path: path.display().to_string(), message };
        keys(&std::fs::read(path).map_err(|e| failed(e.to_string()))?).map_err(failed)
    }

    /// The principal a JWT names, or why it is refused.
    fn verify(&self, token: &str) -> Result<Principal, Denied> {
        let refused = |why: String| Denied::Jwt(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(format!("it cannot be read ({e})")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused(format!(
                "it is signed with {:?}; only public-key signatures are accepted",
                header.alg
            )));
        }
        let claims = {
            let keys = self.keys.read().expect("never poisoned");
            let candidates: Vec<&DecodingKey> = match &header.kid {
                Some(kid) => keys.by_id.get(kid).into_iter().collect(),
                None => keys.without_id.iter().collect(),
            };
            if keys.by_id.is_empty() && keys.without_id.is_empty() {
                self.stale.notify_one();
                return Err(refused(
                    "the issuer's keys are not fetched yet (the log says why): try again shortly".into(),
                ));
            }
            if candidates.is_empty() {
                self.stale.notify_one();
                return Err(refused(format!(
                    "its key {:?} is not among the issuer's keys (they are fetched again now): it was signed by another issuer",
                    header.kid.as_deref().unwrap_or("without an id")
                )));
            }
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&self.config.issuer]);
            validation.set_audience(&[&self.config.audience]);
            validation.leeway = self.config.leeway_secs;
            validation.validate_nbf = true;
            let mut last = None;
            let decoded = candidates.into_iter().find_map(|key| {
                jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| last = Some(e)).ok()
            });
            match (decoded, last) {
                (Some(decoded), _) => decoded.claims,
                (None, Some(error)) => return Err(refused(self.reason(error))),
                (None, None) => unreachable!("at least one key was tried"),
            }
        };
        self.claims_principal(&claims)
    }

    fn reason(&self, error: jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::ExpiredSignature => "it has expired: sign in again".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
            ErrorKind::InvalidIssuer => format!("it was not issued by {:?}, the configured issuer", self.config.issuer),
            ErrorKind::InvalidAudience => format!("it is not meant for {:?} (aud)", self.config.audience),
            ErrorKind::InvalidSignature => "its signature does not verify with the issuer's key".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("it carries no {claim:?} claim"),
            _ => format!("it is not valid ({error})"),
        }
    }

    /// Name, roles and units from the verified claims. Role names other than index766's are the
    /// issuer's business and ignored; no units claim: the whole province, as in the tokens file.
    fn claims_principal(&self, claims: &Value) -> Result<Principal, Denied> {
        let config = &self.config;
        let name = text(claim(claims, &config.name_claim))
            .or_else(|| text(claims.get("sub")))
            .ok_or_else(|| Denied::Jwt(format!("it carries neither {:?} nor \"sub\"", config.name_claim)))?;
        let roles = strings(claim(claims, &config.roles_claim)).iter().filter_map(|r| r.parse::<Role>().ok()).collect();
        let units = strings(claim(claims, &config.units_claim));
        if units.iter().any(|u| u.trim().is_empty()) {
            return Err(Denied::Jwt(format!("its {:?} claim holds an empty unit code", config.units_claim)));
        }
        Ok(Principal { name: name.to_owned(), roles, units })
    }
}

impl Issuer for Oidc {
    fn principal(&self, jwt: &str) -> Result<Principal, Denied> {
        self.verify(jwt)
    }
}

/// A claim's text, if it is a string and not empty.
fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// A claim by its dotted path: Keycloak's realm roles are `realm_access.roles`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, key| value.get(key))
}

/// A list claim: a JSON array of strings, or one string of space-separated values (as `scope`).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The signature keys of a JWKS document; shared-secret keys are refused.
fn keys(document: &[u8]) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Keys::default();
    for jwk in &set.keys {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err("it holds a shared-secret (oct) key; an issuer publishes only public keys".into());
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
        match &jwk.common.key_id {
            Some(kid) => drop(keys.by_id.insert(kid.clone(), key)),
            None => keys.without_id.push(key),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    /// A P-256 key: its signer, and its public half as a JWK with `kid`.
    fn key(kid: &str) -> (EncodingKey, Value) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref(); // 0x04, x, y
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
    }

    fn oidc(jwks: &[&Value]) -> Oidc {
        let config = crate::config::Config::from_toml("").unwrap();
        let config = OidcConfig {
            issuer: "https://sso.example.vn/realms/province".into(),
            audience: "index766".into(),
            units_claim: "units".into(),
            ..config.access.oidc
        };
        let keys = keys(serde_json::json!({ "keys": jwks }).to_string().as_bytes()).unwrap();
        Oidc { config, keys: RwLock::new(keys), stale: Notify::new(), client: reqwest::Client::new() }
    }

    fn sign(key: &EncodingKey, kid: &str, claims: Value) -> String {
        let header = Header { kid: Some(kid.into()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = serde_json::json!({
            "iss": "https://sso.example.vn/realms/province", "aud": "index766", "exp": now + 300,
            "sub": "f1c3", "preferred_username": "lan.nguyen",
            "realm_access": { "roles": ["analyst", "offline_access"] }, "units": ["H01"],
        });
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        claims
    }

    #[test]
    fn a_jwt_the_issuer_signed_is_its_named_principal_with_its_roles_and_units() {
        let (signer, jwk) = key("k1");
        let gate = oidc(&[&jwk]);
        let principal = gate.principal(&sign(&signer, "k1", claims(serde_json::json!({})))).unwrap();
        assert_eq!(
            principal,
            Principal { name: "lan.nguyen".into(), roles: vec![Role::Analyst], units: vec!["H01".into()] }
        );
        let without_name = claims(serde_json::json!({ "preferred_username": null }));
        assert_eq!(gate.principal(&sign(&signer, "k1", without_name)).unwrap().name, "f1c3", "falls back to sub");
    }

    #[test]
    fn a_jwt_is_refused_for_each_thing_wrong_with_it_and_says_which() {
        let (signer, jwk) = key("k1");
        let (stranger, _) = key("k1");
        let gate = oidc(&[&jwk]);
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            (sign(&signer, "k1", claims(serde_json::json!({ "exp": now - 3600 }))), "expired"),
            (sign(&signer, "k1", claims(serde_json::json!({ "iss": "https://elsewhere" }))), "configured issuer"),
            (sign(&signer, "k1", claims(serde_json::json!({ "aud": "grafana" }))), "not meant for"),
            (sign(&signer, "k2", claims(serde_json::json!({}))), "another issuer"),
            (sign(&stranger, "k1", claims(serde_json::json!({}))), "signature"),
            (sign(&signer, "k1", claims(serde_json::json!({ "nbf": now + 3600 }))), "not valid yet"),
            (
                jsonwebtoken::encode(
                    &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
                    &claims(serde_json::json!({})),
                    &EncodingKey::from_secret(b"the public key"),
                )
                .unwrap(),
                "public-key",
            ),
            ("a.b.c".into(), "cannot be read"),
        ];
        for (token, why) in cases {
            match gate.principal(&token) {
                Err(Denied::Jwt(reason)) => assert!(reason.contains(why), "{why}: {reason}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        let mut exp = claims(serde_json::json!({}));
        exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(gate.principal(&sign(&signer, "k1", exp)), Err(Denied::Jwt(r)) if r.contains("exp")));
    }

    /// Serves whatever `document` holds as the JWKS, over plain HTTP on loopback.
    async fn issuer(document: Arc<std::sync::Mutex<String>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body = document.lock().unwrap().clone();
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = socket.write_all((head + &body).as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn keys_come_from_the_issuer_url_and_a_rotated_key_is_fetched_when_a_token_names_it() {
        let ((old, old_jwk), (new, new_jwk)) = (key("2026-11"), key("2026-12"));
        let document = Arc::new(std::sync::Mutex::new(serde_json::json!({ "keys": [old_jwk] }).to_string()));
        let mut config = oidc(&[]).config;
        config.jwks_url = issuer(document.clone()).await;
        let oidc = Oidc::start(&config).await.unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(oidc.clone().keep_fresh(shutdown.clone()));
        assert!(oidc.principal(&sign(&old, "2026-11", claims(serde_json::json!({})))).is_ok(), "the key at the URL");
        // The issuer rotates: the new key is published, and a token signed with it arrives.
        *document.lock().unwrap() = serde_json::json!({ "keys": [new_jwk] }).to_string();
        let rotated = sign(&new, "2026-12", claims(serde_json::json!({})));
        assert!(matches!(oidc.principal(&rotated), Err(Denied::Jwt(r)) if r.contains("fetched again")));
        let started = Instant::now();
        while oidc.principal(&rotated).is_err() {
            assert!(started.elapsed() < RETRY * 3, "the rotated key was not fetched");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shutdown.cancel();
    }

    #[test]
    fn without_the_issuer_s_keys_a_jwt_is_refused_for_that_and_not_blamed_on_its_issuer() {
        let (signer, _) = key("k1");
        let refused = oidc(&[]).principal(&sign(&signer, "k1", claims(serde_json::json!({})))).unwrap_err();
        assert!(matches!(&refused, Denied::Jwt(r) if r.contains("not fetched yet")), "{refused:?}");
    }

    #[test]
    fn a_key_set_with_a_shared_secret_is_refused() {
        let oct = serde_json::json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0", "kid": "s" }] });
        assert!(keys(oct.to_string().as_bytes()).err().unwrap().contains("shared-secret"));
        assert!(keys(b"<html>").err().unwrap().contains("not a JWKS"));
    }
}
