//! The semaphore against a real etcd: capacity under contention (checked in etcd), FIFO,
//! timeouts, session loss while waiting and while holding, compaction, client close.

mod common;
use common::{client, etcd_gauge, init_tracing, WATCH_STREAMS};

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use etcd_recipes::lock::LockGuard;
use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session, SessionSource};

async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < until, "not true within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Add `delta` to the integer at `key`, only while `guard` holds its permit (the fence
/// is in the same transaction); returns the new value.
async fn fenced_add(c: &Client, guard: &LockGuard, key: &str, delta: i64) -> etcd_recipes::Result<i64> {
    let mut raw = c.etcd();
    loop {
        let got = raw.get(key, None).await?;
        let (n, modrev) = got
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).parse::<i64>().unwrap(), kv.mod_revision()))
            .unwrap_or((0, 0));
        let txn = Txn::new()
            .when(vec![guard.fence().compare(), Compare::mod_revision(key, CompareOp::Equal, modrev)])
            .and_then(vec![TxnOp::put(key, (n + delta).to_string(), None)]);
        if raw.txn(txn).await?.succeeded() {
            return Ok(n + delta);
        }
        // Either someone else changed the counter (retry) or our permit is gone.
        let mine = raw.get(guard.key(), None).await?;
        if mine.kvs().first().map(|kv| kv.create_revision()) != Some(guard.fencing_token()) {
            return Err(etcd_recipes::Error::Fenced("permit lost".into()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_permits_inside_checked_in_etcd() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let eps = etcd.endpoints();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "pool", 3).unwrap();
            let mut max = 0;
            for i in 0..12 {
                let g = sem.acquire().await.unwrap();
                let inside = fenced_add(&c, &g, "pool-inside", 1).await.unwrap();
                assert!(inside <= 3, "worker {w} cycle {i}: {inside} holders inside a 3-permit semaphore");
                max = max.max(inside);
                // A window for others to pile in.
                tokio::time::sleep(Duration::from_millis(5)).await;
                fenced_add(&c, &g, "pool-inside", -1).await.unwrap();
                g.release().await.unwrap();
            }
            max
        }));
    }
    let mut max = 0;
    for t in tasks {
        max = max.max(t.await.unwrap());
    }
    println!("96 permit cycles by 8 workers (3 permits) took {:?}", started.elapsed());
    let c = client(&etcd).await;
    assert_eq!(max, 3, "never reached 3 holders at once: contention too weak to prove anything");
    assert_eq!(c.get("pool-inside").await.unwrap().as_deref(), Some(&b"0"[..]));
    assert_eq!(count(&c, "pool/").await, 0, "permit keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_permits_in_arrival_order() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "fifo", 2).unwrap();
    let a = sem.acquire().await.unwrap();
    let b = sem.acquire().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 1..=4 {
        let (sem, tx) = (sem.clone(), tx.clone());
        waiters.push(tokio::spawn(async move {
            let g = sem.acquire().await.unwrap();
            tx.send(i).unwrap();
            g.release().await.unwrap();
        }));
        // Enter strictly one after the other: the next starts once this key exists.
        eventually(Duration::from_secs(10), "waiter key", || async { count(&c, "fifo/").await == 2 + i }).await;
    }
    assert!(rx.try_recv().is_err(), "a waiter got in while both permits were held");
    // One permit circulates: each waiter takes it in turn.
    a.release().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap());
    }
    assert_eq!(order, vec![1, 2, 3, 4], "not FIFO");
    for w in waiters {
        w.await.unwrap();
    }
    b.release().await.unwrap();
    assert_eq!(count(&c, "fifo/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_try_leave_no_key() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "busy", 1).unwrap();
    let held = sem.acquire().await.unwrap();
    let t = Instant::now();
    let e = sem.acquire_timeout(Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(count(&c, "busy/").await, 1, "the timed-out waiter left its key");
    let e = sem.try_acquire().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "busy/").await, 1, "try_acquire left its key");
    // A timeout set on the semaphore itself.
    let e = sem.clone().with_timeout(Some(Duration::from_millis(100))).acquire().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "busy/").await, 1);
    held.release().await.unwrap();
    let g = sem.try_acquire().await.unwrap();
    g.release().await.unwrap();
    assert_eq!(count(&c, "busy/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_while_waiting_fails_and_removes_the_key() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "lw", 1).unwrap();
    let held = sem.acquire().await.unwrap();
    let s = Session::new(&c, 10).await.unwrap();
    let waiter = s.semaphore("lw", 1).unwrap();
    let wait = tokio::spawn(async move { waiter.acquire().await });
    eventually(Duration::from_secs(10), "waiter key", || async { count(&c, "lw/").await == 2 }).await;
    admin.revoke_lease(s.lease_id()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SessionLost, "{e}");
    assert_eq!(count(&c, "lw/").await, 1, "the lost waiter's key is still there");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_while_holding_signals_fences_and_hands_over() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let s1 = Session::new(&c, 10).await.unwrap();
    let h1 = s1.semaphore("lh", 2).unwrap().acquire().await.unwrap();
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "lh", 2).unwrap();
    let h2 = sem.acquire().await.unwrap();
    assert!(h1.fencing_token() < h2.fencing_token());
    let next = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire().await }
    });
    eventually(Duration::from_secs(10), "waiter key", || async { count(&c, "lh/").await == 3 }).await;
    admin.revoke_lease(s1.lease_id()).await.unwrap();
    // The capacity goes to the next waiter...
    let g3 = tokio::time::timeout(Duration::from_secs(10), next).await.unwrap().unwrap().unwrap();
    // ...and the holder that lost its permit is told, with a reason.
    let reason = tokio::time::timeout(Duration::from_secs(10), h1.lost()).await.unwrap();
    assert!(reason.is_some(), "lost() said a normal end after a revoke");
    assert!(!h1.is_held());
    let e = h1.fence().put("lh-out", "stale").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert_eq!(c.get("lh-out").await.unwrap(), None);
    // The holders still hold, and their fenced writes pass.
    h2.fence().put("lh-out", "fresh").await.unwrap();
    g3.fence().put("lh-out", "fresh3").await.unwrap();
    assert_eq!(count(&c, "lh/").await, 2);
    h2.release().await.unwrap();
    assert_eq!(h2.lost().await, None, "a release is a normal end");
    g3.release().await.unwrap();
    assert_eq!(count(&c, "lh/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_compaction() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "cw", 1).unwrap();
    let held = sem.acquire().await.unwrap();
    let wait = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire().await }
    });
    eventually(Duration::from_secs(10), "waiter key", || async { count(&c, "cw/").await == 2 }).await;
    for i in 0..50 {
        c.put("cw-noise", i.to_string()).await.unwrap();
    }
    etcd.compact().await.unwrap();
    held.release().await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap();
    g.release().await.unwrap();
    assert_eq!(count(&c, "cw/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_ends_a_wait_and_leaves_nothing() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let other = client(&etcd).await;
    let held = Semaphore::new(SessionSource::per_use(&other, 10).unwrap(), "cc", 1).unwrap().acquire().await.unwrap();
    let c = client(&etcd).await;
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "cc", 1).unwrap();
    let wait = tokio::spawn(async move { sem.acquire().await });
    eventually(Duration::from_secs(10), "waiter key", || async { count(&other, "cc/").await == 2 }).await;
    c.close().await;
    let e = tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    eventually(Duration::from_secs(5), "waiter key removed", || async { count(&other, "cc/").await == 1 }).await;
    // A holder's client closing ends its permit normally.
    let c2 = client(&etcd).await;
    let s2 = Session::new(&c2, 10).await.unwrap();
    let sem2 = s2.semaphore("cc2", 1).unwrap();
    let g = sem2.acquire().await.unwrap();
    c2.close().await;
    assert_eq!(g.lost().await, None);
    assert_eq!(count(&other, "cc2/").await, 0);
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_permit_counts_and_bad_input_are_refused() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let three = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "mixed", 3).unwrap();
    let g = three.acquire().await.unwrap();
    assert_eq!(c.get(g.key()).await.unwrap().as_deref(), Some(&b"3"[..]));
    let two = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "mixed", 2).unwrap();
    let e = two.acquire().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(count(&c, "mixed/").await, 1, "the refused contender left its key");
    // A lock under the same name is not a permit.
    let lock = etcd_recipes::lock::Lock::new(SessionSource::per_use(&c, 10).unwrap(), "shared-name").unwrap();
    let lg = lock.acquire().await.unwrap();
    let e = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "shared-name", 2).unwrap().try_acquire().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    lg.release().await.unwrap();
    g.release().await.unwrap();
    for (name, permits) in [("", 1), ("a/", 1), ("ok", 0)] {
        let e = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), name, permits).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name:?} {permits}: {e}");
    }
    assert_eq!(count(&c, "mixed/").await + count(&c, "shared-name/").await, 0, "keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_client_share_one_watch_that_stays_open_between_waits() {
    // As for locks: a watch opened per wait can start behind etcd's store and wait for
    // its 100 ms catch-up loop. Two rounds of 4 waiters of one client behind a holder of
    // another: one watch stream in all, and every waiter gets in.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let holder_client = client(&etcd).await;
    let waiting_client = client(&etcd).await;
    let holder = Semaphore::new(SessionSource::per_use(&holder_client, 10).unwrap(), "shared-watch", 1).unwrap();
    let sem = Semaphore::new(SessionSource::per_use(&waiting_client, 10).unwrap(), "shared-watch", 1).unwrap();
    let streams_before = etcd_gauge(&etcd, WATCH_STREAMS).await;
    for round in 0..2 {
        let held = holder.acquire().await.unwrap();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let sem = sem.clone();
                tokio::spawn(async move { sem.acquire().await?.release().await })
            })
            .collect();
        eventually(Duration::from_secs(20), "4 waiters queued", || async { count(&waiting_client, "shared-watch/").await == 5 }).await;
        held.release().await.unwrap();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a waiter never got in"))
                .unwrap()
                .unwrap();
        }
    }
    let streams = etcd_gauge(&etcd, WATCH_STREAMS).await - streams_before;
    assert_eq!(streams, 1.0, "watch streams opened for 8 waits of one client");
    waiting_client.close().await;
    eventually(Duration::from_secs(20), "no watcher left after the client closed", || async {
        etcd_gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await == 0.0
    })
    .await;
}
