//! Watch a config prefix and print every change, and every change of the client's
//! connection state, until Ctrl-C. Reads a typed value with a default.
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
    let snapshot = view.snapshot();
    println!("Loaded {} key(s) under {prefix:?} at revision {}:", snapshot.len(), snapshot.revision);
    for (k, v) in snapshot {
        println!("  {k} = {}", String::from_utf8_lossy(&v));
    }
    // A typed read: the default when absent, an error naming the key when it does not decode.
    match view.get_json_or(&format!("{prefix}timeout_ms"), 2500u64) {
        Ok(ms) => println!("timeout_ms = {ms}"),
        Err(e) => eprintln!("{e}"),
    }
    let mut changes = view.changes();
    let mut states = client.connection_states();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(state) = states.next() => println!("connection: {state}"),
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
