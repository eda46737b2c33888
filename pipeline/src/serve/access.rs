//! Who may reach what. Clients sign in with an API token, a JWT of the configured OpenID Connect
//! issuer (`oidc`), or a client certificate where TLS asks for one; `[access] tokens_file` holds
//! only each token's SHA-256, its owner's name and roles, so the file (a Kubernetes Secret) never
//! holds a usable credential, and the names of the certificates' holders with theirs. With neither
//! a tokens file nor an issuer every surface is open: the config allows that only on loopback
//! listeners, or where it says `authentication = "none"` in so many words.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Format, Toml};
use figment::Figment;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::serve::scram::Verifier;

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

/// One `[[token]]` of the tokens file: its SHA-256 for bearer sign-in, and (from `index766
/// token`) its SCRAM verifier for PostgreSQL, where it is the password of the user it names.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    scram: Option<String>,
    roles: Vec<Role>,
    #[serde(default)]
    units: Vec<String>,
}

/// One `[[password]]`: a PostgreSQL login by password, kept as its SCRAM verifier.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordEntry {
    name: String,
    scram: String,
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
    #[serde(default)]
    password: Vec<PasswordEntry>,
}

/// Who signs in with what.
#[derive(Debug)]
struct Principals {
    /// By the token's SHA-256 in lowercase hex.
    tokens: HashMap<String, Principal>,
    /// By the client certificate's common name.
    certificates: HashMap<String, Principal>,
    /// PostgreSQL users who sign in with SCRAM-SHA-256, by name.
    scram: HashMap<String, (Verifier, Principal)>,
    /// The names of tokens without a verifier (made before there was one): their PostgreSQL
    /// login sends the token in the clear, inside TLS.
    cleartext: HashSet<String>,
    /// Salts the made-up verifier of an unknown user, the same for each asking.
    impostor_key: [u8; 32],
}

