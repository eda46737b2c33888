//! index766 against a secured Apache Kafka, as provinces run it: SASL_SSL with SCRAM-SHA-256 and
//! mutual TLS, certificates from a CA the test makes, ACLs it grants and revokes. The `index766`
//! binary runs as deployed (a config file, the password in a file of its own), so its log can be
//! read too. A wrong password, an untrusted certificate and a missing ACL each say what they are
//! in the log and in /healthz (503), the process stays up, and nothing is lost once fixed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use index766::tools::produce::{ensure_topics, EventProducer};

use crate::certs::{run, Ca};
use crate::scenario::received;
use crate::support::{free_port, http, read_topic, repo_root, wait_for, Kafka, KafkaSetup};

const PREFIX: &str = "secured";
const RIGHT: &str = "right-Pa55word";
const WRONG: &str = "wrong-Pa55word";
const STORE_PASSWORD: &str = "broker-store";

/// A CA; the broker's key and certificate (for 127.0.0.1) in a PKCS#12 store signed by it; a
/// client certificate for CN=index766 signed by it (`client.key`, `client.pem`); and another CA
/// that signed neither.
fn make_certificates(dir: &Path) {
    let keytool = |args: &[&str]| run("keytool", dir, args);
    let ca = Ca::new(dir, "ca");
    Ca::new(dir, "other-ca");
    let store = ["-keystore", "broker.p12", "-storetype", "PKCS12", "-storepass", STORE_PASSWORD];
    let san = "SAN=ip:127.0.0.1,dns:localhost";
    keytool(
        &[
            &[
                "-genkeypair",
                "-alias",
                "broker",
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-validity",
                "2",
                "-dname",
                "CN=localhost",
                "-ext",
                san,
                "-keypass",
                STORE_PASSWORD,
            ][..],
            &store,
        ]
        .concat(),
    );
    keytool(&[&["-certreq", "-alias", "broker", "-ext", san, "-file", "broker.csr"][..], &store].concat());
    ca.sign("broker.csr", "broker.crt", &["-copy_extensions", "copy"]);
    keytool(&[&["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem"][..], &store].concat());
    keytool(&[&["-importcert", "-alias", "broker", "-file", "broker.crt"][..], &store].concat());
    ca.issue("index766", "client", false);
}

/// A broker with a SASL_SSL (SCRAM-SHA-256) and an SSL (client certificate required) listener,
/// the standard authorizer, and one user, index766, whose certificate maps to the same principal.
fn secured_kafka(certs: &Path) -> (Kafka, u16, u16) {
    let (sasl, tls) = (free_port(), free_port());
    let file = |name: &str| certs.join(name).display().to_string();
    let properties = format!(
        "sasl.enabled.mechanisms=SCRAM-SHA-256\n\
         listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         ssl.keystore.type=PKCS12\nssl.keystore.location={}\nssl.keystore.password={STORE_PASSWORD}\nssl.key.password={STORE_PASSWORD}\n\
         ssl.truststore.type=PEM\nssl.truststore.location={}\nlistener.name.ssl.ssl.client.auth=required\n\
         ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT\n\
         authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
         super.users=User:ANONYMOUS\n",
        file("broker.p12"),
        file("ca.pem"),
    );
    let setup = KafkaSetup {
        listeners: vec![("SASL_SSL", sasl), ("SSL", tls)],
        properties,
        format: vec!["--add-scram".into(), format!("SCRAM-SHA-256=[name=index766,password={RIGHT}]")],
    };
    (Kafka::start_with(setup), sasl, tls)
}

/// The deployed binary, its log in `log`; SIGTERMed (and checked to exit cleanly) by `stop`.
struct Running {
    child: Child,
    log: PathBuf,
    addr: std::net::SocketAddr,
}

