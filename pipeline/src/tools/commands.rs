//! What the `index766` commands do beyond starting the pipeline: a replay that reports what it
//! counted, the history and event generators, the alert-noise measurement, the Prometheus rules
//! file. `main.rs` parses the command line and calls these.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use index766_core::time::{Period, PeriodKind};

use crate::config::Config;
use crate::ingest::replay::Files;
use crate::run::{Feed, Pipeline, RunError};
use crate::tools::alert_noise::{self, NoiseOptions};
use crate::tools::demo::{self, HistoryOptions, HistoryOut, StreamOptions};

/// Cancels on Ctrl-C or SIGTERM. The handlers are in place when this returns: a signal that
/// arrives during start-up still shuts down cleanly.
pub fn shutdown_on_signal() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

/// Replays the files; prints what was counted and how fast.
pub async fn replay(mut config: Config, files: Files) -> Result<(), RunError> {
    if !files.keep_serving {
        // Nothing is served after the replay: any free port, no PostgreSQL listener.
        config.http.listen = "127.0.0.1:0".parse().expect("an address");
        config.sql.postgres_listen = String::new();
    }
    let dead_letters = files.dead_letters.clone();
    let (snapshots, _) = config.snapshot.own_place();
    let started = std::time::Instant::now();
    let pipeline = Pipeline::start_with(config, Feed::Files(files), shutdown_on_signal()).await?;
    let metrics = pipeline.metrics.clone();
    // Counters resume from the snapshot's: this replay's share is what they gain.
    let reasons = index766_core::event::RejectReason::ALL.map(|r| r.as_str());
    let counts = || {
        let rejected = reasons.map(|r| metrics.events_rejected.with_label_values(&[r]).get());
        (metrics.events_consumed.get(), metrics.events_applied.get(), rejected)
    };
    let before = counts();
    pipeline.wait().await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = counts();
    let rejected: Vec<String> = (0..reasons.len())
        .map(|i| (reasons[i], after.2[i] - before.2[i]))
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let read = after.0 - before.0;
    println!(
        "replayed {read} events in {seconds:.1} s ({:.0} events/s): {} applied; dead letters ({}): {}; snapshot in {}",
        read as f64 / seconds,
        after.1 - before.1,
        dead_letters.display(),
        if rejected.is_empty() { "none".to_owned() } else { rejected.join(", ") },
        snapshots.display(),
    );
    Ok(())
}

/// Writes a simulated history to `out` (creating its topic if it goes to a broker).
pub async fn generate_history(
    out: HistoryOut,
    files_out: Option<PathBuf>,
    options: HistoryOptions,
) -> anyhow::Result<()> {
    if let HistoryOut::Topic { brokers, topic } = &out {
        crate::tools::produce::ensure_topics(brokers, &[topic], 4).await?;
    }
    let started = std::time::Instant::now();
    let written = tokio::task::spawn_blocking(move || demo::generate_history(&out, files_out.as_deref(), &options))
        .await
        .expect("generator does not panic")?;
    println!("{written} events written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The month `YYYY-MM`, or the last complete one.
pub fn month(text: Option<&str>) -> anyhow::Result<Period> {
    match text {
        None => Ok(Period::containing(PeriodKind::Month, chrono::Utc::now().timestamp()).previous()),
        Some(text) => index766_core::time::parse_time(&format!("{text}-01T00:00:00+07:00"))
            .map(|t| Period::containing(PeriodKind::Month, t))
            .map_err(|_| anyhow::anyhow!("--month {text}: write the month as YYYY-MM, e.g. 2026-11")),
    }
}

/// Prints what the config's `[[alerts.rules]]` fire over a simulated month (tools::alert_noise).
pub fn alert_noise(config: Option<&Path>, options: &NoiseOptions) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let rules = config.alert_rules(&config.spec()?)?;
    let report = alert_noise::measure(rules, options).map_err(|e| anyhow::anyhow!("--failing-unit: {e}"))?;
    print!("{}", report.render(&format!("alerts fired over {} (judged every two hours)", options.month)));
    Ok(())
}

/// Prints the config's `[[alerts.rules]]` as a Prometheus alerting-rules file.
pub fn prometheus_rules(config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let rules = config.alert_rules(&config.spec()?)?;
    print!("{}", crate::alerts::prometheus_rules::render(&rules, config.locale.language));
    Ok(())
}

/// Reads a configuration as `run` would (the defaults, the file, `INDEX766__` variables), with
/// its scoring spec and alert rules, without starting anything: what a chart renders is checked
/// before a pod meets it.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file))?;
    let rules = config.alert_rules(&config.spec()?)?;
    config.tls_files()?;
    println!("{}: a valid configuration ({} alert rules)", file.display(), rules.len());
    Ok(())
}

/// Asks a running pipeline at `url` whether it is healthy and answers SQL (`SELECT count(*)
/// FROM units`), as the chart's `helm test` does; `token` signs in when sign-in is on.
pub async fn probe(url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let url = url.trim_end_matches('/');
    let health = client.get(format!("{url}/healthz")).send().await?;
    anyhow::ensure!(health.status().is_success(), "{url}/healthz answered {}", health.status());
    let mut query = client.post(format!("{url}/sql")).body("SELECT count(*) AS units FROM units");
    if let Some(token) = token {
        query = query.bearer_auth(token);
    }
    let answer = query.send().await?;
    let status = answer.status();
    let body = answer.text().await?;
    anyhow::ensure!(status.is_success(), "{url}/sql answered {status}: {body}");
    println!("{url}: healthy; {body}");
    Ok(())
}

/// Fetches `path` (a weekly report) with the `asked` parameters into `out`.
pub async fn fetch_report(
    url: &str,
    path: &str,
    asked: &[(&str, String)],
    token: Option<&str>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build()?;
    let mut request = client.get(format!("{}{path}", url.trim_end_matches('/'))).query(asked);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await?;
    let status = answer.status();
    let body = answer.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url}{path} answered {status}: {}", String::from_utf8_lossy(&body));
    std::fs::write(out, &body).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!("{}: {} bytes", out.display(), body.len());
    Ok(())
}

/// Writes the simulated province's events to a broker, creating the topics if needed.
pub async fn generate(
    brokers: String,
    topics: (String, String),
    partitions: i32,
    files_out: Option<PathBuf>,
    options: StreamOptions,
) -> anyhow::Result<()> {
    crate::tools::produce::ensure_topics(&brokers, &[&topics.0, &topics.1], partitions).await?;
    let stop = shutdown_on_signal();
    let delivered = tokio::task::spawn_blocking(move || {
        demo::generate(&brokers, (&topics.0, &topics.1), files_out, &options, &stop)
    })
    .await
    .expect("generator does not panic")?;
    println!("{delivered} events delivered");
    Ok(())
}
