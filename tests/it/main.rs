//! The repository's one integration-test binary (it links once): a module per area.
//!
//! - `contract`: the shipped schemas and examples against the pipeline's decoder;
//! - `golden`: golden SQL files (`sql/golden/`) against the scenario's state;
//! - `mock_consumer`: the whole pipeline on librdkafka's in-process mock cluster;
//! - `reference`: a batch reference implementation the incremental engine must agree with;
//! - `real_broker`: end to end against a real Kafka-compatible broker process (tansu) over TCP.

mod contract;
mod golden;
mod mock_consumer;
mod real_broker;
mod reference;
mod scenario;
mod support;
