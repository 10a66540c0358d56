//! Leader loop and leader latch against a real etcd: one work at a time under contention
//! (checked with a fenced counter in etcd), loss by lease revocation, requeue off, hand
//! over on return, stop and client close while leading, member restarts, the latch.

mod common;
use common::{client, init_tracing};

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_recipes::election;
use etcd_recipes::leader::{CancelSignal, LeaderEvent, LeaderEvents, LeaderLatch, LeaderLoop, StopReason};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, Error, ErrorKind, SessionSource};
use tokio::sync::{mpsc, oneshot};

async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

/// The next event matching `pred`, failing after `within`.
async fn event(ev: &mut LeaderEvents, within: Duration, what: &str, pred: impl Fn(&LeaderEvent) -> bool) -> LeaderEvent {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, ev.next()).await {
            Err(_) => panic!("no {what} within {within:?}"),
            Ok(None) => panic!("events ended before {what}"),
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
        }
    }
}

fn started(e: &LeaderEvent) -> bool {
    matches!(e, LeaderEvent::StartedLeading { .. })
}

fn stopped(e: &LeaderEvent) -> bool {
    matches!(e, LeaderEvent::StoppedLeading { .. })
}

fn per_use(c: &Client, ttl: i64) -> SessionSource {
    SessionSource::per_use(c, ttl).unwrap()
}

async fn wait_count(c: &Client, prefix: &str, n: i64, within: Duration) {
    let until = Instant::now() + within;
    while count(c, prefix).await != n {
        assert!(Instant::now() < until, "{prefix} never had {n} keys");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three loops contend; each term reads a counter and writes it back + 1 through the
/// leadership's fence, five times, then returns. A second work running at the same time
/// would lose increments (or trip the local in-flight check); the count in etcd must be
/// exactly the number of fenced writes acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_work_at_a_time_under_contention() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin = client(&etcd).await;
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicI64::new(0));
    let tokens = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (term_tx, mut term_rx) = mpsc::unbounded_channel::<i64>();
    let mut loops = Vec::new();
    for i in 0..3 {
        let c = client(&etcd).await;
        let lp = LeaderLoop::new(per_use(&c, 5), "jobs", format!("n{i}")).unwrap();
        let (running, max_running, writes, tokens, term_tx, reader) =
            (running.clone(), max_running.clone(), writes.clone(), tokens.clone(), term_tx.clone(), c.clone());
        lp.start(move |l, cancel: CancelSignal| {
            let (running, max_running, writes, tokens, term_tx, raw) =
                (running.clone(), max_running.clone(), writes.clone(), tokens.clone(), term_tx.clone(), reader.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                tokens.lock().unwrap().push(l.fencing_token());
                let c = l.fence().clone();
                let mut result = Ok(());
                for _ in 0..5 {
                    if cancel.is_cancelled() {
                        break;
                    }
                    let v: i64 = raw.get("counter").await?.map(|v| String::from_utf8(v).unwrap().parse().unwrap()).unwrap_or(0);
                    tokio::task::yield_now().await;
                    match c.put("counter", (v + 1).to_string()).await {
                        Ok(_) => {
                            writes.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = term_tx.send(l.fencing_token());
                result
            }
        })
        .unwrap();
        loops.push((c, lp));
    }
    // Nine terms in all.
    for _ in 0..9 {
        tokio::time::timeout(Duration::from_secs(30), term_rx.recv()).await.expect("terms stalled").unwrap();
    }
    for (_, lp) in &loops {
        lp.close().await;
    }
    assert_eq!(max_running.load(Ordering::SeqCst), 1, "two works ran at once");
    let counter: i64 = admin.get("counter").await.unwrap().map(|v| String::from_utf8(v).unwrap().parse().unwrap()).unwrap();
    assert_eq!(counter, writes.load(Ordering::SeqCst), "increments lost: works overlapped");
    assert!(counter >= 45, "only {counter} increments in 9 terms");
    let tokens = tokens.lock().unwrap().clone();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "fencing tokens not increasing: {tokens:?}");
    // Everything stopped: no candidate left.
    assert_eq!(count(&admin, "jobs/").await, 0);
    for (_, lp) in &loops {
        assert!(lp.is_stopped());
        lp.wait().await.unwrap();
    }
}

/// Revoking the leader's lease cancels its work at once (well before its TTL) and
/// another loop takes over with a greater fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_cancels_work_and_another_takes_over() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin = client(&etcd).await;
    const TTL: i64 = 20;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, i64, i64)>();
    let (ctx, mut crx) = mpsc::unbounded_channel::<(usize, StopReason, Instant)>();
    let mut loops = Vec::new();
    for i in 0..3 {
        let c = client(&etcd).await;
        let lp = LeaderLoop::new(per_use(&c, TTL), "svc", format!("n{i}")).unwrap();
        let (tx, ctx) = (tx.clone(), ctx.clone());
        lp.start(move |l, cancel| {
            let (tx, ctx) = (tx.clone(), ctx.clone());
            async move {
                let _ = tx.send((i, l.fencing_token(), l.lease_id()));
                let r = cancel.cancelled().await;
                let _ = ctx.send((i, r, Instant::now()));
                Ok::<_, Error>(())
            }
        })
        .unwrap();
        loops.push((c, lp));
    }
    let (first, token, lease) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
    wait_count(&admin, "svc/", 3, Duration::from_secs(20)).await;
    let t0 = Instant::now();
    admin.revoke_lease(lease).await.unwrap();
    let (who, reason, at) = tokio::time::timeout(Duration::from_secs(TTL as u64), crx.recv()).await.unwrap().unwrap();
    assert_eq!(who, first);
    assert!(matches!(reason, StopReason::Lost(_)), "reason {reason:?}");
    let took = at - t0;
    assert!(took < Duration::from_secs(TTL as u64 / 4), "cancel took {took:?} (TTL {TTL} s)");
    println!("revoke -> work cancelled in {took:?}");
    let (next, token2, _) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
    assert_ne!(next, first);
    assert!(token2 > token);
    // The loop that lost campaigns again (requeue): three candidates again.
    wait_count(&admin, "svc/", 3, Duration::from_secs(20)).await;
    assert!(loops[first].1.leadership().is_none());
    assert!(loops[next].1.is_leader());
    for (_, lp) in &loops {
        lp.close().await;
    }
    assert_eq!(count(&admin, "svc/").await, 0);
}

