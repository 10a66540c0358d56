//! A leader loop: `cargo run -p etcd-recipes-examples --bin leader [NAME]`.
//!
//! Two loops compete for one election. The leader's work ticks through a fenced write
//! until its term ends; here the first leader's lease is revoked (as an operator, an
//! expiry or a partition would), its work is cancelled at once, and the other loop takes
//! over with a higher fencing token. The old leader's late write is refused by etcd.
//! Run it in several terminals against one etcd (`ETCD_ENDPOINTS=127.0.0.1:2379`) and
//! the loops compete across processes too.

use std::time::Duration;

use std::sync::Arc;

use etcd_recipes::election::Leadership;
use etcd_recipes::leader::LeaderLoop;
use etcd_recipes::SessionSource;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let name = std::env::args().nth(1).unwrap_or_else(|| "example-leader".to_string());
    let (client, _local_etcd) = connect_or_start().await?;
    let tick_key = format!("{name}-ticks");
    let mut loops = Vec::new();
    for node in ["node-1", "node-2"] {
        // A fresh session per term; one term each, so the example ends.
        let lp = LeaderLoop::new(SessionSource::per_use(&client, 10)?, &name, node)?.requeue(false);
        let key = tick_key.clone();
        lp.start(move |leadership, cancel| {
            let key = key.clone();
            async move {
                println!("{node} leads (fencing token {})", leadership.fencing_token());
                for tick in 1..=3 {
                    tokio::select! {
                        why = cancel.cancelled() => {
                            println!("{node}: work cancelled ({})", why.kind());
                            // A write after the term ended is refused by etcd.
                            if let Err(e) = leadership.fence().put(&key, format!("{node} late")).await {
                                println!("{node}: late write refused: {}", e.kind().code());
                            }
                            return Ok::<_, etcd_recipes::Error>(());
                        }
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            leadership.fence().put(&key, format!("{node} tick {tick}")).await?;
                            println!("{node}: tick {tick}");
                        }
                    }
                }
                // Hold until the term ends (the lease of the first leader is revoked below).
                let why = cancel.cancelled().await;
                println!("{node}: term over ({})", why.kind());
                Ok(())
            }
        })?;
        loops.push(lp);
    }
    // Wait until someone leads and has ticked, then revoke the leader's lease.
    let (leader, first) = wait_for_leader(&loops, None).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await; // let it tick
    println!("revoking the leader's lease {:x}", first.lease_id());
    client.revoke_lease(first.lease_id()).await?;
    // The other loop takes over; let it tick, then close both (its work then ends).
    wait_for_leader(&loops, Some(leader)).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for lp in &loops {
        lp.close().await;
    }
    println!("last tick: {:?}", client.get(&tick_key).await?.map(|v| String::from_utf8_lossy(&v).into_owned()));
    etcd_recipes::shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// The first loop (other than `not`) that leads, and its leadership (bounded wait).
async fn wait_for_leader(loops: &[LeaderLoop], not: Option<usize>) -> Result<(usize, Arc<Leadership>), String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for (i, lp) in loops.iter().enumerate() {
            if Some(i) != not {
                if let Some(l) = lp.leadership() {
                    return Ok((i, l));
                }
            }
        }
        if tokio::time::Instant::now() > until {
            return Err("no loop became leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
