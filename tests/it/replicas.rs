//! Two replicas of the binary on one Apache Kafka (`[alerts.election]`): both answer reads,
//! exactly one tells the alerts. The scripted drop of `serving` fires an alert; then a second
//! drop is sent and the sender is SIGKILLed at once; the other replica takes over within the
//! bound (the session timeout and a rebalance), tells what is left, and resolves the first
//! alert. Each channel has every alert exactly once: the alerts topic (read committed), a real
//! Alertmanager, and the webhook receiver Alertmanager notifies. The killed replica, started
//! again, follows: the sender keeps its place.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use index766::tools::produce::ensure_topics;
use serde_json::Value;

use crate::serving::{dossiers, Producer};
use crate::support::{free_port, http, metric, read_topic, repo_root, start_binary, wait_for, Kafka, Server};

const PREFIX: &str = "replicas";
const SESSION_TIMEOUT_MS: u64 = 6000;
/// The documented bound: the session timeout, a heartbeat, the rebalance and the takeover.
const FAILOVER_BOUND: Duration = Duration::from_millis(SESSION_TIMEOUT_MS + 10_000);

fn config_text(bootstrap: &str, alertmanager: SocketAddr, dir: &Path, http_port: u16) -> String {
    format!(
        "[kafka]\n\"bootstrap.servers\" = {bootstrap:?}\n\"group.id\" = \"{PREFIX}\"\n\
         [topics]\nevents = \"{PREFIX}.events\"\npetitions = \"\"\ncatalog = \"\"\nunits = \"\"\ndead_letter = \"{PREFIX}.dead-letter\"\n\
         [registry]\nunits_file = {:?}\n[catalog]\nfile = {:?}\n\
         [scoring]\nspec_file = {:?}\nas_of = {:?}\npublish_interval_ms = 50\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n[sql]\npostgres_listen = \"\"\nviews_dir = {:?}\n\
         [snapshot]\ndir = {:?}\ninterval_secs = 3600\n\
         [alerts]\ntopic = \"{PREFIX}.alerts\"\nwebhook_url = \"http://{alertmanager}/api/v2/alerts\"\nresend_secs = 3600\n\
         [alerts.election]\ntopic = \"{PREFIX}.election\"\nsession_timeout_ms = {SESSION_TIMEOUT_MS}\n\
         [[alerts.rules]]\nname = \"processing_drop\"\nwhen = \"drop_vs_previous_period\"\nmeasure = \"group 2\"\nperiod = \"month\"\n\
         fire_at = 5.0\nclear_at = 2.0\nmin_dossiers = 10\ncooldown_mins = 0\nmax_depth = 1\nmin_days = 0\n",
        repo_root().join("schemas/examples/units.jsonl"),
        repo_root().join("schemas/examples/procedures.jsonl"),
        repo_root().join("sql/scoring_spec.toml"),
        crate::scenario::AS_OF,
        repo_root().join("sql/views"),
        dir.join("snapshots"),
    )
}

/// One replica: the binary as deployed, its HTTP address and log.
struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &'static str, bootstrap: &str, alertmanager: SocketAddr, dir: &Path) -> Replica {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let port = free_port();
        let config = home.join("index766.toml");
        std::fs::write(&config, config_text(bootstrap, alertmanager, &home, port)).unwrap();
        let log = home.join("run.log");
        let child = start_binary(&config, &log, "info,rdkafka=warn");
        Replica { name, child, addr: ([127, 0, 0, 1], port).into(), config, log }
    }

    fn again(&mut self) {
        let log = self.log.with_file_name("again.log");
        self.child = start_binary(&self.config, &log, "info,rdkafka=warn");
        self.log = log;
    }

    /// `index766_alert_sender`, or None while the replica does not answer.
    fn sender(&mut self) -> Option<f64> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        if !self.answers() {
            return None;
        }
        let (status, body) = http(self.addr, "GET", "/metrics", "");
        (status == 200).then(|| metric(&body, "index766_alert_sender", &[])).flatten()
    }

    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http(self.addr, "GET", "/api/v1/alerts?state=all", "");
        assert_eq!(status, 200, "{}: {body}", self.name);
        serde_json::from_str::<Value>(&body).unwrap()["alerts"].as_array().unwrap().clone()
    }

    fn ready(&self) -> bool {
        self.answers() && http(self.addr, "GET", "/readyz", "").0 == 200
    }

    /// Whether it listens yet (the HTTP helper panics on a refused connection).
    fn answers(&self) -> bool {
        std::net::TcpStream::connect(self.addr).is_ok()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver Alertmanager notifies: every POSTed body, in order.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                }
                let _ =
                    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { addr, bodies }
    }

    /// Notifications per (unit, status of the alert in it).
    fn notified(&self) -> BTreeMap<(String, String), usize> {
        let mut counts = BTreeMap::new();
        for body in self.bodies.lock().unwrap().iter() {
            for alert in body["alerts"].as_array().into_iter().flatten() {
                let key = (
                    alert["labels"]["unit"].as_str().unwrap_or("").to_owned(),
                    alert["status"].as_str().unwrap_or("").to_owned(),
                );
                *counts.entry(key).or_default() += 1;
            }
        }
        counts
    }
}

