//! Barriers: `cargo run -p etcd-recipes-examples --bin barrier`.
//!
//! A gate (a [`Barrier`]) holds three workers until a coordinator opens it; a
//! [`DoubleBarrier`] makes three parties start together and finish together. Run it against
//! the same etcd as a Go program using `recipe.NewBarrier("demo/deploy-gate")` and they share
//! the gate (`ETCD_ENDPOINTS=127.0.0.1:2379`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recipes::barrier::{Barrier, DoubleBarrier};
use etcd_recipes::{ErrorKind, SessionSource};
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;

    // Barrier: one key. While it exists, wait() blocks; deleting it lets everyone go.
    let gate = Barrier::new(&client, "demo/deploy-gate")?;
    println!("gate held: {}", gate.hold().await?);
    let passed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 1..=3 {
        let (gate, passed) = (gate.clone(), passed.clone());
        workers.push(tokio::spawn(async move {
            println!("worker-{i} waits at the gate");
            gate.wait_within(Some(Duration::from_secs(30))).await?;
            passed.fetch_add(1, Ordering::SeqCst);
            println!("worker-{i} passes the gate");
            Ok::<_, etcd_recipes::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // a window for them to reach the gate
    match gate.wait_within(Some(Duration::from_millis(200))).await {
        Err(e) if e.kind() == ErrorKind::LockTimeout => println!("a wait with a short timeout gives up: {}", e.kind().code()),
        other => println!("unexpected: {other:?}"),
    }
    println!("still waiting at the gate: {}", 3 - passed.load(Ordering::SeqCst));
    println!("coordinator releases the gate");
    gate.release().await?;
    for w in workers {
        w.await.expect("worker panicked")?;
    }
    gate.wait().await?; // returns at once: nothing holds the gate
    println!("gate held now: {}", gate.is_held().await?);

    // Double barrier for 3 parties: enter() returns once all 3 are in, leave() once all 3
    // are out. Each entry gets a lease of its own (10 s): a party that dies frees its place
    // instead of blocking the others forever.
    let source = SessionSource::per_use(&client, 10)?;
    let parties: Vec<DoubleBarrier> = (0..3)
        .map(|_| Ok(DoubleBarrier::new(source.clone(), "demo/batch", 3)?.with_timeout(Some(Duration::from_secs(30)))))
        .collect::<etcd_recipes::Result<_>>()?;
    let entering = parties.iter().enumerate().map(|(i, party)| async move {
        tokio::time::sleep(Duration::from_millis(150 * i as u64)).await; // they arrive at different times
        println!("party-{} arrives", i + 1);
        party.enter().await?;
        Ok::<_, etcd_recipes::Error>(Instant::now())
    });
    let entered = futures::future::try_join_all(entering).await?;
    let spread = entered.iter().max().unwrap().duration_since(*entered.iter().min().unwrap());
    println!("all 3 entered; they started within {} ms of each other (arrivals were 300 ms apart)", spread.as_millis());

    let fourth = DoubleBarrier::new(source.clone(), "demo/batch", 3)?;
    match fourth.enter_within(Some(Duration::from_secs(5))).await {
        Err(e) if e.kind() == ErrorKind::LockTimeout => println!("a fourth party is turned away, the barrier is full: {}", e.kind().code()),
        other => println!("unexpected: {other:?}"),
    }

    let leaving = parties.iter().enumerate().map(|(i, party)| async move {
        let ms = 100 + 200 * i as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        println!("party-{} finished its work after {ms} ms and waits for the others to leave", i + 1);
        party.leave().await?;
        println!("party-{} left", i + 1);
        Ok::<_, etcd_recipes::Error>(())
    });
    futures::future::try_join_all(leaving).await?;
    println!("all 3 left together: done");
    client.close().await;
    Ok(())
}
