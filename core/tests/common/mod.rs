//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions};

/// Log with `RUST_LOG=etcd_recipes=debug cargo nextest run ...`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A client of the test etcd, failing the test if it cannot connect.
pub async fn client(etcd: &EtcdCluster) -> Client {
    Client::connect(ClientOptions::new(etcd.endpoints()).with_connect_timeout(Duration::from_secs(10)))
        .await
        .expect("connect")
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
