//! The `index766` command: parses the command line and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use index766::ingest::replay::Files;
use index766::serve::access::{self, Role};
use index766::tools::alert_noise::NoiseOptions;
use index766::tools::commands::{self, shutdown_on_signal};
use index766::tools::demo::{self, StreamOptions};
use index766::Config;

#[derive(Parser)]
#[command(name = "index766", version, about = "Real-time Index 766 scoring pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Who holds a credential.
#[derive(Args)]
struct Holder {
    /// Their name: the PostgreSQL user name, and what the log says.
    #[arg(long)]
    name: String,
    /// wall, analyst, operator or admin; repeat for more than one.
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// Limits it to this unit's subtree (its unit_code); repeat for more. None: every unit.
    #[arg(long = "unit")]
    units: Vec<String>,
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
        /// TOML file whose keys override the demo's settings (e.g. [sql] limits, [[alerts.rules]]).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// Feed the pipeline from event-log files instead of Kafka (a backfill, a rescore after a
    /// formula change), write the final snapshot, and print what was counted.
    Replay {
        /// Event-log files, read in order: JSON lines (one event of the contract a line), or
        /// Parquet (*.parquet) with the contract's fields as columns.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// TOML file layered over the defaults (pipeline/config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events refused or held, one JSON line each with why (appended to).
        #[arg(long, default_value = "dead-letters.jsonl")]
        dead_letters: PathBuf,
        /// Keep serving SQL, /metrics and the dashboard on the config's addresses after the
        /// files are read, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Write a simulated national history (up to 34 provinces, millions of dossiers) to a file
    /// or a broker topic, for replays, load and benchmarks; the same seed gives the same history.
    GenerateHistory {
        /// JSON lines, or Parquet if the name ends in .parquet.
        #[arg(long, required_unless_present = "brokers", conflicts_with = "brokers")]
        out: Option<PathBuf>,
        /// Kafka bootstrap servers, host:port[,host:port…], instead of --out.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value = "index766.dossier-events")]
        topic: String,
        /// Provinces (1-34).
        #[arg(long, default_value_t = 34)]
        provinces: usize,
        /// Dossiers received in all over the days, split between provinces by size.
        #[arg(long, default_value_t = 1_000_000)]
        dossiers: u64,
        /// Days of history before now.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// The instant the history ends at (RFC 3339); now if not given.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, default_value_t = 766)]
        seed: u64,
        /// Also write the units.jsonl and procedures.jsonl the pipeline needs into this folder.
        #[arg(long)]
        files_out: Option<PathBuf>,
    },
    /// Check a configuration as `run` would read it (the defaults, the file, INDEX766__
    /// variables), its spec and alert rules, without starting: for charts and CI.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check that a running pipeline is healthy and answers a SQL query (the chart's helm test);
    /// the token, when sign-in is on, comes from the environment variable INDEX766_TOKEN.
    Probe {
        /// Its HTTP address, e.g. http://index766:8766.
        #[arg(long)]
        url: String,
    },
    /// Measure alert rules over a simulated month of the demo province in which one department's
    /// desk fails: the alerts fired each day on it and on every other unit (noise).
    AlertNoise {
        /// TOML file layered over the defaults (pipeline/config/default.toml): its [[alerts.rules]].
        #[arg(long)]
        config: Option<PathBuf>,
        /// The month measured, YYYY-MM (the one before it is its baseline); default: last month.
        #[arg(long)]
        month: Option<String>,
        /// Dossiers received per working day.
        #[arg(long, default_value_t = 2000)]
        per_day: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The department whose desk fails.
        #[arg(long, default_value = "H99.05")]
        failing_unit: String,
        /// The day of the month it fails on, at 08:00.
        #[arg(long, default_value_t = 16)]
        failing_day: u32,
        /// Held-back paper dossiers it enters then.
        #[arg(long, default_value_t = 200)]
        backlog: u32,
    },
    /// Fetch a weekly report from a running pipeline (GET /reports/weekly, written now; with
    /// --kept, the one kept on Monday) into a file; the token, when sign-in is on, comes from the
    /// environment variable INDEX766_TOKEN.
    Report {
        /// Its HTTP address, e.g. http://127.0.0.1:8766.
        #[arg(long)]
        url: String,
        /// A unit_code; default: the province (or the token's first unit).
        #[arg(long)]
        unit: Option<String>,
        /// An ISO week, e.g. 2026-W45; default: the newest with figures.
        #[arg(long)]
        week: Option<String>,
        /// html, pdf, xlsx or json.
        #[arg(long, default_value = "pdf")]
        format: String,
        /// vi or en; default: the pipeline's [locale] language.
        #[arg(long)]
        lang: Option<String>,
        /// The report kept on Monday rather than one written now (default: the newest kept).
        #[arg(long)]
        kept: bool,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the [[alerts.rules]] of the config as a Prometheus alerting-rules file.
    PrometheusRules {
        /// TOML file layered over the defaults (pipeline/config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make an API token: its [[token]] entry for [access] tokens_file goes to standard output
    /// (`>> tokens.toml`), the token itself to standard error, once: only its hash and its SCRAM
    /// verifier are kept. Over PostgreSQL the token is the password of the user --name.
    Token(Holder),
    /// Make a PostgreSQL login by password (SCRAM-SHA-256), read from the first line of standard
    /// input: its [[password]] entry for [access] tokens_file goes to standard output.
    Password(Holder),
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
        Command::Demo { http, postgres, data_dir, config, stream } => {
            let overrides = match config.map(|path| std::fs::read_to_string(&path).map_err(|e| (path, e))).transpose() {
                Ok(text) => text.unwrap_or_default(),
                Err((path, error)) => {
                    eprintln!("index766: cannot read --config {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            demo::demo(demo::Addresses { http, postgres, overrides }, data_dir, stream.into(), shutdown_on_signal())
                .await
                .map_err(Into::into)
        }
        Command::Replay { files, config, dead_letters, serve } => match Config::load(config.as_deref()) {
            Ok(config) => commands::replay(config, Files { paths: files, dead_letters, keep_serving: serve })
                .await
                .map_err(Into::into),
            Err(e) => Err(e.into()),
        },
        Command::GenerateHistory { out, brokers, topic, provinces, dossiers, days, as_of, seed, files_out } => {
            match as_of.map(|t| index766_core::time::parse_time(&t)).transpose() {
                Ok(now) => {
                    let out = match (out, brokers) {
                        (Some(path), _) => demo::HistoryOut::File(path),
                        (None, Some(brokers)) => demo::HistoryOut::Topic { brokers, topic },
                        (None, None) => unreachable!("clap requires --out or --brokers"),
                    };
                    let options = demo::HistoryOptions { provinces, dossiers, days, seed, now };
                    commands::generate_history(out, files_out, options).await
                }
                Err(e) => Err(anyhow::anyhow!("--as-of: {e}")),
            }
        }
        Command::AlertNoise { config, month, per_day, seed, failing_unit, failing_day, backlog } => {
            let options = |month| NoiseOptions { month, per_day, seed, failing_unit, failing_day, backlog };
            match commands::month(month.as_deref()) {
                Ok(month) => commands::alert_noise(config.as_deref(), &options(month)),
                Err(e) => Err(e),
            }
        }
        Command::PrometheusRules { config } => commands::prometheus_rules(config.as_deref()),
        Command::CheckConfig { config } => commands::check_config(&config),
        Command::Report { url, unit, week, format, lang, kept, out } => {
            let path = if kept { "/reports/kept" } else { "/reports/weekly" };
            let asked: Vec<(&str, String)> = [("unit", unit), ("week", week), ("format", Some(format)), ("lang", lang)]
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            let token = std::env::var("INDEX766_TOKEN").ok();
            commands::fetch_report(&url, path, &asked, token.as_deref(), &out).await
        }
        Command::Probe { url } => commands::probe(&url, std::env::var("INDEX766_TOKEN").ok().as_deref()).await,
        Command::Token(Holder { name, roles, units }) => {
            let (token, entry) = access::new_token(&name, &roles, &units);
            print!("{entry}");
            eprintln!("index766: the token for {name} (shown only now; give it to them): {token}");
            Ok(())
        }
        Command::Password(Holder { name, roles, units }) => {
            let mut password = String::new();
            match std::io::stdin().read_line(&mut password) {
                Ok(_) if !password.trim_end_matches(['\r', '\n']).is_empty() => {
                    print!("{}", access::new_password(&name, password.trim_end_matches(['\r', '\n']), &roles, &units));
                    Ok(())
                }
                Ok(_) => Err(anyhow::anyhow!("no password on standard input: echo it, or type it and press Enter")),
                Err(e) => Err(anyhow::anyhow!("cannot read the password from standard input: {e}")),
            }
        }
        Command::Generate { brokers, topic, petitions_topic, partitions, files_out, stream } => {
            commands::generate(brokers, (topic, petitions_topic), partitions, files_out, stream.into()).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Each error names its cause in its own message: the chain is not printed again.
            eprintln!("index766: {error}");
            ExitCode::FAILURE
        }
    }
}