fn alertmanager(dir: &Path, receiver: SocketAddr) -> Server {
    let am_dir = dir.join("alertmanager");
    std::fs::create_dir_all(&am_dir).unwrap();
    std::fs::write(
        am_dir.join("am.yml"),
        format!(
            "route:\n  receiver: unit-heads\n  group_by: ['alertname', 'unit']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 24h\n\
             receivers:\n  - name: unit-heads\n    webhook_configs:\n      - url: http://{receiver}/\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    Server::start("prometheus-alertmanager", |port| {
        vec![
            format!("--config.file={}", am_dir.join("am.yml").display()),
            format!("--storage.path={}", am_dir.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ]
    })
}

fn of_unit<'a>(log: &'a [Value], unit: &str) -> Option<&'a Value> {
    log.iter().find(|a| a["unit_code"] == unit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_tell_each_alert_once_through_a_sigkill_of_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Kafka::shared();
    let topic = |name: &str| format!("{PREFIX}.{name}");
    ensure_topics(&broker.bootstrap, &[&topic("events"), &topic("dead-letter"), &topic("alerts")], 2).await.unwrap();
    ensure_topics(&broker.bootstrap, &[&topic("election")], 1).await.unwrap();
    let receiver = Receiver::start();
    let alertmanager = alertmanager(dir.path(), receiver.addr);
    let mut producer = Producer::to(&broker.bootstrap, &topic("events"));
    let mut base = dossiers("oct", "H44.01", "2026-10-05", 20, 2);
    base.extend(dossiers("nov", "H44.01", "2026-11-02", 20, 2));
    base.extend(dossiers("oct", "H44.02", "2026-10-06", 200, 1));
    base.extend(dossiers("nov", "H44.02", "2026-11-03", 200, 1));
    producer.send(&base);

    let mut a = Replica::start("a", &broker.bootstrap, alertmanager.addr, dir.path());
    wait_for("replica a to tell the alerts", Duration::from_secs(60), || (a.sender() == Some(1.0)).then_some(())).await;
    let mut b = Replica::start("b", &broker.bootstrap, alertmanager.addr, dir.path());
    wait_for("replica b to be ready", Duration::from_secs(60), || b.ready().then_some(())).await;
    // b has joined the group: the partition stays with a (cooperative-sticky), b follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((a.sender(), b.sender()), (Some(1.0), Some(0.0)), "exactly one sender");

    // The first drop: a tells it, b shows it from the shared log.
    producer.send(&dossiers("late", "H44.01", "2026-11-09", 20, 8));
    let first = wait_for("the first alert in b's mirrored log", Duration::from_secs(30), || {
        of_unit(&b.alerts(), "H44.01").cloned()
    })
    .await;
    assert_eq!(of_unit(&a.alerts(), "H44.01"), Some(&first), "both replicas answer with the same log");
    wait_for("Alertmanager to notify the first alert", Duration::from_secs(30), || {
        receiver.notified().contains_key(&("H44.01".into(), "firing".into())).then_some(())
    })
    .await;

    // The second drop, and the sender killed at once, mid-way through judging it.
    producer.send(&dossiers("late", "H44.02", "2026-11-10", 250, 8));
    a.child.kill().unwrap();
    let killed = Instant::now();
    a.child.wait().unwrap();
    wait_for("replica b to take over", FAILOVER_BOUND, || (b.sender() == Some(1.0)).then_some(())).await;
    let failover = killed.elapsed();
    eprintln!("failover: replica b tells the alerts {:.1} s after the SIGKILL of a", failover.as_secs_f64());
    wait_for("the second drop in b's log", Duration::from_secs(30), || of_unit(&b.alerts(), "H44.02").cloned()).await;

    // The first unit recovers: b resolves the alert a fired (the same one: the log is shared).
    producer.send(&dossiers("ontime", "H44.01", "2026-11-11", 200, 1));
    let resolved = wait_for("b to resolve the first alert", Duration::from_secs(30), || {
        of_unit(&b.alerts(), "H44.01").filter(|x| x["state"] == "resolved").cloned()
    })
    .await;
    assert_eq!(resolved["id"], first["id"]);

    // a, started again, follows; b keeps telling.
    a.again();
    wait_for("replica a to be ready again", Duration::from_secs(60), || a.ready().then_some(())).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((a.sender(), b.sender()), (Some(0.0), Some(1.0)), "the sender keeps its place");
    let log = b.alerts();
    wait_for("a to mirror b's log", Duration::from_secs(10), || (a.alerts() == log).then_some(())).await;

    // Every alert exactly once on each channel.
    let told: Vec<(String, String)> = log
        .iter()
        .flat_map(|x| {
            let id = x["id"].as_str().unwrap().to_owned();
            let mut states = vec![(id.clone(), "firing".to_owned())];
            if x["state"] == "resolved" {
                states.push((id, "resolved".to_owned()));
            }
            states
        })
        .collect();
    assert!(log.len() >= 2, "at least the two drops: {log:?}");
    let on_topic = read_topic(&broker.bootstrap, &topic("alerts"), told.len());
    let mut read: Vec<(String, String)> = on_topic
        .iter()
        .map(|m| {
            use rdkafka::Message;
            let alert: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            (alert["id"].as_str().unwrap().to_owned(), alert["state"].as_str().unwrap().to_owned())
        })
        .collect();
    read.sort();
    let mut expected = told.clone();
    expected.sort();
    assert_eq!(read, expected, "the alerts topic");

    let mut notifications = BTreeMap::new();
    for x in &log {
        let unit = x["unit_code"].as_str().unwrap().to_owned();
        notifications.insert((unit.clone(), "firing".to_owned()), 1);
        if x["state"] == "resolved" {
            notifications.insert((unit, "resolved".to_owned()), 1);
        }
    }
    wait_for("Alertmanager to notify every change", Duration::from_secs(30), || {
        (receiver.notified().len() == notifications.len()).then_some(())
    })
    .await;
    // Alertmanager notifies each group at most every group_interval (1 s): a second notice would be here by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.notified(), notifications, "the webhook Alertmanager notifies, per unit and status");
    let (status, active) =
        crate::support::http_json(alertmanager.addr, "GET", "/api/v2/alerts?active=true", &Value::Null);
    assert_eq!(status, 200);
    let mut active: Vec<String> =
        active.as_array().unwrap().iter().map(|x| x["labels"]["unit"].as_str().unwrap().to_owned()).collect();
    active.sort();
    let mut firing: Vec<String> =
        log.iter().filter(|x| x["state"] == "firing").map(|x| x["unit_code"].as_str().unwrap().to_owned()).collect();
    firing.sort();
    assert_eq!(active, firing, "Alertmanager holds the firing alerts");
}

/// An election topic of two partitions would elect two senders: the start is refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_topic_of_two_partitions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Kafka::shared();
    let two = format!("{PREFIX}.election-of-two");
    ensure_topics(&broker.bootstrap, &[&two], 2).await.unwrap();
    let config = dir.path().join("index766.toml");
    let text = config_text(&broker.bootstrap, "127.0.0.1:9".parse().unwrap(), dir.path(), free_port());
    std::fs::write(&config, text.replace(&format!("\"{PREFIX}.election\""), &format!("{two:?}"))).unwrap();
    let log = dir.path().join("run.log");
    let mut child = start_binary(&config, &log, "info,rdkafka=warn");
    let status = wait_for("the start to be refused", Duration::from_secs(60), || child.try_wait().unwrap()).await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success() && said.contains("has 2 partitions: create it with exactly one"), "{status}: {said}");
}
