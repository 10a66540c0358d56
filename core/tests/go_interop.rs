//! Interop with etcd's own Go code (`clientv3/concurrency` Mutex and Election), driven by
//! the Go program `tests/go/peer` (built offline by `testing::go_program`): our lock and
//! Go's exclude each other on one FIFO queue, and leaders and observers agree across
//! languages (and with `etcdctl elect -l`).
//!
//! Order is checked by revisions, not by timing: the Go side reports the revision at which
//! it knew it held (`header_rev`), which must not precede the deletion of our key.

mod common;
use common::{client, init_tracing, GoPeer};

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, WatchOptions};
use etcd_recipes::election::{self, Election, LeaderInfo};
use etcd_recipes::lock::Lock;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ErrorKind, Session};
use serde_json::Value;

const WITHIN: Duration = common::GO_WITHIN;

fn i(v: &Value, field: &str) -> i64 {
    v[field].as_i64().unwrap_or_else(|| panic!("no integer {field:?} in {v}"))
}

fn s(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no string {field:?} in {v}")).to_string()
}

async fn exists(c: &Client, key: &str) -> bool {
    c.etcd().get(key, Some(GetOptions::new().with_count_only())).await.unwrap().count() == 1
}

async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

/// Waits until `key` exists (a contender has queued).
async fn until_exists(c: &Client, key: &str) {
    let until = Instant::now() + WITHIN;
    while !exists(c, key).await {
        assert!(Instant::now() < until, "{key} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_count(c: &Client, prefix: &str, n: i64) {
    let until = Instant::now() + WITHIN;
    while count(c, prefix).await != n {
        assert!(Instant::now() < until, "{prefix}: never {n} keys (now {})", count(c, prefix).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watches `key` from now on; resolves to the revision that deletes it.
async fn deletion_of(c: &Client, key: &str) -> tokio::task::JoinHandle<i64> {
    let rev = c.etcd().get(key, None).await.unwrap().header().unwrap().revision();
    let mut stream = c.etcd().watch(key, Some(WatchOptions::new().with_start_revision(rev + 1))).await.unwrap();
    tokio::spawn(async move {
        loop {
            let resp = stream.message().await.unwrap().expect("watch ended");
            if let Some(e) = resp.events().iter().find(|e| e.event_type() == EventType::Delete) {
                return e.kv().unwrap().mod_revision();
            }
        }
    })
}

async fn next_leader(o: &mut election::LeaderObserver) -> Option<LeaderInfo> {
    tokio::time::timeout(WITHIN, o.next()).await.expect("observer silent").expect("observer ended").expect("observer error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mutex_excludes_our_lock() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let mut go = GoPeer::spawn("peer", &etcd, &["mutex", "m"]);
    go.expect("session").await;
    let held = go.expect("acquired").await;
    let go_key = s(&held, "key");
    assert!(go_key.starts_with("m/"), "{held}");
    assert_eq!(go_key, format!("m/{:x}", i(&held, "lease")), "Go's key layout");

    let session = Session::new(&c, 10).await.unwrap();
    let lock = Lock::new(&session, "m").unwrap();
    let err = lock.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    assert_eq!(count(&c, "m/").await, 1, "try_acquire left its key behind");

    // Our waiter queues behind Go, and gets the lock when Go unlocks: after the deletion.
    let gone = deletion_of(&c, &go_key).await;
    let l2 = lock.clone();
    let waiting = tokio::spawn(async move { l2.acquire().await });
    until_count(&c, "m/", 2).await;
    assert!(exists(&c, &go_key).await && !waiting.is_finished(), "we hold while Go does");
    go.send("release");
    go.expect("released").await;
    let g = tokio::time::timeout(WITHIN, waiting).await.expect("not acquired after Go unlocked").unwrap().unwrap();
    let deleted = gone.await.unwrap();
    assert!(g.fencing_token() > i(&held, "rev"), "token {} after Go's {}", g.fencing_token(), i(&held, "rev"));
    assert!(deleted > i(&held, "rev"));
    assert!(g.is_held());
    assert_eq!(go.exit_code(), 0);
    g.release().await.unwrap();
    assert_eq!(count(&c, "m/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_lock_excludes_go_mutex() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let session = Session::new(&c, 10).await.unwrap();
    let g = Lock::new(&session, "m").unwrap().try_acquire().await.unwrap();

    let mut go = GoPeer::spawn("peer", &etcd, &["mutex", "m"]);
    let queued = go.expect("session").await;
    until_exists(&c, &s(&queued, "key")).await;
    let gone = deletion_of(&c, g.key()).await;
    assert!(go.quiet(), "Go reported something while queued behind us");
    g.release().await.unwrap();
    let deleted = gone.await.unwrap();
    let got = go.expect("acquired").await;
    // Go learnt it held at a revision no earlier than our release.
    assert!(i(&got, "header_rev") >= deleted, "Go acquired at {got} before our release at rev {deleted}");
    assert!(i(&got, "rev") > g.fencing_token());
    assert_eq!(s(&got, "key"), s(&queued, "key"));
    go.send("release");
    go.expect("released").await;
    assert_eq!(go.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_across_languages() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let (s1, s2) = (Session::new(&c, 10).await.unwrap(), Session::new(&c, 10).await.unwrap());
    let first = Lock::new(&s1, "q").unwrap().try_acquire().await.unwrap();

    // Queue: us (holding), then Go, then our later waiter.
    let mut go = GoPeer::spawn("peer", &etcd, &["mutex", "q"]);
    let queued = go.expect("session").await;
    until_exists(&c, &s(&queued, "key")).await;
    let later = Lock::new(&s2, "q").unwrap();
    let waiting = tokio::spawn(async move { later.acquire().await });
    until_count(&c, "q/", 3).await;

    let first_gone = deletion_of(&c, first.key()).await;
    first.release().await.unwrap();
    let first_deleted = first_gone.await.unwrap();
    let got = go.expect("acquired").await;
    assert!(i(&got, "header_rev") >= first_deleted, "Go ahead of our release: {got}");
    let go_gone = deletion_of(&c, &s(&got, "key")).await;
    assert!(!waiting.is_finished(), "our later waiter jumped ahead of Go");
    go.send("release");
    go.expect("released").await;
    let go_deleted = go_gone.await.unwrap();
    let g = tokio::time::timeout(WITHIN, waiting).await.expect("later waiter never acquired").unwrap().unwrap();
    assert!(g.fencing_token() > i(&got, "rev"), "fencing token {} not after Go's {}", g.fencing_token(), i(&got, "rev"));
    // Our waiter had queued (its key's create revision) before Go let go, and kept its place.
    assert!(g.fencing_token() < go_deleted);
    g.release().await.unwrap();
    assert_eq!(go.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_observer_sees_our_leader_and_proclaims() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let session = Session::new(&c, 10).await.unwrap();
    let lead = Election::new(&session, "e").unwrap().campaign("from-rust").await.unwrap();

    let mut obs = GoPeer::spawn("peer", &etcd, &["observe", "e", "--count", "2"]);
    obs.expect("ready").await;
    let seen = obs.expect("leader").await;
    assert_eq!((s(&seen, "key"), s(&seen, "value")), (lead.key().to_string(), "from-rust".to_string()));
    assert_eq!(i(&seen, "rev"), lead.fencing_token());
    assert_eq!(i(&seen, "lease"), lead.lease_id());
    lead.proclaim("proclaimed").await.unwrap();
    let seen = obs.expect("leader").await;
    assert_eq!((s(&seen, "key"), s(&seen, "value")), (lead.key().to_string(), "proclaimed".to_string()));
    assert_eq!(obs.exit_code(), 0);

    // Go's Leader() agrees; with nobody leading it says so.
    let mut ask = GoPeer::spawn("peer", &etcd, &["leader", "e"]);
    assert_eq!(s(&ask.expect("leader").await, "value"), "proclaimed");
    assert_eq!(ask.exit_code(), 0);
    lead.resign().await.unwrap();
    let mut ask = GoPeer::spawn("peer", &etcd, &["leader", "e"]);
    assert_eq!(s(&ask.expect("error").await, "kind"), "no_leader");
    assert_eq!(ask.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_observer_sees_go_leader_and_etcdctl_agrees() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let mut go = GoPeer::spawn("peer", &etcd, &["elect", "e", "from-go"]);
    go.expect("session").await;
    let elected = go.expect("elected").await;
    let go_key = s(&elected, "key");
    assert_eq!(go_key, format!("e/{:x}", i(&elected, "lease")), "Go's key layout");

    let mut o = election::observe(&c, "e").unwrap();
    let seen = next_leader(&mut o).await.expect("a leader");
    assert_eq!((seen.key.as_str(), seen.value.as_slice()), (go_key.as_str(), &b"from-go"[..]));
    assert_eq!(seen.fencing_token, i(&elected, "rev"));
    let now = election::current_leader(&c, "e").await.unwrap().unwrap();
    assert_eq!(now.key, go_key);

    // etcdctl elect -l prints the same leader: key, then value.
    let mut ctl = etcd.etcdctl().args(["elect", "-l", "e"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(ctl.stdout.take().unwrap()).lines();
    let (k, v) = tokio::task::spawn_blocking(move || (lines.next(), lines.next())).await.unwrap();
    let _ = ctl.kill();
    let _ = ctl.wait();
    assert_eq!((k.unwrap().unwrap(), v.unwrap().unwrap()), (go_key.clone(), "from-go".to_string()));

    go.send("proclaim go-2");
    go.expect("proclaimed").await;
    let seen = next_leader(&mut o).await.expect("a leader");
    assert_eq!((seen.key.as_str(), seen.value.as_slice()), (go_key.as_str(), &b"go-2"[..]));

    // Our candidate queues behind Go and leads once Go resigns.
    let session = Session::new(&c, 10).await.unwrap();
    let e = Election::new(&session, "e").unwrap();
    let e2 = e.clone();
    let ours = tokio::spawn(async move { e2.campaign("from-rust").await });
    until_count(&c, "e/", 2).await;
    assert!(!ours.is_finished(), "we lead while Go does");
    go.send("resign");
    go.expect("resigned").await;
    let lead = tokio::time::timeout(WITHIN, ours).await.expect("no takeover").unwrap().unwrap();
    assert!(lead.fencing_token() > i(&elected, "rev"));
    // The observer sees us next (possibly after a moment with no leader).
    let mut next = next_leader(&mut o).await;
    if next.is_none() {
        next = next_leader(&mut o).await;
    }
    assert_eq!(next.expect("a leader").value, b"from-rust");
    assert_eq!(go.exit_code(), 0);

    // A Go candidate waits behind us, and is elected only after our resignation.
    let mut go = GoPeer::spawn("peer", &etcd, &["elect", "e", "go-again"]);
    let queued = go.expect("session").await;
    until_exists(&c, &s(&queued, "key")).await;
    let gone = deletion_of(&c, lead.key()).await;
    assert!(go.quiet(), "Go reported something while queued behind us");
    lead.resign().await.unwrap();
    let deleted = gone.await.unwrap();
    let elected = go.expect("elected").await;
    assert!(i(&elected, "header_rev") >= deleted, "Go elected before our resignation: {elected}");
    let mut ask = GoPeer::spawn("peer", &etcd, &["leader", "e"]);
    assert_eq!(s(&ask.expect("leader").await, "value"), "go-again");
    go.send("resign");
    go.expect("resigned").await;
}
