//! Lifetimes owned by core: per-use sessions, timeouts with one "gave up waiting" kind,
//! loss signals that fire on a loss only, `Client::close()` ending everything made from
//! the client, and the process-wide shutdown.

mod common;
use common::{client, init_tracing};

use std::time::Duration;

use etcd_client::GetOptions;
use etcd_recipes::config::{ConfigOptions, ConfigView};
use etcd_recipes::election::Election;
use etcd_recipes::lock::Lock;
use etcd_recipes::registry::{RegisterOptions, Registration, ServiceView};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ErrorKind, Session, SessionSource};

/// Keys under `prefix` (raw, not namespaced).
async fn keys(c: &Client, prefix: &str) -> Vec<String> {
    let r = c.etcd().get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    r.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

/// Lease ids etcd knows.
async fn leases(c: &Client) -> Vec<i64> {
    let r = c.etcd().leases().await.unwrap();
    r.leases().iter().map(|l| l.id()).collect()
}

/// Generous bound on an awaited event; it only limits how long a failure takes.
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_use_sessions_are_made_and_closed_by_the_recipe() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let lock = Lock::new(SessionSource::per_use(&c, 30).unwrap(), "pu/lock").unwrap();
    let g = lock.acquire().await.unwrap();
    assert!(g.lease_id() != 0);
    assert!(leases(&admin).await.contains(&g.lease_id()), "the guard's own lease exists");
    g.release().await.unwrap();
    assert_eq!(g.lost().await, None, "a release is not a loss");
    assert!(!leases(&admin).await.contains(&g.lease_id()), "release revoked the lock's own session");
    assert!(keys(&admin, "pu/lock/").await.is_empty());

    // A timed-out wait closes the session it made, and leaves no key.
    let holder = lock.acquire().await.unwrap();
    let before = leases(&admin).await.len();
    let err = lock.acquire_within(Some(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    assert_eq!(keys(&admin, "pu/lock/").await, vec![holder.key().to_string()]);
    assert_eq!(leases(&admin).await.len(), before, "the waiter's session was revoked");

    // A campaign timeout is the same kind, and leaves nothing either.
    let election = Election::new(SessionSource::per_use(&c, 30).unwrap(), "pu/elect").unwrap();
    let leader = election.campaign("a").await.unwrap();
    let err = election.clone().with_timeout(Some(Duration::from_millis(200))).campaign("b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    assert_eq!(keys(&admin, "pu/elect/").await, vec![leader.key().to_string()]);
    assert_eq!(leader.fencing_token(), leader.revision());
    leader.resign().await.unwrap();
    assert_eq!(leader.lost().await, None, "resigning is not a loss");
    assert!(!leases(&admin).await.contains(&leader.lease_id()));
    holder.release().await.unwrap();

    // Bad TTLs are refused at the boundary.
    for ttl in [0, -1, i64::MAX] {
        assert_eq!(SessionSource::per_use(&c, ttl).unwrap_err().kind(), ErrorKind::InvalidArgument, "ttl {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_signals_fire_on_a_loss_only() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let s = Session::new(&c, 30).await.unwrap();
    let g = s.lock("lost/lock").unwrap().acquire().await.unwrap();
    let l = s.election("lost/elect").unwrap().campaign("v").await.unwrap();
    admin.revoke_lease(s.lease_id()).await.unwrap();
    let why = tokio::time::timeout(BOUND, g.lost()).await.expect("guard not told").expect("a loss, not None");
    assert!(why.contains("revoked") || why.contains("expired") || why.contains("not found"), "{why}");
    let why = tokio::time::timeout(BOUND, l.lost()).await.expect("leadership not told").expect("a loss, not None");
    assert!(!why.is_empty());
    assert!(tokio::time::timeout(BOUND, s.lost()).await.unwrap().is_some());

    // Closing one's own session is a normal end for everything on it.
    let s2 = Session::new(&c, 30).await.unwrap();
    let g2 = s2.lock("lost/lock2").unwrap().acquire().await.unwrap();
    let l2 = s2.election("lost/elect2").unwrap().campaign("v").await.unwrap();
    s2.close().await.unwrap();
    assert_eq!(s2.lost().await, None);
    assert_eq!(g2.lost().await, None);
    assert_eq!(tokio::time::timeout(BOUND, l2.lost()).await.unwrap(), None);
    g2.release().await.unwrap(); // harmless after the session is gone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_ends_everything_made_from_it() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let admin = client(&etcd).await;
    let s = Session::new(&c, 60).await.unwrap();
    let held = s.lock("cc/lock").unwrap().acquire().await.unwrap();
    let other = Lock::new(SessionSource::per_use(&c, 60).unwrap(), "cc/lock").unwrap();
    let waiting = tokio::spawn(async move { other.acquire().await.map(|_| ()) });
    let lead = Election::new(SessionSource::per_use(&c, 60).unwrap(), "cc/elect").unwrap().campaign("x").await.unwrap();
    let reg = Registration::register(&c, RegisterOptions::new("cc/svc", "i1", "h:1").ttl(60)).await.unwrap();
    let view = ServiceView::start(&c, "cc/svc").await.unwrap();
    let mut updates = view.updates();
    assert_eq!(updates.next().await.map(|v| v.len()), Some(1), "the current set comes first");
    let config = ConfigView::prefix(&c, "cc/", ConfigOptions::default()).await.unwrap();
    let mut changes = config.changes();
    let mut observer = etcd_recipes::election::observe(&c, "cc/elect").unwrap();
    assert!(observer.next().await.unwrap().unwrap().is_some());
    // The waiter is queued (two keys under the lock).
    let until = tokio::time::Instant::now() + BOUND;
    while keys(&admin, "cc/lock/").await.len() < 2 {
        assert!(tokio::time::Instant::now() < until, "waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!leases(&admin).await.is_empty());

    c.close().await;
    assert!(c.is_closed());
    let waited = tokio::time::timeout(BOUND, waiting).await.expect("wait not ended").unwrap();
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::Closed);
    assert!(keys(&admin, "cc/").await.is_empty(), "keys left: {:?}", keys(&admin, "cc/").await.len());
    assert!(leases(&admin).await.is_empty(), "leases left: {}", leases(&admin).await.len());
    assert_eq!(held.lost().await, None);
    assert_eq!(lead.lost().await, None);
    assert_eq!(s.lost().await, None);
    assert_eq!(reg.state(), etcd_recipes::registry::RegistrationState::Closed);
    assert!(tokio::time::timeout(BOUND, updates.next()).await.unwrap().is_none(), "updates ended");
    assert!(tokio::time::timeout(BOUND, changes.next()).await.unwrap().is_none(), "config changes ended");
    assert!(tokio::time::timeout(BOUND, observer.next()).await.unwrap().is_none(), "observer ended");
    // New work is refused.
    assert_eq!(c.put("k", "v").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(Session::new(&c, 10).await.unwrap_err().kind(), ErrorKind::Closed);
    let lock = Lock::new(SessionSource::per_use(&c, 10).unwrap(), "cc/x").unwrap();
    assert_eq!(lock.acquire().await.unwrap_err().kind(), ErrorKind::Closed);
    held.release().await.unwrap();
    lead.resign().await.unwrap();
    reg.close().await.unwrap();
    c.close().await; // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_and_revokes_dropped_sessions() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let admin_opts = etcd_recipes::ClientOptions::new(etcd.endpoints());
    let c1 = client(&etcd).await;
    let c2 = client(&etcd).await;
    let _s1 = Session::new(&c1, 60).await.unwrap();
    // Dropped: its revoke runs in the background; shutdown makes sure it happens.
    drop(Session::new(&c1, 60).await.unwrap());
    let _g = Lock::new(SessionSource::per_use(&c2, 60).unwrap(), "sd/lock").unwrap().acquire().await.unwrap();
    let _r = Registration::register(&c2, RegisterOptions::new("sd/svc", "i", "h:1").ttl(60)).await.unwrap();
    assert!(leases(&c1).await.len() >= 3);
    let report = etcd_recipes::shutdown(Duration::from_secs(5)).await;
    assert!(report.complete, "{report:?}");
    assert!(report.clients >= 2, "{report:?}");
    assert!(c1.is_closed() && c2.is_closed());
    // A fresh client (made after shutdown, as a test would) sees nothing left.
    let admin = Client::connect(admin_opts).await.unwrap();
    assert!(keys(&admin, "sd/").await.is_empty());
    assert!(leases(&admin).await.is_empty(), "leases left: {}", leases(&admin).await.len());
}
