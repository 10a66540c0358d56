use std::time::Duration;

use etcd_recipes::config::{ConfigOptions, ConfigView};
use etcd_recipes::Client;

/// A running service reads its config from a watched view; a config value changes and
/// the service prints the new value.
pub async fn run(client: &Client) -> etcd_recipes::Result<()> {
    println!("\n== Watched configuration ==");
    client.put("demo-config/greeting", "hello").await?;
    client.put("demo-config/limits", r#"{"max_connections": 100}"#).await?;
    let view = ConfigView::prefix(client, "demo-config/", ConfigOptions::default()).await?;
    println!(
        "The service loaded its config: greeting = {:?}, limits = {}",
        view.get_string("demo-config/greeting")?.unwrap_or_default(),
        view.get_json_value("demo-config/limits")?.unwrap_or_default()
    );

    // The "service": prints every change it is told about.
    let mut changes = view.changes();
    let service = tokio::spawn(async move {
        let mut printed = 0;
        while let Some(Ok(change)) = changes.next().await {
            println!(
                "  service: {} changed from {:?} to {:?} (revision {})",
                change.key,
                change.old.as_deref().map(String::from_utf8_lossy),
                change.new.as_deref().map(String::from_utf8_lossy),
                change.revision
            );
            printed += 1;
            if printed == 2 {
                break;
            }
        }
    });

    println!("An operator changes greeting to \"bonjour\" and max_connections to 250.");
    client.put("demo-config/greeting", "bonjour").await?;
    client.put("demo-config/limits", r#"{"max_connections": 250}"#).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), service).await;
    println!(
        "  local reads now: greeting = {:?}, limits = {}",
        view.get_string("demo-config/greeting")?.unwrap_or_default(),
        view.get_json_value("demo-config/limits")?.unwrap_or_default()
    );
    view.close();
    Ok(())
}
