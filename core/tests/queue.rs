//! Queue and PriorityQueue against a real etcd: order, concurrent consumers, waiting,
//! timeouts, compaction, a member restart, close, and etcd's Go contrib/recipes.

mod common;
use common::{client, init_tracing};

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_recipes::queue::{PriorityQueue, Queue};
use etcd_recipes::testing::{go_program, EtcdCluster};
use etcd_recipes::{Client, ClientOptions, ErrorKind};

/// How many keys exist under `prefix` (raw, not namespaced).
async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

/// A window for a waiter to get into its wait (never used to assert on timing).
async fn window() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn text(item: &etcd_recipes::queue::QueueItem) -> String {
    item.value_string().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_length_and_try_dequeue() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = Queue::new(&c, "jobs").unwrap();
    assert_eq!(q.try_dequeue().await.unwrap(), None);
    for i in 0..20 {
        let key = q.enqueue(format!("job-{i}")).await.unwrap();
        assert!(key.starts_with("jobs/"), "{key}");
        assert!(key["jobs/".len()..].parse::<i64>().is_ok(), "not <prefix>/<unix nanos>: {key}");
    }
    // Another queue whose name extends ours is not ours.
    Queue::new(&c, "jobs2").unwrap().enqueue("other").await.unwrap();
    assert_eq!(q.length().await.unwrap(), 20);
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(text(&q.dequeue().await.unwrap()));
    }
    while let Some(item) = q.try_dequeue().await.unwrap() {
        got.push(text(&item));
    }
    let want: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(q.length().await.unwrap(), 0);
    assert_eq!(count(&c, "jobs2/").await, 1);
    let item = Queue::new(&c, "jobs2").unwrap().try_dequeue().await.unwrap().unwrap();
    assert_eq!(item.value, b"other");
    assert!(item.revision > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_order_then_fifo_within_a_priority() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = PriorityQueue::new(&c, "work").unwrap();
    let items = [(5u16, "e1"), (1, "a1"), (65535, "z1"), (5, "e2"), (0, "top"), (1, "a2"), (5, "e3"), (1, "a3")];
    for (p, v) in items {
        let key = q.enqueue(v, p).await.unwrap();
        assert!(key.starts_with(&format!("work/{p:05}/")), "{key}");
        assert_eq!(key.rsplit('/').next().unwrap().len(), 16, "{key}");
    }
    // Go's bookkeeping key, one per priority.
    assert_eq!(count(&c, "__work/").await, 4);
    assert_eq!(q.length().await.unwrap(), 8);
    let mut got = Vec::new();
    while let Some(item) = q.try_dequeue().await.unwrap() {
        got.push(text(&item));
    }
    assert_eq!(got, ["top", "a1", "a2", "a3", "e1", "e2", "e3", "z1"]);
}

