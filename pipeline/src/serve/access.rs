//! Who may reach what. Clients sign in with an API token, a JWT of the configured OpenID Connect
//! issuer (`oidc`), or a client certificate where TLS asks for one; `[access] tokens_file` holds
//! only each token's SHA-256, its owner's name and roles, so the file (a Kubernetes Secret) never
//! holds a usable credential, and the names of the certificates' holders with theirs. With neither
//! a tokens file nor an issuer every surface is open: the config allows that only on loopback
//! listeners, or where it says `authentication = "none"` in so many words.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Format, Toml};
use figment::Figment;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::serve::oidc::Oidc;

/// What a principal may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The dashboard's data: alerts, updates.
    Wall,
    /// SQL, over HTTP and PostgreSQL.
    Analyst,
    /// `/metrics` and the detailed `/healthz`.
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Wall, Role::Analyst, Role::Operator, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Wall => "wall",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| format!("{text:?} is not a role: wall, analyst, operator or admin"))
    }
}

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    /// The unit subtrees (by their root's code) it may read; empty: the whole province.
    pub units: Vec<String>,
}

impl Principal {
    pub fn may(&self, role: Role) -> bool {
        self.roles.iter().any(|&r| r == role || r == Role::Admin)
    }
}

/// What a surface asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Open to anyone who reaches the port (a static page, the route index, plain liveness).
    Nobody,
    Role(Role),
}

/// What a caller shows: a bearer token, or the common name of a client certificate the TLS
/// handshake verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Token(&'a str),
    Certificate(&'a str),
}

/// The common name of a connection's verified client certificate, for its requests.
#[derive(Debug, Clone)]
pub struct CertificateName(pub String);

impl Need {
    pub fn name(self) -> &'static str {
        match self {
            Need::Nobody => "none",
            Need::Role(role) => role.name(),
        }
    }
}

/// Why a caller is turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sign in: send the header \"Authorization: Bearer <token>\" (README \"Security\": creating tokens)")]
    NoCredentials,
    #[error("this token is not known here: it was mistyped, or removed from [access] tokens_file")]
    UnknownToken,
    #[error("this JWT does not sign in here: {0}")]
    Jwt(String),
    #[error(
        "the client certificate of {0:?} is not in [access] tokens_file: add a [[certificate]] entry with its roles"
    )]
    UnknownCertificate(String),
    #[error("{name} may not do this: it needs the {needed} role (or admin) in [access] tokens_file")]
    Forbidden { name: String, needed: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read [access] tokens_file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("[access] tokens_file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// One `[[token]]` of the tokens file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    roles: Vec<Role>,
    #[serde(default)]
    units: Vec<String>,
}

/// One `[[certificate]]`: the common name of client certificates the client CA signs.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    name: String,
    roles: Vec<Role>,
    #[serde(default)]
    units: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
    #[serde(default)]
    certificate: Vec<CertificateEntry>,
}

/// Who signs in with what.
#[derive(Debug, Default)]
struct Principals {
    /// By the token's SHA-256 in lowercase hex.
    tokens: HashMap<String, Principal>,
    /// By the client certificate's common name.
    certificates: HashMap<String, Principal>,
}

/// The principals; none at all: sign-in is off and everything is open.
#[derive(Debug, Default)]
pub struct Gate {
    principals: Option<Principals>,
    /// JWTs of the single sign-on issuer.
    oidc: Option<Arc<Oidc>>,
}

impl Gate {
    /// No sign-in.
    pub fn open() -> Gate {
        Gate::default()
    }

    /// Sign-in by the tokens file, JWTs of an issuer, or both; neither: open.
    pub fn new(tokens_file: Option<&Path>, oidc: Option<Arc<Oidc>>) -> Result<Gate, TokensError> {
        let gate = match tokens_file {
            Some(path) => Gate::from_file(path)?,
            None if oidc.is_some() => Gate { principals: Some(Principals::default()), oidc: None },
            None => Gate::open(),
        };
        Ok(Gate { oidc, ..gate })
    }

    fn from_file(path: &Path) -> Result<Gate, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: path.into(), source })?;
        Gate::from_toml(&text).map_err(|message| TokensError::Invalid { path: path.into(), message })
    }

    fn from_toml(text: &str) -> Result<Gate, String> {
        let file: TokenFile = Figment::from(Toml::string(text)).extract().map_err(|e| e.to_string())?;
        let mut principals = Principals::default();
        for entry in file.token {
            let hash = entry.sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "token {:?}: sha256 must be 64 hex digits (index766 token prints the entry)",
                    entry.name
                ));
            }
            if let Some(twice) =
                principals.tokens.insert(hash, principal("token", entry.name, entry.roles, entry.units)?)
            {
                return Err(format!("token {:?} has the same sha256 as another: make a new token", twice.name));
            }
        }
        for entry in file.certificate {
            let name = entry.name.clone();
            if principals
                .certificates
                .insert(name.clone(), principal("certificate", entry.name, entry.roles, entry.units)?)
                .is_some()
            {
                return Err(format!("certificate {name:?} is named twice: give it one entry with all its roles"));
            }
        }
        Ok(Gate { principals: Some(principals), oidc: None })
    }

    pub fn signs_in(&self) -> bool {
        self.principals.is_some()
    }

    /// The principal behind a credential; `Ok(None)` when sign-in is off.
    fn principal(&self, credential: Option<Credential>) -> Result<Option<Principal>, Denied> {
        let Some(principals) = &self.principals else { return Ok(None) };
        let principal = match credential.ok_or(Denied::NoCredentials)? {
            Credential::Token(token) => match (principals.tokens.get(&hash(token)), &self.oidc) {
                (Some(principal), _) => principal.clone(),
                // A JWT is three dot-separated parts; an API token has no dot.
                (None, Some(oidc)) if token.contains('.') => oidc.principal(token)?,
                (None, _) => return Err(Denied::UnknownToken),
            },
            Credential::Certificate(name) => {
                principals.certificates.get(name).cloned().ok_or_else(|| Denied::UnknownCertificate(name.into()))?
            }
        };
        Ok(Some(principal))
    }

    /// Whether a caller with this credential may reach a surface that needs `need`.
    pub fn admit(&self, credential: Option<Credential>, need: Need) -> Result<Option<Principal>, Denied> {
        let principal = match need {
            // An open surface still knows who asks, for what it shows them (the detailed /healthz).
            Need::Nobody => return Ok(self.principal(credential).ok().flatten()),
            Need::Role(_) => self.principal(credential)?,
        };
        match (principal, need) {
            (Some(p), Need::Role(role)) if !p.may(role) => Err(Denied::Forbidden { name: p.name, needed: role.name() }),
            (principal, _) => Ok(principal),
        }
    }

    /// Whether sign-in is off or the caller holds `role`: what an open surface shows in detail.
    pub fn shows(&self, principal: Option<&Principal>, role: Role) -> bool {
        !self.signs_in() || principal.is_some_and(|p| p.may(role))
    }
}

