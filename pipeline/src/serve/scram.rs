//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for PostgreSQL logins, the server's side. The tokens file
//! holds a verifier in PostgreSQL's own format (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
//! <ServerKey>`), from which a password cannot be recovered and with which one cannot sign in:
//! the client proves it knows the password without sending it, and the server proves it holds the
//! verifier. Channel binding (`-PLUS`) is not offered; TLS carries the exchange.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use ring::{digest, hmac, pbkdf2};

/// PostgreSQL's default, and RFC 7677's minimum.
pub const ITERATIONS: u32 = 4096;

/// What the server keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(SCRAM-SHA-256)")
    }
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Verifier::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        // As PostgreSQL: SASLprep the password, or take it as it is where that fails.
        let password = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
        let mut salted = [0u8; 32];
        let rounds = std::num::NonZeroU32::new(iterations).expect("at least one iteration");
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &mut salted);
        let client_key = sign(&salted, b"Client Key");
        Verifier { iterations, salt, stored_key: sha256(&client_key), server_key: sign(&salted, b"Server Key") }
    }

    /// A verifier nobody's password matches, salted by `name` and `secret` so that asking twice
    /// answers alike: an unknown user goes through the same exchange as a known one.
    pub fn impostor(name: &str, secret: &[u8]) -> Verifier {
        let salt = sign(secret, name.as_bytes())[..16].to_vec();
        let mut keys = [0u8; 64];
        rand::rng().fill_bytes(&mut keys);
        Verifier {
            iterations: ITERATIONS,
            salt,
            stored_key: keys[..32].try_into().expect("32 bytes"),
            server_key: keys[32..].try_into().expect("32 bytes"),
        }
    }

    /// The first answer to a client's first message, and the exchange that waits for its proof.
    pub fn challenge(&self, client_first: &[u8]) -> Result<(String, Exchange), String> {
        let text = std::str::from_utf8(client_first).map_err(|_| "the client-first message is not UTF-8")?;
        // gs2 header: "n" (no channel binding) or "y" (the client could, but the server does not
        // offer it), then an optional authorization identity.
        let (binding, rest) = text.split_once(',').ok_or("the client-first message has no gs2 header")?;
        if binding != "n" && binding != "y" {
            return Err("channel binding is not offered: connect with channel_binding=disable or prefer".into());
        }
        let (identity, bare) = rest.split_once(',').ok_or("the client-first message has no gs2 header")?;
        let gs2_header = format!("{binding},{identity},");
        let client_nonce = bare
            .split(',')
            .find_map(|attribute| attribute.strip_prefix("r="))
            .filter(|nonce| !nonce.is_empty())
            .ok_or("the client-first message has no nonce")?;
        if bare.starts_with("m=") {
            return Err("SCRAM extensions are not supported".into());
        }
        let mut ours = [0u8; 18];
        rand::rng().fill_bytes(&mut ours);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(ours));
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&self.salt), self.iterations);
        let exchange =
            Exchange { gs2_header, client_first_bare: bare.to_owned(), server_first: server_first.clone(), nonce };
        Ok((server_first, exchange))
    }
}

impl std::str::FromStr for Verifier {
    type Err = String;

    fn from_str(text: &str) -> Result<Verifier, String> {
        let malformed = || "scram must read SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".to_owned();
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(malformed)?;
        let (parameters, keys) = rest.split_once('$').ok_or_else(malformed)?;
        let (iterations, salt) = parameters.split_once(':').ok_or_else(malformed)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(malformed)?;
        let iterations: u32 = iterations.parse().map_err(|_| malformed())?;
        if iterations < ITERATIONS {
            return Err(format!("scram: {iterations} iterations is too few; at least {ITERATIONS}"));
        }
        let key = |b64: &str| -> Result<[u8; 32], String> {
            STANDARD.decode(b64).ok().and_then(|bytes| bytes.try_into().ok()).ok_or_else(malformed)
        };
        let salt = STANDARD.decode(salt).map_err(|_| malformed())?;
        Ok(Verifier { iterations, salt, stored_key: key(stored_key)?, server_key: key(server_key)? })
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
        let (salt, stored, server) = (b64(&self.salt), b64(&self.stored_key), b64(&self.server_key));
        write!(f, "SCRAM-SHA-256${}:{salt}${stored}:{server}", self.iterations)
    }
}