/// Each consumer on its own connection; they block in `dequeue` and end with CLOSED when
/// their client is closed after every item was taken.
async fn consume_all(etcd: &EtcdCluster, consumers: usize, total: usize, priority: bool, produce: impl std::future::Future<Output = ()>) {
    let got: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let all_in = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for w in 0..consumers {
        let c = Client::connect(ClientOptions::new(etcd.endpoints())).await.unwrap();
        clients.push(c.clone());
        let (got, all_in) = (got.clone(), all_in.clone());
        tasks.push(tokio::spawn(async move {
            let (q, pq) = (Queue::new(&c, "shared").unwrap(), PriorityQueue::new(&c, "shared-pq").unwrap());
            loop {
                let r = if priority { pq.dequeue().await } else { q.dequeue().await };
                match r {
                    Ok(item) => {
                        let mut g = got.lock().unwrap();
                        g.push((w, text(&item)));
                        if g.len() == total {
                            all_in.notify_one();
                        }
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Closed, "consumer {w}: {e}");
                        return;
                    }
                }
            }
        }));
    }
    produce.await;
    tokio::time::timeout(Duration::from_secs(60), all_in.notified()).await.expect("every item dequeued within 60 s");
    for c in &clients {
        c.close().await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t).await.expect("a consumer ended after close").unwrap();
    }
    let got = got.lock().unwrap();
    let values: Vec<&String> = got.iter().map(|(_, v)| v).collect();
    let set: BTreeSet<&String> = values.iter().copied().collect();
    assert_eq!(values.len(), total, "items handed out");
    assert_eq!(set.len(), total, "an item was handed to two consumers");
    let busy: BTreeSet<usize> = got.iter().map(|(w, _)| *w).collect();
    println!("{total} items over {consumers} consumers; {} consumers got some", busy.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_each_item_exactly_once() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let started = Instant::now();
    let produce = async {
        let q = Queue::new(&c, "shared").unwrap();
        let producers = (0..2).map(|p| {
            let q = q.clone();
            async move {
                for i in 0..100 {
                    q.enqueue(format!("p{p}-{i}")).await.unwrap();
                }
            }
        });
        futures::future::join_all(producers).await;
    };
    consume_all(&etcd, 6, 200, false, produce).await;
    println!("200 items through 6 consumers in {:?}", started.elapsed());
    assert_eq!(count(&c, "shared/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_priority_queue_each_item_exactly_once() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let produce = async {
        let q = PriorityQueue::new(&c, "shared-pq").unwrap();
        let producers = (0..2u16).map(|p| {
            let q = q.clone();
            async move {
                for i in 0..50u16 {
                    q.enqueue(format!("p{p}-{i}"), i % 3).await.unwrap();
                }
            }
        });
        futures::future::join_all(producers).await;
    };
    consume_all(&etcd, 4, 100, true, produce).await;
    assert_eq!(count(&c, "shared-pq/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_dequeue_gets_the_next_item_and_a_timeout_takes_nothing() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = Queue::new(&c, "inbox").unwrap();
    // A timed-out dequeue: LOCK_TIMEOUT, and it writes nothing.
    let before = c.revision().await.unwrap();
    let e = q.dequeue_within(Some(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(c.revision().await.unwrap(), before, "a timed-out dequeue wrote something");
    let e = q.clone().with_timeout(Some(Duration::from_millis(100))).dequeue().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");

    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.dequeue().await }
    });
    window().await;
    assert!(!waiter.is_finished(), "dequeue returned from an empty queue");
    q.enqueue("hello").await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap().unwrap();
    assert_eq!(text(&item), "hello");
    assert_eq!(q.length().await.unwrap(), 0);

    // Priority queue: same.
    let pq = PriorityQueue::new(&c, "pinbox").unwrap();
    let waiter = tokio::spawn({
        let pq = pq.clone();
        async move { pq.dequeue_within(Some(Duration::from_secs(10))).await }
    });
    window().await;
    pq.enqueue("urgent", 0).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap().unwrap();
    assert_eq!(text(&item), "urgent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_dequeue_survives_compaction_and_a_member_restart() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = Queue::new(&c, "survivor").unwrap();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.dequeue().await }
    });
    window().await;
    for i in 0..20 {
        c.put(&format!("noise/{i}"), "x").await.unwrap();
    }
    etcd.compact().await.unwrap();
    q.enqueue("after compaction").await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap().unwrap();
    assert_eq!(text(&item), "after compaction");

    // The member restarts under a waiting dequeue: its watch breaks, it re-reads.
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.dequeue().await }
    });
    window().await;
    etcd.restart(0).unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    let producer = client(&etcd).await;
    Queue::new(&producer, "survivor").unwrap().enqueue("after restart").await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("woken").unwrap().unwrap();
    assert_eq!(text(&item), "after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_a_waiting_dequeue_with_closed() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let (q, pq) = (Queue::new(&c, "q").unwrap(), PriorityQueue::new(&c, "pq").unwrap());
    let w1 = tokio::spawn({
        let q = q.clone();
        async move { q.dequeue().await }
    });
    let w2 = tokio::spawn({
        let pq = pq.clone();
        async move { pq.dequeue().await }
    });
    window().await;
    let t = Instant::now();
    c.close().await;
    for w in [w1, w2] {
        let e = tokio::time::timeout(Duration::from_secs(5), w).await.expect("ended").unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(q.enqueue("x").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(pq.try_dequeue().await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_and_a_namespace_applies() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    for bad in ["", "a/", "a\0b"] {
        assert_eq!(Queue::new(&c, bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert_eq!(PriorityQueue::new(&c, bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    let ns = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("tenant/")).await.unwrap();
    PriorityQueue::new(&ns, "pq").unwrap().enqueue("v", 7).await.unwrap();
    Queue::new(&ns, "q").unwrap().enqueue("v").await.unwrap();
    assert_eq!(count(&c, "tenant/pq/00007/").await, 1);
    assert_eq!(count(&c, "tenant/__pq/00007").await, 1);
    assert_eq!(count(&c, "tenant/q/").await, 1);
}

// ---------------------------------------------------------------------------------------
// etcd's Go contrib/recipes

fn go(etcd: &EtcdCluster, args: &[&str]) -> Vec<String> {
    let bin = go_program("queues").expect("build tests/go/queues");
    let out = Command::new(bin).arg(etcd.endpoints().join(",")).args(args).output().expect("run the Go program");
    assert!(out.status.success(), "Go {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_queue_interop_both_ways() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = Queue::new(&c, "interop").unwrap();
    let values: Vec<String> = (0..10).map(|i| format!("go-{i}")).collect();
    let mut args = vec!["queue-enqueue", "interop"];
    args.extend(values.iter().map(String::as_str));
    go(&etcd, &args);
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(text(&q.dequeue_within(Some(Duration::from_secs(5))).await.unwrap()));
    }
    assert_eq!(got, values, "Go enqueued, we dequeued");

    let ours: Vec<String> = (0..10).map(|i| format!("rust-{i}")).collect();
    for v in &ours {
        q.enqueue(v.as_str()).await.unwrap();
    }
    assert_eq!(go(&etcd, &["queue-dequeue", "interop", "10"]), ours, "we enqueued, Go dequeued");
    assert_eq!(q.length().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_priority_queue_interop_both_ways() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = PriorityQueue::new(&c, "pinterop").unwrap();
    go(&etcd, &["pq-enqueue", "pinterop", "5:e1", "1:a1", "5:e2", "0:top", "1:a2", "300:z1"]);
    // Ours and Go's share the per-priority sequence: ours continue after Go's.
    q.enqueue("a3", 1).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = q.try_dequeue().await.unwrap() {
        got.push(text(&item));
    }
    assert_eq!(got, ["top", "a1", "a2", "a3", "e1", "e2", "z1"], "Go enqueued, we dequeued");

    for (v, p) in [("e1", 5), ("a1", 1), ("e2", 5), ("top", 0), ("a2", 1)] {
        q.enqueue(v, p).await.unwrap();
    }
    go(&etcd, &["pq-enqueue", "pinterop", "1:a3"]);
    assert_eq!(go(&etcd, &["pq-dequeue", "pinterop", "6"]), ["top", "a1", "a2", "a3", "e1", "e2"], "we enqueued, Go dequeued");
    assert_eq!(q.length().await.unwrap(), 0);
}
