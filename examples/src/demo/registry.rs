use std::time::Duration;

use etcd_recipes::registry::{InstanceEvent, RegisterOptions, Registration, ServiceView};
use etcd_recipes::Client;

/// Two instances of a service register, a client discovers them, one stops and the client sees it leave.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Service registry and discovery ==");
    let a = Registration::register(
        client,
        RegisterOptions::new("demo-api", "api-1", "127.0.0.1:9001").metadata(serde_json::json!({"zone": "a"})).ttl(5),
    )
    .await?;
    let b = Registration::register(client, RegisterOptions::new("demo-api", "api-2", "127.0.0.1:9002").ttl(5)).await?;
    println!("Instances api-1 and api-2 of service demo-api registered, each under its own lease.");
    println!("  stored at {} as {}", a.key(), String::from_utf8_lossy(&client.get("demo-api/api-1").await?.unwrap_or_default()));

    let view = ServiceView::start(client, "demo-api").await?;
    let mut events = view.events();
    println!("A client discovers demo-api:");
    for i in view.instances() {
        println!("  {} at {} (metadata {})", i.id, i.addr, i.metadata);
    }
    for _ in 0..3 {
        if let Some(i) = view.pick_round_robin() {
            println!("  round robin picks {} at {}", i.id, i.addr);
        }
    }

    println!("api-2 stops (graceful close: key deleted, lease revoked).");
    b.close().await?;
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Ok((InstanceEvent::Down { id }, rev)))) => println!("  the client sees {id} leave (revision {rev})"),
        other => println!("  unexpected: {other:?}"),
    }
    println!(
        "  instances now: {:?}",
        view.instances().iter().map(|i| i.id.as_str()).collect::<Vec<_>>()
    );
    a.close().await?;
    view.close();
    Ok(())
}
