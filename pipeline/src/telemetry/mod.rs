//! What the pipeline reports about itself: Prometheus `metrics` and the `health` /healthz shows.

pub mod health;
pub mod metrics;
