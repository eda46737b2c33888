//! The Index 766 scoring core (Decision 766/QĐ-TTg): what the pipeline computes, with no I/O
//! beyond reading a file it is given, no Kafka, no Arrow, no async runtime.
//!
//! The flow through it runs one way:
//! - `time` (instants, the clock, UTC+7 periods) and the registries: `units` (the unit tree),
//!   `catalog` (procedures);
//! - `criteria`: the table of the criteria this build counts, each declared once with its
//!   source, its judging function and how its figure is derived; `spec` (points, conversions
//!   and dates per criterion) is checked against it at load;
//! - `event` decodes the dossier lifecycle contract; `petition` decodes petitions and keeps
//!   their criteria;
//! - `dossier` merges a dossier's events and says what 2.1 makes of it; `judge` sums what one
//!   dossier contributes to the dossier criteria; `state` sums those per unit and period as
//!   dossiers change and deadlines pass;
//! - `scoring` turns the sums into scores, ranks and gaps under the spec.
//!
//! The pipeline crate feeds it events and turns its results into Arrow tables.

pub mod catalog;
pub mod criteria;
pub mod dossier;
pub mod event;
pub mod fixtures;
pub mod judge;
pub mod petition;
pub mod scoring;
pub mod spec;
pub mod state;
pub mod time;
pub mod units;
