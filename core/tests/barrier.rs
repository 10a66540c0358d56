//! Barrier and DoubleBarrier against a real etcd: release, timeouts, N parties entering
//! and leaving together, a party's session lost, close, and etcd's Go contrib/recipes.

mod common;
use common::{client, init_tracing};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_recipes::barrier::{Barrier, DoubleBarrier};
use etcd_recipes::testing::{go_program, EtcdCluster};
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session, SessionSource};

async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

async fn keys(c: &Client, prefix: &str) -> Vec<String> {
    let r = c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    r.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

async fn exists(c: &Client, key: &str) -> bool {
    !c.etcd().get(key, None).await.unwrap().kvs().is_empty()
}

/// A window for a waiter to get into its wait (never used to assert on timing).
async fn window() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Poll until `cond` holds, or panic after `within`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_wait_returns_when_never_held_and_when_released() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let b = Barrier::new(&c, "gate").unwrap();
    tokio::time::timeout(Duration::from_secs(5), b.wait()).await.expect("not held: at once").unwrap();
    assert!(!b.is_held().await.unwrap());
    assert!(b.hold().await.unwrap(), "first hold creates the key");
    assert!(!b.hold().await.unwrap(), "second hold: already held");
    assert!(exists(&c, "gate").await);

    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.wait().await })
        })
        .collect();
    // Other writes meanwhile do not wake them (Go's waiter needs PUT then DELETE; ours a DELETE).
    c.put("unrelated", "x").await.unwrap();
    window().await;
    assert!(waiters.iter().all(|w| !w.is_finished()), "a waiter returned while the barrier was held");
    assert!(b.release().await.unwrap());
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(5), w).await.expect("released").unwrap().unwrap();
    }
    assert!(!b.release().await.unwrap(), "releasing a released barrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_timeout_compaction_and_close() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let b = Barrier::new(&c, "gate").unwrap();
    b.hold().await.unwrap();
    let e = b.wait_within(Some(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert!(b.is_held().await.unwrap(), "a timed-out wait changed the barrier");

    // Compaction while waiting, then the release.
    let w = tokio::spawn({
        let b = b.clone();
        async move { b.wait().await }
    });
    window().await;
    for i in 0..10 {
        c.put(&format!("noise/{i}"), "x").await.unwrap();
    }
    etcd.compact().await.unwrap();
    assert!(!w.is_finished());
    let other = client(&etcd).await;
    Barrier::new(&other, "gate").unwrap().release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), w).await.expect("released").unwrap().unwrap();

    // Close ends a wait with CLOSED.
    b.hold().await.unwrap();
    let w = tokio::spawn({
        let b = b.clone();
        async move { b.wait().await }
    });
    window().await;
    c.close().await;
    let e = tokio::time::timeout(Duration::from_secs(5), w).await.expect("ended").unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert_eq!(Barrier::new(&c, "").unwrap_err().kind(), ErrorKind::InvalidArgument);
}

