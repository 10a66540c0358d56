//! Shared pieces of the Rust examples and the demo: connect to the etcd named by
//! `ETCD_ENDPOINTS` (comma-separated), or start a throwaway local one.

pub mod demo;

use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions};

/// A connected client, plus the local etcd it runs against when none was given
/// (keep it alive as long as the client; dropping it stops that etcd).
pub async fn connect_or_start() -> etcd_recipes::Result<(Client, Option<EtcdCluster>)> {
    let given = std::env::var("ETCD_ENDPOINTS").ok().filter(|s| !s.trim().is_empty());
    let (endpoints, local) = match given {
        Some(list) => (list.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>(), None),
        None => {
            let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
                .await
                .expect("starting etcd panicked")?;
            println!("No ETCD_ENDPOINTS given: started a local etcd at {}", etcd.endpoint(0));
            (etcd.endpoints(), Some(etcd))
        }
    };
    let client = Client::connect(ClientOptions::new(endpoints)).await?;
    Ok((client, local))
}

/// Log to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
