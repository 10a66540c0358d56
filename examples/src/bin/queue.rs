//! Queues: `cargo run -p etcd-recipes-examples --bin queue`.
//!
//! A FIFO job queue shared by two consumers, a consumer woken by a new item, and a priority
//! queue (lower number first). Same keys as etcd's Go `recipe.Queue` / `recipe.PriorityQueue`,
//! so a Go producer can feed these consumers. Items are handed out at most once: for
//! redelivery after a crash, use the work queue (`--bin workqueue`).

use std::time::Duration;

use etcd_recipes::queue::{PriorityQueue, Queue};
use etcd_recipes::ErrorKind;
use etcd_recipes_examples::{connect_or_start, init_logging};

async fn consumer(name: &str, jobs: &Queue) -> etcd_recipes::Result<Vec<String>> {
    let mut taken = Vec::new();
    while let Some(item) = jobs.try_dequeue().await? {
        // None: the queue is empty
        let job = item.value_string()?;
        println!("{name} took {job}");
        taken.push(job);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(taken)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    let jobs = Queue::new(&client, "demo/jobs")?;
    for i in 1..=6 {
        jobs.enqueue(format!("job-{i}")).await?;
    }
    println!("enqueued 6 jobs; length: {}", jobs.length().await?);
    let (a, b) = tokio::join!(consumer("consumer-1", &jobs), consumer("consumer-2", &jobs));
    let mut taken = [a?, b?].concat();
    let n = taken.len();
    taken.sort();
    taken.dedup();
    println!(
        "each job went to exactly one consumer: {n} taken, {} distinct, length now {}",
        taken.len(),
        jobs.length().await?
    );

    // A consumer of an empty queue waits (up to its timeout) and wakes on the next item.
    let waiting = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.dequeue_within(Some(Duration::from_secs(10))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // a window for it to start waiting
    jobs.enqueue("job-7").await?;
    println!("a waiting consumer woke up with {}", waiting.await.expect("consumer panicked")?.value_string()?);
    match jobs.dequeue_within(Some(Duration::from_millis(200))).await {
        Err(e) if e.kind() == ErrorKind::LockTimeout => println!("dequeue on an empty queue gives up: {}", e.kind().code()),
        other => println!("unexpected: {other:?}"),
    }

    // Priority queue: lower number first, FIFO within one priority.
    let tasks = PriorityQueue::new(&client, "demo/tasks")?;
    for (value, priority) in
        [("weekly digest", 100), ("page on-call", 0), ("rotate logs", 10), ("patch openssl", 0), ("resize images", 10)]
    {
        tasks.enqueue(value, priority).await?;
        println!("enqueued {value:?} with priority {priority}");
    }
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(tasks.dequeue_within(Some(Duration::from_secs(5))).await?.value_string()?);
    }
    println!("dequeued in order: {}", order.join(", "));
    client.close().await;
    Ok(())
}
