//! A distributed lock: `cargo run -p etcd-recipes-examples --bin lock [NAME]`.
//!
//! Run it in two terminals against the same etcd (`ETCD_ENDPOINTS=127.0.0.1:2379`): the
//! second waits until the first releases. `etcdctl lock NAME` takes part in the same queue.

use std::time::Duration;

use etcd_recipes::lock::Lock;
use etcd_recipes::Session;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let name = std::env::args().nth(1).unwrap_or_else(|| "example-lock".to_string());
    let (client, _local_etcd) = connect_or_start().await?;
    let session = Session::new(&client, 10).await?;
    let lock = Lock::new(&session, &name)?;
    println!("Waiting for lock {name:?} (lease {:x})...", session.lease_id());
    let guard = lock.acquire().await?;
    println!("Holding {} with fencing token {}", guard.key(), guard.fencing_token());
    let n: u64 = match client.get("example-lock-counter").await? {
        Some(v) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
        None => 0,
    };
    guard.fence().put("example-lock-counter", (n + 1).to_string()).await?;
    println!("Counter is now {} (written with a guarded put). Working for 3 s...", n + 1);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        Some(reason) = guard.lost() => println!("Lost the lock: {reason}"),
    }
    guard.release().await?;
    println!("Released.");
    session.close().await?;
    Ok(())
}
