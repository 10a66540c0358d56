//! The read-write lock against a real etcd: sharing, exclusion, no writer starvation,
//! timeouts, session loss, and interop with etcd's Go `recipe.RWMutex` itself.

mod common;
use common::{client, etcd_gauge, init_tracing, WATCH_STREAMS};

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use etcd_recipes::lock::LockGuard;
use etcd_recipes::rwlock::{RwLock, Side};
use etcd_recipes::testing::{go_program, EtcdCluster};
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

fn per_use(c: &Client, name: &str) -> RwLock {
    RwLock::new(SessionSource::per_use(c, 10).unwrap(), name).unwrap()
}

/// Change the occupancy record at `key` ("" = empty, "r<n>" = n readers, "w" = a writer)
/// with `f`, only while `guard` holds (fence in the same transaction). `f` returns None
/// for a state that must never be seen.
async fn fenced_update(c: &Client, guard: &LockGuard, key: &str, f: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut raw = c.etcd();
    loop {
        let got = raw.get(key, None).await.unwrap();
        let (now, modrev) = got
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).to_string(), kv.mod_revision()))
            .unwrap_or((String::new(), 0));
        let Some(next) = f(&now) else { return Err(now) };
        let txn = Txn::new()
            .when(vec![guard.fence().compare(), Compare::mod_revision(key, CompareOp::Equal, modrev)])
            .and_then(vec![TxnOp::put(key, next.clone(), None)]);
        if raw.txn(txn).await.unwrap().succeeded() {
            return Ok(next);
        }
    }
}

