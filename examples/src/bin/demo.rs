//! The etcd-recipes demo: every recipe, printing in plain words what happens.
//!
//! `cargo run -p etcd-recipes-examples --bin demo` (uses `ETCD_ENDPOINTS`, or starts a local etcd).

use etcd_recipes_examples::{connect_or_start, demo, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_none() {
        // The leader part revokes a lease on purpose and says so; the library's warnings
        // about that loss would only repeat it. Any other warning still shows.
        std::env::set_var("RUST_LOG", "warn,etcd_recipes::election=error,etcd_recipes::leader=error");
    }
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    println!("Connected to etcd at {}", client.options().endpoints().join(","));
    demo::session::run(&client).await?;
    demo::lock::run(&client).await?;
    demo::election::run(&client).await?;
    demo::registry::run(&client).await?;
    demo::config::run(&client).await?;
    demo::semaphore::run(&client).await?;
    demo::rwlock::run(&client).await?;
    demo::leader::run(&client).await?;
    demo::barrier::run(&client).await?;
    demo::queue::run(&client).await?;
    demo::workqueue::run(&client).await?;
    demo::counter::run(&client).await?;
    println!("\nDemo finished.");
    Ok(())
}
