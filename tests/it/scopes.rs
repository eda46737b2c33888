//! Unit scopes, as a property: principals scoped to random subtrees of the simulated province
//! see no row of another unit in any table, view, history table, `sql/examples` query, join or
//! subquery, alert or metric, over HTTP and PostgreSQL; and they see every row of their own (the
//! counts equal the unscoped ones filtered to the subtrees). The seed is printed;
//! `INDEX766_SCOPE_SEED` replays one.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use index766::config::alerts::RuleConfig;
use index766::serve::access::Role;
use index766::serve::routes::ROUTES;
use index766::tools::produce::{ensure_topics, EventProducer};

use crate::access::make_token;
use crate::scenario;
use crate::support::{http_as, repo_root, wait_for, Kafka};

const SCOPED: usize = 5;

/// What a principal is shown by a query: every unit code in any cell (but `parent_code`, which
/// names the parent of a subtree's root) of the JSON rows.
fn units_shown(rows: &[Value], codes: &BTreeSet<String>) -> BTreeSet<String> {
    let mut shown = BTreeSet::new();
    for row in rows {
        for (column, value) in row.as_object().expect("a JSON row") {
            if let Some(text) = value.as_str().filter(|t| column != "parent_code" && codes.contains(*t)) {
                shown.insert(text.to_owned());
            }
        }
    }
    shown
}

fn rows(addr: std::net::SocketAddr, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = http_as(addr, token, "POST", "/sql", query);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).expect("JSON rows")
}

fn count(addr: std::net::SocketAddr, token: &str, query: &str) -> u64 {
    rows(addr, token, query)[0]["n"].as_u64().unwrap()
}

