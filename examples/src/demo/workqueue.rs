use std::time::Duration;

use etcd_recipes::workqueue::WorkQueue;
use etcd_recipes::{Client, SessionSource};

/// A worker dies in the middle of an item; the item is not lost: another worker gets it,
/// as its second attempt, and the dead worker can no longer acknowledge it.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Work queue: at-least-once delivery ==");
    // Each delivery is claimed under a lease of its own (5 s).
    let queue = WorkQueue::new(SessionSource::per_use(client, 5)?, "demo/invoices")?
        .with_timeout(Some(Duration::from_secs(10)));
    queue.put("invoice-1", None).await?;
    println!("  put invoice-1");
    let item = queue.receive().await?;
    println!("  worker-1 took {} (attempt {}) and starts on it", item.value_string()?, item.deliveries());
    println!("  worker-1 dies (its claim's lease is revoked, as when the process is killed and its TTL runs out)");
    client.revoke_lease(item.lease_id()).await?;
    let again = queue.receive().await?;
    println!("  worker-2 took {} (attempt {}): redelivered, not lost", again.value_string()?, again.deliveries());
    match item.ack().await {
        Err(e) => println!("  worker-1's late ack is refused: {}", e.kind().code()),
        Ok(()) => println!("  worker-1's late ack went through (unexpected)"),
    }
    again.ack().await?;
    println!("  worker-2 acked it; items left: {}", queue.length().await?);
    Ok(())
}