/// requeue(false): one term, then `run` returns; a work error is reported, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_false_stops_after_one_term() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    for fail in [false, true] {
        let lp = LeaderLoop::new(per_use(&c, 10), "once", "me").unwrap().requeue(false);
        let mut ev = lp.events();
        let terms = Arc::new(AtomicUsize::new(0));
        let t = terms.clone();
        lp.run(move |l, _cancel| {
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::SeqCst);
                l.fence().put("once-out", "done").await.map_err(|e| e.to_string())?;
                if fail {
                    return Err("boom".to_string());
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(terms.load(Ordering::SeqCst), 1);
        let s = event(&mut ev, Duration::from_secs(5), "started", started).await;
        let LeaderEvent::StartedLeading { fencing_token, .. } = s else { unreachable!() };
        let e = event(&mut ev, Duration::from_secs(5), "stopped", stopped).await;
        let want = StopReason::Returned { error: fail.then(|| "boom".to_string()) };
        assert_eq!(e, LeaderEvent::StoppedLeading { fencing_token, reason: want });
        assert!(lp.is_stopped());
        assert_eq!(count(&c, "once/").await, 0, "resigned");
        assert!(event_end(&mut ev).await, "events end with the loop");
    }
}

async fn event_end(ev: &mut LeaderEvents) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ev.next()).await {
            Ok(None) => return true,
            Ok(Some(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A work that returns resigns at once: the next candidate leads long before any TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_returning_hands_over_at_once() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin = client(&etcd).await;
    let (ca, cb) = (client(&etcd).await, client(&etcd).await);
    let a = LeaderLoop::new(per_use(&ca, 30), "hand", "a").unwrap();
    let b = LeaderLoop::new(per_use(&cb, 30), "hand", "b").unwrap();
    let (mut ea, mut eb) = (a.events(), b.events());
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    a.start(move |_l, _c| {
        let rx = release.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok::<_, Error>(())
        }
    })
    .unwrap();
    let sa = event(&mut ea, Duration::from_secs(10), "a leads", started).await;
    b.start(|_l, c: CancelSignal| async move {
        c.cancelled().await;
        Ok::<_, Error>(())
    })
    .unwrap();
    wait_count(&admin, "hand/", 2, Duration::from_secs(10)).await;
    // B also reports A as the leader.
    let LeaderEvent::StartedLeading { key: a_key, .. } = sa else { unreachable!() };
    event(&mut eb, Duration::from_secs(10), "b sees a", |e| {
        matches!(e, LeaderEvent::NewLeader(Some(l)) if l.key == a_key)
    })
    .await;
    let t0 = Instant::now();
    release_tx.send(()).unwrap();
    event(&mut eb, Duration::from_secs(10), "b leads", started).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "hand-over took {took:?} (TTL 30 s)");
    println!("work returned -> next leader in {took:?}");
    let e = event(&mut ea, Duration::from_secs(5), "a stopped", stopped).await;
    assert!(matches!(e, LeaderEvent::StoppedLeading { reason: StopReason::Returned { error: None }, .. }));
    // A requeued behind B.
    wait_count(&admin, "hand/", 2, Duration::from_secs(10)).await;
    let leader = election::current_leader(&admin, "hand").await.unwrap().unwrap();
    assert_eq!(leader.value, b"b");
    a.close().await;
    b.close().await;
    assert_eq!(count(&admin, "hand/").await, 0);
}