impl Running {
    fn start(dir: &Path, name: &str, kafka: &str, snapshots: &Path) -> Running {
        let port = free_port();
        let root = repo_root();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kafka]\n{kafka}\n\"group.id\" = \"{PREFIX}\"\n\
                 [topics]\nevents = \"{PREFIX}.dossier-events\"\npetitions = \"\"\ncatalog = \"\"\nunits = \"\"\ndead_letter = \"{PREFIX}.dead-letter\"\n\
                 [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n\
                 [scoring]\nspec_file = {:?}\nas_of = {:?}\n[sql]\nviews_dir = {:?}\npostgres_listen = \"\"\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n[snapshot]\ndir = {snapshots:?}\ninterval_secs = 1\n",
                root.join("schemas/examples/units.jsonl"),
                root.join("schemas/examples/procedures.jsonl"),
                root.join("sql/scoring_spec.toml"),
                crate::scenario::AS_OF,
                root.join("sql/views"),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = crate::support::start_binary(&config, &log, "info");
        Running { child, log, addr: ([127, 0, 0, 1], port).into() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn health(&self) -> Option<(u16, String)> {
        std::net::TcpStream::connect(self.addr).ok()?;
        Some(http(self.addr, "GET", "/healthz", ""))
    }

    fn dossiers(&self) -> Option<u64> {
        let (status, body) = http(self.addr, "POST", "/sql", "SELECT count(*) AS n FROM dossiers");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        rows.first()?["n"].as_u64()
    }

    /// Waits until it has counted `n` dossiers and is healthy.
    async fn counts(&self, n: u64) {
        wait_for(&format!("{n} dossiers counted and healthy"), Duration::from_secs(60), || {
            (self.health()?.0 == 200 && self.dossiers()? == n).then_some(())
        })
        .await;
    }

    /// Waits until /healthz says 503 with every one of `words`; checks the log says them too,
    /// that no password shows in either, and that the process is still up (no crash loop).
    async fn reports(&mut self, words: &[&str]) -> String {
        let until = std::time::Instant::now() + Duration::from_secs(60);
        let body = loop {
            let answer = self.health();
            if let Some((503, body)) = &answer {
                if words.iter().all(|w| body.contains(w)) {
                    break body.clone();
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "/healthz never reported {words:?}; last {answer:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(self.child.try_wait().unwrap().is_none(), "the process stays up:\n{}", self.log());
        let log = self.log();
        assert!(words.iter().all(|w| log.contains(w)), "the log names the cause too: {words:?}\n{log}");
        for secret in [RIGHT, WRONG, STORE_PASSWORD] {
            assert!(!log.contains(secret) && !body.contains(secret), "a password in the log or /healthz");
        }
        body
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exits cleanly on SIGTERM: {status}\n{}", self.log());
    }
}

fn produce(bootstrap: &str, from: usize, count: usize) {
    let mut producer = EventProducer::new(bootstrap, &format!("{PREFIX}.dossier-events")).unwrap();
    for n in from..from + count {
        let id = format!("S{n}");
        let event = received(&id, "2026-11-20T08:00:00+07:00", "2026-11-27T17:00:00+07:00", "H44.01");
        producer.send(&event).unwrap();
    }
    producer.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_and_mutual_tls_connect_and_every_refusal_names_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (kafka, sasl, tls) = secured_kafka(dir.path());
    let topics = [format!("{PREFIX}.dossier-events"), format!("{PREFIX}.dead-letter")];
    ensure_topics(&kafka.bootstrap, &[&topics[0], &topics[1]], 1).await.unwrap();
    // The README's minimal ACLs: read the input topics and the group, write the dead letters.
    let acl = |verb: &str, operations: &[&str], resources: &[&str]| {
        let mut args = vec![verb, "--allow-principal", "User:index766"];
        args.extend(operations.iter().flat_map(|o| ["--operation", o]));
        args.extend(resources);
        if verb == "--remove" {
            args.push("--force");
        }
        kafka.tool("org.apache.kafka.tools.AclCommand", &args);
    };
    acl("--add", &["Read", "Describe"], &["--topic", &topics[0], "--group", PREFIX]);
    acl("--add", &["Write", "Describe"], &["--topic", &topics[1]]);
    produce(&kafka.bootstrap, 0, 100);
    let mut bad = EventProducer::new(&kafka.bootstrap, &topics[0]).unwrap();
    bad.send_raw(b"BAD", b"{\"schema_version\": 1, oops").unwrap();
    bad.finish().unwrap();

    let password = dir.path().join("kafka-password");
    let ca = |name: &str| dir.path().join(name).display().to_string();
    let sasl_ssl = |trusted: &str| {
        format!(
            "\"bootstrap.servers\" = \"127.0.0.1:{sasl}\"\n\"security.protocol\" = \"SASL_SSL\"\n\
             \"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"index766\"\n\
             \"sasl.password\" = \"${{file:{}}}\"\n\"ssl.ca.location\" = {:?}",
            password.display(),
            ca(trusted)
        )
    };

    // The right password, from its file: everything read, the bad message dead-lettered.
    std::fs::write(&password, format!("{RIGHT}\n")).unwrap();
    let main = dir.path().join("snapshots");
    let running = Running::start(dir.path(), "sasl", &sasl_ssl("ca.pem"), &main);
    running.counts(100).await;
    assert_eq!(read_topic(&kafka.bootstrap, &topics[1], 1).len(), 1);
    running.stop();

    // A wrong password: named, waited out; fixed in its file, a restart reads everything.
    std::fs::write(&password, WRONG).unwrap();
    let fresh = dir.path().join("wrong-password-snapshots");
    let mut running = Running::start(dir.path(), "wrong-password", &sasl_ssl("ca.pem"), &fresh);
    running.reports(&["Authentication failed", "sasl.password"]).await;
    running.stop();
    std::fs::write(&password, RIGHT).unwrap();
    let running = Running::start(dir.path(), "password-fixed", &sasl_ssl("ca.pem"), &fresh);
    running.counts(100).await;
    running.stop();

    // The brokers' certificate checked against a CA that did not sign it.
    let untrusted = dir.path().join("untrusted-snapshots");
    let mut running = Running::start(dir.path(), "untrusted", &sasl_ssl("other-ca.pem"), &untrusted);
    running.reports(&["certificate verify failed", "ssl.ca.location"]).await;
    running.stop();

    // Mutual TLS: the client certificate is the credential (CN=index766, the same principal).
    let mutual = format!(
        "\"bootstrap.servers\" = \"127.0.0.1:{tls}\"\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {:?}\n\
         \"ssl.certificate.location\" = {:?}\n\"ssl.key.location\" = {:?}",
        ca("ca.pem"),
        ca("client.pem"),
        ca("client.key")
    );
    let running = Running::start(dir.path(), "mutual-tls", &mutual, &dir.path().join("tls-snapshots"));
    running.counts(100).await;
    running.stop();

    // READ on the events topic revoked while 50 more arrive: named and waited out; granted
    // again, they are read without a restart.
    acl("--remove", &["Read"], &["--topic", &topics[0]]);
    produce(&kafka.bootstrap, 100, 50);
    let mut running = Running::start(dir.path(), "missing-acl", &sasl_ssl("ca.pem"), &main);
    running.reports(&["Topic authorization failed", "READ"]).await;
    acl("--add", &["Read"], &["--topic", &topics[0]]);
    running.counts(150).await;
    running.stop();
}
