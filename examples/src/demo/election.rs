use std::time::Duration;

use etcd_recipes::election::{self, Election};
use etcd_recipes::{Client, Session};

/// Two nodes campaign; the leader steps down and the other takes over, while an
/// observer reports each change.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Leader election: two nodes, one leader ==");
    let mut observer = election::observe(client, "demo/scheduler")?;
    let watch = tokio::spawn(async move {
        while let Some(item) = observer.next().await {
            match item {
                Ok(Some(l)) => println!("  observer: leader is now {:?} (fencing token {})", String::from_utf8_lossy(&l.value), l.fencing_token),
                Ok(None) => println!("  observer: no leader"),
                Err(e) => {
                    println!("  observer: error {e}");
                    break;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s1, s2) = (Session::new(client, 5).await?, Session::new(client, 5).await?);
    let node1 = Election::new(&s1, "demo/scheduler")?;
    let node2 = Election::new(&s2, "demo/scheduler")?;
    println!("  node-1 campaigns");
    let lead1 = node1.campaign("node-1").await?;
    println!("  node-1 is the leader (fencing token {})", lead1.revision());
    println!("  node-2 campaigns and waits");
    let waiting = tokio::spawn(async move { node2.campaign("node-2").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("  node-1 steps down");
    let t = std::time::Instant::now();
    lead1.resign().await?;
    let lead2 = waiting.await.expect("campaign panicked")?;
    println!("  node-2 took over after {:?} (fencing token {})", t.elapsed(), lead2.revision());
    lead2.proclaim("node-2 (busy)").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    lead2.resign().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    watch.abort();
    s1.close().await?;
    s2.close().await?;
    Ok(())
}