/// An entry's principal: it must hold a role.
fn principal(kind: &str, name: String, roles: Vec<Role>, units: Vec<String>) -> Result<Principal, String> {
    if roles.is_empty() {
        return Err(format!("{kind} {name:?} has no roles: give it wall, analyst, operator or admin"));
    }
    if units.iter().any(|u| u.trim().is_empty()) {
        return Err(format!("{kind} {name:?}: units holds an empty code; name each subtree by its root's unit_code"));
    }
    Ok(Principal { name, roles, units })
}

fn hash(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// A new token (`i766_` and 32 random bytes in hex) and its `[[token]]` entry for the tokens file,
/// limited to the subtrees of `units` if any.
pub fn new_token(name: &str, roles: &[Role], units: &[String]) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("i766_{}", to_hex(&secret));
    let roles: Vec<String> = roles.iter().map(|r| format!("{:?}", r.name())).collect();
    let mut entry =
        format!("[[token]]\nname = {name:?}\nsha256 = \"{}\"\nroles = [{}]\n", hash(&token), roles.join(", "));
    if !units.is_empty() {
        let units: Vec<String> = units.iter().map(|u| format!("{u:?}")).collect();
        entry += &format!("units = [{}]\n", units.join(", "));
    }
    (token, entry)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_signs_in_with_its_roles_and_nothing_else_does() {
        let (wall, wall_entry) = new_token("ioc-wall", &[Role::Wall], &[]);
        let (admin, admin_entry) = new_token("root", &[Role::Admin], &[]);
        let gate = Gate::from_toml(&(wall_entry + &admin_entry)).unwrap();
        assert_eq!(
            gate.admit(Some(Credential::Token(&wall)), Need::Role(Role::Wall)).unwrap().unwrap().name,
            "ioc-wall"
        );
        assert_eq!(
            gate.admit(Some(Credential::Token(&wall)), Need::Role(Role::Analyst)),
            Err(Denied::Forbidden { name: "ioc-wall".into(), needed: "analyst" })
        );
        assert!(
            gate.admit(Some(Credential::Token(&admin)), Need::Role(Role::Analyst)).is_ok(),
            "admin may do everything"
        );
        assert_eq!(
            gate.admit(Some(Credential::Token("i766_guess")), Need::Role(Role::Wall)),
            Err(Denied::UnknownToken)
        );
        assert_eq!(gate.admit(None, Need::Role(Role::Wall)), Err(Denied::NoCredentials));
        assert_eq!(gate.admit(None, Need::Nobody), Ok(None));
        assert!(
            !gate.shows(None, Role::Operator)
                && gate.shows(
                    Some(&Principal { name: "o".into(), roles: vec![Role::Operator], units: vec![] }),
                    Role::Operator
                )
        );
        assert!(Gate::open().admit(None, Need::Role(Role::Admin)).unwrap().is_none(), "open: no sign-in");
    }

    #[test]
    fn a_client_certificate_signs_in_by_its_common_name() {
        let gate = Gate::from_toml("[[certificate]]\nname = \"prometheus\"\nroles = [\"operator\"]\n").unwrap();
        let scraper = Some(Credential::Certificate("prometheus"));
        assert_eq!(gate.admit(scraper, Need::Role(Role::Operator)).unwrap().unwrap().name, "prometheus");
        assert!(matches!(gate.admit(scraper, Need::Role(Role::Analyst)), Err(Denied::Forbidden { .. })));
        let stranger = gate.admit(Some(Credential::Certificate("laptop")), Need::Role(Role::Wall)).unwrap_err();
        assert_eq!(stranger, Denied::UnknownCertificate("laptop".into()));
        assert!(stranger.to_string().contains("[[certificate]]"), "{stranger}");
    }

    #[test]
    fn a_bad_tokens_file_says_what_to_fix() {
        let err = Gate::from_toml("[[token]]\nname = \"a\"\nsha256 = \"abc\"\nroles = [\"wall\"]\n").unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
        let (_, entry) = new_token("a", &[], &[]);
        assert!(Gate::from_toml(&entry).unwrap_err().contains("no roles"));
        let (_, entry) = new_token("a", &[Role::Wall], &[]);
        assert!(Gate::from_toml(&entry.replace("wall", "viewer")).unwrap_err().contains("viewer"));
        assert!(Gate::from_toml(&(entry.clone() + &entry)).unwrap_err().contains("same sha256"));
    }
}
