//! The hand-computed scenario end to end on Apache Kafka (the shared broker; the scenario's topics
//! have the default names, which no other test on it uses).

use index766::tools::produce::ensure_topics;

use crate::scenario::{self, TOPICS};
use crate::support::Kafka;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_the_scenario_from_a_real_broker() {
    let broker = Kafka::shared();
    ensure_topics(&broker.bootstrap, &TOPICS, 3).await.unwrap();
    scenario::produce(&broker.bootstrap);
    scenario::run_pipeline_and_check(&broker.bootstrap).await;
}
