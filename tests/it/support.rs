//! Shared test helpers: a real broker process, a tiny HTTP client, waiting on conditions.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("pipeline/ is in the repo").to_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns Some or the deadline passes (then panics with `what`).
pub async fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tansu broker on a free loopback port, killed when dropped. It cannot be started → panic:
/// a test that needs a broker fails without one, it never skips.
pub struct Broker {
    child: Child,
    pub bootstrap: String,
}

fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return path.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cache/index766/tools/bin/tansu");
    if installed.exists() {
        return installed;
    }
    "tansu".into()
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let binary = tansu_binary();
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the test broker {}: {e}. Run tests/run.sh, which installs tansu.",
                    binary.display()
                )
            });
        let mut broker = Broker { child, bootstrap: format!("127.0.0.1:{port}") };
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("the test broker exited at start: {status}");
            }
            assert!(Instant::now() < until, "the test broker did not listen on {port} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_accepting(addr, method, path, body, "*/*")
}

/// One HTTP/1.1 request with an `Accept` header; returns (status, body).
pub fn http_accepting(addr: std::net::SocketAddr, method: &str, path: &str, body: &str, accept: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the pipeline's HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\nAccept: {accept}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Runs SQL through `POST /sql` and parses the JSON rows.
pub fn sql(addr: std::net::SocketAddr, query: &str) -> Vec<serde_json::Value> {
    let (status, body) = http(addr, "POST", "/sql", query);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).expect("JSON rows")
}

/// The value of one sample in a Prometheus text exposition, e.g. `index766_score_points{unit="H44",...}`.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
        let all = labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        (metric_name == name && all).then(|| value.parse().ok()).flatten()
    })
}

/// Reads every message of `topic` from the beginning until `count` have arrived.
pub fn read_topic(bootstrap: &str, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "index766-test-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(Instant::now() < until, "only {} of {count} messages on {topic}", messages.len());
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            messages.push(result.expect("read the topic").detach());
        }
    }
    // Nothing more than expected arrives.
    assert!(consumer.poll(Duration::from_secs(1)).is_none_or(|m| m.is_err()), "more than {count} on {topic}");
    messages
}
