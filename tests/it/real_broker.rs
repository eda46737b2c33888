//! End to end against a real Kafka-compatible broker process (tansu) over TCP on loopback.

use index766::tools::produce::ensure_topics;

use crate::scenario::{self, TOPICS};
use crate::support::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_the_scenario_from_a_real_broker() {
    let broker = Broker::start();
    ensure_topics(&broker.bootstrap, &TOPICS, 3).await.unwrap();
    scenario::produce(&broker.bootstrap);
    scenario::run_pipeline_and_check(&broker.bootstrap).await;
}