/// An entry of the tokens file as a PostgreSQL login: its kind, its SCRAM verifier, its principal.
type Entry = (&'static str, Option<String>, Principal);

/// How a PostgreSQL user proves who it is.
#[derive(Debug)]
pub enum Login {
    /// Sign-in is off.
    Open,
    /// SCRAM-SHA-256 against this verifier; no principal: the user is unknown, and the exchange
    /// only looks like one that could succeed (a stranger learns no user names).
    Scram(Verifier, Option<Principal>),
    /// A password sent as is: a JWT, or a token without a verifier.
    Password,
}

/// Who a JWT of the single sign-on issuer names (`serve::oidc`), or why it is refused.
pub trait Issuer: std::fmt::Debug + Send + Sync {
    fn principal(&self, jwt: &str) -> Result<Principal, Denied>;
}

/// The principals; none at all: sign-in is off and everything is open.
#[derive(Debug, Default)]
pub struct Gate {
    principals: Option<Principals>,
    /// JWTs of the single sign-on issuer.
    oidc: Option<Arc<dyn Issuer>>,
}

impl Gate {
    /// No sign-in.
    pub fn open() -> Gate {
        Gate::default()
    }

    /// Sign-in by the tokens file, JWTs of an issuer, or both; neither: open.
    pub fn new(tokens_file: Option<&Path>, oidc: Option<Arc<dyn Issuer>>) -> Result<Gate, TokensError> {
        let gate = match tokens_file {
            Some(path) => Gate::from_file(path)?,
            None if oidc.is_some() => Gate { principals: Some(Principals::new()), oidc: None },
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
        let mut principals = Principals::new();
        let mut logins: HashMap<String, Vec<Entry>> = HashMap::new();
        for entry in file.token {
            let hash = entry.sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "token {:?}: sha256 must be 64 hex digits (index766 token prints the entry)",
                    entry.name
                ));
            }
            let principal = principal("token", entry.name, entry.roles, entry.units)?;
            logins.entry(principal.name.clone()).or_default().push(("token", entry.scram, principal.clone()));
            if let Some(twice) = principals.tokens.insert(hash, principal) {
                return Err(format!("token {:?} has the same sha256 as another: make a new token", twice.name));
            }
        }
        for entry in file.password {
            let principal = principal("password", entry.name, entry.roles, entry.units)?;
            logins.entry(principal.name.clone()).or_default().push(("password", Some(entry.scram), principal));
        }
        // A name's PostgreSQL login: SCRAM with its one verifier; two tokens of one name (a token
        // being replaced) sign in by the token itself, as a SCRAM exchange holds to one verifier.
        for (name, mut entries) in logins {
            match entries.pop() {
                Some((kind, Some(scram), principal)) if entries.is_empty() => {
                    let verifier = scram.parse().map_err(|e| format!("{kind} {name:?}: {e}"))?;
                    principals.scram.insert(name, (verifier, principal));
                }
                Some((kind, ..)) if kind == "password" || entries.iter().any(|(kind, ..)| *kind == "password") => {
                    return Err(format!("{name:?} has a [[password]] and another login: give a name one of them"));
                }
                _ => drop(principals.cleartext.insert(name)),
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
            Credential::Token(token) => match (principals.tokens.get(&sha256_hex(token)), &self.oidc) {
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
        match need {
            // An open surface still knows who asks, for what it shows them (the detailed /healthz).
            Need::Nobody => Ok(self.principal(credential).ok().flatten()),
            Need::Role(role) => self.principal(credential)?.map(|p| permit(p, role)).transpose(),
        }
    }

    /// How PostgreSQL's `user` signs in.
    pub fn login(&self, user: &str) -> Login {
        let Some(principals) = &self.principals else { return Login::Open };
        match principals.scram.get(user) {
            Some((verifier, principal)) => Login::Scram(verifier.clone(), Some(principal.clone())),
            None if self.oidc.is_some() || principals.cleartext.contains(user) => Login::Password,
            None => Login::Scram(Verifier::impostor(user, &principals.impostor_key), None),
        }
    }

    /// Whether sign-in is off or the caller holds `role`: what an open surface shows in detail.
    pub fn shows(&self, principal: Option<&Principal>, role: Role) -> bool {
        !self.signs_in() || principal.is_some_and(|p| p.may(role))
    }
}

/// The principal, if it holds `role`.
pub fn permit(principal: Principal, role: Role) -> Result<Principal, Denied> {
    match principal.may(role) {
        true => Ok(principal),
        false => Err(Denied::Forbidden { name: principal.name, needed: role.name() }),
    }
}

impl Principals {
    fn new() -> Principals {
        let mut impostor_key = [0u8; 32];
        rand::rng().fill_bytes(&mut impostor_key);
        Principals {
            tokens: HashMap::new(),
            certificates: HashMap::new(),
            scram: HashMap::new(),
            cleartext: HashSet::new(),
            impostor_key,
        }
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

/// A text's SHA-256 in lowercase hex: how tokens are kept, and queries in a hashed audit trail.
pub(crate) fn sha256_hex(text: &str) -> String {
    to_hex(&Sha256::digest(text.as_bytes()))
}

/// A new token (`i766_` and 32 random bytes in hex) and its `[[token]]` entry for the tokens file,
/// limited to the subtrees of `units` if any.
pub fn new_token(name: &str, roles: &[Role], units: &[String]) -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("i766_{}", to_hex(&secret));
    let entry = entry(
        "token",
        name,
        &[("sha256", sha256_hex(&token)), ("scram", Verifier::new(&token).to_string())],
        roles,
        units,
    );
    (token, entry)
}

/// The `[[password]]` entry of a PostgreSQL login with this password.
pub fn new_password(name: &str, password: &str, roles: &[Role], units: &[String]) -> String {
    entry("password", name, &[("scram", Verifier::new(password).to_string())], roles, units)
}

fn entry(kind: &str, name: &str, secrets: &[(&str, String)], roles: &[Role], units: &[String]) -> String {
    let list = |items: Vec<String>| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    let mut entry = format!("[[{kind}]]\nname = {name:?}\n");
    for (key, value) in secrets {
        entry += &format!("{key} = {value:?}\n");
    }
    entry += &format!("roles = [{}]\n", list(roles.iter().map(|r| r.name().to_owned()).collect()));
    if !units.is_empty() {
        entry += &format!("units = [{}]\n", list(units.to_vec()));
    }
    entry
}

fn to_hex(bytes: &[u8]) -> String {
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
    fn postgresql_users_sign_in_by_scram_unless_only_a_password_can_say_who_they_are() {
        let (_, lan) = new_token("lan", &[Role::Analyst], &["H01".into()]);
        let password = new_password("minh", "pencil", &[Role::Analyst], &[]);
        // A token entry from before tokens had verifiers: its login sends the token itself.
        let (_, old) = new_token("old", &[Role::Analyst], &[]);
        let old: String = old.lines().filter(|l| !l.starts_with("scram")).map(|l| format!("{l}\n")).collect();
        let gate = Gate::from_toml(&(lan + &password + &old)).unwrap();
        assert!(matches!(gate.login("lan"), Login::Scram(_, Some(p)) if p.units == ["H01"]));
        assert!(matches!(gate.login("minh"), Login::Scram(_, Some(p)) if p.name == "minh"));
        assert!(matches!(gate.login("old"), Login::Password));
        let (Login::Scram(once, None), Login::Scram(twice, None)) = (gate.login("eve"), gate.login("eve")) else {
            panic!("an unknown user is asked for SCRAM too")
        };
        assert!(once.to_string().split('$').nth(1) == twice.to_string().split('$').nth(1), "with the same salt");
        assert!(matches!(Gate::open().login("anyone"), Login::Open));
        let twice = new_password("minh", "other", &[Role::Wall], &[]);
        assert!(Gate::from_toml(&(password + &twice)).unwrap_err().contains("[[password]] and another"));
        // A token being replaced: the old and the new one both sign in, by the token itself.
        let ((_, first), (_, second)) =
            (new_token("lan", &[Role::Analyst], &[]), new_token("lan", &[Role::Analyst], &[]));
        assert!(matches!(Gate::from_toml(&(first + &second)).unwrap().login("lan"), Login::Password));
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
