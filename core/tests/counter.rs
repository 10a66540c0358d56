//! The atomic counter against a real etcd: exact totals under contention, CAS, decoding.

mod common;
use common::{client, init_tracing};

use std::time::Instant;

use etcd_recipes::counter::Counter;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, ErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_times_one_hundred_adds_is_exactly_800() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let eps = etcd.endpoints();
        tasks.push(tokio::spawn(async move {
            // Each task: its own connection.
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let counter = Counter::new(&c, "stats/total").unwrap();
            let mut last = 0;
            for _ in 0..100 {
                let v = counter.add(1).await.unwrap();
                assert!(v > last, "add returned {v} after {last}: not the new value");
                last = v;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("800 contended adds took {:?}", started.elapsed());
    let c = client(&etcd).await;
    let counter = Counter::new(&c, "stats/total").unwrap();
    assert_eq!(counter.get().await.unwrap(), 800);
    assert_eq!(c.get("stats/total").await.unwrap().as_deref(), Some(&b"800"[..]), "stored as decimal text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_compare_and_set_and_bad_values() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let n = Counter::new(&c, "n").unwrap();
    assert_eq!(n.get().await.unwrap(), 0, "a missing key reads as 0");
    assert!(!n.compare_and_set(1, 5).await.unwrap());
    assert!(n.compare_and_set(0, 5).await.unwrap());
    assert_eq!(n.add(-7).await.unwrap(), -2);
    n.set(41).await.unwrap();
    assert_eq!(n.add(1).await.unwrap(), 42);
    // Written by hand with padding: still a number.
    c.put("n", " 7\n").await.unwrap();
    assert!(n.compare_and_set(7, 8).await.unwrap());
    assert_eq!(n.get().await.unwrap(), 8);

    c.put("n", "seven").await.unwrap();
    for e in [n.get().await.unwrap_err(), n.add(1).await.unwrap_err(), n.compare_and_set(0, 1).await.map(|_| ()).unwrap_err()] {
        assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
        assert!(e.to_string().contains("\"n\""), "the error names the key: {e}");
    }
    assert_eq!(c.get("n").await.unwrap().as_deref(), Some(&b"seven"[..]), "a bad value is left as it is");

    n.set(i64::MAX).await.unwrap();
    assert_eq!(n.add(1).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(n.get().await.unwrap(), i64::MAX);
    for bad in ["", "a\0b"] {
        assert_eq!(Counter::new(&c, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
