//! A tonic channel balanced over a service's instances, following discovery.
//!
//! etcd itself speaks gRPC, so the service here is a real one: the three members of an
//! etcd cluster this example starts, each registered as an instance of `etcd-members`
//! (in the etcd named by `ETCD_ENDPOINTS`, or a local one). Calls go through
//! `ServiceView::grpc_channel` to etcd's `Maintenance/Status`, whose answer names the
//! member that served it. Then one member drains and another leaves: the channel stops
//! sending them calls.
//!
//! `cargo run -p etcd-recipes-examples --bin grpc_balance`

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_recipes::registry::{Readiness, RegisterOptions, Registration, ServiceView};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes_examples::{connect_or_start, init_logging};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `etcdserverpb.StatusRequest` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

/// The part of `etcdserverpb.StatusResponse` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    version: String,
}

/// The part of `etcdserverpb.ResponseHeader` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
}

/// One `Maintenance/Status` call over `channel`: the id of the member that answered.
async fn status(channel: Channel) -> Result<u64, Box<dyn std::error::Error>> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
    let codec = tonic_prost::ProstCodec::<StatusRequest, StatusResponse>::default();
    let resp = grpc.unary(tonic::Request::new(StatusRequest {}), path, codec).await?;
    Ok(resp.into_inner().header.map(|h| h.member_id).unwrap_or(0))
}

/// How many of `n` calls each member answered, by instance id.
async fn spread(channel: &Channel, n: usize, names: &BTreeMap<u64, String>) -> Result<BTreeMap<String, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let id = status(channel.clone()).await?;
        *counts.entry(names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"))).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (client, _local_etcd) = connect_or_start().await?;
    let members = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??;

    // Register each member (its client address) as an instance; learn its member id.
    let mut regs: Vec<Registration> = Vec::new();
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    for (i, url) in members.endpoints().iter().enumerate() {
        let addr = url.trim_start_matches("http://").to_string();
        let id = format!("m{i}");
        let direct = Channel::from_shared(url.clone())?.connect().await?;
        names.insert(status(direct).await?, id.clone());
        regs.push(Registration::register(&client, RegisterOptions::new("etcd-members", &id, &addr)).await?);
    }
    println!("registered {} etcd members as instances of etcd-members", regs.len());

    let view = ServiceView::start(&client, "etcd-members").await?;
    let balanced = view.grpc_channel()?;
    let within = Duration::from_secs(20);
    tokio::time::timeout(within, balanced.wait_for(|e| e.len() == 3)).await??;
    println!("the channel balances over {:?}", balanced.endpoints().iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());

    // Calls spread over the members; keep calling until every one has answered (bounded).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut calls = 0;
    while seen.len() < 3 && calls < 600 {
        for (k, v) in spread(&balanced.channel(), 10, &names).await? {
            *seen.entry(k).or_default() += v;
        }
        calls += 10;
    }
    println!("{calls} calls answered by {} members: {seen:?}", seen.len());

    // m0 drains: still registered, but the channel takes it out.
    regs[0].set_readiness(Readiness::Draining).await?;
    tokio::time::timeout(within, balanced.wait_for(|e| e.len() == 2)).await??;
    let counts = spread(&balanced.channel(), 30, &names).await?;
    println!("m0 draining: 30 calls, {} to m0 ({counts:?})", counts.get("m0").copied().unwrap_or(0));
    assert!(!counts.contains_key("m0"), "a draining member was called");

    // m1 leaves: only m2 answers.
    regs.remove(1).close().await?;
    tokio::time::timeout(within, balanced.wait_for(|e| e.len() == 1)).await??;
    let counts = spread(&balanced.channel(), 10, &names).await?;
    println!("m1 left: 10 calls, all answered by {:?}", counts.keys().collect::<Vec<_>>());
    assert_eq!(counts.keys().map(String::as_str).collect::<Vec<_>>(), ["m2"]);

    // A picker over the same view, for clients that are not gRPC: m0 is skipped while draining.
    println!("view.pick() gives {}", view.pick().map(|i| i.id).unwrap_or_default());
    for r in regs {
        r.close().await?;
    }
    view.close();
    Ok(())
}
