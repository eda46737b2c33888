//! index766: Index 766 (Decision 766/QĐ-TTg) scores, live, from Kafka dossier events. The domain
//! (contracts, units, catalog, spec, dossier state, tallies, scores) is the `index766_core` crate;
//! this crate moves data through it.
//!
//! Data flows one way, stage by stage, each a folder:
//! - `ingest`: Kafka (or event-log files, `replay`) → decoded events in batches; what cannot be
//!   decoded goes to the `dead_letter` topic;
//! - `engine`: the single owner of the core's state; applies batches, moves the clock, publishes
//!   immutable `view`s (Arrow tables) and copies the state for persistence between batches;
//! - `persist`: the `snapshot` writer (the state as Parquet, `checkpoint`) and score `history`
//!   in the `store`; a restart resumes from the newest snapshot;
//! - readers of the views: `serve` (SQL over HTTP and PostgreSQL, the wall, /metrics, /healthz)
//!   and `alerts` (drops, to every channel, judged on the view's typed scoreboard);
//! - `telemetry`: the counters and health every stage reports to;
//! - `tools`: the demo, the simulated province, the event producer, and what the other commands
//!   do (`commands`); `main.rs` only parses the command line.
//!
//! `config`, `lang` (the words users meet, per language) and `position` (offsets and the counts
//! that move with them) are read by all; `run` assembles the stages, each a task the
//! `supervise`r watches.

pub mod alerts;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod lang;
pub mod persist;
pub mod position;
pub mod run;
pub mod serve;
pub mod supervise;
pub mod telemetry;
pub mod tools;

pub use config::Config;
pub use run::{run, Feed, Pipeline, RunError};

/// Views and snapshots allocate and free large buffers many times a second; glibc's malloc hands
/// them back to the kernel and faults fresh zeroed pages in again (a fifth of replay's CPU).
/// mimalloc keeps them. Set here so the command, the benchmark and the tests run the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
