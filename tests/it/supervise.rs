//! Every part of the pipeline is supervised: one that panics stops the whole process, which
//! writes its final snapshot and exits non-zero with the part named. (Before, the alert task
//! could die and the demo ran on, reporting healthy.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, repo_root};

#[test]
fn a_panic_in_the_alert_task_stops_the_process_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_index766"))
        .current_dir(repo_root())
        .args(["demo", "--days", "1", "--per-day", "50"])
        .args(["--http", &format!("127.0.0.1:{}", free_port()), "--postgres", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("INDEX766_INJECT_PANIC", "alerts")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the index766 demo");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "the demo ran on for 2 minutes with its alert task dead:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the demo exited with success after a part panicked:\n{text}");
    assert!(text.contains("the alerts stopped: panicked"), "the exit message does not name the part:\n{text}");
    assert!(text.contains("final snapshot written"), "the engine was whole, yet no final snapshot:\n{text}");
}
