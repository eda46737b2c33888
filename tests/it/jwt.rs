//! A test single sign-on issuer, as Keycloak would be: an RSA key made with the openssl command
//! line, its public half as a JWKS document, and JWTs it signs (RS256).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::certs::run;

pub const AUDIENCE: &str = "index766";

pub struct Issuer {
    pub url: String,
    kid: String,
    signer: EncodingKey,
    modulus: Vec<u8>,
}

impl Issuer {
    /// An issuer at `url` whose key (`{kid}.key` in `dir`) is named `kid`.
    pub fn new(dir: &Path, url: &str, kid: &str) -> Issuer {
        let key = format!("{kid}.key");
        run("openssl", dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &key]);
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-in", &key, "-noout", "-modulus"])
            .current_dir(dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.trim().strip_prefix("Modulus=").unwrap_or_else(|| panic!("openssl rsa -modulus: {text}"));
        let modulus = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let signer = EncodingKey::from_rsa_pem(&std::fs::read(dir.join(&key)).unwrap()).unwrap();
        Issuer { url: url.into(), kid: kid.into(), signer, modulus }
    }

    /// The JWKS document that publishes the public key.
    pub fn jwks(&self) -> String {
        let key = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.modulus), "e": "AQAB",
        });
        json!({ "keys": [key] }).to_string()
    }

    /// A JWT for `name` with Keycloak's realm roles and the `index766_units` claim, expiring
    /// `expires_in` seconds from now (negative: already expired).
    pub fn sign(&self, name: &str, roles: &[&str], units: &[String], expires_in: i64) -> String {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut claims = json!({
            "iss": self.url, "aud": AUDIENCE, "sub": format!("id-{name}"), "preferred_username": name,
            "iat": now, "exp": now + expires_in, "realm_access": { "roles": roles },
        });
        if !units.is_empty() {
            claims["index766_units"] = Value::from(units.to_vec());
        }
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::RS256) };
        jsonwebtoken::encode(&header, &claims, &self.signer).unwrap()
    }
}