/// close() while leading cancels the work, waits for it to finish, and resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_while_leading_cancels_and_resigns() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let lp = LeaderLoop::new(per_use(&c, 30), "stop", "me").unwrap();
    let mut ev = lp.events();
    let finished = Arc::new(Mutex::new(None::<StopReason>));
    let f = finished.clone();
    lp.start(move |_l, cancel| {
        let f = f.clone();
        async move {
            let r = cancel.cancelled().await;
            // Cleanup takes a while: stop must wait for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            *f.lock().unwrap() = Some(r);
            Ok::<_, Error>(())
        }
    })
    .unwrap();
    event(&mut ev, Duration::from_secs(10), "started", started).await;
    assert!(lp.is_leader());
    lp.close().await;
    assert_eq!(finished.lock().unwrap().clone(), Some(StopReason::Cancelled), "work not finished when stop returned");
    assert!(lp.is_stopped() && !lp.is_leader());
    assert_eq!(count(&c, "stop/").await, 0, "not resigned");
    let e = event(&mut ev, Duration::from_secs(5), "stopped", stopped).await;
    assert!(matches!(e, LeaderEvent::StoppedLeading { reason: StopReason::Cancelled, .. }));
    lp.wait().await.unwrap();
    // Stopped is final.
    assert_eq!(lp.start(|_l, _c| async { Ok::<_, Error>(()) }).unwrap_err().kind(), ErrorKind::InvalidArgument);

    // A work that ignores the signal is aborted after the stop timeout.
    let lp = LeaderLoop::new(per_use(&c, 30), "stop", "me").unwrap().stop_timeout(Duration::from_millis(300));
    let mut ev = lp.events();
    lp.start(|_l, _c| async {
        std::future::pending::<()>().await;
        Ok::<_, Error>(())
    })
    .unwrap();
    event(&mut ev, Duration::from_secs(10), "started", started).await;
    let t0 = Instant::now();
    lp.close().await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&c, "stop/").await, 0);

    // Dropping the run future stops the loop too.
    let lp = LeaderLoop::new(per_use(&c, 30), "stop", "me").unwrap();
    let mut ev = lp.events();
    let lp2 = lp.clone();
    let run = tokio::spawn(async move {
        lp2.run(|_l, c: CancelSignal| async move {
            c.cancelled().await;
            Ok::<_, Error>(())
        })
        .await
    });
    event(&mut ev, Duration::from_secs(10), "started", started).await;
    run.abort();
    let e = event(&mut ev, Duration::from_secs(10), "stopped", stopped).await;
    assert!(matches!(e, LeaderEvent::StoppedLeading { reason: StopReason::Cancelled, .. }));
    lp.wait().await.unwrap();
    assert_eq!(count(&c, "stop/").await, 0);
}

