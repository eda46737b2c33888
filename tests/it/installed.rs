//! An installed binary carries its defaults: from an empty folder, with no checkout beside it,
//! `index766 demo` runs and `index766 run` starts on the built-in spec, views and example units.
//! (Before, both stopped at once: "cannot read the scoring spec sql/scoring_spec.toml".)

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, http};

/// Waits until `POST /sql` answers `query` with 200, and returns the body; fails if the process ends.
fn answered(child: &mut Child, addr: SocketAddr, query: &str, log: &std::path::Path) -> String {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("index766 exited ({status}) from an empty folder:\n{}", std::fs::read_to_string(log).unwrap());
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            let (status, body) = http(addr, "POST", "/sql", query);
            if status == 200 {
                return body;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no answer to {query} in 2 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(mut child: Child, log: &std::path::Path) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "stopped by SIGTERM: {status}\n{}", std::fs::read_to_string(log).unwrap());
}

#[test]
fn the_binary_runs_the_demo_and_run_from_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_index766");

    let (port, log) = (free_port(), dir.path().join("demo.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut demo = Command::new(bin)
        .current_dir(dir.path())
        .args(["demo", "--days", "1", "--per-day", "50", "--http", &addr.to_string()])
        .args(["--postgres", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // A shipped view over the shipped spec's scores.
    let body = answered(&mut demo, addr, "SELECT count(*) AS n FROM unit_ranking", &log);
    assert!(!body.contains("\"n\":0"), "the demo's ranking is empty: {body}");
    stop(demo, &log);

    // No broker at its address: it starts, serves the example units, and says what it waits for.
    let (port, log) = (free_port(), dir.path().join("run.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("run.toml");
    let broker = format!("127.0.0.1:{}", free_port());
    std::fs::write(&config, format!("[kafka]\n\"bootstrap.servers\" = {broker:?}\n")).unwrap();
    let mut run = Command::new(bin)
        .current_dir(dir.path())
        .args(["run", "--config", "run.toml"])
        .env("INDEX766__HTTP__LISTEN", addr.to_string())
        .env("INDEX766__SQL__POSTGRES_LISTEN", "")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let body = answered(&mut run, addr, "SELECT count(*) AS n FROM units", &log);
    assert!(!body.contains("\"n\":0"), "no example units: {body}");
    answered(&mut run, addr, "SELECT count(*) AS n FROM unit_ranking", &log);
    let (status, health) = http(addr, "GET", "/healthz", "");
    assert_eq!(status, 503, "no broker, yet healthy: {health}");
    let (status, ready) = http(addr, "GET", "/readyz", "");
    assert!(status == 503 && ready.contains("\"ready\":false"), "no broker, no lag measured, yet ready: {ready}");
    stop(run, &log);

    // A file of its own that is not there: one clear line, its cause said once.
    std::fs::write(&config, "[scoring]\nspec_file = \"my-spec.toml\"\n").unwrap();
    let out = Command::new(bin).current_dir(dir.path()).args(["run", "--config", "run.toml"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("cannot read the scoring spec my-spec.toml"), "{said}");
    assert_eq!(said.matches("No such file").count(), 1, "the cause is said once: {said}");
}
