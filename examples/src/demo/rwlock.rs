use std::time::Duration;

use etcd_recipes::rwlock::RwLock;
use etcd_recipes::{Client, SessionSource};

/// Two readers share the lock; a writer waits for them and then works alone; a reader
/// that comes while the writer works waits for it.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Read-write lock: readers together, a writer alone ==");
    let lock = RwLock::new(SessionSource::per_use(client, 5)?, "demo/catalog-lock")?;
    let (r1, r2) = (lock.read().await?, lock.read().await?);
    println!("  reader-1 and reader-2 both hold the read lock at the same time");
    let writer = tokio::spawn({
        let lock = lock.clone();
        async move { lock.write().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // a window: the writer is queued
    println!("  writer: waiting (still waiting after 300 ms: {})", !writer.is_finished());
    println!("  reader-1 and reader-2 finish");
    r1.release().await?;
    r2.release().await?;
    let w = writer.await.expect("writer panicked")?;
    println!("  writer: has the lock alone (fencing token {})", w.fencing_token());
    w.fence().put("demo/catalog", "version 2").await?; // refused by etcd if no longer ours
    let reader3 = tokio::spawn({
        let lock = lock.clone();
        async move { lock.read().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("  reader-3 arrives while the writer works: waiting = {}", !reader3.is_finished());
    w.release().await?;
    println!("  writer: done");
    let r3 = reader3.await.expect("reader panicked")?;
    println!("  reader-3: reads {:?}", String::from_utf8_lossy(&client.get("demo/catalog").await?.unwrap_or_default()));
    r3.release().await?;
    client.delete("demo/catalog").await?;
    Ok(())
}
