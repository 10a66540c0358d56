//! Registration on a session, readiness, in-place updates, pickers, the down-instance
//! policy and the balanced gRPC channel, against a real etcd.

mod common;
use common::{client, init_tracing};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_recipes::registry::{
    DownInstancePolicy, Instance, InstanceEvent, Picker, Readiness, RegisterOptions, Registration, RegistrationState,
    ServiceView, ViewOptions,
};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{ErrorKind, Session};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(20);

/// Poll `f` every 20 ms until it holds; fail with `what` after `WITHIN`.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the view holds exactly these ids.
async fn view_has(view: &ServiceView, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let got = || view.instances().into_iter().map(|i| i.id).collect::<Vec<_>>();
    until(&format!("view holds {want:?}"), || got() == want).await;
}

async fn register(c: &etcd_recipes::Client, svc: &str, id: &str, metadata: serde_json::Value) -> Registration {
    Registration::register(c, RegisterOptions::new(svc, id, format!("{id}.local:80")).metadata(metadata).ttl(30))
        .await
        .expect("register")
}

fn ids(v: &[Instance]) -> Vec<&str> {
    v.iter().map(|i| i.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_sticky_and_zone_preference() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let _a = register(&c, "svc", "a", json!({"zone": "z1"})).await;
    let b = register(&c, "svc", "b", json!({"zone": "z1"})).await;
    let _c = register(&c, "svc", "c", json!({"zone": "z2"})).await;

    let rr = ServiceView::start(&c, "svc").await.unwrap();
    view_has(&rr, &["a", "b", "c"]).await;
    let order: Vec<String> = (0..6).map(|_| rr.pick().unwrap().id).collect();
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"], "round robin goes in id order");

    let sticky = ServiceView::start_with(&c, "svc", ViewOptions::new().picker(Picker::Sticky)).await.unwrap();
    let first = sticky.pick().unwrap().id;
    assert_eq!(first, "a");
    assert!((0..20).all(|_| sticky.pick().unwrap().id == first), "sticky holds while the instance stays");
    let zoned = ServiceView::start_with(&c, "svc", ViewOptions::new().prefer_zone("z1")).await.unwrap();
    let z: Vec<String> = (0..4).map(|_| zoned.pick().unwrap().id).collect();
    assert_eq!(z, ["a", "b", "a", "b"], "only the local zone while it has instances");

    _a.close().await.unwrap();
    view_has(&sticky, &["b", "c"]).await;
    let next = sticky.pick().unwrap().id;
    assert_ne!(next, "a");
    assert!((0..20).all(|_| sticky.pick().unwrap().id == next), "sticky holds its new choice");

    view_has(&zoned, &["b", "c"]).await;
    assert!((0..4).all(|_| zoned.pick().unwrap().id == "b"));
    b.close().await.unwrap();
    view_has(&zoned, &["c"]).await;
    assert_eq!(zoned.pick().unwrap().id, "c", "the local zone emptied: the rest");

    // A per-call filter and a view filter.
    assert_eq!(rr.pick_where(|i| i.id != "c"), None);
    let filtered = ServiceView::start_with(&c, "svc", ViewOptions::new().filter(|i| i.id == "nobody")).await.unwrap();
    assert_eq!(filtered.pick(), None);
    assert!(filtered.available().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_picks_follow_the_weights() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let _r: Vec<Registration> = vec![
        register(&c, "svc", "w1", json!({"weight": 1})).await,
        register(&c, "svc", "w3", json!({"weight": 3})).await,
        register(&c, "svc", "w0", json!({"weight": 0})).await,
        register(&c, "svc", "wd", json!(null)).await, // no weight: 1
    ];
    let view = ServiceView::start_with(&c, "svc", ViewOptions::new().picker(Picker::Weighted)).await.unwrap();
    view_has(&view, &["w0", "w1", "w3", "wd"]).await;
    const N: usize = 20_000;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..N {
        *counts.entry(view.pick().unwrap().id).or_default() += 1;
    }
    assert_eq!(counts.get("w0"), None, "weight 0 is never picked");
    // Expected shares 1/5, 3/5, 1/5; allow 5 standard deviations of a binomial count.
    for (id, share) in [("w1", 0.2), ("w3", 0.6), ("wd", 0.2)] {
        let got = *counts.get(id).unwrap_or(&0) as f64;
        let mean = N as f64 * share;
        let tol = 5.0 * (N as f64 * share * (1.0 - share)).sqrt();
        assert!((got - mean).abs() <= tol, "{id}: {got} picks, expected {mean} ± {tol:.0} (counts {counts:?})");
    }
    // A negative weight is refused at registration.
    let bad = Registration::register(&c, RegisterOptions::new("svc", "neg", "h:1").metadata(json!({"weight": -1}))).await;
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let bad = ServiceView::start_with(&c, "svc", ViewOptions::new().down_policy(DownInstancePolicy { period: Duration::from_secs(1), threshold: 0 })).await;
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noted_errors_skip_an_instance_for_the_policy_period() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let _a = register(&c, "svc", "a", json!(null)).await;
    let _b = register(&c, "svc", "b", json!(null)).await;
    let policy = DownInstancePolicy::new(Duration::from_millis(400), 2).unwrap();
    let view = ServiceView::start_with(&c, "svc", ViewOptions::new().down_policy(policy)).await.unwrap();
    view_has(&view, &["a", "b"]).await;
    view.note_error("a");
    assert!(!view.is_down("a"), "one error is below the threshold of 2");
    view.note_error("a");
    let marked = Instant::now();
    assert!(view.is_down("a"));
    assert_eq!(ids(&view.available()), ["b"]);
    assert!((0..10).all(|_| view.pick().unwrap().id == "b"), "a down instance is skipped");
    // Back once the period has passed (polled, bounded).
    until("a back after the period", || !view.is_down("a")).await;
    assert!(marked.elapsed() >= Duration::from_millis(300), "back too early: {:?}", marked.elapsed());
    assert_eq!(ids(&view.available()), ["a", "b"]);
    // Every instance down: nothing to pick (as Curator's provider).
    for id in ["a", "a", "b", "b"] {
        view.note_error(id);
    }
    assert_eq!(view.pick(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_instances_are_not_picked_and_updates_are_in_place() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let operator = client(&etcd).await;
    let a = register(&c, "svc", "a", json!({"v": 1})).await;
    let _b = register(&c, "svc", "b", json!(null)).await;
    let view = ServiceView::start(&c, "svc").await.unwrap();
    let all = ServiceView::start_with(&c, "svc", ViewOptions::new().include_not_ready(true)).await.unwrap();
    view_has(&view, &["a", "b"]).await;
    let mut events = view.events();
    let before = operator.etcd().get(a.key(), None).await.unwrap().kvs()[0].clone();

    a.set_readiness(Readiness::Draining).await.unwrap();
    assert_eq!(a.readiness(), Readiness::Draining);
    let (ev, _) = tokio::time::timeout(WITHIN, events.next()).await.expect("an event").unwrap().unwrap();
    assert!(matches!(&ev, InstanceEvent::Updated(i) if i.id == "a" && i.readiness() == Readiness::Draining), "{ev:?}");
    assert_eq!(ids(&view.available()), ["b"]);
    assert!((0..4).all(|_| view.pick().unwrap().id == "b"));
    until("the other view sees it", || all.instances().iter().any(|i| i.readiness() == Readiness::Draining)).await;
    assert_eq!(ids(&all.available()), ["a", "b"], "include_not_ready picks draining instances too");

    // Still Go's endpoint value, readiness inside Metadata.
    let after = operator.etcd().get(a.key(), None).await.unwrap().kvs()[0].clone();
    assert_eq!(after.value_str().unwrap(), r#"{"Op":0,"Addr":"a.local:80","Metadata":{"readiness":"draining","v":1}}"#);
    a.update_metadata(json!({"v": 2})).await.unwrap();
    let (ev, _) = tokio::time::timeout(WITHIN, events.next()).await.expect("an event").unwrap().unwrap();
    assert!(matches!(&ev, InstanceEvent::Updated(i) if i.metadata == json!({"v": 2, "readiness": "draining"})), "{ev:?}");
    a.set_readiness(Readiness::Ready).await.unwrap();
    let (ev, _) = tokio::time::timeout(WITHIN, events.next()).await.expect("an event").unwrap().unwrap();
    assert!(matches!(&ev, InstanceEvent::Updated(i) if i.metadata == json!({"v": 2})), "{ev:?}");
    let last = operator.etcd().get(a.key(), None).await.unwrap().kvs()[0].clone();
    assert_eq!(last.create_revision(), before.create_revision(), "updated in place, never deleted");
    assert_eq!(last.lease(), before.lease(), "same lease");
    assert_eq!(last.version(), before.version() + 3, "three puts");
    assert_eq!(last.value_str().unwrap(), r#"{"Op":0,"Addr":"a.local:80","Metadata":{"v":2}}"#);
    assert_eq!(ids(&view.available()), ["a", "b"]);

    // Registered not ready: listed, not picked.
    let w = Registration::register(&c, RegisterOptions::new("svc", "w", "w:1").readiness(Readiness::NotReady)).await.unwrap();
    view_has(&view, &["a", "b", "w"]).await;
    assert_eq!(ids(&view.available()), ["a", "b"]);
    w.set_readiness(Readiness::Ready).await.unwrap();
    until("w picked once ready", || view.available().len() == 3).await;
    let text = Registration::register(&c, RegisterOptions::new("svc", "t", "t:1").metadata(json!("text")).readiness(Readiness::Draining)).await;
    assert_eq!(text.unwrap_err().kind(), ErrorKind::InvalidArgument, "readiness needs object metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_on_a_shared_session_lives_and_dies_with_it() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let operator = client(&etcd).await;
    let session = Session::new(&c, 30).await.unwrap();
    let r1 = session.register(RegisterOptions::new("svc", "a", "a:1")).await.unwrap();
    let r2 = Registration::register_on(&session, RegisterOptions::new("svc", "b", "b:1")).await.unwrap();
    assert_eq!(r1.lease_id(), session.lease_id());
    assert_eq!(operator.etcd().get(r2.key(), None).await.unwrap().kvs()[0].lease(), session.lease_id());
    let view = ServiceView::start(&operator, "svc").await.unwrap();
    view_has(&view, &["a", "b"]).await;

    // Closing one registration deletes its key and leaves the session open.
    r2.close().await.unwrap();
    view_has(&view, &["a"]).await;
    assert!(session.is_alive());
    assert!(operator.lease_exists(session.lease_id()).await.unwrap());

    // Revoking the session removes the key; the registration is lost and stays gone.
    let mut st = r1.watch_state();
    operator.revoke_lease(session.lease_id()).await.unwrap();
    view_has(&view, &[]).await;
    let s = tokio::time::timeout(WITHIN, st.wait_for(|s| matches!(s, RegistrationState::Lost { .. }))).await.expect("lost in time").unwrap().clone();
    assert!(matches!(s, RegistrationState::Lost { .. }), "{s:?}");
    assert_eq!(r1.reregistrations(), 0, "never heals on a session it does not own");
    assert_eq!(r1.update_metadata(json!(1)).await.unwrap_err().kind(), ErrorKind::SessionLost);
    let dead = Registration::register_on(&session, RegisterOptions::new("svc", "c", "c:1")).await;
    assert_eq!(dead.unwrap_err().kind(), ErrorKind::SessionLost);
    r1.close().await.unwrap();

    // A session closed by its owner closes the registrations on it.
    let s2 = Session::new(&c, 30).await.unwrap();
    let r3 = s2.register(RegisterOptions::new("svc", "d", "d:1")).await.unwrap();
    view_has(&view, &["d"]).await;
    let mut st = r3.watch_state();
    s2.close().await.unwrap();
    tokio::time::timeout(WITHIN, st.wait_for(|s| *s == RegistrationState::Closed)).await.expect("closed in time").unwrap();
    view_has(&view, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_self_healing_a_lost_registration_stays_gone() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let operator = client(&etcd).await;
    let view = ServiceView::start(&operator, "svc").await.unwrap();
    let reg = Registration::register(&c, RegisterOptions::new("svc", "a", "a:1").self_heal(false)).await.unwrap();
    view_has(&view, &["a"]).await;
    let mut st = reg.watch_state();
    operator.revoke_lease(reg.lease_id()).await.unwrap();
    tokio::time::timeout(WITHIN, st.wait_for(|s| matches!(s, RegistrationState::Lost { .. }))).await.expect("lost in time").unwrap();
    view_has(&view, &[]).await;
    assert_eq!(reg.reregistrations(), 0);
    // It stays gone: a healing registration would be back by now (see the registry tests);
    // here the state stays Lost and the key absent after another round trip.
    let (list, _) = etcd_recipes::registry::list_instances(&operator, "svc").await.unwrap();
    assert!(list.is_empty());
    assert!(matches!(reg.state(), RegistrationState::Lost { .. }));

    // A key deleted from outside is not put back either.
    let reg2 = Registration::register(&c, RegisterOptions::new("svc", "b", "b:1").self_heal(false)).await.unwrap();
    let lease2 = reg2.lease_id();
    view_has(&view, &["b"]).await;
    let mut st = reg2.watch_state();
    operator.delete("svc/b").await.unwrap();
    tokio::time::timeout(WITHIN, st.wait_for(|s| matches!(s, RegistrationState::Lost { .. }))).await.expect("lost in time").unwrap();
    let deadline = Instant::now() + WITHIN;
    while operator.lease_exists(lease2).await.unwrap() {
        assert!(Instant::now() < deadline, "lease of a lost registration not revoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(view.instances().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_channel_follows_the_available_instances() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let a = register(&c, "svc", "a", json!(null)).await;
    let view = ServiceView::start(&c, "svc").await.unwrap();
    let ch = view.grpc_channel().unwrap();
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    let want = pairs(&[("a", "a.local:80")]);
    tokio::time::timeout(WITHIN, ch.wait_for(|e| e == want.as_slice())).await.expect("a in the channel").unwrap();
    let b = register(&c, "svc", "b", json!(null)).await;
    let want = pairs(&[("a", "a.local:80"), ("b", "b.local:80")]);
    tokio::time::timeout(WITHIN, ch.wait_for(|e| e == want.as_slice())).await.expect("b joins").unwrap();
    a.set_readiness(Readiness::Draining).await.unwrap();
    let want = pairs(&[("b", "b.local:80")]);
    tokio::time::timeout(WITHIN, ch.wait_for(|e| e == want.as_slice())).await.expect("a drains").unwrap();
    b.close().await.unwrap();
    tokio::time::timeout(WITHIN, ch.wait_for(|e| e.is_empty())).await.expect("b leaves").unwrap();
    view.close();
    let closed = tokio::time::timeout(WITHIN, ch.wait_for(|_| false)).await.expect("ends with the view");
    assert_eq!(closed.unwrap_err().kind(), ErrorKind::Closed);
}
