//! The `index766` command: parses the command line and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use index766::demo::{self, StreamOptions};
use index766::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "index766", version, about = "Real-time Index 766 scoring pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline against the brokers in the config.
    Run {
        /// TOML file layered over the defaults (pipeline/config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Everything in one process: an in-process Kafka broker, a simulated province, the pipeline.
    Demo {
        /// Address of the dashboard, /metrics, /sql and /healthz.
        #[arg(long, default_value = "127.0.0.1:8766")]
        http: SocketAddr,
        /// Address of the PostgreSQL protocol (psql, DBeaver, Grafana).
        #[arg(long, default_value = "127.0.0.1:5766")]
        postgres: SocketAddr,
        /// Folder for the simulated unit registry and the Parquet snapshots.
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// Print the [[alerts.rules]] of the config as a Prometheus alerting-rules file.
    PrometheusRules {
        /// TOML file layered over the defaults (pipeline/config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write the simulated province's events to a broker (for trials and load).
    Generate {
        /// Kafka bootstrap servers, host:port[,host:port…].
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value = "index766.dossier-events")]
        topic: String,
        #[arg(long, default_value = "index766.petitions")]
        petitions_topic: String,
        /// Partitions of the topics, if they have to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Also write the province's units.jsonl and procedures.jsonl into this folder.
        #[arg(long)]
        files_out: Option<PathBuf>,
        #[command(flatten)]
        stream: StreamArgs,
    },
}

#[derive(Args)]
struct StreamArgs {
    /// Days of history before now.
    #[arg(long, default_value_t = 45)]
    days: i64,
    /// Dossiers received per working day.
    #[arg(long, default_value_t = 2000)]
    per_day: u32,
    /// New dossiers per minute after the history (0: stop after the history).
    #[arg(long, default_value_t = 120)]
    live_per_minute: u32,
    /// Seed of the simulation: the same seed gives the same province and dossiers.
    #[arg(long, default_value_t = 766)]
    seed: u64,
}

impl From<StreamArgs> for StreamOptions {
    fn from(a: StreamArgs) -> Self {
        StreamOptions { days: a.days, per_day: a.per_day, live_per_minute: a.live_per_minute, seed: a.seed }
    }
}

/// Cancels on Ctrl-C or SIGTERM. The handlers are in place when this returns: a signal that
/// arrives during start-up still shuts down cleanly.
fn shutdown_on_signal() -> CancellationToken {
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs written to files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result: anyhow::Result<()> = match Cli::parse().command {
        Command::Run { config } => match Config::load(config.as_deref()) {
            Ok(config) => index766::run(config, shutdown_on_signal()).await.map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::Demo { http, postgres, data_dir, stream } => {
            demo::demo(demo::Addresses { http, postgres }, data_dir, stream.into(), shutdown_on_signal())
                .await
                .map_err(Into::into)
        }
        Command::PrometheusRules { config } => Config::load(config.as_deref())
            .and_then(|config| config.alert_rules())
            .map(|rules| print!("{}", index766::prometheus_rules::render(&rules)))
            .map_err(Into::into),
        Command::Generate { brokers, topic, petitions_topic, partitions, files_out, stream } => {
            let stop = shutdown_on_signal();
            let options: StreamOptions = stream.into();
            if let Err(error) =
                index766::produce::ensure_topics(&brokers, &[&topic, &petitions_topic], partitions).await
            {
                eprintln!("index766: {error}");
                return ExitCode::FAILURE;
            }
            tokio::task::spawn_blocking(move || {
                demo::generate(&brokers, (&topic, &petitions_topic), files_out, &options, &stop)
            })
            .await
            .expect("generator does not panic")
            .map(|n| println!("{n} events delivered"))
            .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("index766: {error:#}");
            ExitCode::FAILURE
        }
    }
}
