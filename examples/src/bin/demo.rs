//! The etcd-recipes demo: every recipe, printing in plain words what happens.
//!
//! `cargo run -p etcd-recipes-examples --bin demo` (uses `ETCD_ENDPOINTS`, or starts a local etcd).

use etcd_recipes_examples::{connect_or_start, demo, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    println!("Connected to etcd at {}", client.options().endpoints().join(","));
    demo::session::run(&client).await?;
    demo::lock::run(&client).await?;
    demo::election::run(&client).await?;
    demo::registry::run(&client).await?;
    demo::config::run(&client).await?;
    println!("\nDemo finished.");
    Ok(())
}
