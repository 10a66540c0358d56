use etcd_recipes::Client;

/// (filled in with the lock recipe)
pub async fn run(_client: &Client) -> etcd_recipes::Result<()> {
    Ok(())
}
