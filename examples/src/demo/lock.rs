use std::time::Duration;

use etcd_recipes::lock::Lock;
use etcd_recipes::{Client, Session};

/// Two workers contend for one lock; each holds it for a moment and writes under a fence.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Lock: two workers, one lock ==");
    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            // Each worker has its own session (lease): if it dies, its lock goes with it.
            let session = Session::new(&client, 5).await?;
            let lock = Lock::new(&session, "demo/report-lock")?;
            for round in 1..=2 {
                println!("  {name}: waiting for the lock (round {round})");
                let guard = lock.acquire().await?;
                println!(
                    "  {name}: got it; fencing token {} (key {})",
                    guard.fencing_token(),
                    guard.key()
                );
                // A guarded write: etcd applies it only while this key is still the lock holder.
                guard.fence().put("demo/report", format!("written by {name} round {round}")).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                guard.release().await?;
                println!("  {name}: released the lock");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            session.close().await?;
            Ok::<_, etcd_recipes::Error>(())
        }));
    }
    for w in workers {
        w.await.expect("worker panicked")?;
    }
    let last = client.get("demo/report").await?.unwrap_or_default();
    println!("Last guarded write: {:?}. Tokens only ever grew, so a stale holder could be told apart.", String::from_utf8_lossy(&last));
    client.delete("demo/report").await?;
    Ok(())
}
