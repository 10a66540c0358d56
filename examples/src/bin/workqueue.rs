//! A reliable work queue: `cargo run -p etcd-recipes-examples --bin workqueue`.
//!
//! Two workers make thumbnails; a poison item fails on every attempt and is moved to the
//! dead letters, then requeued; a delayed item waits for its time. Run a second copy
//! against the same etcd (`ETCD_ENDPOINTS=127.0.0.1:2379`) and the workers share the items.

use std::time::Duration;

use etcd_recipes::workqueue::WorkQueue;
use etcd_recipes::{ErrorKind, SessionSource};
use etcd_recipes_examples::{connect_or_start, init_logging};

async fn worker(name: &str, queue: WorkQueue) -> etcd_recipes::Result<()> {
    loop {
        let item = match queue.receive_within(Some(Duration::from_millis(1500))).await {
            Ok(item) => item,
            Err(e) if e.kind() == ErrorKind::LockTimeout => return Ok(()), // nothing more to do
            Err(e) => return Err(e),
        };
        let file = item.value_string()?;
        if file == "poison.png" {
            println!("{name} failed on {file} (attempt {})", item.deliveries());
            item.nack(None).await?;
            continue;
        }
        println!("{name} made a thumbnail of {file} (attempt {})", item.deliveries());
        item.ack().await?; // Fenced if our claim was lost meanwhile
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    // Each delivery is claimed under a lease of its own (10 s): a worker that dies mid-item
    // gives it back when its lease expires. Two failed deliveries: dead letter.
    let queue = WorkQueue::new(SessionSource::per_use(&client, 10)?, "demo/thumbnails")?.with_max_deliveries(Some(2))?;
    for name in ["a.png", "b.png", "poison.png"] {
        queue.put(name, None).await?;
    }
    queue.put("later.png", Some(Duration::from_millis(500))).await?;
    let (a, b) = tokio::join!(worker("worker-1", queue.clone()), worker("worker-2", queue.clone()));
    a?;
    b?;
    for d in queue.dead_letters().await? {
        println!("dead letter: {} after {} deliveries", String::from_utf8_lossy(&d.value), d.deliveries);
    }
    println!("requeued: {}", queue.requeue_all_dead().await?);
    let item = queue.receive_within(Some(Duration::from_secs(5))).await?;
    println!("{} is back (attempt {})", item.value_string()?, item.deliveries());
    item.ack().await?;
    println!("visible items left: {}", queue.length().await?);
    client.close().await;
    Ok(())
}
