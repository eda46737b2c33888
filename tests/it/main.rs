//! The repository's one integration-test binary (it links once): a module per area.
//!
//! - `access`: sign-in (tokens, JWTs of a test issuer: `jwt`) and roles on every route and on the
//!   PostgreSQL port;
//! - `audit`: the audit trail in the log of the binary as deployed: requests, queries, sign-ins;
//! - `tls`: both listeners over TLS with a test CA (`certs`): curl, psql verify-full, client
//!   certificates, a certificate renewed on disk;
//! - `crash`: SIGKILLs at random, on Apache Kafka with batched zstd producers; the result must equal an uninterrupted run;
//! - `contract`: the simulator's output against the core's decoders;
//! - `faults`: every kind of bad input, and the broker SIGKILLed mid-ingest, on Apache Kafka;
//! - `golden`: golden SQL files (`sql/golden/`) against the scenario's state;
//! - `hostile`: hostile SQL against the running demo binary, over HTTP, psql, psycopg and raw sockets;
//! - `kafka`: what Apache Kafka does that a stand-in broker may not: every codec, transactions,
//!   compaction, retention, partitions added while running;
//! - `scopes`: principals scoped to random subtrees see only their units' rows, everywhere;
//! - `secured`: SASL_SSL (SCRAM) and mutual TLS with a test CA and ACLs; each refusal named;
//! - `installed`: the binary runs the demo and `run` from an empty folder, on its built-in defaults;
//! - `mock_consumer`: the whole pipeline on librdkafka's in-process mock cluster;
//! - `serving`: psql, /metrics, drop alerts on every channel (a real Alertmanager), the IOC page
//!   in a real Chromium (`browser`), the Prometheus rules under promtool;
//! - `report`: the weekly report on demand and kept by the Monday writer: figures against SQL, its
//!   PDF through poppler's pdftotext and pdftoppm, its workbook through openpyxl;
//! - `replicas`: two replicas on one Apache Kafka elect one alert sender; it is SIGKILLed mid-drop,
//!   the other takes over, and every alert reaches the topic, Alertmanager and its webhook once;
//! - `supervise`: a part that panics stops the process, non-zero, with the part named;
//! - `s3`: snapshots and history in an S3-compatible object store (moto's server);
//! - `real_broker`: the scenario end to end on Apache Kafka.

mod access;
mod api;
mod audit;
mod browser;
mod certs;
mod contract;
mod crash;
mod faults;
mod golden;
mod hostile;
mod installed;
mod jwt;
mod kafka;
mod mock_consumer;
mod real_broker;
mod replay;
mod replicas;
mod report;
mod s3;
mod scenario;
mod scopes;
mod secured;
mod serving;
mod supervise;
mod support;
mod tls;
