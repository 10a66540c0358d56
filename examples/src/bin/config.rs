//! Watch a config prefix and print every change until Ctrl-C.
//!
//! `cargo run -p etcd-recipes-examples --bin config -- [prefix]`
//! (uses `ETCD_ENDPOINTS`, or starts a local etcd). Try `etcdctl put example-config/x 1`.

use etcd_recipes::config::{ConfigOptions, ConfigView};
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let prefix = std::env::args().nth(1).unwrap_or_else(|| "example-config/".into());
    let (client, _local_etcd) = connect_or_start().await?;
    let view = ConfigView::prefix(&client, &prefix, ConfigOptions::default()).await?;
    println!("Loaded {} key(s) under {prefix:?} at revision {}:", view.keys().len(), view.revision());
    for (k, v) in view.snapshot() {
        println!("  {k} = {}", String::from_utf8_lossy(&v));
    }
    let mut changes = view.changes();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            c = changes.next() => match c {
                Some(Ok(c)) => println!(
                    "[{}] {}: {:?} -> {:?}",
                    c.revision,
                    c.key,
                    c.old.as_deref().map(String::from_utf8_lossy),
                    c.new.as_deref().map(String::from_utf8_lossy)
                ),
                Some(Err(e)) => eprintln!("error: {e}"),
                None => break,
            }
        }
    }
    view.close();
    Ok(())
}
