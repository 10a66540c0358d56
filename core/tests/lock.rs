//! The distributed lock against a real etcd: contention, faults, cancellation, interop.

mod common;
use common::{client, etcd_gauge, init_tracing, kv_requests, WATCH_STREAMS};

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, LockOptions};
use etcd_recipes::lock::Lock;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session};

/// How many keys exist under `prefix` (raw, not namespaced).
async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

async fn exists(c: &Client, key: &str) -> bool {
    !c.etcd().get(key, None).await.unwrap().kvs().is_empty()
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
async fn mutual_exclusion_800_increments_and_tokens_increase() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for w in 0..8 {
        let eps = etcd.endpoints();
        tasks.push(tokio::spawn(async move {
            // Each worker: its own connection and its own session (lease).
            let c = Client::connect(ClientOptions::new(eps)).await.unwrap();
            let s = Session::new(&c, 10).await.unwrap();
            let lock = Lock::new(&s, "counter-lock").unwrap();
            for _ in 0..100 {
                let g = lock.acquire().await.unwrap();
                assert!(g.key().starts_with("counter-lock/"), "{}", g.key());
                // Plain get / +1 / put: only correct under mutual exclusion.
                let raw = c.get("counter").await.unwrap().unwrap_or_else(|| b"0 0".to_vec());
                let text = String::from_utf8(raw).unwrap();
                let (n, last_token) = text.split_once(' ').unwrap();
                let (n, last_token): (u64, i64) = (n.parse().unwrap(), last_token.parse().unwrap());
                assert!(
                    g.fencing_token() > last_token,
                    "worker {w}: token {} not above the previous holder's {last_token}",
                    g.fencing_token()
                );
                c.put("counter", format!("{} {}", n + 1, g.fencing_token())).await.unwrap();
                g.release().await.unwrap();
                assert!(!g.is_held());
            }
            s.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = client(&etcd).await;
    let raw = String::from_utf8(c.get("counter").await.unwrap().unwrap()).unwrap();
    println!("800 lock cycles by 8 sessions took {:?}", started.elapsed());
    assert_eq!(raw.split_once(' ').unwrap().0, "800", "lost updates: counter is {raw}");
    assert_eq!(count(&c, "counter-lock/").await, 0, "stale lock keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_put_rejected_after_lease_revoked_mid_section() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let lock = Lock::new(&s, "fenced").unwrap();
    let g = lock.acquire().await.unwrap();
    assert_eq!(g.key(), format!("fenced/{:x}", s.lease_id()));
    assert_eq!(g.fence().key(), g.key());
    assert_eq!(g.fence().token(), g.fencing_token());
    assert!(g.is_held());
    g.fence().put("data", "first").await.unwrap();
    // Mid-section, the lease is revoked from outside (an operator, or an expiry).
    admin.revoke_lease(s.lease_id()).await.unwrap();
    let err = g.fence().put("data", "second").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(c.get("data").await.unwrap().as_deref(), Some(&b"first"[..]));
    // The guard learns it too (at the session's next renewal, every TTL/3).
    let reason = tokio::time::timeout(Duration::from_secs(20), g.lost()).await.expect("lost() never fired").expect("a loss, not a normal end");
    assert!(!g.is_held(), "still held after loss: {reason}");
    // Someone else gets the lock right away, with a higher token.
    let s2 = Session::new(&c, 10).await.unwrap();
    let g2 = Lock::new(&s2, "fenced").unwrap().try_acquire().await.unwrap();
    assert!(g2.fencing_token() > g.fencing_token());
    g2.fence().put("data", "third").await.unwrap();
    // Releasing the lost guard is harmless and does not touch the new holder's key.
    g.release().await.unwrap();
    assert!(exists(&c, g2.key()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_expire_time_out_or_are_cancelled_leave_no_key() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let holder_s = Session::new(&c, 10).await.unwrap();
    let holder = Lock::new(&holder_s, "q").unwrap().acquire().await.unwrap();

    // try_acquire fails at once while held, and leaves no key.
    let s1 = Session::new(&c, 10).await.unwrap();
    let l1 = Lock::new(&s1, "q").unwrap();
    let t = Instant::now();
    let err = l1.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "try_acquire waited: {:?}", t.elapsed());
    assert_eq!(count(&c, "q/").await, 1, "try_acquire left its key");

    // acquire_timeout times out with LockTimeout; the key is gone when it returns.
    let t = Instant::now();
    let err = l1.acquire_timeout(Duration::from_millis(300)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(count(&c, "q/").await, 1, "timed-out waiter left its key");

    // A waiter cancelled by dropping its future (tokio timeout) leaves no key.
    let r = tokio::time::timeout(Duration::from_millis(300), l1.acquire()).await;
    assert!(r.is_err(), "acquired a held lock");
    eventually(Duration::from_secs(20), "cancelled waiter's key deleted", || async { count(&c, "q/").await == 1 }).await;

    // A waiter in an aborted task leaves no key.
    let l1b = l1.clone();
    let task = tokio::spawn(async move { l1b.acquire().await });
    eventually(Duration::from_secs(20), "waiter queued", || async { count(&c, "q/").await == 2 }).await;
    task.abort();
    eventually(Duration::from_secs(20), "aborted waiter's key deleted", || async { count(&c, "q/").await == 1 }).await;

    // A waiter whose session expires while waiting gets SessionLost, never a lock.
    let s2 = Session::new(&c, 10).await.unwrap();
    let l2 = Lock::new(&s2, "q").unwrap();
    let waiter = tokio::spawn(async move { l2.acquire().await });
    let key2 = format!("q/{:x}", s2.lease_id());
    eventually(Duration::from_secs(20), "second waiter queued", || async { exists(&c, &key2).await }).await;
    c.revoke_lease(s2.lease_id()).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("waiter never returned").unwrap();
    let err = res.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionLost, "{err}");
    assert!(!exists(&c, &key2).await, "expired waiter left its key");

    // The holder was never disturbed; after release the next contender gets it at once.
    assert!(holder.is_held());
    assert_eq!(count(&c, "q/").await, 1);
    holder.release().await.unwrap();
    holder.release().await.unwrap(); // idempotent
    assert_eq!(holder.lost().await, None, "an ordinary release is not a loss");
    let g = l1.try_acquire().await.unwrap();
    assert!(g.fencing_token() > holder.fencing_token());
    drop(g); // released on drop
    eventually(Duration::from_secs(20), "dropped guard released", || async { count(&c, "q/").await == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_while_waiting_via_deleted_key_ahead() {
    // The holder leaves just as our lease is revoked: the wait ends, but the re-read of our
    // own key must turn it into SessionLost rather than a lock.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let hs = Session::new(&c, 10).await.unwrap();
    let holder = Lock::new(&hs, "r").unwrap().acquire().await.unwrap();
    let ws = Session::new(&c, 30).await.unwrap(); // long TTL: renewals come late
    let wl = Lock::new(&ws, "r").unwrap();
    let waiter = tokio::spawn(async move { wl.acquire().await });
    let wkey = format!("r/{:x}", ws.lease_id());
    eventually(Duration::from_secs(20), "waiter queued", || async { exists(&c, &wkey).await }).await;
    // Revoke the waiter's lease, then release the holder at once.
    c.revoke_lease(ws.lease_id()).await.unwrap();
    holder.release().await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("waiter hung").unwrap();
    assert_eq!(res.unwrap_err().kind(), ErrorKind::SessionLost);
    assert_eq!(count(&c, "r/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_whose_key_is_deleted_fails_at_once_while_the_holder_holds() {
    // Only the waiter's key goes (its lease stays alive, so the session cannot tell):
    // the wait itself must notice, without waiting for the holder to leave.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let hs = Session::new(&c, 10).await.unwrap();
    let holder = Lock::new(&hs, "gone").unwrap().acquire().await.unwrap();
    let ws = Session::new(&c, 30).await.unwrap();
    let wl = Lock::new(&ws, "gone").unwrap();
    let waiter = tokio::spawn(async move { wl.acquire().await });
    let wkey = format!("gone/{:x}", ws.lease_id());
    eventually(Duration::from_secs(20), "waiter queued", || async { exists(&c, &wkey).await }).await;
    c.etcd().delete(wkey.as_str(), None).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("waiter not told").unwrap();
    let err = res.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionLost, "{err}");
    assert!(err.to_string().contains("vanished"), "{err}");
    assert!(holder.is_held(), "the holder was disturbed");
    assert!(ws.is_alive(), "the waiter's lease is still there");
    assert_eq!(count(&c, "gone/").await, 1);
    holder.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_counts_only_the_keys_ahead_of_it() {
    // Holder H, then waiters A, B, C. A (ahead of B) and C (behind B) leave; an unrelated
    // key under the prefix is written and deleted. B must still wait for H alone, then
    // get the lock as soon as H releases, with a larger token.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let sessions = [
        Session::new(&c, 10).await.unwrap(),
        Session::new(&c, 10).await.unwrap(),
        Session::new(&c, 10).await.unwrap(),
        Session::new(&c, 10).await.unwrap(),
    ];
    let lock = |i: usize| Lock::new(&sessions[i], "fifo").unwrap();
    let holder = lock(0).acquire().await.unwrap();
    let spawn_waiter = |l: Lock| tokio::spawn(async move { l.acquire().await });
    let a = spawn_waiter(lock(1));
    eventually(Duration::from_secs(20), "A queued", || async { count(&c, "fifo/").await == 2 }).await;
    let b = spawn_waiter(lock(2));
    eventually(Duration::from_secs(20), "B queued", || async { count(&c, "fifo/").await == 3 }).await;
    let cw = spawn_waiter(lock(3));
    eventually(Duration::from_secs(20), "C queued", || async { count(&c, "fifo/").await == 4 }).await;
    a.abort();
    cw.abort();
    eventually(Duration::from_secs(20), "A and C gone", || async { count(&c, "fifo/").await == 2 }).await;
    c.etcd().put("fifo/unrelated", "x", None).await.unwrap();
    c.etcd().delete("fifo/unrelated", None).await.unwrap();
    // Bounded check that B does not take a lock H still holds.
    let mut b = b;
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), &mut b).await {
        panic!("B acquired while H held the lock: {:?}", r.unwrap().map(|g| g.fencing_token()));
    }
    assert!(holder.is_held());
    holder.release().await.unwrap();
    let g = tokio::time::timeout(Duration::from_secs(20), b).await.expect("B never got the lock").unwrap().unwrap();
    assert!(g.fencing_token() > holder.fencing_token());
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_one_session_exclude_each_other() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let lock = Lock::new(&s, "shared").unwrap();
    let g = lock.acquire().await.unwrap();
    assert_eq!(lock.try_acquire().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    let l2 = lock.clone();
    let second = tokio::spawn(async move { l2.acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "second task acquired while the first holds");
    let t1 = g.fencing_token();
    g.release().await.unwrap();
    let g2 = tokio::time::timeout(Duration::from_secs(20), second).await.expect("second never acquired").unwrap().unwrap();
    assert!(g2.fencing_token() > t1);
    assert_eq!(g2.key(), format!("shared/{:x}", s.lease_id()));
}

fn term(child: &mut Child) {
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// Lines of a child's stdout, delivered through a channel.
fn lines_of(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_ours_exclude_each_other() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let lock = Lock::new(&s, "interop").unwrap();

    // etcdctl holds: we cannot.
    let mut ctl = etcd.etcdctl().args(["lock", "interop"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = lines_of(&mut ctl);
    let held = tokio::time::timeout(Duration::from_secs(20), lines.recv()).await.expect("etcdctl never locked").unwrap();
    assert!(held.starts_with("interop/"), "etcdctl printed {held:?}");
    let err = lock.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    // A waiter queues behind etcdctl and gets the lock when etcdctl lets go.
    let l2 = lock.clone();
    let waiting = tokio::spawn(async move { l2.acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    term(&mut ctl);
    let g = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("not acquired after etcdctl quit").unwrap().unwrap();

    // We hold: etcdctl waits, printing nothing, until we release.
    let mut ctl = etcd.etcdctl().args(["lock", "interop"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = lines_of(&mut ctl);
    let early = tokio::time::timeout(Duration::from_millis(1500), lines.recv()).await;
    assert!(early.is_err(), "etcdctl took the lock we hold: {early:?}");
    g.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), lines.recv()).await.expect("etcdctl never got the lock").unwrap();
    assert!(got.starts_with("interop/"), "{got:?}");
    term(&mut ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lock_rpc_and_ours_exclude_each_other() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let mut raw = c.etcd();
    let lease = raw.lease_grant(10, None).await.unwrap().id();
    // The server's Lock RPC holds "rpc": our try_acquire fails.
    let resp = raw.lock("rpc", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    let rpc_key = String::from_utf8(resp.key().to_vec()).unwrap();
    assert_eq!(rpc_key, format!("rpc/{lease:x}"));
    let s = Session::new(&c, 10).await.unwrap();
    let lock = Lock::new(&s, "rpc").unwrap();
    assert_eq!(lock.try_acquire().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    raw.unlock(rpc_key).await.unwrap();
    let g = lock.try_acquire().await.unwrap();
    // We hold: the Lock RPC blocks until we release.
    let mut raw2 = c.etcd();
    let rpc = tokio::spawn(async move { raw2.lock("rpc", Some(LockOptions::new().with_lease(lease))).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!rpc.is_finished(), "Lock RPC granted a lock we hold");
    g.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), rpc).await.expect("Lock RPC never granted").unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_documented_prefix_behaviour() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let long = "x".repeat(4097);
    for bad in ["", long.as_str(), "a\0b", "a/", "/"] {
        let err = Lock::new(&s, bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    assert!(Lock::new(&s, &"x".repeat(4096)).is_ok());

    // Nested names share a queue one way: the keys of "a/b" lie under "a/".
    let s2 = Session::new(&c, 10).await.unwrap();
    let nested = Lock::new(&s, "a/b").unwrap().acquire().await.unwrap();
    let outer = Lock::new(&s2, "a").unwrap();
    let err = outer.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "lock \"a\" must queue behind a holder of \"a/b\"");
    nested.release().await.unwrap();
    let outer_g = outer.try_acquire().await.unwrap();
    // ...but a holder of "a" does not block "a/b".
    let nested2 = Lock::new(&s, "a/b").unwrap().try_acquire().await.unwrap();
    assert!(outer_g.is_held() && nested2.is_held());
    // Sibling names that are not '/'-prefixes are independent.
    let ab = Lock::new(&s2, "a-b").unwrap().try_acquire().await.unwrap();
    assert!(ab.is_held());

    // Namespaces apply: same name, different namespace = different lock.
    let cn = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("ns1/")).await.unwrap();
    let sn = Session::new(&cn, 10).await.unwrap();
    let gn = Lock::new(&sn, "a-b").unwrap().try_acquire().await.unwrap();
    assert_eq!(gn.key(), format!("ns1/a-b/{:x}", sn.lease_id()));
}

/// A waiter behind 64 keys follows them by name; behind 70 (more than it follows by name)
/// it counts the deletes by their previous values. In both, deleting every key ahead but
/// one (half of them in one transaction, so one watch response carries them all) leaves
/// it waiting, and deleting the last one gives it the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_behind_many_keys_waits_for_every_one_of_them() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    for n in [64usize, 70] {
        let name = format!("many{n}");
        for i in 0..n {
            c.put(&format!("{name}/k{i:03}"), "x").await.unwrap();
        }
        let session = Session::new(&c, 10).await.unwrap();
        let lock = Lock::new(&session, &name).unwrap();
        let mut waiter = tokio::spawn(async move { lock.acquire().await });
        eventually(Duration::from_secs(20), "the waiter queued", || async { count(&c, &format!("{name}/")).await == n as i64 + 1 }).await;
        let half = etcd_client::DeleteOptions::new().with_range(format!("{name}/k{:03}", n / 2));
        assert_eq!(c.etcd().delete(format!("{name}/k000"), Some(half)).await.unwrap().deleted(), (n / 2) as i64);
        for i in n / 2..n - 1 {
            assert_eq!(c.delete(&format!("{name}/k{i:03}")).await.unwrap(), 1);
        }
        // Bounded check that the waiter does not take the lock while one key is ahead.
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), &mut waiter).await {
            panic!("acquired with a key still ahead (n = {n}): {:?}", r.unwrap().map(|g| g.fencing_token()));
        }
        assert_eq!(c.delete(&format!("{name}/k{:03}", n - 1)).await.unwrap(), 1);
        let g = tokio::time::timeout(Duration::from_secs(20), waiter).await.expect("the waiter never got the lock").unwrap().unwrap();
        g.release().await.unwrap();
        session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_client_share_one_watch_that_stays_open_between_waits() {
    // A watch "from now" opened while others write can start behind etcd's store, and
    // etcd then serves it from a catch-up loop that runs every 100 ms: a waiter on it
    // learns its turn late. So a client's waiters on one lock share one watch, which
    // stays open between waits. Two rounds of 6 waiters behind a holder of another
    // client: one watch stream in all, every waiter gets the lock in turn, and closing
    // the client leaves no watcher in etcd.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let holder_client = client(&etcd).await;
    let waiting_client = client(&etcd).await;
    let holder_session = Session::new(&holder_client, 10).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(Session::new(&waiting_client, 10).await.unwrap());
    }
    let streams_before = etcd_gauge(&etcd, WATCH_STREAMS).await;
    let mut last_token = 0;
    for round in 0..2 {
        let held = Lock::new(&holder_session, "shared-watch").unwrap().acquire().await.unwrap();
        assert!(held.fencing_token() > last_token, "round {round}: holder's token went backwards");
        let waiters: Vec<_> = sessions
            .iter()
            .map(|s| {
                let lock = Lock::new(s, "shared-watch").unwrap();
                tokio::spawn(async move {
                    let g = lock.acquire().await?;
                    let token = g.fencing_token();
                    g.release().await?;
                    Ok::<_, etcd_recipes::Error>(token)
                })
            })
            .collect();
        eventually(Duration::from_secs(20), "6 waiters queued behind the holder", || async {
            count(&waiting_client, "shared-watch/").await == 7
        })
        .await;
        held.release().await.unwrap();
        let mut tokens = Vec::new();
        for w in waiters {
            let t = tokio::time::timeout(Duration::from_secs(20), w).await.expect("a waiter never got the lock").unwrap().unwrap();
            assert!(t > held.fencing_token(), "round {round}: a waiter's token {t} is not above the holder's");
            tokens.push(t);
        }
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 6, "round {round}: two waiters held the lock with the same token");
        last_token = *tokens.last().unwrap();
    }
    let streams = etcd_gauge(&etcd, WATCH_STREAMS).await - streams_before;
    assert_eq!(streams, 1.0, "watch streams opened for 12 waits of one client");
    assert!(etcd_gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await >= 1.0, "the waiters' watch closed between waits");
    waiting_client.close().await;
    eventually(Duration::from_secs(20), "no watcher left in etcd after the client closed", || async {
        etcd_gauge(&etcd, "etcd_debugging_mvcc_watcher_total").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_deletes_by_name_and_never_the_next_holders_key() {
    // A lock key is named by its lease, and this process lets one acquisition of it exist
    // at a time: the next one (here another task of the same session) waits until the
    // release is confirmed. So a release deletes the key by name, as Go's Unlock does,
    // instead of a transaction guarded by the token, which costs etcd more. Two tasks of
    // one session take the lock 10 times each: while a task holds it, the key in etcd is
    // its own (its create revision is the task's token), every token is new, and the
    // cycles cost etcd one transaction and one delete each.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let session = Session::new(&c, 10).await.unwrap();
    let key = format!("by-name/{:x}", session.lease_id());
    let (txns, deletes) = (etcd_gauge(&etcd, &kv_requests("Txn")).await, etcd_gauge(&etcd, &kv_requests("DeleteRange")).await);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (lock, c, key) = (Lock::new(&session, "by-name").unwrap(), c.clone(), key.clone());
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..10 {
                    let g = lock.acquire().await.unwrap();
                    let kvs = c.etcd().get(key.as_str(), None).await.unwrap().kvs().to_vec();
                    let in_etcd = kvs.first().map(|kv| kv.create_revision());
                    assert_eq!(in_etcd, Some(g.fencing_token()), "the key in etcd is not the holder's own while it holds the lock");
                    tokens.push(g.fencing_token());
                    g.release().await.unwrap();
                }
                tokens
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.extend(tokio::time::timeout(Duration::from_secs(30), t).await.expect("20 cycles did not end").unwrap());
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 20, "two acquisitions had the same token");
    assert!(!exists(&c, &key).await, "the key is left after the last release");
    let txns = etcd_gauge(&etcd, &kv_requests("Txn")).await - txns;
    let deletes = etcd_gauge(&etcd, &kv_requests("DeleteRange")).await - deletes;
    assert_eq!((txns, deletes), (20.0, 20.0), "etcd's transactions and deletes for 20 acquire-release cycles");
    session.close().await.unwrap();
}
