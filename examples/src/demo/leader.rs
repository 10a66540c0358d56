use std::time::Duration;

use etcd_recipes::leader::LeaderLoop;
use etcd_recipes::{Client, SessionSource};

/// Two leader loops on one election. The leader works until its lease is revoked (as when
/// its process hangs past the TTL): its work is cancelled at once and the other loop
/// takes over.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Leader loop: work only while leader ==");
    let mut loops = Vec::new();
    for name in ["node-1", "node-2"] {
        // One term each (requeue off) keeps the demo short; a service would campaign again.
        let lp = LeaderLoop::new(SessionSource::per_use(client, 5)?, "demo/reporter", name)?.requeue(false);
        lp.start(move |leadership, cancel| async move {
            println!("  {name}: leads (fencing token {}), starts its work", leadership.fencing_token());
            for tick in 1..=3 {
                tokio::select! {
                    why = cancel.cancelled() => {
                        println!("  {name}: work cancelled at once ({})", why.detail().unwrap_or(why.kind()));
                        return Ok(());
                    }
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {
                        // A fenced write: etcd refuses it once this term is over.
                        leadership.fence().put("demo/report", format!("{name} tick {tick}")).await?;
                        println!("  {name}: report tick {tick}");
                    }
                }
            }
            println!("  {name}: work finished; resigns");
            Ok::<_, etcd_recipes::Error>(())
        })?;
        loops.push(lp);
    }
    let first = loop {
        if let Some(l) = loops.iter().find_map(|lp| lp.leadership()) {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(450)).await; // let it work a little
    println!("  (revoking the leader's lease {:x}, as if it had hung past its TTL)", first.lease_id());
    client.revoke_lease(first.lease_id()).await?;
    for lp in &loops {
        lp.wait().await?;
    }
    match first.fence().put("demo/report", "a late write from the old leader").await {
        Err(e) => println!("  the old leader's late fenced write is refused: {}", e.kind().code()),
        Ok(_) => println!("  the old leader's late write went through (unexpected)"),
    }
    println!(
        "Both loops done (one term each). The last report: {:?}.",
        String::from_utf8_lossy(&client.get("demo/report").await?.unwrap_or_default())
    );
    client.delete("demo/report").await?;
    Ok(())
}