fn readers(s: &str) -> Option<u32> {
    match s {
        "" => Some(0),
        _ => s.strip_prefix('r').map(|n| n.parse().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_writers_exclude_under_contention() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let eps = etcd.endpoints();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let rw = per_use(&c, "occ");
            let writer = w < 2;
            let mut most_readers = 0;
            for i in 0..10 {
                if writer {
                    let g = rw.write().await.unwrap();
                    let seen = fenced_update(&c, &g, "occ-state", |s| (s.is_empty() || s == "r0").then(|| "w".into())).await;
                    assert!(seen.is_ok(), "writer {w} cycle {i} entered while the state was {:?}", seen.unwrap_err());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    fenced_update(&c, &g, "occ-state", |s| (s == "w").then(String::new)).await.unwrap();
                    g.release().await.unwrap();
                } else {
                    let g = rw.read().await.unwrap();
                    let seen = fenced_update(&c, &g, "occ-state", |s| readers(s).map(|n| format!("r{}", n + 1))).await;
                    let now = seen.unwrap_or_else(|s| panic!("reader {w} cycle {i} entered while the state was {s:?}"));
                    most_readers = most_readers.max(readers(&now).unwrap());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    fenced_update(&c, &g, "occ-state", |s| readers(s).filter(|n| *n > 0).map(|n| format!("r{}", n - 1)))
                        .await
                        .unwrap();
                    g.release().await.unwrap();
                }
            }
            most_readers
        }));
    }
    let mut most = 0;
    for t in tasks {
        most = most.max(t.await.unwrap());
    }
    println!("80 rwlock cycles (6 readers, 2 writers) took {:?}; at most {most} readers together", started.elapsed());
    let c = client(&etcd).await;
    assert!(most >= 2, "readers never held together: sharing not shown");
    assert_eq!(count(&c, "occ/").await, 0, "keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_blocks_later_readers() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let rw = per_use(&c, "ws");
    let r1 = rw.read().await.unwrap();
    let r2 = rw.read().await.unwrap();
    assert!(r1.key().starts_with("ws/read/") && r2.key().starts_with("ws/read/"), "{}", r1.key());
    let e = rw.try_write().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn({
        let (rw, tx) = (rw.clone(), tx.clone());
        async move {
            let g = rw.write().await.unwrap();
            assert!(g.key().starts_with("ws/write/"), "{}", g.key());
            tx.send("writer").unwrap();
            g
        }
    });
    eventually(Duration::from_secs(10), "writer key", || async { count(&c, "ws/write/").await == 1 }).await;
    // A reader arriving now waits behind the writer, although only readers hold.
    let e = rw.try_read().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    let e = rw.acquire_within(Side::Read, Some(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "ws/").await, 3, "timed-out readers left keys");
    let late = tokio::spawn({
        let (rw, tx) = (rw.clone(), tx.clone());
        async move {
            let g = rw.read().await.unwrap();
            tx.send("late reader").unwrap();
            g.release().await.unwrap();
        }
    });
    eventually(Duration::from_secs(10), "late reader key", || async { count(&c, "ws/read/").await == 3 }).await;
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap(), Some("writer"));
    let w = writer.await.unwrap();
    assert!(rx.try_recv().is_err(), "the late reader got in beside the writer");
    w.release().await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap(), Some("late reader"));
    late.await.unwrap();
    assert_eq!(count(&c, "ws/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_leave_no_key() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let rw = per_use(&c, "to");
    let w = rw.write().await.unwrap();
    for side in [Side::Read, Side::Write] {
        let e = rw.acquire_within(side, Some(Duration::from_millis(200))).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LockTimeout, "{side:?}: {e}");
    }
    let e = rw.clone().with_timeout(Some(Duration::from_millis(100))).read().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    assert_eq!(count(&c, "to/").await, 1, "timed-out contenders left keys");
    w.release().await.unwrap();
    // Cancelling a wait (dropping the future) removes the key too.
    let w = rw.write().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(200), rw.read()).await.unwrap_err();
    eventually(Duration::from_secs(5), "cancelled reader key gone", || async { count(&c, "to/").await == 1 }).await;
    w.release().await.unwrap();
    assert_eq!(count(&c, "to/").await, 0);
    for name in ["", "a/"] {
        assert_eq!(RwLock::new(SessionSource::per_use(&c, 10).unwrap(), name).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_loss_while_waiting_and_while_holding() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    // Waiting: the waiter's session is revoked.
    let rw = per_use(&c, "sl");
    let w = rw.write().await.unwrap();
    let s = Session::new(&c, 10).await.unwrap();
    let wait = tokio::spawn({
        let rw = s.rwlock("sl").unwrap();
        async move { rw.read().await }
    });
    eventually(Duration::from_secs(10), "reader key", || async { count(&c, "sl/").await == 2 }).await;
    admin.revoke_lease(s.lease_id()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SessionLost, "{e}");
    assert_eq!(count(&c, "sl/").await, 1, "the lost reader's key is still there");
    w.release().await.unwrap();

    // Holding: a reader's session is revoked; it is told, its writes are fenced, and the
    // waiting writer gets the lock.
    let s = Session::new(&c, 10).await.unwrap();
    let r = s.rwlock("sl").unwrap().read().await.unwrap();
    let writer = tokio::spawn({
        let rw = rw.clone();
        async move { rw.write().await }
    });
    eventually(Duration::from_secs(10), "writer key", || async { count(&c, "sl/write/").await == 1 }).await;
    admin.revoke_lease(s.lease_id()).await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(10), writer).await.unwrap().unwrap().unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), r.lost()).await.unwrap();
    assert!(reason.is_some(), "lost() said a normal end after a revoke");
    let e = r.fence().put("sl-out", "stale").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    w.fence().put("sl-out", "writer").await.unwrap();
    assert!(w.fencing_token() > r.fencing_token());
    w.release().await.unwrap();
    assert_eq!(w.lost().await, None);
    assert_eq!(count(&c, "sl/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_ends_a_wait() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let other = client(&etcd).await;
    let w = per_use(&other, "cc").write().await.unwrap();
    let c = client(&etcd).await;
    let rw = per_use(&c, "cc");
    let wait = tokio::spawn(async move { rw.read().await });
    eventually(Duration::from_secs(10), "reader key", || async { count(&other, "cc/").await == 2 }).await;
    c.close().await;
    let e = tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    eventually(Duration::from_secs(5), "reader key gone", || async { count(&other, "cc/").await == 1 }).await;
    w.release().await.unwrap();
}

/// etcd's Go `recipe.RWMutex`, run as a child process.
struct GoHolder {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl GoHolder {
    fn start(etcd: &EtcdCluster, mode: &str, name: &str) -> GoHolder {
        let bin = go_program("rwmutex").expect("build tests/go/rwmutex");
        let mut child = Command::new(bin)
            .args(["--endpoints", &etcd.endpoints().join(","), "--ttl", "10", mode, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut g = GoHolder { child, out };
        assert_eq!(g.event().0, "session");
        g
    }

    /// The next event line (blocking): its name and the whole line.
    fn event(&mut self) -> (String, String) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from the Go program: {line:?}"));
        (v["event"].as_str().unwrap_or("").to_string(), line)
    }

    /// Wait (off the runtime) until the Go side holds the lock.
    async fn acquired(mut self) -> GoHolder {
        tokio::task::spawn_blocking(move || {
            let (ev, line) = self.event();
            assert_eq!(ev, "acquired", "{line}");
            self
        })
        .await
        .unwrap()
    }

    /// Close stdin: the Go side unlocks and exits.
    async fn release(mut self) {
        drop(self.child.stdin.take());
        tokio::task::spawn_blocking(move || {
            let (ev, line) = self.event();
            assert_eq!(ev, "released", "{line}");
            assert!(self.child.wait().unwrap().success());
        })
        .await
        .unwrap();
    }
}

impl Drop for GoHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_the_lock_with_go_recipe_rwmutex() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let rw = per_use(&c, "gorw");

    // A Go writer holding excludes our reader; our reader gets in once it unlocks.
    let go = GoHolder::start(&etcd, "write", "gorw").acquired().await;
    let keys = c.etcd().get("gorw/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    assert!(keys.kvs().iter().all(|kv| kv.key().starts_with(b"gorw/write/")), "Go's writer key layout differs");
    let e = rw.try_read().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    let reading = tokio::spawn({
        let rw = rw.clone();
        async move { rw.read().await }
    });
    eventually(Duration::from_secs(10), "our reader key", || async { count(&c, "gorw/read/").await == 1 }).await;
    assert!(!reading.is_finished(), "our reader got in beside a Go writer");
    go.release().await;
    let ours = tokio::time::timeout(Duration::from_secs(10), reading).await.unwrap().unwrap().unwrap();

    // A Go reader and our reader hold together.
    let go = GoHolder::start(&etcd, "read", "gorw").acquired().await;
    // Our writer waits for both readers.
    let e = rw.try_write().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    ours.release().await.unwrap();
    let e = rw.try_write().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e}");
    go.release().await;

    // Our writer holding excludes a Go reader: it acquires only after we release.
    let w = rw.write().await.unwrap();
    let go = GoHolder::start(&etcd, "read", "gorw");
    eventually(Duration::from_secs(10), "Go reader key", || async { count(&c, "gorw/read/").await == 1 }).await;
    let mut go = go;
    let waiting = tokio::task::spawn_blocking(move || {
        let (ev, line) = go.event();
        (ev, line, go)
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // a window for a wrong acquire
    assert!(!waiting.is_finished(), "the Go reader got in beside our writer");
    w.release().await.unwrap();
    let (ev, line, go) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(ev, "acquired", "{line}");
    // And a Go reader holding lets our reader in at once.
    let r = rw.try_read().await.unwrap();
    r.release().await.unwrap();
    go.release().await;
    assert_eq!(count(&c, "gorw/").await, 0, "keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_client_share_one_watch_that_stays_open_between_waits() {
    // As for locks: a watch opened per wait can start behind etcd's store and wait for
    // its 100 ms catch-up loop. Two rounds of a writer and then a reader of one client
    // waiting behind a reader of another: one watch stream per side in all.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let holder_client = client(&etcd).await;
    let waiting_client = client(&etcd).await;
    let holder = per_use(&holder_client, "shared-watch");
    let rw = per_use(&waiting_client, "shared-watch");
    let streams_before = etcd_gauge(&etcd, WATCH_STREAMS).await;
    for round in 0..2 {
        let held = holder.read().await.unwrap();
        let writer = tokio::spawn({
            let rw = rw.clone();
            async move { rw.write().await }
        });
        eventually(Duration::from_secs(20), "writer queued", || async { count(&waiting_client, "shared-watch/write/").await == 1 }).await;
        let reader = tokio::spawn({
            let rw = rw.clone();
            async move { rw.read().await?.release().await }
        });
        eventually(Duration::from_secs(20), "reader queued", || async { count(&waiting_client, "shared-watch/read/").await == 2 }).await;
        held.release().await.unwrap();
        let w = tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the writer never got in"))
            .unwrap()
            .unwrap();
        w.release().await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the reader never got in"))
            .unwrap()
            .unwrap();
    }
    // The writer waits on the whole prefix, the reader on the writers' prefix.
    let streams = etcd_gauge(&etcd, WATCH_STREAMS).await - streams_before;
    assert_eq!(streams, 2.0, "watch streams opened for 4 waits of one client");
    waiting_client.close().await;
    eventually(Duration::from_secs(20), "no watcher left after the client closed", || async {
        etcd_gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await == 0.0
    })
    .await;
}
