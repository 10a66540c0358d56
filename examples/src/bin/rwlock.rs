//! A read-write lock: `cargo run -p etcd-recipes-examples --bin rwlock [NAME]`.
//!
//! Two readers hold the lock together, a writer waits for them, and a reader arriving
//! while the writer waits goes after it. Same keys as etcd's Go `recipe.RWMutex`.

use std::time::Duration;

use etcd_recipes::rwlock::RwLock;
use etcd_recipes::SessionSource;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let name = std::env::args().nth(1).unwrap_or_else(|| "example-rwlock".to_string());
    let (client, _local_etcd) = connect_or_start().await?;
    let rw = RwLock::new(SessionSource::per_use(&client, 10)?, &name)?;
    let (r1, r2) = (rw.read().await?, rw.read().await?);
    println!("two readers hold {name:?} together");
    let writer = tokio::spawn({
        let rw = rw.clone();
        async move { rw.write().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    match rw.try_read().await {
        Err(e) => println!("a reader arriving now waits behind the writer: {}", e.kind().code()),
        Ok(g) => g.release().await?,
    }
    r1.release().await?;
    r2.release().await?;
    let w = writer.await??;
    // Data outside the lock's prefix (`<name>/`): a key there would count as a holder.
    w.fence().put(&format!("{name}-version"), "2").await?;
    println!("the writer holds it alone (fencing token {}) and wrote version 2", w.fencing_token());
    w.release().await?;
    let r = rw.read().await?;
    println!("a reader sees version {:?}", client.get(&format!("{name}-version")).await?.map(String::from_utf8));
    r.release().await?;
    client.close().await;
    Ok(())
}
