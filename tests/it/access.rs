//! Sign-in and roles: every route of the HTTP port's table and the PostgreSQL port, against no
//! token, an unknown token, an expired JWT, a JWT of another issuer, and a token and a JWT of each
//! role, with tokens made by `index766 token` and JWTs signed by a test issuer (`jwt`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use index766::serve::access::{Need, Role};
use index766::serve::routes::ROUTES;

use crate::jwt::{Issuer, AUDIENCE};
use crate::scenario;
use crate::support::{wait_for, Kafka};

/// A token made by the binary, as an operator would: the entry for the file, and the token.
pub(crate) fn make_token(name: &str, roles: &[Role], units: &[String]) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_index766"));
    command.args(["token", "--name", name]);
    for role in roles {
        command.args(["--role", role.name()]);
    }
    for unit in units {
        command.args(["--unit", unit]);
    }
    let out = command.output().expect("index766 token runs");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let token = stderr.split_whitespace().last().expect("the token on standard error").to_owned();
    let entry = String::from_utf8(out.stdout).unwrap();
    assert!(!entry.contains(&token), "only the hash goes into the file: {entry}");
    (entry, token)
}

/// The status and the body, but only the status of an open `/api/updates`: it never ends. A
/// 503 of `/healthz` or `/readyz` is the pipeline's state (a broker moment, catching up), not a
/// refusal: read as 200.
fn status(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = if method == "POST" { "SELECT 1" } else { "" };
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    let mut body = Vec::new();
    if !(path == "/api/updates" && code == 200) {
        stream.read_to_end(&mut body).unwrap();
    }
    let code = if (path == "/healthz" || path == "/readyz") && code == 503 { 200 } else { code };
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn psql(port: u16, user: &str, password: Option<&str>) -> (bool, String) {
    let mut command = Command::new("psql");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "index766", "-w", "-X", "-A", "-t"]);
    command.args(["-c", "SELECT count(*) FROM units"]).env("PGCONNECT_TIMEOUT", "10").env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let out = command.output().expect("psql runs (tests/run.sh installs postgresql-client)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_the_postgresql_port_answer_each_role_as_the_route_table_says() {
    let kafka = Kafka::shared();
    let prefix = "access";
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::new();
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let (entry, token) = make_token(&format!("{}-holder", role.name()), &[role], &[]);
        file += &entry;
        tokens.push((role, token));
    }
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(&tokens_file, &file).unwrap();
    let issuer = Issuer::new(dir.path(), "https://sso.example.vn/realms/province", "province-key");
    let stranger = Issuer::new(dir.path(), "https://sso.elsewhere.vn/realms/other", "other-key");
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, issuer.jwks()).unwrap();
    let jwts: Vec<(Role, String)> =
        Role::ALL.iter().map(|&r| (r, issuer.sign(&format!("{}-sso", r.name()), &[r.name()], &[], 600))).collect();
    let expired = issuer.sign("admin-sso", &["admin"], &[], -3600);
    let foreign = stranger.sign("admin-sso", &["admin"], &[], 600);
    let mut config = scenario::prefixed_config(&kafka.bootstrap, prefix, &dir.path().join("snapshots"), false);
    config.access.tokens_file = tokens_file;
    config.access.oidc.issuer = issuer.url.clone();
    config.access.oidc.audience = AUDIENCE.into();
    config.access.oidc.jwks_file = jwks_file;
    config.sql.max_per_principal = 1;
    index766::tools::produce::ensure_topics(&kafka.bootstrap, &[&config.topics.events, &config.topics.dead_letter], 1)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let (addr, pg_port) = (pipeline.http_addr, pipeline.postgres_addr.unwrap().port());
    wait_for("the HTTP port answers", Duration::from_secs(60), || {
        (status(addr, "GET", "/healthz", None).0 == 200).then_some(())
    })
    .await;

    // Every route × {no credentials, refused credentials, each role by token and by JWT}.
    let refused =
        [("none", None), ("wrong", Some("i766_0000")), ("expired", Some(&*expired)), ("foreign", Some(&*foreign))];
    let held: Vec<(String, Role, &str)> = [("token", &tokens), ("jwt", &jwts)]
        .into_iter()
        .flat_map(|(kind, credentials)| {
            credentials.iter().map(move |(r, c)| (format!("{kind}:{}", r.name()), *r, c.as_str()))
        })
        .collect();
    let mut matrix = vec![format!(
        "{:<30}{}{}",
        "route",
        refused.map(|(name, _)| format!("{name:>8}")).concat(),
        held.iter().map(|(name, _, _)| format!("{name:>15}")).collect::<String>()
    )];
    for route in ROUTES {
        let expected = |held: Option<Role>| match (route.need, held) {
            (Need::Nobody, _) => 200,
            (Need::Role(_), None) => 401,
            (Need::Role(needed), Some(held)) if held == needed || held == Role::Admin => 200,
            (Need::Role(_), Some(_)) => 403,
        };
        let mut row = format!("{:<30}", format!("{} {}", route.method, route.path));
        for (name, credential) in refused {
            let (code, body) = status(addr, route.method, route.path, credential);
            assert_eq!(code, expected(None), "{} {} with {name} credentials: {body}", route.method, route.path);
            row += &format!("{code:>8}");
        }
        for (name, role, credential) in &held {
            let (code, body) = status(addr, route.method, route.path, Some(credential));
            // Let through, a report route without its week answers that none is kept yet.
            let code =
                if code == 404 && route.path.starts_with("/reports/") && body.contains("kept") { 200 } else { code };
            assert_eq!(code, expected(Some(*role)), "{} {} as {name}: {body}", route.method, route.path);
            if code == 403 {
                assert!(
                    body.contains("role"),
                    "{} {} as {name}: a refusal names the role: {body:?}",
                    route.method,
                    route.path
                );
            }
            row += &format!("{code:>15}");
        }
        matrix.push(row);
    }

    // The plain liveness answer for anyone; the detail for operators.
    let plain = status(addr, "GET", "/healthz", None).1;
    assert!(!plain.contains("notices"), "{plain}");
    let operator = &tokens.iter().find(|(r, _)| *r == Role::Operator).unwrap().1;
    let detailed = status(addr, "GET", "/healthz", Some(operator)).1;
    assert!(detailed.contains("notices"), "{detailed}");

    // PostgreSQL, the matrix's last row: the user is the token's (or the JWT's) name, the password
    // the token (or the JWT); SQL needs analyst. 28P01: the password is refused; 42501: the role;
    // no pw: asked for a password, psql -w has none to give.
    let mut row = format!("{:<30}", "psql (PostgreSQL port)");
    for (name, credential) in refused {
        let (ok, out) = psql(pg_port, "admin-holder", credential);
        // Without one, psql -w gives up at the server's ask ("no password supplied").
        assert!(!ok && out.to_lowercase().contains("password"), "psql with {name} credentials: {out}");
        row += &format!("{:>8}", if credential.is_some() { "28P01" } else { "no pw" });
    }
    for (name, role, credential) in &held {
        let user = format!("{}-{}", role.name(), if name.starts_with("jwt") { "sso" } else { "holder" });
        let (ok, out) = psql(pg_port, &user, Some(credential));
        let may = matches!(role, Role::Analyst | Role::Admin);
        assert_eq!(ok, may, "psql as {name}: {out}");
        assert!(may || out.contains("needs the analyst role"), "{out}");
        row += &format!("{:>15}", if may { "ok" } else { "42501" });
    }
    matrix.push(row);
    eprintln!("{}", matrix.join("\n"));
    // A credential signs in only as the user it names.
    let analyst = &tokens.iter().find(|(r, _)| *r == Role::Analyst).unwrap().1;
    let analyst_jwt = &jwts.iter().find(|(r, _)| *r == Role::Analyst).unwrap().1;
    for (user, password) in [("admin-holder", analyst), ("admin-sso", analyst_jwt)] {
        let (ok, out) = psql(pg_port, user, Some(password));
        assert!(
            !ok && out.to_lowercase().contains("password authentication failed"),
            "{user} with another's credential: {out}"
        );
    }

    // One principal's share of the query slots: its open cursor is its one query; another
    // principal still gets in.
    let token_of = |role: Role| tokens.iter().find(|(r, _)| *r == role).unwrap().1.clone();
    let mut cursor = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port.to_string(),
            "-U",
            "analyst-holder",
            "-d",
            "index766",
            "-w",
            "-X",
            "-q",
            "-A",
            "-t",
        ])
        .env("PGPASSWORD", token_of(Role::Analyst))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut session = cursor.stdin.take().unwrap();
    writeln!(
        session,
        "\\set ON_ERROR_STOP 1\nBEGIN;\nDECLARE held CURSOR FOR SELECT value FROM range(1000000000000);\nFETCH 1 FROM held;"
    )
    .unwrap();
    // The first row fetched: the cursor holds its slot (asking before that would race the
    // DECLARE for the principal's one slot).
    // (Its output stays open until psql exits: closed, the next FETCH would end psql.)
    let mut rows = std::io::BufReader::new(cursor.stdout.take().unwrap());
    let mut first_row = String::new();
    std::io::BufRead::read_line(&mut rows, &mut first_row).unwrap();
    assert_eq!(first_row.trim(), "0", "the cursor's first row");
    let (code, body) = status(addr, "POST", "/sql", Some(&token_of(Role::Analyst)));
    assert_eq!(code, 429, "the principal refused while its cursor is open: {body}");
    assert!(body.contains("max_per_principal"), "{body}");
    assert_eq!(status(addr, "POST", "/sql", Some(&token_of(Role::Admin))).0, 200, "another principal gets in");
    // At its share, the principal still fetches from its cursor and closes it.
    writeln!(session, "FETCH 1 FROM held;\nCLOSE held;\nCOMMIT;").unwrap();
    drop(session);
    assert!(cursor.wait().unwrap().success(), "FETCH and CLOSE at its share");
    drop(rows);
    wait_for("its share back once the cursor is closed", Duration::from_secs(10), || {
        (status(addr, "POST", "/sql", Some(&token_of(Role::Analyst))).0 == 200).then_some(())
    })
    .await;

    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