/// Closing the client cancels the work and ends the loop with Closed; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_stops_the_loop() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin = client(&etcd).await;
    let c = client(&etcd).await;
    let lp = LeaderLoop::new(per_use(&c, 30), "cc", "me").unwrap();
    let follower = LeaderLoop::new(per_use(&c, 30), "cc", "f").unwrap();
    let mut ev = lp.events();
    let seen = Arc::new(Mutex::new(None::<StopReason>));
    let s = seen.clone();
    lp.start(move |_l, cancel| {
        let s = s.clone();
        async move {
            *s.lock().unwrap() = Some(cancel.cancelled().await);
            Ok::<_, Error>(())
        }
    })
    .unwrap();
    event(&mut ev, Duration::from_secs(10), "started", started).await;
    follower.start(|_l, _c| async { Ok::<_, Error>(()) }).unwrap();
    wait_count(&admin, "cc/", 2, Duration::from_secs(10)).await;
    c.close().await;
    assert_eq!(lp.wait().await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(follower.wait().await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(seen.lock().unwrap().clone(), Some(StopReason::Cancelled));
    assert_eq!(count(&admin, "cc/").await, 0);
    assert_eq!(lp.start(|_l, _c| async { Ok::<_, Error>(()) }).unwrap_err().kind(), ErrorKind::Closed);
}

/// Every member of a 3-member cluster restarted in turn while three loops contend: works
/// never overlap locally, and the fenced writes etcd acknowledged never go back to an
/// older fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_restarts_never_make_two_leaders() {
    init_tracing();
    let mut etcd = EtcdCluster::start(3).unwrap();
    let admin = client(&etcd).await;
    let running = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<(i64, i64)>::new()));
    let terms = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for i in 0..3 {
        let c = client(&etcd).await;
        let lp = LeaderLoop::new(per_use(&c, 3), "mr", format!("n{i}")).unwrap();
        let (running, overlaps, acked, terms) = (running.clone(), overlaps.clone(), acked.clone(), terms.clone());
        lp.start(move |l, cancel| {
            let (running, overlaps, acked, terms) = (running.clone(), overlaps.clone(), acked.clone(), terms.clone());
            async move {
                if running.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                terms.fetch_add(1, Ordering::SeqCst);
                let token = l.fencing_token();
                while !cancel.is_cancelled() {
                    if let Ok(rev) = l.fence().put("mr-owner", token.to_string()).await {
                        acked.lock().unwrap().push((rev, token));
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Error>(())
            }
        })
        .unwrap();
        loops.push((c, lp));
    }
    let until = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in 0..3 {
        etcd = tokio::task::spawn_blocking(move || {
            etcd.restart(m).unwrap();
            etcd
        })
        .await
        .unwrap();
        // Writes go on after each restart.
        let n = acked.lock().unwrap().len();
        let until = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < n + 5 {
            assert!(Instant::now() < until, "no fenced writes after restarting member {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (_, lp) in &loops {
        lp.close().await;
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two works ran at once");
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    let back = acked.windows(2).filter(|w| w[1].1 < w[0].1).count();
    assert_eq!(back, 0, "an older leader's write was acknowledged after a newer one's");
    println!("{} terms, {} fenced writes acknowledged", terms.load(Ordering::SeqCst), acked.len());
    assert_eq!(count(&admin, "mr/").await, 0);
}

/// The latch: await_leader, its timeout, hand-over on close, loss and re-campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_await_timeout_close_and_loss() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin = client(&etcd).await;
    let (ca, cb) = (client(&etcd).await, client(&etcd).await);
    let a = LeaderLatch::new(per_use(&ca, 30), "latch", "a").unwrap();
    a.start().unwrap();
    let la = a.await_leader(Some(Duration::from_secs(10))).await.unwrap();
    assert!(a.is_leader());
    let b = LeaderLatch::new(per_use(&cb, 30), "latch", "b").unwrap();
    let mut eb = b.events();
    b.start().unwrap();
    let e = b.await_leader(Some(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout);
    assert!(!b.is_leader());
    wait_count(&admin, "latch/", 2, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    a.close().await;
    assert!(!a.is_leader() && a.is_closed());
    let lb = b.await_leader(Some(Duration::from_secs(10))).await.unwrap();
    println!("latch close -> next leader in {:?}", t0.elapsed());
    assert!(lb.fencing_token() > la.fencing_token());
    assert_eq!(a.await_leader(None).await.unwrap_err().kind(), ErrorKind::Closed);
    event(&mut eb, Duration::from_secs(5), "b started", started).await;
    // Loss: revoke B's lease; lost() says why; B campaigns again and leads again.
    let lost = {
        let b = b.clone();
        tokio::spawn(async move { b.lost().await })
    };
    tokio::task::yield_now().await;
    admin.revoke_lease(lb.lease_id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), lost).await.unwrap().unwrap();
    assert!(reason.is_some(), "lost() gave None");
    let e = event(&mut eb, Duration::from_secs(5), "b stopped", stopped).await;
    assert!(matches!(e, LeaderEvent::StoppedLeading { reason: StopReason::Lost(_), .. }), "{e:?}");
    let lb2 = b.await_leader(Some(Duration::from_secs(10))).await.unwrap();
    assert!(lb2.fencing_token() > lb.fencing_token());
    assert_ne!(lb2.lease_id(), lb.lease_id(), "fresh session after a loss");
    // Close: resign, and lost() of the closing term is None.
    let lost = {
        let b = b.clone();
        tokio::spawn(async move { b.lost().await })
    };
    tokio::task::yield_now().await;
    b.close().await;
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), lost).await.unwrap().unwrap(), None);
    assert_eq!(count(&admin, "latch/").await, 0);
    // A latch on a closed client ends waits with Closed.
    let c = client(&etcd).await;
    let l = LeaderLatch::new(per_use(&c, 30), "latch2", "x").unwrap();
    l.start().unwrap();
    l.await_leader(Some(Duration::from_secs(10))).await.unwrap();
    let w = {
        let l = l.clone();
        tokio::spawn(async move {
            // Wait for a leadership that will not come back: the client closes.
            l.lost().await;
            l.await_leader(None).await
        })
    };
    tokio::task::yield_now().await;
    c.close().await;
    let r = tokio::time::timeout(Duration::from_secs(10), w).await.unwrap().unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(count(&admin, "latch2/").await, 0);
}
