//! A semaphore: `cargo run -p etcd-recipes-examples --bin semaphore [NAME] [PERMITS]`.
//!
//! Six workers share PERMITS (default 2) permits: at most that many work at once. Run it in
//! several terminals against the same etcd (`ETCD_ENDPOINTS=127.0.0.1:2379`) and the
//! permits are shared between processes too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::SessionSource;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let name = std::env::args().nth(1).unwrap_or_else(|| "example-semaphore".to_string());
    let permits: u32 = std::env::args().nth(2).and_then(|p| p.parse().ok()).unwrap_or(2);
    let (client, _local_etcd) = connect_or_start().await?;
    // A fresh session (lease) per acquisition, closed on release.
    let sem = Semaphore::new(SessionSource::per_use(&client, 10)?, &name, permits)?;
    let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for i in 0..6 {
        let (sem, inside, most, name) = (sem.clone(), inside.clone(), most.clone(), name.clone());
        workers.push(tokio::spawn(async move {
            let permit = sem.acquire().await?;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            println!("worker {i} holds a permit (fencing token {}), {now} inside", permit.fencing_token());
            // A guarded write: refused by etcd if the permit is no longer ours.
            permit.fence().put(&format!("{name}-done/{i}"), permit.fencing_token().to_string()).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            permit.release().await?;
            Ok::<_, etcd_recipes::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!("6 workers done, at most {} at a time ({permits} permits)", most.load(Ordering::SeqCst));
    client.close().await;
    Ok(())
}
