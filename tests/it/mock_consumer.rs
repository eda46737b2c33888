//! The whole pipeline on librdkafka's in-process mock cluster: fast, no broker process.

use rdkafka::mocking::MockCluster;

use crate::scenario::{self, TOPICS};

// The mock cluster stays on the test's thread (block_on keeps this future there) and outlives
// every client: the pipeline is shut down inside run_pipeline_and_check before it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_the_scenario_from_the_mock_cluster() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    for topic in TOPICS {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    scenario::produce(&bootstrap);
    scenario::run_pipeline_and_check(&bootstrap).await;
    drop(cluster);
}
