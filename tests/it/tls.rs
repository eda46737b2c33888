//! TLS on both listeners, with a test CA: curl over HTTPS (a bearer token, or a client
//! certificate as Prometheus scrapes), the real psql with `sslmode=verify-full` (SCRAM-SHA-256 by
//! a `[[password]]` login's password or a token, or a client certificate), plain connections
//! refused, and a certificate swapped on disk served without a restart, while a broken one leaves
//! the last good one serving.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use index766::serve::access::Role;

use crate::access::make_token;
use crate::certs::Ca;
use crate::scenario;
use crate::support::{wait_for, Kafka};

/// What a client brings: the CA it trusts, a client certificate, a bearer token.
#[derive(Clone, Copy, Default)]
struct Client<'a> {
    ca: Option<&'a Path>,
    certificate: Option<(&'a Path, &'a Path)>,
    token: Option<&'a str>,
}

/// curl's status code and body; `None` when no HTTP answer came (a failed handshake).
fn curl(port: u16, method: &str, path: &str, client: Client) -> Option<(u16, String)> {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"]);
    command.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    if let Some(ca) = client.ca {
        command.arg("--cacert").arg(ca);
    }
    if let Some((key, pem)) = client.certificate {
        command.arg("--key").arg(key).arg("--cert").arg(pem);
    }
    if let Some(token) = client.token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if method == "POST" {
        command.args(["--data-binary", "SELECT count(*) AS n FROM units"]);
    }
    let scheme = if client.ca.is_some() { "https" } else { "http" };
    let out = command.arg(format!("{scheme}://localhost:{port}{path}")).output().expect("curl runs");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Some((code.parse().unwrap(), body.to_owned()))
}