/// A SCRAM exchange after the server's first message.
#[derive(Debug)]
pub struct Exchange {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Checks the client's proof; the server's final message (its own proof) if it holds.
    pub fn finish(&self, verifier: &Verifier, client_final: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(client_final).map_err(|_| "the client-final message is not UTF-8")?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or("the client-final message has no proof")?;
        let mut attributes = without_proof.split(',');
        let binding = attributes.next().and_then(|a| a.strip_prefix("c=")).ok_or("no channel-binding attribute")?;
        if STANDARD.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err("the channel-binding attribute does not match the first message".into());
        }
        if attributes.next().and_then(|a| a.strip_prefix("r=")) != Some(self.nonce.as_str()) {
            return Err("the nonce does not match the server's".into());
        }
        let proof = STANDARD.decode(proof).map_err(|_| "the proof is not base64")?;
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = sign(&verifier.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err("the proof has the wrong length".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let difference = sha256(&client_key).iter().zip(&verifier.stored_key).fold(0u8, |d, (a, b)| d | (a ^ b));
        if difference != 0 {
            return Err("password authentication failed".into());
        }
        Ok(format!("v={}", STANDARD.encode(sign(&verifier.server_key, auth_message.as_bytes()))))
    }
}

fn sign(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's side, as libpq computes it.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> (String, [u8; 32]) {
        let attribute =
            |name: &str| server_first.split(',').find_map(|a| a.strip_prefix(name)).map(str::to_owned).unwrap();
        let (nonce, salt, iterations) = (attribute("r="), attribute("s="), attribute("i=").parse().unwrap());
        let ours = Verifier::with_salt(password, STANDARD.decode(salt).unwrap(), iterations);
        let mut salted = [0u8; 32];
        let rounds = std::num::NonZeroU32::new(iterations).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &ours.salt, password.as_bytes(), &mut salted);
        let client_key = sign(&salted, b"Client Key");
        let without_proof = format!("c={},r={nonce}", STANDARD.encode("n,,"));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = sign(&ours.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        (format!("{without_proof},p={}", STANDARD.encode(proof)), sign(&ours.server_key, auth_message.as_bytes()))
    }

    #[test]
    fn the_right_password_signs_in_and_the_server_proves_it_holds_the_verifier() {
        let verifier: Verifier = Verifier::new("i766_secret").to_string().parse().unwrap();
        let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
        let (server_first, exchange) = verifier.challenge(format!("n,,{bare}").as_bytes()).unwrap();
        assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO") && server_first.ends_with(",i=4096"));
        let (last, server_signature) = client_final("i766_secret", bare, &server_first);
        assert_eq!(
            exchange.finish(&verifier, last.as_bytes()).unwrap(),
            format!("v={}", STANDARD.encode(server_signature))
        );
        let (wrong, _) = client_final("i766_guess", bare, &server_first);
        assert!(exchange.finish(&verifier, wrong.as_bytes()).unwrap_err().contains("password authentication failed"));
        let impostor = Verifier::impostor("nobody", b"k");
        let (server_first, exchange) = impostor.challenge(format!("n,,{bare}").as_bytes()).unwrap();
        let (last, _) = client_final("", bare, &server_first);
        assert!(exchange.finish(&impostor, last.as_bytes()).is_err(), "no password matches an impostor");
        assert_eq!(Verifier::impostor("nobody", b"k").salt, impostor.salt, "an unknown user's salt is stable");
    }

    #[test]
    fn the_exchange_of_rfc_7677_section_3_verifies() {
        let verifier = Verifier::with_salt("pencil", STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(), 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let exchange = Exchange {
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            nonce: nonce.into(),
        };
        let client_final = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            exchange.finish(&verifier, client_final.as_bytes()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_verifier_reads_back_as_written_and_a_malformed_one_says_what_it_must_be() {
        let written = Verifier::new("pencil").to_string();
        assert_eq!(written.parse::<Verifier>().unwrap().to_string(), written);
        assert!("md5abc".parse::<Verifier>().unwrap_err().contains("SCRAM-SHA-256$"));
        let few = written.replace("$4096:", "$1000:");
        assert!(few.parse::<Verifier>().unwrap_err().contains("too few"));
        let verifier = Verifier::new("p");
        assert!(verifier.challenge(b"p=tls-server-end-point,,n=,r=x").unwrap_err().contains("channel binding"));
        assert!(verifier.challenge(b"n,,n=").unwrap_err().contains("nonce"));
    }
}