fn party(c: &Client, name: &str, count: usize) -> Arc<DoubleBarrier> {
    Arc::new(DoubleBarrier::new(SessionSource::per_use(c, 10).unwrap(), name, count).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_three_parties_enter_and_leave_together() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let parties: Vec<_> = (0..3).map(|_| party(&c, "round", 3)).collect();
    let e1 = tokio::spawn({
        let p = parties[0].clone();
        async move { p.enter().await }
    });
    let e2 = tokio::spawn({
        let p = parties[1].clone();
        async move { p.enter().await }
    });
    eventually(Duration::from_secs(5), "two waiter keys", || async { count(&c, "round/waiters/").await == 2 }).await;
    window().await;
    assert!(!e1.is_finished() && !e2.is_finished(), "entered before the third party");
    assert!(!exists(&c, "round/ready").await);
    parties[2].enter().await.unwrap();
    assert!(exists(&c, "round/ready").await);
    for e in [e1, e2] {
        tokio::time::timeout(Duration::from_secs(5), e).await.expect("released by the third").unwrap().unwrap();
    }
    assert_eq!(parties[0].enter().await.unwrap_err().kind(), ErrorKind::InvalidArgument, "entering twice");

    // Leave: nobody returns before the last one starts leaving.
    let l1 = tokio::spawn({
        let p = parties[0].clone();
        async move { p.leave().await }
    });
    let l2 = tokio::spawn({
        let p = parties[1].clone();
        async move { p.leave().await }
    });
    window().await;
    assert!(!l1.is_finished() && !l2.is_finished(), "left before every party left");
    parties[2].leave().await.unwrap();
    for l in [l1, l2] {
        tokio::time::timeout(Duration::from_secs(5), l).await.expect("everyone left").unwrap().unwrap();
    }
    assert_eq!(count(&c, "round/").await, 0, "keys left behind");
    for p in &parties {
        assert_eq!(p.lost().await, None);
    }
    assert_eq!(parties[0].leave().await.unwrap_err().kind(), ErrorKind::InvalidArgument, "leaving twice");
    // The same parties can do another round.
    let again: Vec<_> = parties.iter().map(|p| {
        let p = p.clone();
        tokio::spawn(async move { p.enter().await?; p.leave().await })
    }).collect();
    for a in again {
        tokio::time::timeout(Duration::from_secs(10), a).await.expect("second round").unwrap().unwrap();
    }
    assert_eq!(count(&c, "round/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_a_party_lost_while_entering_frees_its_place() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let doomed_session = Session::new(&c, 30).await.unwrap();
    let doomed = Arc::new(DoubleBarrier::new(&doomed_session, "round", 3).unwrap());
    let (a, b, late) = (party(&c, "round", 3), party(&c, "round", 3), party(&c, "round", 3));
    let ed = tokio::spawn({
        let p = doomed.clone();
        async move { p.enter().await }
    });
    let ea = tokio::spawn({
        let p = a.clone();
        async move { p.enter().await }
    });
    eventually(Duration::from_secs(5), "two waiters", || async { count(&c, "round/waiters/").await == 2 }).await;
    // The doomed party's lease is revoked while it waits: its key goes, it learns why.
    admin.revoke_lease(doomed_session.lease_id()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), ed).await.expect("ended").unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SessionLost, "{e}");
    assert_eq!(count(&c, "round/waiters/").await, 1);
    // The others keep waiting for 3 live parties: the next one makes 2, not 3.
    let eb = tokio::spawn({
        let p = b.clone();
        async move { p.enter().await }
    });
    eventually(Duration::from_secs(5), "two live waiters", || async { count(&c, "round/waiters/").await == 2 }).await;
    window().await;
    assert!(!ea.is_finished() && !eb.is_finished(), "entered with a lost party counted");
    late.enter().await.unwrap();
    for e in [ea, eb] {
        tokio::time::timeout(Duration::from_secs(5), e).await.expect("released").unwrap().unwrap();
    }
    let all: Vec<_> = [a, b, late].into_iter().map(|p| tokio::spawn(async move { p.leave().await })).collect();
    for l in all {
        tokio::time::timeout(Duration::from_secs(10), l).await.expect("left").unwrap().unwrap();
    }
    assert_eq!(count(&c, "round/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_a_party_lost_while_others_leave_counts_as_left() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let s = Session::new(&c, 30).await.unwrap();
    let doomed = Arc::new(DoubleBarrier::new(&s, "round", 3).unwrap());
    let (a, b) = (party(&c, "round", 3), party(&c, "round", 3));
    let entering: Vec<_> = [doomed.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|p| tokio::spawn(async move { p.enter().await }))
        .collect();
    for e in entering {
        tokio::time::timeout(Duration::from_secs(10), e).await.expect("entered").unwrap().unwrap();
    }
    let lost = tokio::spawn({
        let p = doomed.clone();
        async move { p.lost().await }
    });
    let leaving: Vec<_> = [a, b].into_iter().map(|p| tokio::spawn(async move { p.leave().await })).collect();
    window().await;
    assert!(leaving.iter().all(|l| !l.is_finished()), "left while a party was still in");
    admin.revoke_lease(s.lease_id()).await.unwrap();
    for l in leaving {
        tokio::time::timeout(Duration::from_secs(10), l).await.expect("the lost party counts as left").unwrap().unwrap();
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), lost).await.expect("lost signalled").unwrap();
    assert!(reason.is_some(), "lost() on a revoked lease must give a reason");
    let e = doomed.leave().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SessionLost, "{e}");
    assert_eq!(count(&c, "round/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_timeout_full_and_close_leave_nothing() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let lonely = party(&c, "round", 2);
    let e = lonely.enter_within(Some(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "round/").await, 0, "a timed-out enter left its key");

    // A full barrier (a round still in): refused at once, nothing left behind.
    let (a, b, extra) = (party(&c, "full", 2), party(&c, "full", 2), party(&c, "full", 2));
    let ea = tokio::spawn({
        let a = a.clone();
        async move { a.enter().await }
    });
    b.enter().await.unwrap();
    ea.await.unwrap().unwrap();
    let e = extra.enter().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "full/waiters/").await, 2);
    // A leave that gives up takes its party out, so the other is not kept waiting.
    let e = a.leave_within(Some(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    tokio::time::timeout(Duration::from_secs(5), b.leave()).await.expect("left").unwrap();
    assert_eq!(keys(&c, "full/").await, Vec::<String>::new());

    // Close ends a waiting enter with CLOSED and revokes its lease.
    let w = party(&c, "closing", 2);
    let ew = tokio::spawn({
        let w = w.clone();
        async move { w.enter().await }
    });
    eventually(Duration::from_secs(5), "waiter key", || async { count(&c, "closing/waiters/").await == 1 }).await;
    c.close().await;
    let e = tokio::time::timeout(Duration::from_secs(5), ew).await.expect("ended").unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    let admin = client(&etcd).await;
    eventually(Duration::from_secs(5), "no key after close", || async { count(&admin, "closing/").await == 0 }).await;
    assert_eq!(DoubleBarrier::new(SessionSource::per_use(&admin, 5).unwrap(), "x", 0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(DoubleBarrier::new(SessionSource::per_use(&admin, 5).unwrap(), "x/", 2).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------------------
// etcd's Go contrib/recipes

/// A Go program whose stdout lines arrive on a channel.
struct GoProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl GoProc {
    fn start(etcd: &EtcdCluster, args: &[&str]) -> GoProc {
        let bin = go_program("queues").expect("build tests/go/queues");
        let mut child = Command::new(bin)
            .arg(etcd.endpoints().join(","))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the Go program");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        GoProc { child, lines }
    }

    /// Wait (off the runtime) for the next line, which must be `want`.
    async fn expect(&mut self, want: &str, within: Duration) {
        let got = tokio::task::block_in_place(|| self.lines.recv_timeout(within));
        assert_eq!(got.as_deref().ok(), Some(want), "Go program: expected {want:?}");
    }

    /// No line yet (the Go side is still blocked).
    fn quiet(&self) -> bool {
        matches!(self.lines.try_recv(), Err(mpsc::TryRecvError::Empty))
    }

    fn say(&mut self, line: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "Go program exited with {status}");
    }
}

impl Drop for GoProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn go(etcd: &EtcdCluster, args: &[&str]) {
    let bin = go_program("queues").expect("build tests/go/queues");
    let out = Command::new(bin).arg(etcd.endpoints().join(",")).args(args).output().unwrap();
    assert!(out.status.success(), "Go {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_barrier_and_ours_release_each_other() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let b = Barrier::new(&c, "interop/gate").unwrap();

    // Go holds; our wait blocks until Go releases.
    go(&etcd, &["barrier-hold", "interop/gate"]);
    assert!(b.is_held().await.unwrap());
    let w = tokio::spawn({
        let b = b.clone();
        async move { b.wait().await }
    });
    window().await;
    assert!(!w.is_finished(), "our wait returned while Go held the barrier");
    go(&etcd, &["barrier-release", "interop/gate"]);
    tokio::time::timeout(Duration::from_secs(5), w).await.expect("Go released").unwrap().unwrap();

    // We hold; Go's wait blocks until we release. (Go's Wait needs the hold to be the
    // store's latest write when it starts, which it is here.)
    assert!(b.hold().await.unwrap());
    let mut waiter = GoProc::start(&etcd, &["barrier-wait", "interop/gate"]);
    waiter.expect("waiting", Duration::from_secs(10)).await;
    window().await;
    assert!(waiter.quiet(), "Go's wait returned while we held the barrier");
    b.release().await.unwrap();
    waiter.expect("released", Duration::from_secs(10)).await;
    waiter.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_double_barrier_two_go_parties_and_ours_enter_and_leave_together() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let mut gos: Vec<GoProc> =
        (0..2).map(|_| GoProc::start(&etcd, &["double-barrier", "interop/round", "3", "10"])).collect();
    for g in gos.iter_mut() {
        g.expect("entering", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "two Go waiter keys", || async { count(&c, "interop/round/waiters/").await == 2 }).await;
    window().await;
    assert!(gos.iter().all(GoProc::quiet), "a Go party entered before the third");
    let ours = DoubleBarrier::new(SessionSource::per_use(&c, 10).unwrap(), "interop/round", 3).unwrap();
    tokio::time::timeout(Duration::from_secs(10), ours.enter()).await.expect("entered").unwrap();
    for g in gos.iter_mut() {
        g.expect("entered", Duration::from_secs(10)).await;
    }
    // Leave: the Go parties leave first and wait for us.
    for g in gos.iter_mut() {
        g.say("leave");
        g.expect("leaving", Duration::from_secs(10)).await;
    }
    window().await;
    assert!(gos.iter().all(GoProc::quiet), "a Go party left before we did");
    tokio::time::timeout(Duration::from_secs(10), ours.leave()).await.expect("left").unwrap();
    for mut g in gos {
        g.expect("left", Duration::from_secs(10)).await;
        g.finish();
    }
    eventually(Duration::from_secs(5), "no barrier keys", || async { count(&c, "interop/round/").await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_barrier_keys() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let raw = client(&etcd).await;
    let c = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("ns/")).await.unwrap();
    Barrier::new(&c, "gate").unwrap().hold().await.unwrap();
    assert!(exists(&raw, "ns/gate").await);
    let p = DoubleBarrier::new(SessionSource::per_use(&c, 5).unwrap(), "one", 1).unwrap();
    p.enter().await.unwrap();
    assert!(exists(&raw, "ns/one/ready").await);
    assert_eq!(count(&raw, "ns/one/waiters/").await, 1);
    p.leave().await.unwrap();
    assert_eq!(count(&raw, "ns/one/").await, 0);
}