/// psql over TLS, checking the server's certificate against `ca` and its name (verify-full).
fn psql(
    port: u16,
    user: &str,
    sslmode: &str,
    ca: &Path,
    certificate: Option<(&Path, &Path)>,
    password: Option<&str>,
) -> (bool, String) {
    let mut conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} dbname=index766 user={user} sslmode={sslmode} sslrootcert={}",
        ca.display()
    );
    if let Some((key, pem)) = certificate {
        conninfo += &format!(" sslkey={} sslcert={}", key.display(), pem.display());
    }
    let mut command = Command::new("psql");
    command.args([&conninfo, "-w", "-X", "-A", "-t", "-c", "SELECT count(*) FROM units"]);
    command.env("PGCONNECT_TIMEOUT", "10").env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let out = command.output().expect("psql runs (tests/run.sh installs postgresql-client)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A PostgreSQL login by password for analysts, made by the binary as an operator would: the
/// password on standard input, the `[[password]]` entry on standard output.
fn make_password(name: &str, password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_index766"))
        .args(["password", "--name", name, "--role", "analyst"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    let entry = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && entry.contains("scram = \"SCRAM-SHA-256$4096:"), "{entry}");
    assert!(!entry.contains(password), "only the verifier goes into the file: {entry}");
    entry
}

/// Replaces a file the way a renewal does: the new content appears at once, whole.
fn replace(path: &Path, from: &Path) {
    let staged = path.with_extension("new");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_speak_tls_check_client_certificates_and_take_a_renewed_certificate_without_a_restart() {
    let kafka = Kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, client_ca, renewal_ca) = (Ca::new(d, "ca"), Ca::new(d, "client-ca"), Ca::new(d, "renewal-ca"));
    let (server_key, server_pem) = ca.issue("localhost", "server", true);
    let (renewed_key, renewed_pem) = renewal_ca.issue("localhost", "renewed", true);
    let scraper = client_ca.issue("prometheus", "prometheus", false);
    let dba = client_ca.issue("dba", "dba", false);
    let stranger = Ca::new(d, "stranger-ca").issue("prometheus", "forged", false);
    // The files the pipeline reads, renewed in place below.
    let (key_file, cert_file) = (d.join("tls.key"), d.join("tls.crt"));
    replace(&key_file, &server_key);
    replace(&cert_file, &server_pem);

    let (entry, analyst) = make_token("analyst-holder", &[Role::Analyst], &[]);
    let login = make_password("lan", "Mật khẩu của Lan 2026");
    let certificates = "[[certificate]]\nname = \"prometheus\"\nroles = [\"operator\"]\n\n\
                        [[certificate]]\nname = \"dba\"\nroles = [\"analyst\"]\n";
    std::fs::write(d.join("tokens.toml"), entry + &login + certificates).unwrap();
    let mut config = scenario::prefixed_config(&kafka.bootstrap, "tls", &d.join("snapshots"), false);
    config.access.tokens_file = d.join("tokens.toml");
    (config.tls.cert_file, config.tls.key_file, config.tls.client_ca_file) =
        (cert_file.clone(), key_file.clone(), client_ca.pem());
    config.tls.reload_secs = 1;
    index766::tools::produce::ensure_topics(&kafka.bootstrap, &[&config.topics.events, &config.topics.dead_letter], 1)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let (port, pg_port) = (pipeline.http_addr.port(), pipeline.postgres_addr.unwrap().port());
    let (ca_pem, renewal_pem) = (ca.pem(), renewal_ca.pem());
    let https = Client { ca: Some(&ca_pem), ..Client::default() };
    wait_for("healthz over TLS", Duration::from_secs(60), || {
        curl(port, "GET", "/healthz", https).filter(|(code, _)| *code == 200)
    })
    .await;

    // HTTPS: a token, or a client certificate of the client CA by its name; nothing else.
    let metrics = |client| curl(port, "GET", "/metrics", client).map(|(code, _)| code);
    assert_eq!(
        metrics(Client { certificate: Some((&scraper.0, &scraper.1)), ..https }),
        Some(200),
        "Prometheus by its certificate"
    );
    assert_eq!(metrics(https), Some(401));
    assert_eq!(metrics(Client { token: Some(&analyst), ..https }), Some(403));
    assert_eq!(
        metrics(Client { certificate: Some((&stranger.0, &stranger.1)), ..https }),
        None,
        "a certificate of another CA fails the handshake, whatever its name"
    );
    let (code, body) = curl(port, "POST", "/sql", Client { token: Some(&analyst), ..https }).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(curl(port, "GET", "/healthz", Client::default()), None, "plain HTTP gets no answer from a TLS port");

    // PostgreSQL: verify-full with the token as password, or the client certificate alone.
    let (ok, out) = psql(pg_port, "analyst-holder", "verify-full", &ca_pem, None, Some(&analyst));
    assert!(ok, "{out}");
    // A [[password]] login has only a SCRAM verifier: nothing but SCRAM-SHA-256 can sign it in.
    let (ok, out) = psql(pg_port, "lan", "verify-full", &ca_pem, None, Some("Mật khẩu của Lan 2026"));
    assert!(ok, "psql signs in by SCRAM-SHA-256: {out}");
    let (ok, out) = psql(pg_port, "lan", "verify-full", &ca_pem, None, Some("Mật khẩu của Lan 2025"));
    assert!(!ok && out.to_lowercase().contains("password authentication failed"), "{out}");
    let (ok, out) = psql(pg_port, "nobody", "verify-full", &ca_pem, None, Some("guess"));
    assert!(!ok && out.to_lowercase().contains("password authentication failed"), "an unknown user: {out}");
    let (ok, out) = psql(pg_port, "dba", "verify-full", &ca_pem, Some((&dba.0, &dba.1)), None);
    assert!(ok, "the client certificate signs dba in: {out}");
    let (ok, out) = psql(pg_port, "prometheus", "verify-full", &ca_pem, Some((&scraper.0, &scraper.1)), None);
    assert!(!ok && out.contains("needs the analyst role"), "{out}");
    let (ok, out) = psql(pg_port, "analyst-holder", "disable", &ca_pem, None, Some(&analyst));
    assert!(!ok && out.contains("TLS connections only"), "a plain session is refused with what to do: {out}");
    let (ok, out) = psql(pg_port, "analyst-holder", "verify-full", &renewal_pem, None, Some(&analyst));
    assert!(!ok && out.contains("certificate verify failed"), "{out}");

    // Renewal: the new certificate serves within a few reloads, without a restart.
    replace(&key_file, &renewed_key);
    replace(&cert_file, &renewed_pem);
    let renewed = Client { ca: Some(&renewal_pem), ..Client::default() };
    wait_for("the renewed certificate served", Duration::from_secs(30), || {
        curl(port, "GET", "/healthz", renewed).filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(curl(port, "GET", "/healthz", https), None, "the old CA no longer vouches for what is served");
    let (ok, out) = psql(pg_port, "analyst-holder", "verify-full", &renewal_pem, None, Some(&analyst));
    assert!(ok, "the PostgreSQL port took the renewal too: {out}");

    // A broken renewal (a truncated certificate) leaves the last good one serving.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(curl(port, "GET", "/healthz", renewed).map(|(code, _)| code), Some(200));
    let (ok, out) = psql(pg_port, "analyst-holder", "verify-full", &renewal_pem, None, Some(&analyst));
    assert!(ok, "{out}");

    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
