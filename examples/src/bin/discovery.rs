//! Follow the instances of a service and print every change until Ctrl-C.
//!
//! `cargo run -p etcd-recipes-examples --bin discovery -- [service]`
//! (uses `ETCD_ENDPOINTS`, or starts a local etcd).

use etcd_recipes::registry::{InstanceEvent, ServiceView};
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let service = std::env::args().nth(1).unwrap_or_else(|| "example-api".into());
    let (client, _local_etcd) = connect_or_start().await?;
    let view = ServiceView::start(&client, &service).await?;
    println!("{service} at revision {}: {} instance(s)", view.revision(), view.instances().len());
    for i in view.instances() {
        println!("  {} at {} {}", i.id, i.addr, i.metadata);
    }
    let mut events = view.events();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.next() => match ev {
                Some(Ok((InstanceEvent::Up(i), rev))) => println!("[{rev}] up: {} at {}", i.id, i.addr),
                Some(Ok((InstanceEvent::Updated(i), rev))) => println!("[{rev}] updated: {} at {} {}", i.id, i.addr, i.metadata),
                Some(Ok((InstanceEvent::Down { id }, rev))) => println!("[{rev}] down: {id}"),
                Some(Err(e)) => eprintln!("error: {e}"),
                None => break,
            }
        }
    }
    view.close();
    Ok(())
}
