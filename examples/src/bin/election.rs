//! Leader election: `cargo run -p etcd-recipes-examples --bin election [NAME] [PROPOSAL]`.
//!
//! Run it in several terminals against the same etcd (`ETCD_ENDPOINTS=127.0.0.1:2379`):
//! one leads for 5 s and steps down, the next takes over. `etcdctl elect -l NAME` shows it.

use std::time::Duration;

use etcd_recipes::election::Election;
use etcd_recipes::Session;
use etcd_recipes_examples::{connect_or_start, init_logging};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "example-election".to_string());
    let proposal = args.next().unwrap_or_else(|| format!("pid-{}", std::process::id()));
    let (client, _local_etcd) = connect_or_start().await?;
    let session = Session::new(&client, 5).await?;
    let election = Election::new(&session, &name)?;
    match election.leader().await? {
        Some(l) => println!("Current leader: {:?} ({})", String::from_utf8_lossy(&l.value), l.key),
        None => println!("No leader yet."),
    }
    println!("Campaigning as {proposal:?}...");
    let leadership = election.campaign(proposal.clone()).await?;
    println!("Leader now ({}, fencing token {}). Leading for 5 s.", leadership.key(), leadership.revision());
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            leadership.resign().await?;
            println!("Stepped down.");
        }
        Some(reason) = leadership.lost() => println!("Lost leadership: {reason}"),
    }
    session.close().await?;
    Ok(())
}
