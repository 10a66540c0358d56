//! Benchmarks from BENCH.md, Rust side: ours vs the raw `etcd-client` crate, side by
//! side against one freshly started single-member etcd, in one run.
//!
//! `cargo run --release -p etcd-recipes-examples --bin bench [-- K1 K2 ...]`
//! Prints one JSON line per workload and side: side, lang, workload, value, unit, ok
//! (and `ratio` = ours / raw on our line).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recipes::etcd_client;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions};
use futures::stream::{self, StreamExt};
use serde_json::json;

fn emit(side: &str, workload: &str, value: f64, unit: &str, ok: bool, ratio: Option<f64>) {
    let mut line = json!({"side": side, "lang": "rust", "workload": workload, "value": (value * 100.0).round() / 100.0, "unit": unit, "ok": ok});
    if let Some(r) = ratio {
        line["ratio"] = json!((r * 1000.0).round() / 1000.0);
    }
    println!("{line}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

const N: usize = 20_000;
const INFLIGHT: usize = 64;

async fn k1_ours(c: &Client) -> f64 {
    let value = Arc::new(vec![b'x'; 256]);
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let (c, v) = (c.clone(), value.clone());
            async move {
                c.put(&format!("bench/k/{i}"), v.as_slice()).await.expect("put");
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k1_raw(c: &etcd_client::Client) -> f64 {
    let value = Arc::new(vec![b'x'; 256]);
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let (mut c, v) = (c.kv_client(), value.clone());
            async move {
                c.put(format!("bench/raw/{i}"), v.as_slice(), None).await.expect("put");
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k2_ours(c: &Client) -> f64 {
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let c = c.clone();
            async move {
                assert!(c.get(&format!("bench/k/{i}")).await.expect("get").is_some());
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k2_raw(c: &etcd_client::Client) -> f64 {
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let mut c = c.kv_client();
            async move {
                assert_eq!(c.get(format!("bench/raw/{i}"), None).await.expect("get").kvs().len(), 1);
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k3_ours(c: &Client) -> f64 {
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        c.put(&format!("bench/seq/{i}"), "v").await.expect("put");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

async fn k3_raw(c: &etcd_client::Client) -> f64 {
    let mut kv = c.kv_client();
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        kv.put(format!("bench/rawseq/{i}"), "v", None).await.expect("put");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: Vec<String> = std::env::args().skip(1).map(|s| s.to_uppercase()).collect();
    let run = |w: &str| wanted.is_empty() || wanted.iter().any(|x| x == w);
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(1)).await??;
    let ours = Client::connect(ClientOptions::new(etcd.endpoints())).await?;
    let raw = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    // Warm both connections.
    for i in 0..200 {
        ours.put(&format!("bench/warm/{i}"), "v").await?;
        raw.kv_client().put(format!("bench/warm/{i}"), "v", None).await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    if run("K1") {
        // Alternate the order so that neither side always gets the cooler store.
        let r1 = k1_raw(&raw).await;
        let o1 = k1_ours(&ours).await;
        let o2 = k1_ours(&ours).await;
        let r2 = k1_raw(&raw).await;
        let (o, r) = ((o1 + o2) / 2.0, (r1 + r2) / 2.0);
        emit("raw-etcd-client", "K1", r, "ops/s", true, None);
        emit("ours", "K1", o, "ops/s", true, Some(o / r));
    }
    if run("K2") {
        if !run("K1") {
            k1_ours(&ours).await;
            k1_raw(&raw).await;
        }
        let r1 = k2_raw(&raw).await;
        let o1 = k2_ours(&ours).await;
        let o2 = k2_ours(&ours).await;
        let r2 = k2_raw(&raw).await;
        let (o, r) = ((o1 + o2) / 2.0, (r1 + r2) / 2.0);
        emit("raw-etcd-client", "K2", r, "ops/s", true, None);
        emit("ours", "K2", o, "ops/s", true, Some(o / r));
    }
    if run("K3") {
        let r = k3_raw(&raw).await;
        let o = k3_ours(&ours).await;
        emit("raw-etcd-client", "K3", r, "us", true, None);
        emit("ours", "K3", o, "us", true, Some(o / r));
    }
    drop(etcd);
    Ok(())
}
