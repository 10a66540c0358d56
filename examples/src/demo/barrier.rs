use std::time::{Duration, Instant};

use etcd_recipes::barrier::{Barrier, DoubleBarrier};
use etcd_recipes::{Client, SessionSource};

/// A gate holds workers until opened; a double barrier makes workers that arrive at
/// different times start together, and finish together.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Barriers: start together ==");
    let gate = Barrier::new(client, "demo/deploy-gate")?;
    gate.hold().await?;
    println!("  the coordinator holds the gate; 3 workers wait at it");
    let waiting: Vec<_> = (1..=3)
        .map(|i| {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait().await?;
                println!("  worker-{i} passes the gate");
                Ok::<_, etcd_recipes::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // a window: they are all waiting
    println!("  the coordinator releases the gate (deletes its key)");
    gate.release().await?;
    for w in waiting {
        w.await.expect("worker panicked")?;
    }

    println!("  double barrier for 3: workers arrive 250 ms apart and wait for each other");
    let source = SessionSource::per_use(client, 5)?;
    let t0 = Instant::now();
    let workers = (0..3u64).map(|i| {
        let source = source.clone();
        async move {
            let party = DoubleBarrier::new(source, "demo/batch", 3)?;
            tokio::time::sleep(Duration::from_millis(250 * i)).await;
            println!("  worker-{} arrives at {} ms", i + 1, t0.elapsed().as_millis());
            party.enter().await?;
            println!("  worker-{} starts at {} ms", i + 1, t0.elapsed().as_millis());
            tokio::time::sleep(Duration::from_millis(100 + 200 * i)).await;
            party.leave().await?;
            println!("  worker-{} leaves at {} ms (after the slowest finished)", i + 1, t0.elapsed().as_millis());
            Ok::<_, etcd_recipes::Error>(())
        }
    });
    futures::future::try_join_all(workers).await?;
    Ok(())
}
