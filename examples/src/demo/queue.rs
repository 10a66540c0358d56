use std::time::Duration;

use etcd_recipes::queue::{PriorityQueue, Queue};
use etcd_recipes::Client;

/// A producer and two consumers share a FIFO queue; a priority queue hands out urgent
/// items first.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Queue and priority queue ==");
    let jobs = Queue::new(client, "demo/jobs")?.with_timeout(Some(Duration::from_secs(10)));
    let consumers: Vec<_> = ["consumer-1", "consumer-2"]
        .into_iter()
        .map(|name| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                for _ in 0..2 {
                    // Waits for an item; each item goes to exactly one consumer.
                    let item = jobs.dequeue().await?;
                    println!("  {name} took {}", item.value_string()?);
                }
                Ok::<_, etcd_recipes::Error>(())
            })
        })
        .collect();
    for i in 1..=4 {
        jobs.enqueue(format!("job-{i}")).await?;
        println!("  producer enqueued job-{i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in consumers {
        c.await.expect("consumer panicked")?;
    }

    let tasks = PriorityQueue::new(client, "demo/tasks")?;
    for (value, priority) in [("weekly digest", 100), ("page on-call", 0), ("rotate logs", 10), ("patch openssl", 0)] {
        tasks.enqueue(value, priority).await?;
    }
    println!("  priority queue: enqueued weekly digest (100), page on-call (0), rotate logs (10), patch openssl (0)");
    let mut order = Vec::new();
    while let Some(item) = tasks.try_dequeue().await? {
        order.push(item.value_string()?);
    }
    println!("  dequeued lowest number first, FIFO within one: {}", order.join(", "));
    Ok(())
}
