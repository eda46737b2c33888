//! Shared test helpers: Apache Kafka, a tiny HTTP client, waiting on conditions.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use index766::persist::snapshot::Manifest;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("pipeline/ is in the repo").to_owned()
}

/// The index766 binary as deployed: `run --config config`, its log (at `rust_log`) into `log`.
pub fn start_binary(config: &Path, log: &Path, rust_log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_index766"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the index766 binary")
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

/// Waits until the process `child` listens on `port`; panics if it exits first or takes over 30 s.
fn await_listening(child: &mut Child, port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}. Run tests/run.sh, which installs it.");
        }
        assert!(Instant::now() < until, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Apache Kafka release the tests run (tests/kafka/pom.xml pins the same).
const KAFKA_VERSION: &str = "4.1.1";

/// What a broker adds to its PLAINTEXT listener: more listeners (name = security protocol,
/// port), server properties, and arguments to the storage format (e.g. SCRAM users).
#[derive(Default)]
pub struct KafkaSetup {
    pub listeners: Vec<(&'static str, u16)>,
    pub properties: String,
    pub format: Vec<String>,
}

/// Apache Kafka itself: one KRaft node (broker and controller) on free loopback ports, with a
/// data folder of its own. Its jars come from Maven Central through tests/tools.sh; without
/// them, or if it does not start, the test fails.
///
/// Java runs under a small shell that holds a pipe from this process and SIGKILLs the broker
/// when the pipe closes: on `kill`, on drop, and when the test binary exits however it exits
/// (the shared broker is a static, never dropped).
pub struct Kafka {
    shell: Child,
    /// The write end of the pipe the shell waits on; closing it kills the broker.
    lifeline: Option<ChildStdin>,
    /// The PLAINTEXT listener (no authentication; the tests' own producers and admin use it).
    pub bootstrap: String,
    /// Its configuration, data and logs: removed when it is dropped, unless a test failed.
    pub dir: PathBuf,
    port: u16,
}

static SHARED_KAFKA: std::sync::OnceLock<Kafka> = std::sync::OnceLock::new();

impl Kafka {
    /// A broker of the test's own, for a test that stops it or configures it.
    pub fn start() -> Kafka {
        Kafka::start_with(KafkaSetup::default())
    }

    /// One broker for every test of the binary that only reads and writes topics: each such
    /// test names its topics with a prefix of its own.
    pub fn shared() -> &'static Kafka {
        SHARED_KAFKA.get_or_init(|| Kafka::launch(KafkaSetup::default(), true))
    }

    pub fn start_with(setup: KafkaSetup) -> Kafka {
        Kafka::launch(setup, false)
    }

    /// `shared`: never dropped, so the shell removes its folder once the broker is gone.
    fn launch(setup: KafkaSetup, shared: bool) -> Kafka {
        let (port, controller) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("index766-kafka-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut listeners = vec![format!("PLAINTEXT://127.0.0.1:{port}")];
        listeners.extend(setup.listeners.iter().map(|(name, port)| format!("{name}://127.0.0.1:{port}")));
        let protocols: Vec<String> = setup.listeners.iter().map(|(name, _)| format!("{name}:{name}")).collect();
        // Retention and the log cleaner run every second, from the start, so the tests of
        // retention and compaction see them act within seconds.
        let properties = format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners={},CONTROLLER://127.0.0.1:{controller}\nadvertised.listeners={}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{}\n\
             log.dirs={}\nnum.partitions=1\noffsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\nlog.initial.task.delay.ms=0\n\
             log.retention.check.interval.ms=1000\nlog.cleaner.backoff.ms=1000\n{}",
            listeners.join(","),
            listeners.join(","),
            protocols.iter().map(|p| format!(",{p}")).collect::<String>(),
            dir.join("data").display(),
            setup.properties,
        );
        std::fs::write(dir.join("server.properties"), properties).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let launched = Instant::now();
        let formatted = Command::new("java")
            .args(["-cp", &kafka_classpath(), "kafka.tools.StorageTool", "format", "-t", "MkU3OEVBNTcwNTJENDM2Qg"])
            .args(&setup.format)
            .arg("-c")
            .arg(dir.join("server.properties"))
            .stdout(log("format.log"))
            .stderr(log("format.err"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run java for Apache Kafka: {e}"));
        let why = || std::fs::read_to_string(dir.join("format.err")).unwrap_or_default();
        assert!(formatted.success(), "Apache Kafka's storage format failed: {}", why());
        let format_secs = launched.elapsed().as_secs_f64();
        let (shell, lifeline) = Kafka::run(&dir, shared);
        let mut kafka = Kafka { shell, lifeline, bootstrap: format!("127.0.0.1:{port}"), dir, port };
        kafka.await_start();
        let total = launched.elapsed().as_secs_f64();
        eprintln!(
            "Apache Kafka listening on {} after {total:.1} s (storage format {format_secs:.1} s)",
            kafka.bootstrap
        );
        kafka
    }

    /// Starts the broker of `dir` (formatted) under the shell that kills it when the pipe
    /// closes, and then removes `dir` if `remove` is set.
    fn run(dir: &Path, remove: bool) -> (Child, Option<ChildStdin>) {
        // The watcher reads the pipe through fd 3: a background job's own stdin is /dev/null.
        let script = r#"exec 3<&0
java "$@" >>kafka.log 2>>kafka.err </dev/null & pid=$!
(read _ <&3; kill -9 $pid) & wait $pid
if [ "$REMOVE" = 1 ]; then rm -rf "$PWD"; fi"#;
        let mut shell = Command::new("sh")
            .args(["-c", script, "kafka", "-Xmx512m", "-cp", &kafka_classpath(), "kafka.Kafka", "server.properties"])
            .env("REMOVE", if remove { "1" } else { "0" })
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Apache Kafka: {e}"));
        let lifeline = shell.stdin.take();
        (shell, lifeline)
    }

    /// Waits until it listens; panics with its log if it exits or takes over 60 s.
    fn await_start(&mut self) {
        let until = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log = || std::fs::read_to_string(self.dir.join("kafka.err")).unwrap_or_default();
            if let Ok(Some(status)) = self.shell.try_wait() {
                panic!("Apache Kafka exited at start ({status}): {}", log());
            }
            assert!(Instant::now() < until, "Apache Kafka did not listen on {} within 60 s: {}", self.port, log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the broker, as a crash would.
    pub fn kill(&mut self) {
        drop(self.lifeline.take());
        let _ = self.shell.wait();
    }

    /// Starts a killed broker again: same ports, same data.
    pub fn start_again(&mut self) {
        (self.shell, self.lifeline) = Kafka::run(&self.dir, false);
        self.await_start();
    }

    /// Runs one of Kafka's own command-line tools (e.g. `org.apache.kafka.tools.AclCommand`)
    /// against the PLAINTEXT listener; panics with its output if it fails.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let output = Command::new("java")
            .args(["-cp", &kafka_classpath(), class, "--bootstrap-server", &self.bootstrap])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run java for {class}: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{class} {args:?} failed: {text}{}", String::from_utf8_lossy(&output.stderr));
        text
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("Apache Kafka's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn kafka_classpath() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let libs = std::env::var("KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(format!(".cache/index766/kafka/{KAFKA_VERSION}/libs")));
    assert!(
        libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).exists(),
        "Apache Kafka {KAFKA_VERSION} is not in {}: run tests/run.sh, which fetches it",
        libs.display()
    );
    format!("{}/*", libs.display())
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_accepting(addr, method, path, body, "*/*")
}

/// One HTTP/1.1 request with an `Accept` header; returns (status, body).
pub fn http_accepting(addr: std::net::SocketAddr, method: &str, path: &str, body: &str, accept: &str) -> (u16, String) {
    request(addr, method, path, "text/plain", accept, body, None)
}

/// One HTTP/1.1 request with a bearer token; returns (status, body).
pub fn http_as(addr: std::net::SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, method, path, "text/plain", "application/json", body, Some(token))
}

/// One JSON request (WebDriver, Alertmanager's API); returns (status, parsed body or null).
pub fn http_json(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, answer) = request(addr, method, path, "application/json", "application/json", &text, None);
    (status, serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null))
}

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the server's HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\n{authorization}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read by the framing, not to the end: ChromeDriver keeps the connection open.
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = |r: &[u8]| {
        let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
        let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
        let body = &r[end + 4..];
        if let Some(length) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
            return body.len() >= length.trim().parse::<usize>().unwrap();
        }
        head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
    };
    while !complete(&response) {
        match stream.read(&mut buf).unwrap_or_else(|e| panic!("{method} {path} on {addr}: no answer: {e}")) {
            0 => break,
            n => response.extend_from_slice(&buf[..n]),
        }
    }
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
        // A group of its own per topic: tests on the shared broker read at the same time.
        .set("group.id", format!("index766-test-reader-{topic}"))
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

