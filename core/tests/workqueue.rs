//! The reliable work queue against a real etcd: producers and consumers, claims lost with
//! a consumer's lease, fencing, nack, dead letters, delayed items, compaction, a member
//! restart and Client::close.

mod common;
use common::{client, init_tracing};

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::workqueue::{WorkItem, WorkQueue};
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session, SessionSource};

/// How many keys exist under `prefix` (raw, not namespaced).
async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

/// A window for a waiter to start waiting (never asserted on).
async fn window() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn text(item: &WorkItem) -> String {
    item.value_string().unwrap()
}

async fn within<T>(what: &str, t: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(t, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not within {t:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_consumers_deliver_every_item_exactly_once() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    const PRODUCERS: usize = 3;
    const PER: usize = 100;
    const CONSUMERS: usize = 4;
    let started = Instant::now();
    let mut consumers = Vec::new();
    for w in 0..CONSUMERS {
        let eps = etcd.endpoints();
        consumers.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let s = Session::new(&c, 10).await.unwrap();
            let q = WorkQueue::new(&s, "jobs").unwrap();
            let mut got = Vec::new();
            loop {
                let item = match q.receive_within(Some(Duration::from_secs(3))).await {
                    Ok(i) => i,
                    Err(e) if e.kind() == ErrorKind::LockTimeout => break,
                    Err(e) => panic!("consumer {w}: {e}"),
                };
                assert_eq!(item.deliveries(), 1, "consumer {w}: item {} delivered again without a fault", item.id());
                got.push(text(&item));
                item.ack().await.unwrap();
            }
            s.close().await.unwrap();
            got
        }));
    }
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let eps = etcd.endpoints();
        producers.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "jobs").unwrap();
            for i in 0..PER {
                q.put(format!("{p}-{i}"), None).await.unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    println!("{} items through {CONSUMERS} consumers in {:?}", all.len(), started.elapsed());
    let want: BTreeSet<String> = (0..PRODUCERS).flat_map(|p| (0..PER).map(move |i| format!("{p}-{i}"))).collect();
    let got: BTreeSet<String> = all.iter().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    assert!(missing.is_empty(), "{} items never delivered, e.g. {missing:?}", want.len() - got.len());
    assert_eq!(all.len(), want.len(), "duplicates: {} deliveries for {} items", all.len(), want.len());
    let c = client(&etcd).await;
    assert_eq!(count(&c, "jobs/").await, 0, "items or claims left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_loses_its_lease_mid_item_is_fenced_and_the_item_is_redelivered() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let (a, b, admin) = (client(&etcd).await, client(&etcd).await, client(&etcd).await);
    let qa = WorkQueue::new(SessionSource::per_use(&a, 10).unwrap(), "work").unwrap();
    let qb = WorkQueue::new(SessionSource::per_use(&b, 10).unwrap(), "work").unwrap();
    let id = qa.put("resize img-1", None).await.unwrap();
    let first = qa.receive().await.unwrap();
    assert_eq!((first.id(), first.deliveries()), (id.as_str(), 1));
    // While A holds it, B sees nothing.
    assert_eq!(qb.try_receive().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    // B waits; A's lease is revoked (A died, or was partitioned past its TTL).
    let waiting = tokio::spawn(async move { qb.receive().await });
    window().await;
    admin.revoke_lease(first.lease_id()).await.unwrap();
    let second = within("redelivery", Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!((second.id(), second.deliveries(), text(&second).as_str()), (id.as_str(), 2, "resize img-1"));
    assert!(second.fencing_token() > first.fencing_token());
    // A learns it lost the item, and its ack is refused: the item stays for B.
    assert!(within("A's loss signal", Duration::from_secs(10), first.lost()).await.is_some());
    assert_eq!(first.ack().await.unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(count(&admin, &format!("work/items/{id}")).await, 1, "a fenced ack deleted the item");
    assert!(second.is_held());
    second.ack().await.unwrap();
    assert_eq!(second.lost().await, None, "an acked item is not lost");
    assert_eq!(count(&admin, "work/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_and_max_deliveries_dead_letters_then_requeue() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let q = WorkQueue::new(&s, "mail").unwrap().with_max_deliveries(Some(2)).unwrap();
    let id = q.put("to: ops", None).await.unwrap();
    assert_eq!(q.length().await.unwrap(), 1);
    let one = q.receive().await.unwrap();
    assert_eq!(q.length().await.unwrap(), 0, "a claimed item is not visible");
    one.nack(None).await.unwrap();
    assert_eq!(one.lost().await, None);
    let two = q.receive().await.unwrap();
    assert_eq!((two.id(), two.deliveries()), (id.as_str(), 2));
    // The last allowed delivery fails: the item moves to the dead letters.
    two.nack(None).await.unwrap();
    assert_eq!(q.try_receive().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    let dead = q.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].value.as_slice(), dead[0].deliveries), (id.as_str(), &b"to: ops"[..], 2));
    assert_eq!(count(&c, "mail/claims/").await, 0);
    // Requeued: delivered again, with a fresh count.
    assert!(q.requeue_dead(&id).await.unwrap());
    assert!(!q.requeue_dead(&id).await.unwrap(), "requeued twice");
    assert!(q.dead_letters().await.unwrap().is_empty());
    let three = q.receive().await.unwrap();
    assert_eq!((three.id(), three.deliveries()), (id.as_str(), 1));
    three.ack().await.unwrap();

    // A claim lost with its lease counts as a failed delivery too (max 1 here).
    let q1 = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "mail1").unwrap().with_max_deliveries(Some(1)).unwrap();
    let id1 = q1.put("x", None).await.unwrap();
    let held = q1.receive().await.unwrap();
    c.revoke_lease(held.lease_id()).await.unwrap();
    assert_eq!(q1.try_receive().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    let dead = q1.dead_letters().await.unwrap();
    assert_eq!(dead.iter().map(|d| (d.id.as_str(), d.deliveries)).collect::<Vec<_>>(), vec![(id1.as_str(), 1)]);
    assert_eq!(q1.requeue_all_dead().await.unwrap(), 1);
    let again = q1.receive().await.unwrap();
    assert_eq!((again.id(), again.deliveries()), (id1.as_str(), 1));
    assert_eq!(held.ack().await.unwrap_err().kind(), ErrorKind::Fenced);
    again.ack().await.unwrap();
    assert_eq!(count(&c, "mail").await, 0);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_items_are_not_delivered_before_their_time() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "later").unwrap();
    let delay = Duration::from_millis(1500);
    let put_at = Instant::now();
    let late = q.put("late", Some(delay)).await.unwrap();
    let now = q.put("now", None).await.unwrap();
    assert_eq!(q.length().await.unwrap(), 1, "only the undelayed item is visible");
    let first = q.receive().await.unwrap();
    assert_eq!(first.id(), now);
    first.ack().await.unwrap();
    // A waiting receiver wakes when the delayed item becomes due (no new event comes).
    let got = within("the delayed item", Duration::from_secs(10), q.receive()).await.unwrap();
    let waited = put_at.elapsed();
    assert_eq!(got.id(), late);
    assert!(waited >= delay - Duration::from_millis(20), "delivered after {waited:?}, before its delay of {delay:?}");
    // nack with a delay: not visible again before it.
    let nacked_at = Instant::now();
    got.nack(Some(Duration::from_millis(800))).await.unwrap();
    assert_eq!(q.try_receive().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    let again = within("the nacked item", Duration::from_secs(10), q.receive()).await.unwrap();
    assert!(nacked_at.elapsed() >= Duration::from_millis(780), "redelivered after {:?}", nacked_at.elapsed());
    assert_eq!((again.id(), again.deliveries()), (late.as_str(), 2));
    again.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_cancellation_and_close_leave_no_claim() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "idle").unwrap();
    let t0 = Instant::now();
    let e = q.receive_within(Some(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(q.try_receive().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    // A waiting receive that is cancelled takes nothing; the item put later is there.
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.receive().await }
    });
    window().await;
    waiter.abort();
    let _ = waiter.await;
    q.put("kept", None).await.unwrap();
    assert_eq!(q.length().await.unwrap(), 1);
    assert_eq!(count(&admin, "idle/claims/").await, 0);
    // Dropping a claimed item gives it back (a failed delivery).
    let s = Session::new(&c, 10).await.unwrap();
    let qs = WorkQueue::new(&s, "idle").unwrap();
    let item = qs.receive().await.unwrap();
    drop(item);
    let again = within("redelivery after drop", Duration::from_secs(10), qs.receive()).await.unwrap();
    assert_eq!(again.deliveries(), 2);
    again.ack().await.unwrap();
    assert!(again.ack().await.is_err(), "acked twice");
    // Client::close ends a waiting receive with CLOSED, and takes its claims with it.
    let held = qs.put("held", None).await.unwrap();
    let holding = qs.receive().await.unwrap();
    assert_eq!(holding.id(), held);
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.receive().await }
    });
    window().await;
    within("close", Duration::from_secs(6), c.close()).await;
    let e = within("the waiter to end", Duration::from_secs(5), waiter).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert_eq!(holding.lost().await, None, "closing the client is a normal end");
    assert_eq!(count(&admin, "idle/claims/").await, 0, "claims left behind by a closed client");
    assert_eq!(count(&admin, "idle/items/").await, 1, "the unacked item is still queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let src = SessionSource::per_use(&c, 10).unwrap();
    for bad in ["", "q/", "a\0b"] {
        assert_eq!(WorkQueue::new(&src, bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad:?}");
    }
    let q = WorkQueue::new(&src, "q").unwrap();
    assert_eq!(q.clone().with_max_deliveries(Some(0)).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(q.requeue_dead("a/b").await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(q.requeue_dead("").await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    // A value put by hand (no header) is an item.
    c.put("q/items/manual", "by hand").await.unwrap();
    let item = q.receive().await.unwrap();
    assert_eq!((item.id(), text(&item).as_str(), item.deliveries()), ("manual", "by hand", 1));
    assert_eq!(item.value_json::<serde_json::Value>().unwrap_err().kind(), ErrorKind::Decode);
    item.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_survives_compaction() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "compacted").unwrap();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.receive().await }
    });
    window().await;
    for i in 0..20 {
        c.put(&format!("noise/{i}"), "x").await.unwrap();
    }
    etcd.compact().await.unwrap();
    q.put("after compaction", None).await.unwrap();
    let item = within("woken", Duration::from_secs(10), waiter).await.unwrap().unwrap();
    assert_eq!(text(&item), "after compaction");
    item.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_consumers_survive_a_member_restart_on_three_members() {
    init_tracing();
    let etcd = EtcdCluster::start(3).unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let c = Client::connect(ClientOptions::new(etcd.endpoints())).await.unwrap();
        let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "ha").unwrap();
        waiters.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                let item = q.receive_within(Some(Duration::from_secs(30))).await.unwrap();
                got.push(text(&item));
                item.ack().await.unwrap();
            }
            got
        }));
    }
    window().await;
    let mut etcd = etcd;
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart(0).unwrap();
        etcd.wait_healthy(Duration::from_secs(30)).unwrap();
        etcd
    })
    .await
    .unwrap();
    let producer = Client::connect(ClientOptions::new(etcd.endpoints())).await.unwrap();
    let q = WorkQueue::new(SessionSource::per_use(&producer, 10).unwrap(), "ha").unwrap();
    for i in 0..10 {
        q.put(format!("{i}"), None).await.unwrap();
    }
    let mut got = BTreeMap::new();
    for w in waiters {
        for v in within("consumers", Duration::from_secs(40), w).await.unwrap() {
            *got.entry(v).or_insert(0) += 1;
        }
    }
    assert_eq!(got.len(), 10, "delivered: {:?}", got.keys().collect::<Vec<_>>());
    assert_eq!(count(&producer, "ha/").await, 0);
}
