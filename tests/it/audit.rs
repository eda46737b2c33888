//! The audit trail as an operator reads it: the binary runs as deployed (a config file, tokens),
//! and its log holds a line for each HTTP request (refusals too), each SQL query on both
//! interfaces (its text, rows, outcome) and each PostgreSQL sign-in, with the principal's name
//! and never the token; and the SQL table `audit_log` holds the same, for admin only, across a
//! restart (its Parquet files in the store). `index766 probe` (the chart's helm test) checks the
//! same running binary, signed in and not.

use std::process::Command;
use std::time::Duration;

use index766::serve::access::Role;

use crate::access::make_token;
use crate::support::{free_port, http, http_as, repo_root, start_binary, wait_for, Kafka};

/// The audit lines of the log (target index766::audit).
fn trail(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains("index766::audit")).map(str::to_owned).collect()
}

fn psql(port: u16, password: &str, query: &str) -> bool {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "auditor", "-d", "index766", "-w", "-X", "-c", query])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_query_and_sign_in_leaves_a_line_with_who_and_how_it_ended() {
    let kafka = Kafka::shared();
    let prefix = "audit";
    index766::tools::produce::ensure_topics(&kafka.bootstrap, &[&format!("{prefix}.dossier-events")], 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (entry, token) = make_token("auditor", &[Role::Analyst], &[]);
    let (admin_entry, admin) = make_token("root", &[Role::Admin], &[]);
    std::fs::write(dir.path().join("tokens.toml"), entry + &admin_entry).unwrap();
    let (port, pg_port) = (free_port(), free_port());
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\n\"bootstrap.servers\" = {:?}\n\"group.id\" = \"{prefix}\"\n\
             [topics]\nevents = \"{prefix}.dossier-events\"\npetitions = \"\"\ncatalog = \"\"\nunits = \"\"\ndead_letter = \"{prefix}.dead-letter\"\n\
             [registry]\nunits_file = {:?}\n[access]\ntokens_file = {:?}\n\
             [sql]\npostgres_listen = \"127.0.0.1:{pg_port}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[snapshot]\ndir = {:?}\n",
            kafka.bootstrap,
            repo_root().join("schemas/examples/units.jsonl"),
            dir.path().join("tokens.toml"),
            dir.path().join("snapshots"),
        ),
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    let mut child = start_binary(&config, &log, "info,rdkafka=warn");
    let addr = ([127, 0, 0, 1], port).into();
    wait_for("the HTTP port", Duration::from_secs(60), || std::net::TcpStream::connect(addr).ok().map(|_| ())).await;

    assert_eq!(http(addr, "GET", "/metrics", "").0, 401);
    assert_eq!(http_as(addr, &token, "GET", "/metrics", "").0, 403);
    assert_eq!(http_as(addr, &token, "POST", "/sql", "SELECT unit_code FROM units").0, 200);
    assert_eq!(http_as(addr, &token, "POST", "/sql", "SELECT nope FROM units").0, 400);
    // A query whose text would end its line and forge a sign-in in the trail.
    let forged =
        "SELECT 1\n2026-12-02T00:00:00Z  INFO index766::audit: kind=\"sign-in\" principal=\"mallory\" outcome=\"ok\"";
    assert_eq!(http_as(addr, &token, "POST", "/sql", forged).0, 400);
    assert!(psql(pg_port, &token, "SELECT count(*) FROM units"));
    assert!(!psql(pg_port, "i766_wrong", "SELECT 1"));

    let lines = wait_for("the audit lines", Duration::from_secs(20), || {
        let lines = trail(&log);
        (lines.iter().filter(|l| l.contains("kind=\"query\"")).count() >= 3).then_some(lines)
    })
    .await;
    let one = |words: &[&str]| {
        let found: Vec<&String> = lines.iter().filter(|l| words.iter().all(|w| l.contains(w))).collect();
        assert_eq!(found.len(), 1, "one line with {words:?} in:\n{}", lines.join("\n"));
    };
    one(&["kind=\"request\"", "principal=\"-\"", "path=\"/metrics\"", "status=401"]);
    one(&["kind=\"request\"", "principal=\"auditor\"", "path=\"/metrics\"", "status=403"]);
    one(&["kind=\"request\"", "principal=\"auditor\"", "method=\"POST\"", "path=\"/sql\"", "status=200"]);
    one(&[
        "kind=\"query\"",
        "principal=\"auditor\"",
        "interface=\"http\"",
        "query=\"SELECT unit_code FROM units\"",
        "rows=5",
        "outcome=\"ok\"",
    ]);
    one(&["kind=\"query\"", "interface=\"http\"", "query=\"SELECT nope FROM units\"", "rows=0", "outcome=\"error:"]);
    one(&["kind=\"sign-in\"", "principal=\"auditor\"", "outcome=\"ok\""]);
    one(&["kind=\"query\"", "interface=\"postgres\"", "SELECT count(*) FROM units", "rows=1", "outcome=\"ok\""]);
    one(&["kind=\"sign-in\"", "principal=\"auditor\"", "outcome=\"refused: password authentication failed\""]);
    assert!(!lines.iter().any(|l| l.contains("principal=\"mallory\"")), "a forged line:\n{}", lines.join("\n"));
    let whole = std::fs::read_to_string(&log).unwrap();
    assert!(!whole.contains(&token) && !whole.contains("i766_wrong"), "no token in the log");

    // The chart's helm test: `index766 probe`, signed in by the token in INDEX766_TOKEN.
    let probe = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_index766"));
        command.args(["probe", "--url", &format!("http://{addr}")]).env_remove("INDEX766_TOKEN");
        if let Some(token) = token {
            command.env("INDEX766_TOKEN", token);
        }
        command.output().unwrap()
    };
    let signed = probe(Some(&token));
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    assert!(String::from_utf8_lossy(&signed.stdout).contains("\"units\":5"), "{signed:?}");
    let stranger = probe(None);
    assert!(!stranger.status.success() && String::from_utf8_lossy(&stranger.stderr).contains("401"), "{stranger:?}");

    // The same trail as a table: for admin only, however the query reaches for it.
    for sneaky in [
        "SELECT * FROM audit_log",
        "SELECT count(*) FROM (SELECT principal FROM audit_log) t",
        "SELECT 1 FROM units JOIN audit_log ON true",
    ] {
        let (code, body) = http_as(addr, &token, "POST", "/sql", sneaky);
        assert!(code == 400 && body.contains("admin role only"), "{sneaky}: {code} {body}");
    }
    // Admin reads the analyst's queries, over HTTP and PostgreSQL alike, and again after a restart.
    let audited = |child: &mut std::process::Child| {
        let query = "SELECT action, outcome FROM audit_log WHERE principal = 'auditor' AND kind = 'query' ORDER BY at";
        let (code, shown) = http_as(addr, &admin, "POST", "/sql", query);
        let every = ["SELECT unit_code FROM units", "SELECT nope FROM units", "SELECT count(*) FROM units"];
        assert!(code == 200 && every.iter().all(|q| shown.contains(q)), "{shown}");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    };
    audited(&mut child);
    assert!(std::fs::read_dir(dir.path().join("snapshots/audit")).unwrap().count() >= 1, "audit files in the store");
    let mut child = start_binary(&config, &log, "info,rdkafka=warn");
    wait_for("the HTTP port again", Duration::from_secs(60), || std::net::TcpStream::connect(addr).ok().map(|_| ()))
        .await;
    audited(&mut child);
}
