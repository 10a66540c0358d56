use std::time::Duration;

use etcd_recipes::{Client, Session};

/// A session (a lease kept alive), watched for a few renewals, then closed.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Session: a lease kept alive ==");
    let session = Session::new(client, 2).await?;
    println!("Granted lease {:x} with a TTL of {} s; renewing it every TTL/3.", session.lease_id(), session.ttl());
    for i in 1..=3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left = session.deadline().saturating_duration_since(tokio::time::Instant::now());
        println!(
            "  after {i} s: alive = {}, lease guaranteed for another {} ms, etcd says it exists = {}",
            session.is_alive(),
            left.as_millis(),
            client.lease_exists(session.lease_id()).await?
        );
    }
    session.close().await?;
    println!(
        "Closed the session: lease revoked, etcd says it exists = {}",
        client.lease_exists(session.lease_id()).await?
    );
    Ok(())
}
