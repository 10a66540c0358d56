use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::{Client, SessionSource};

/// Five workers share three permits: at most three are inside at once, the others queue.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Semaphore: 3 permits, 5 workers ==");
    // Each acquisition gets its own lease (5 s): a worker that dies gives its permit back.
    let sem = Semaphore::new(SessionSource::per_use(client, 5)?, "demo/encoders", 3)?;
    let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for i in 1..=5u64 {
        let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i)).await; // they queue up in this order
            let permit = sem.acquire().await?;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            println!("  worker-{i}: got a permit (fencing token {}); {now} of 3 in use", permit.fencing_token());
            tokio::time::sleep(Duration::from_millis(400)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            println!("  worker-{i}: done, gives its permit back");
            permit.release().await
        }));
    }
    for w in workers {
        w.await.expect("worker panicked")?;
    }
    println!("All 5 done; never more than {} inside at once. Workers 4 and 5 waited their turn, in order.", most.load(Ordering::SeqCst));
    Ok(())
}
