//! Register one instance of a service and keep it registered until Ctrl-C.
//!
//! `cargo run -p etcd-recipes-examples --bin registry -- [service] [id] [addr]`
//! (uses `ETCD_ENDPOINTS`, or starts a local etcd). Watch it with the `discovery` example.

use etcd_recipes::registry::{RegisterOptions, Registration};
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let mut args = std::env::args().skip(1);
    let service = args.next().unwrap_or_else(|| "example-api".into());
    let id = args.next().unwrap_or_else(|| format!("instance-{}", std::process::id()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let (client, _local_etcd) = connect_or_start().await?;
    let reg = Registration::register(
        &client,
        RegisterOptions::new(&service, &id, &addr).metadata(serde_json::json!({"pid": std::process::id()})).ttl(10),
    )
    .await?;
    println!("Registered {} ({addr}) under lease {:x}. Ctrl-C to deregister.", reg.key(), reg.lease_id());
    let mut state = reg.watch_state();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = state.changed() => {
                if changed.is_err() { break; }
                println!("Registration state: {:?} (healed {} times)", *state.borrow(), reg.reregistrations());
            }
        }
    }
    reg.close().await?;
    println!("Deregistered.");
    Ok(())
}