/// The cells of every query's rows over psql (one session), as JSON rows by their column names.
fn psql_rows(port: u16, user: &str, token: &str, queries: &[String]) -> Vec<Value> {
    let mut command = Command::new("psql");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "index766", "-w", "-X", "-A"]);
    command.args(["-F", "\u{1f}", "-v", "ON_ERROR_STOP=1"]).env("PGPASSWORD", token).env("PGCONNECT_TIMEOUT", "10");
    for query in queries {
        command.args(["-c", query]);
    }
    let out = command.output().expect("psql runs");
    assert!(out.status.success(), "psql as {user}: {}", String::from_utf8_lossy(&out.stderr));
    // Each answer: a header line, its rows, then "(N rows)".
    let (mut found, mut header): (Vec<Value>, Option<Vec<String>>) = (Vec::new(), None);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        match &header {
            None => header = Some(line.split('\u{1f}').map(str::to_owned).collect()),
            Some(_) if line.starts_with('(') && line.ends_with(')') && line.contains(" row") => header = None,
            Some(columns) => {
                let cells = columns.iter().cloned().zip(line.split('\u{1f}').map(|c| Value::String(c.into())));
                found.push(Value::Object(cells.collect()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_scoped_to_random_subtrees_sees_only_their_rows_everywhere() {
    let seed = std::env::var("INDEX766_SCOPE_SEED")
        .map(|s| s.parse().expect("INDEX766_SCOPE_SEED is a number"))
        .unwrap_or_else(|_| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    eprintln!("scopes: seed {seed} (INDEX766_SCOPE_SEED={seed} replays it)");
    let mut rng = SmallRng::seed_from_u64(seed);

    let kafka = Kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = index766::tools::demo::simulator(766);
    let now = chrono::Utc::now().timestamp();
    let (units_file, catalog_file) = (dir.path().join("units.jsonl"), dir.path().join("procedures.jsonl"));
    std::fs::write(&units_file, sim.province().registry_jsonl()).unwrap();
    std::fs::write(&catalog_file, sim.province().catalog_jsonl(now)).unwrap();
    // The tree as the registry file has it, read here on its own: code → parent.
    let parents: HashMap<String, Option<String>> = sim
        .province()
        .registry_jsonl()
        .lines()
        .map(|line| {
            let unit: Value = serde_json::from_str(line).unwrap();
            (unit["code"].as_str().unwrap().to_owned(), unit["parent"].as_str().map(str::to_owned))
        })
        .collect();
    let codes: BTreeSet<String> = parents.keys().cloned().collect();
    let within = |unit: &str, roots: &[String]| {
        let mut at = Some(unit.to_owned());
        while let Some(code) = at {
            if roots.contains(&code) {
                return true;
            }
            at = parents[&code].clone();
        }
        false
    };

    // One principal of the whole province, and SCOPED of one to three random subtrees each.
    let roles = [Role::Analyst, Role::Wall, Role::Operator];
    let (mut file, everyone) = make_token("province", &roles, &[]);
    let all: Vec<&String> = codes.iter().collect();
    let mut scoped = Vec::new();
    for i in 0..SCOPED {
        let roots: Vec<String> =
            (0..rng.random_range(1..=3)).map(|_| all[rng.random_range(0..all.len())].clone()).collect();
        let name = format!("head-{i}");
        let (entry, token) = make_token(&name, &roles, &roots);
        file += &entry;
        let inside: BTreeSet<String> = codes.iter().filter(|c| within(c, &roots)).cloned().collect();
        eprintln!("scopes: {name} holds {roots:?}: {} units", inside.len());
        scoped.push((name, token, inside, roots));
    }
    std::fs::write(dir.path().join("tokens.toml"), file).unwrap();

    let mut config = scenario::prefixed_config(&kafka.bootstrap, "scopes", &dir.path().join("snapshots"), false);
    config.access.tokens_file = dir.path().join("tokens.toml");
    (config.registry.units_file, config.catalog.file) = (units_file, catalog_file);
    config.snapshot.interval_secs = 1;
    // An alert for every unit: each total is below 100.5.
    config.alerts.rules = vec![RuleConfig {
        name: "everyone".into(),
        when: serde_json::from_value(Value::String("below_target".into())).unwrap(),
        measure: "total".into(),
        period: "month".into(),
        fire_at: 100.5,
        clear_at: 101.0,
        min_dossiers: 0,
        cooldown_mins: 0,
        max_depth: 9,
        min_days: 0,
    }];
    ensure_topics(&kafka.bootstrap, &[&config.topics.events, &config.topics.dead_letter], 1).await.unwrap();
    let mut producer = EventProducer::new(&kafka.bootstrap, &config.topics.events).unwrap();
    for event in sim.history(now, 10, 30) {
        producer.send(&event).unwrap();
    }
    let sent = producer.finish().unwrap();

    let shutdown = CancellationToken::new();
    let pipeline = index766::Pipeline::start(config, shutdown.clone()).await.unwrap();
    let (addr, pg_port) = (pipeline.http_addr, pipeline.postgres_addr.unwrap().port());
    wait_for("every event, its history and its alerts", Duration::from_secs(120), || {
        (scenario::settled(&pipeline.metrics) >= sent
            && count(addr, &everyone, "SELECT count(*) AS n FROM daily_totals") > 0
            && count(addr, &everyone, "SELECT count(DISTINCT unit_code) AS n FROM alerts") == codes.len() as u64)
            .then_some(())
    })
    .await;

    // Every table and view, every example, and the tricks that would reach around a filter.
    let tables: Vec<String> = rows(
        addr,
        &everyone,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    )
    .iter()
    .map(|r| r["table_name"].as_str().unwrap().to_owned())
    // The audit trail is admin's alone: refused to these analysts whole (checked below).
    .filter(|t| t != "audit_log")
    .collect();
    assert!(tables.len() > 15 && tables.contains(&"daily_totals".into()), "{tables:?}");
    let mut queries: Vec<String> = tables.iter().map(|t| format!("SELECT * FROM {t}")).collect();
    let mut examples: Vec<_> =
        std::fs::read_dir(repo_root().join("sql/examples")).unwrap().map(|e| e.unwrap().path()).collect();
    examples.sort();
    queries.extend(
        examples.iter().map(|path| std::fs::read_to_string(path).unwrap().trim().trim_end_matches(';').to_owned()),
    );
    queries.extend(
        [
            "SELECT u.unit_code, t.total FROM units u LEFT JOIN totals t ON t.unit_code = u.unit_code",
            "SELECT * FROM dossiers WHERE unit_code IN (SELECT unit_code FROM units)",
            "WITH every AS (SELECT unit_code FROM scores UNION SELECT unit_code FROM daily_totals) SELECT * FROM every",
            "SELECT * FROM information_schema.columns",
        ]
        .map(String::from),
    );
    let unit_tables: Vec<&String> = tables
        .iter()
        .filter(|t| {
            rows(addr, &everyone, &format!("SELECT * FROM {t} LIMIT 1"))
                .first()
                .is_some_and(|r| r.get("unit_code").is_some())
        })
        .collect();

    for (name, token, inside, roots) in &scoped {
        let (status, body) = http_as(addr, token, "POST", "/sql", "SELECT * FROM audit_log");
        assert!(status == 400 && body.contains("admin role only"), "{name}: audit_log: {status} {body}");
        // Over HTTP: no unit outside, in any answer.
        for query in &queries {
            let outside: Vec<String> =
                units_shown(&rows(addr, token, query), &codes).difference(inside).cloned().collect();
            assert!(outside.is_empty(), "{name} sees {outside:?} through {query}");
        }
        // Every row of its own: each table's count is the unscoped one filtered to the subtrees.
        let list = inside.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ");
        for table in &unit_tables {
            let own = count(addr, token, &format!("SELECT count(*) AS n FROM {table}"));
            let expected =
                count(addr, &everyone, &format!("SELECT count(*) AS n FROM {table} WHERE unit_code IN ({list})"));
            assert_eq!(own, expected, "{name}: {table}");
        }
        assert!(count(addr, token, "SELECT count(*) AS n FROM scores") > 0, "{name} sees its own scores");

        // Over PostgreSQL: the same queries, one session.
        let outside: Vec<String> =
            units_shown(&psql_rows(pg_port, name, token, &queries), &codes).difference(inside).cloned().collect();
        assert!(outside.is_empty(), "{name} sees {outside:?} over PostgreSQL");

        // The alerts API and the metrics.
        let (status, body) = http_as(addr, token, "GET", "/api/v1/alerts?state=all", "");
        assert_eq!(status, 200, "{body}");
        let alerts: Value = serde_json::from_str(&body).unwrap();
        let alerted: BTreeSet<String> =
            alerts["alerts"].as_array().unwrap().iter().map(|a| a["unit_code"].as_str().unwrap().to_owned()).collect();
        assert_eq!(&alerted, inside, "{name}: an alert for each of its units and no other");
        // Every resource of the typed API, by default and at each of its roots; a unit outside
        // is answered as one that does not exist.
        let stranger = codes.iter().find(|c| !inside.contains(*c));
        for route in ROUTES.iter().filter(|r| r.path.starts_with("/api/v1/") && !r.path.ends_with(".json")) {
            // The unit tree takes no unit.
            let at_roots = roots.iter().filter(|_| route.path != "/api/v1/units");
            let asked = std::iter::once(route.path.to_owned())
                .chain(at_roots.map(|root| format!("{}?unit={root}", route.path)));
            for path in asked {
                let (status, body) = http_as(addr, token, "GET", &path, "");
                assert_eq!(status, 200, "{name}: GET {path}: {body}");
                let answer: Value = serde_json::from_str(&body).unwrap();
                let rows =
                    answer.as_object().and_then(|a| a.values().next()).and_then(Value::as_array).expect("one array");
                let outside: Vec<String> = units_shown(rows, &codes).difference(inside).cloned().collect();
                assert!(outside.is_empty(), "{name} sees {outside:?} through GET {path}");
            }
            if let Some(stranger) = stranger.filter(|_| route.path != "/api/v1/units") {
                let (status, body) = http_as(addr, token, "GET", &format!("{}?unit={stranger}", route.path), "");
                assert_eq!(status, 404, "{name}: GET {}?unit={stranger}: {body}", route.path);
            }
        }
        let (status, exposition) = http_as(addr, token, "GET", "/metrics", "");
        assert_eq!(status, 200);
        let labelled: BTreeSet<String> = exposition
            .lines()
            .filter_map(|line| {
                line.split_once("unit=\"").and_then(|(_, rest)| rest.split_once('"')).map(|(u, _)| u.to_owned())
            })
            .collect();
        assert!(!labelled.is_empty() && labelled.is_subset(inside), "{name}: metrics of {labelled:?}");
    }
    shutdown.cancel();
    pipeline.wait().await.unwrap();
}