/// The newest snapshot manifest in `dir`, if any.
pub fn newest_manifest(dir: &Path) -> Option<Manifest> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    names.sort();
    names
        .iter()
        .rev()
        .find_map(|n| serde_json::from_slice(&std::fs::read(dir.join(n).join("manifest.json")).ok()?).ok())
}

/// Each table of the newest snapshot, as sorted JSON rows: comparable whatever the row order.
pub fn snapshot_rows(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let manifest = newest_manifest(dir).expect("a final snapshot");
    let folder = dir.join(format!("snapshot-{:012}", manifest.id));
    manifest
        .files
        .iter()
        .map(|file| {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(folder.join(&file.name)).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
            writer.write_batches(&batches.iter().collect::<Vec<_>>()).unwrap();
            writer.finish().unwrap();
            let text = String::from_utf8(writer.into_inner()).unwrap();
            let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
            rows.sort();
            (file.name.clone(), rows)
        })
        .collect()
}

/// A server process (Alertmanager, ChromeDriver) on a free loopback port, killed when dropped.
/// It cannot be started → panic: tests/run.sh installs it.
pub struct Server {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl Server {
    /// Runs `program` with the arguments `args` makes for the port, and waits until it listens.
    pub fn start(program: &str, args: impl FnOnce(u16) -> Vec<String>) -> Server {
        let port = free_port();
        let child = Command::new(program)
            .args(args(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}. Run tests/run.sh, which installs it."));
        let mut server = Server { child, addr: ([127, 0, 0, 1], port).into() };
        await_listening(&mut server.child, port, program);
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible object store (moto's server) on a free loopback port, with one bucket;
/// killed when dropped. Cannot be started → panic (tests/run.sh installs it).
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let port = free_port();
        let home = std::env::var("HOME").unwrap_or_default();
        let path =
            std::env::var("MOTO_PYTHONPATH").unwrap_or_else(|_| format!("{home}/.cache/index766/tools/moto-5.2.5"));
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .env("PYTHONPATH", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto's S3 server from {path}: {e}. Run tests/run.sh, which installs it.")
            });
        let mut server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
        await_listening(&mut server.child, port, &format!("moto's S3 server (installed in {path}?)"));
        let addr = ("127.0.0.1", port).to_socket_addrs().unwrap().next().unwrap();
        let (status, body) = http(addr, "PUT", &format!("/{bucket}"), "");
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
        server
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
