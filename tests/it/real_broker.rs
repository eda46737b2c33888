//! End to end against a real Kafka-compatible broker process (tansu) over TCP on loopback.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::scenario::{self, DEAD_LETTER_TOPIC, EVENTS_TOPIC};
use crate::support::Broker;

async fn create_topics(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let topics = [
        NewTopic::new(EVENTS_TOPIC, 3, TopicReplication::Fixed(1)),
        NewTopic::new(DEAD_LETTER_TOPIC, 1, TopicReplication::Fixed(1)),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await.expect("CreateTopics request") {
        result.expect("topic created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_the_scenario_from_a_real_broker() {
    let broker = Broker::start();
    create_topics(&broker.bootstrap).await;
    scenario::produce(&broker.bootstrap);
    scenario::run_pipeline_and_check(&broker.bootstrap).await;
}
