//! Leader election against a real etcd: failover, loss signals, observers across
//! compaction and restart, etcdctl interop.

mod common;
use common::{client, init_tracing};

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, PutOptions};
use etcd_recipes::election::{self, Election, LeaderInfo};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ErrorKind, Session};

async fn count(c: &Client, prefix: &str) -> i64 {
    c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

async fn next_leader(o: &mut election::LeaderObserver, within: Duration) -> Option<LeaderInfo> {
    tokio::time::timeout(within, o.next()).await.expect("observer silent").expect("observer ended").expect("observer error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_hands_over_fast() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let (ca, cb) = (client(&etcd).await, client(&etcd).await);
    let (sa, sb) = (Session::new(&ca, 10).await.unwrap(), Session::new(&cb, 10).await.unwrap());
    let ea = Election::new(&sa, "svc").unwrap();
    let eb = Election::new(&sb, "svc").unwrap();
    let mut leader = ea.campaign("a").await.unwrap();
    assert!(leader.is_leader());
    let mut follower = (eb, "b");
    let mut other = (ea, "a");
    let mut samples = Vec::new();
    let mut last_rev = leader.revision();
    for _ in 0..20 {
        let (e, v) = follower.clone();
        let waiting = tokio::spawn(async move {
            let l = e.campaign(v).await;
            (l, Instant::now())
        });
        // Make sure the follower is queued before the leader steps down.
        let until = Instant::now() + Duration::from_secs(20);
        while count(&ca, "svc/").await < 2 {
            assert!(Instant::now() < until, "follower never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t0 = Instant::now();
        leader.resign().await.unwrap();
        assert!(!leader.is_leader());
        let (next, at) = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("no takeover").unwrap();
        let next = next.unwrap();
        samples.push(at - t0);
        assert!(next.is_leader());
        assert!(next.revision() > last_rev, "fencing token did not increase");
        last_rev = next.revision();
        let info = election::current_leader(&ca, "svc").await.unwrap().unwrap();
        assert_eq!((info.key.as_str(), info.value.as_slice()), (next.key(), v.as_bytes()));
        leader = next;
        std::mem::swap(&mut follower, &mut other);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "resign -> next leader: median {median:?}, min {:?}, max {:?} over {} rounds",
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
    // How fast is measured by the benchmark (E1), not asserted here.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leader_is_replaced_and_never_two_leaders_after_loss_signal() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;

    // 1. A crashed leader (a Go-style candidate whose process died: its lease is no longer
    //    renewed). The next candidate leads once that lease has expired, never before.
    let mut raw = c.etcd();
    let ttl = 2;
    let dead = raw.lease_grant(ttl, None).await.unwrap().id();
    raw.put(format!("job/{dead:x}"), "crashed", Some(PutOptions::new().with_lease(dead))).await.unwrap();
    let crashed_at = Instant::now();
    let sb = Session::new(&c, 5).await.unwrap();
    let b = Election::new(&sb, "job").unwrap().campaign("b").await.unwrap();
    let took = crashed_at.elapsed();
    println!("crashed leader (TTL {ttl} s) replaced after {took:?}");
    assert!(!admin.lease_exists(dead).await.unwrap(), "B leads while the crashed leader's lease is alive");

    // 2. B's lease is revoked from outside while C waits. C takes over; B's handle signals
    //    the loss, and once it has, B never says "leader" while C does.
    let sc = Session::new(&c, 5).await.unwrap();
    let ec = Election::new(&sc, "job").unwrap();
    let c_task = tokio::spawn(async move { ec.campaign("c").await });
    let until = Instant::now() + Duration::from_secs(20);
    while count(&c, "job/").await < 2 {
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b = Arc::new(b);
    let b_lost = Arc::new(AtomicBool::new(false));
    let signal = {
        let (b, flag) = (b.clone(), b_lost.clone());
        tokio::spawn(async move {
            let r = b.lost().await;
            flag.store(true, Ordering::SeqCst);
            r
        })
    };
    let revoked_at = Instant::now();
    admin.revoke_lease(sb.lease_id()).await.unwrap();
    let c_lead = tokio::time::timeout(Duration::from_secs(20), c_task).await.expect("C never led").unwrap().unwrap();
    let took = revoked_at.elapsed();
    println!("revoked leader replaced after {took:?}");
    // Sample both handles until B's loss signal has fired and for a while after it:
    // after the signal, B never says "leader" (and never together with C).
    let sample_until = Instant::now() + Duration::from_secs(20);
    let mut violations = 0;
    let mut samples_after_signal = 0;
    while samples_after_signal < 300 && Instant::now() < sample_until {
        let fired = b_lost.load(Ordering::SeqCst);
        let (bl, cl) = (b.is_leader(), c_lead.is_leader());
        if fired {
            samples_after_signal += 1;
            if bl {
                violations += 1;
            }
            if bl && cl {
                violations += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reason = tokio::time::timeout(Duration::from_secs(20), signal).await.expect("B never signalled loss").unwrap();
    let reason = reason.expect("B's session was lost, not closed");
    println!("B's loss signal: {reason}");
    assert!(samples_after_signal > 0);
    assert_eq!(violations, 0, "a handle said leader after its loss signal");
    assert!(c_lead.is_leader());
    assert_eq!(b.proclaim("b2").await.unwrap_err().kind(), ErrorKind::NotLeader);
    // A fenced write by the loser is refused, the winner's goes through.
    assert_eq!(b.fence().put("out", "b").await.unwrap_err().kind(), ErrorKind::Fenced);
    c_lead.fence().put("out", "c").await.unwrap();

    // 3. Deleting the leader key from outside is signalled promptly too.
    c.etcd().delete(c_lead.key(), None).await.unwrap();
    let t = Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(20), c_lead.lost()).await.expect("deletion not signalled").expect("a loss");
    println!("deleted leader key signalled after {:?}: {why}", t.elapsed());
    assert!(!c_lead.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_cancel_expiry_proclaim_and_campaign_twice() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let sa = Session::new(&c, 10).await.unwrap();
    let ea = Election::new(&sa, "e").unwrap();
    let a = ea.campaign("v1").await.unwrap();
    assert_eq!(a.value(), b"v1");
    // Campaigning again from the same session is Go's resume: same key, value updated.
    let again = ea.campaign("v2").await.unwrap();
    assert_eq!((again.key(), again.revision()), (a.key(), a.revision()));
    let info = ea.leader().await.unwrap().unwrap();
    assert_eq!(info.value, b"v2");
    assert_eq!(info.lease_id, sa.lease_id());
    again.resign().await.unwrap(); // same key: resigning one ends both
    let lost = tokio::time::timeout(Duration::from_secs(20), a.lost()).await.expect("a not told").expect("a loss");
    assert!(lost.contains("deleted"), "{lost}");
    let a = ea.campaign("v3").await.unwrap();
    a.proclaim("v4").await.unwrap();
    assert_eq!(election::current_leader(&c, "e").await.unwrap().unwrap().value, b"v4");
    assert_eq!(a.value(), b"v4");

    // A cancelled candidate leaves no key.
    let sb = Session::new(&c, 10).await.unwrap();
    let eb = Election::new(&sb, "e").unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), eb.campaign("b")).await.is_err());
    let until = Instant::now() + Duration::from_secs(20);
    while count(&c, "e/").await != 1 {
        assert!(Instant::now() < until, "cancelled candidate left its key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A candidate whose session expires while waiting gets SessionLost and leaves no key.
    let eb2 = eb.clone();
    let waiting = tokio::spawn(async move { eb2.campaign("b").await });
    let until = Instant::now() + Duration::from_secs(20);
    while count(&c, "e/").await != 2 {
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.revoke_lease(sb.lease_id()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("hung").unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::SessionLost);
    assert_eq!(count(&c, "e/").await, 1);
    assert!(a.is_leader());
    // Dropping the leadership resigns in the background.
    drop(a);
    let until = Instant::now() + Duration::from_secs(20);
    while count(&c, "e/").await != 0 {
        assert!(Instant::now() < until, "dropped leadership kept its key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(election::current_leader(&c, "e").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_whose_key_is_deleted_fails_at_once_and_later_ones_follow_the_leader() {
    // A waiting candidate's key is deleted by someone else (its lease stays alive): the
    // campaign fails with SessionLost while the leader still leads; a candidate queued
    // behind it is not promoted by that delete, only by the leader's resignation.
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let (sa, sb, sc) =
        (Session::new(&c, 10).await.unwrap(), Session::new(&c, 30).await.unwrap(), Session::new(&c, 10).await.unwrap());
    let leader = Election::new(&sa, "kd").unwrap().campaign("a").await.unwrap();
    let eb = Election::new(&sb, "kd").unwrap();
    let b = tokio::spawn(async move { eb.campaign("b").await });
    let bkey = format!("kd/{:x}", sb.lease_id());
    let until = Instant::now() + Duration::from_secs(20);
    while count(&c, "kd/").await != 2 {
        assert!(Instant::now() < until, "b not queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ec = Election::new(&sc, "kd").unwrap();
    let mut cand = tokio::spawn(async move { ec.campaign("c").await });
    while count(&c, "kd/").await != 3 {
        assert!(Instant::now() < until, "c not queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.etcd().delete(bkey.as_str(), None).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), b).await.expect("b not told").unwrap();
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionLost, "{err}");
    assert!(sb.is_alive());
    assert!(leader.is_leader());
    // Bounded check that c is not promoted by b's delete.
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), &mut cand).await {
        panic!("c led while a still led: {:?}", r.unwrap().map(|l| l.revision()));
    }
    let t = Instant::now();
    leader.resign().await.unwrap();
    let lc = tokio::time::timeout(Duration::from_secs(20), cand).await.expect("c never led").unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(lc.revision() > leader.revision());
    assert_eq!(election::current_leader(&c, "kd").await.unwrap().unwrap().value, b"c");
    lc.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_survives_compaction_and_member_restart() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let (sa, sb) = (Session::new(&c, 15).await.unwrap(), Session::new(&c, 15).await.unwrap());
    let (ea, eb) = (Election::new(&sa, "obs").unwrap(), Election::new(&sb, "obs").unwrap());
    let mut o = election::observe(&c, "obs").unwrap();
    assert_eq!(next_leader(&mut o, Duration::from_secs(20)).await, None, "first item: no leader yet");
    let a = ea.campaign("a").await.unwrap();
    let first = next_leader(&mut o, Duration::from_secs(20)).await.unwrap();
    assert_eq!((first.key.as_str(), first.value.as_slice(), first.fencing_token), (a.key(), &b"a"[..], a.revision()));
    a.proclaim("a2").await.unwrap();
    assert_eq!(next_leader(&mut o, Duration::from_secs(20)).await.unwrap().value, b"a2");

    // The observer's watch resumes from a revision that gets compacted away while it is
    // not being polled: it must re-read instead of failing or going silent.
    let eb2 = eb.clone();
    let b_task = tokio::spawn(async move { eb2.campaign("b").await });
    while count(&c, "obs/").await < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Fill the history, resign A (B leads), then compact everything.
    for i in 0..20 {
        c.put("noise", format!("{i}")).await.unwrap();
    }
    a.resign().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(20), b_task).await.unwrap().unwrap().unwrap();
    let mut o2 = election::observe(&c, "obs").unwrap();
    assert_eq!(next_leader(&mut o2, Duration::from_secs(20)).await.unwrap().key, b.key());
    // o2 has read at revision R; its watch (from R+1) is only opened on the next poll.
    b.proclaim("b2").await.unwrap();
    let compacted = etcd.compact().await.unwrap();
    println!("compacted at revision {compacted}");
    let seen = next_leader(&mut o2, Duration::from_secs(20)).await.unwrap();
    assert_eq!((seen.key.as_str(), seen.value.as_slice()), (b.key(), &b"b2"[..]));
    // The first observer (a live watch) saw the handover too, without repeats.
    // (Changes that arrive together may be coalesced: B may show up with "b2" at once.)
    let mut prev = first.clone();
    loop {
        let seen = next_leader(&mut o, Duration::from_secs(20)).await.unwrap();
        assert_eq!(seen.key, b.key());
        assert_ne!(seen, prev, "same leader reported twice in a row");
        if seen.value == b"b2" {
            break;
        }
        prev = seen;
    }

    // Member restart: the watch breaks; the observer reconnects, re-reads, and keeps going.
    let pending = tokio::spawn(async move {
        let x = next_leader(&mut o, Duration::from_secs(20)).await;
        (x, o)
    });
    let mut etcd = etcd;
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart(0).unwrap();
        etcd
    })
    .await
    .unwrap();
    println!("member restarted");
    // Sessions survive a short restart (TTL 15 s); B resigns, A (campaigning again) leads.
    let ea2 = ea.clone();
    let a_task = tokio::spawn(async move { ea2.campaign("a3").await });
    let until = Instant::now() + Duration::from_secs(10);
    while count(&c, "obs/").await < 2 {
        assert!(Instant::now() < until, "A never queued after restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.resign().await.unwrap();
    let a3 = tokio::time::timeout(Duration::from_secs(20), a_task).await.unwrap().unwrap().unwrap();
    let (seen, mut o) = pending.await.unwrap();
    let seen = seen.unwrap();
    assert_eq!((seen.key.as_str(), seen.value.as_slice()), (a3.key(), &b"a3"[..]), "observer after restart");
    a3.resign().await.unwrap();
    assert_eq!(next_leader(&mut o, Duration::from_secs(20)).await, None);
    drop(etcd);
}

fn term(child: &mut Child) {
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

fn lines_of(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("etcdctl printed nothing").expect("etcdctl exited")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_as_candidate_and_observer() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;

    // etcdctl campaigns first and leads; it prints its key and value.
    let mut cand = etcd.etcdctl().args(["elect", "ctl", "from-etcdctl"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = lines_of(&mut cand);
    let key = line(&mut out).await;
    assert!(key.starts_with("ctl/"), "{key:?}");
    assert_eq!(line(&mut out).await, "from-etcdctl");
    let info = election::current_leader(&c, "ctl").await.unwrap().unwrap();
    assert_eq!((info.key.as_str(), info.value.as_slice()), (key.as_str(), &b"from-etcdctl"[..]));

    // Our candidate waits behind etcdctl, and leads once etcdctl resigns (SIGTERM).
    let s = Session::new(&c, 10).await.unwrap();
    let e = Election::new(&s, "ctl").unwrap();
    let e2 = e.clone();
    let ours = tokio::spawn(async move { e2.campaign("from-rust").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ours.is_finished(), "we lead while etcdctl does");
    term(&mut cand);
    let lead = tokio::time::timeout(Duration::from_secs(20), ours).await.expect("no takeover").unwrap().unwrap();

    // etcdctl as an observer sees us, then our proclaimed value.
    let mut obs = etcd.etcdctl().args(["elect", "-l", "ctl"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = lines_of(&mut obs);
    assert_eq!(line(&mut out).await, lead.key());
    assert_eq!(line(&mut out).await, "from-rust");
    lead.proclaim("proclaimed").await.unwrap();
    assert_eq!(line(&mut out).await, lead.key());
    assert_eq!(line(&mut out).await, "proclaimed");
    term(&mut obs);

    // And an etcdctl candidate waits behind us (prints nothing) until we resign.
    let mut cand = etcd.etcdctl().args(["elect", "ctl", "second"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = lines_of(&mut cand);
    assert!(tokio::time::timeout(Duration::from_millis(1500), out.recv()).await.is_err(), "etcdctl leads while we do");
    let mut o = e.observe();
    assert_eq!(next_leader(&mut o, Duration::from_secs(20)).await.unwrap().key, lead.key());
    lead.resign().await.unwrap();
    assert!(line(&mut out).await.starts_with("ctl/"));
    assert_eq!(line(&mut out).await, "second");
    assert_eq!(next_leader(&mut o, Duration::from_secs(20)).await.unwrap().value, b"second");
    term(&mut cand);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_election_names() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 10).await.unwrap();
    let long = "x".repeat(4097);
    for bad in ["", long.as_str(), "a\0", "a/"] {
        assert_eq!(Election::new(&s, bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert_eq!(election::current_leader(&c, bad).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(election::observe(&c, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    // Nested names: candidates of "p/q" are seen by election "p" (documented, as in Go).
    let inner = Election::new(&s, "p/q").unwrap().campaign("inner").await.unwrap();
    let seen = election::current_leader(&c, "p").await.unwrap().unwrap();
    assert_eq!(seen.key, inner.key());
    assert_eq!(election::current_leader(&c, "p-q").await.unwrap(), None);
}
