//! An atomic counter: `cargo run -p etcd-recipes-examples --bin counter`.
//!
//! Four tasks count visits at once and none is lost; compare-and-set resets the counter.
//! `etcdctl get demo/visits` shows the same decimal number.

use etcd_recipes::counter::Counter;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    let visits = Counter::new(&client, "demo/visits")?;
    visits.set(0).await?;
    let tasks: Vec<tokio::task::JoinHandle<etcd_recipes::Result<()>>> = (0..4)
        .map(|_| {
            let visits = visits.clone();
            // Each add is a compare-and-swap, retried on conflict.
            tokio::spawn(async move {
                for _ in 0..25 {
                    visits.add(1).await?;
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!("visits: {}", visits.get().await?);
    println!("reset from 100: {}", visits.compare_and_set(100, 0).await?);
    println!("reset from 100 again: {}", visits.compare_and_set(100, 0).await?);
    println!("after 5 more: {}", visits.add(5).await?);
    client.close().await;
    Ok(())
}
