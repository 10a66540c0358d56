use etcd_recipes::counter::Counter;
use etcd_recipes::Client;

/// Four tasks add to one counter at the same time: no update is lost.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Atomic counter ==");
    let visits = Counter::new(client, "demo/visits")?;
    visits.set(0).await?;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let visits = visits.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    visits.add(1).await?; // compare-and-swap, retried on a clash
                }
                Ok::<_, etcd_recipes::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task panicked")?;
    }
    println!("  4 tasks added 1, 25 times each, concurrently: the counter reads {}", visits.get().await?);
    println!("  compare_and_set(100 -> 0): {}", visits.compare_and_set(100, 0).await?);
    println!("  compare_and_set(100 -> 0) again: {} (it is 0 now)", visits.compare_and_set(100, 0).await?);
    client.delete("demo/visits").await?;
    Ok(())
}
