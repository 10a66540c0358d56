//! Service registry and discovery against a real etcd started by the testing harness.

mod common;
use common::{client, etcd_gauge, init_tracing, median, member_gauge};

use std::time::{Duration, Instant};

use etcd_recipes::registry::{
    list_instances, Instance, InstanceEvent, InstanceEvents, RegisterOptions, Registration, RegistrationState,
    ServiceView,
};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::ErrorKind;
use serde_json::json;

/// Wait for the first event matching `f`, at most `within`.
async fn wait_event(events: &mut InstanceEvents, within: Duration, f: impl Fn(&InstanceEvent) -> bool) -> (InstanceEvent, i64) {
    tokio::time::timeout(within, async {
        loop {
            let (e, rev) = events.next().await.expect("event stream ended").expect("event error");
            if f(&e) {
                return (e, rev);
            }
        }
    })
    .await
    .expect("expected event did not arrive in time")
}

fn is_up(id: &str) -> impl Fn(&InstanceEvent) -> bool + '_ {
    move |e| matches!(e, InstanceEvent::Up(i) if i.id == id)
}
fn is_down(id: &str) -> impl Fn(&InstanceEvent) -> bool + '_ {
    move |e| matches!(e, InstanceEvent::Down { id: d } if d == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_appear_and_disappear_in_another_clients_view() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let watcher = client(&etcd).await;
    let view = ServiceView::start(&watcher, "svc").await.unwrap();
    assert!(view.instances().is_empty());
    let mut events = view.events();
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let id = format!("i-{i}");
        let t = Instant::now();
        let reg = Registration::register(&registrar, RegisterOptions::new("svc", &id, format!("10.0.0.{i}:80")).ttl(5))
            .await
            .unwrap();
        let (e, rev) = wait_event(&mut events, Duration::from_secs(20), is_up(&id)).await;
        ups.push(t.elapsed());
        assert_eq!(e, InstanceEvent::Up(reg.instance()));
        assert!(rev >= view.revision() || rev > 0);
        assert!(view.instances().iter().any(|x| x.id == id), "not in instances() after its event");
        let t = Instant::now();
        reg.close().await.unwrap();
        wait_event(&mut events, Duration::from_secs(20), is_down(&id)).await;
        downs.push(t.elapsed());
        assert!(view.instances().is_empty());
        assert_eq!(reg.state(), RegistrationState::Closed);
        assert!(!registrar.lease_exists(reg.lease_id()).await.unwrap(), "close must revoke the lease");
    }
    let (up, down) = (median(ups.clone()), median(downs.clone()));
    println!("registry: appear median {:.2} ms (max {:?}), disappear median {:.2} ms (max {:?}) over 30",
        up.as_secs_f64() * 1e3, ups.iter().max().unwrap(), down.as_secs_f64() * 1e3, downs.iter().max().unwrap());
    // How fast is measured by the benchmark (D1), not asserted here.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_by_itself_after_its_lease_is_revoked_from_outside() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let operator = client(&etcd).await;
    // TTL 10: the keep-alive alone would notice only after ~3 s; healing must be faster.
    let reg = Registration::register(&registrar, RegisterOptions::new("svc", "a", "h:1").metadata(json!({"v": 1})).ttl(10))
        .await
        .unwrap();
    let view = ServiceView::start(&operator, "svc").await.unwrap();
    let mut events = view.events();
    let old_lease = reg.lease_id();
    assert_eq!(reg.state(), RegistrationState::Registered { lease_id: old_lease });
    let t = Instant::now();
    operator.revoke_lease(old_lease).await.unwrap();
    wait_event(&mut events, Duration::from_secs(20), is_down("a")).await;
    let (e, _) = wait_event(&mut events, Duration::from_secs(20), is_up("a")).await;
    let healed = t.elapsed();
    println!("registry: reappeared {:.1} ms after its lease was revoked", healed.as_secs_f64() * 1e3);
    // The keep-alive would notice the loss only at the next renewal (TTL/3 = 3.3 s); healing
    // before that proves the registration watched its own key.
    assert!(healed < Duration::from_secs(3), "healed after {healed:?}: not through the key watch");
    assert_eq!(e, InstanceEvent::Up(Instance { id: "a".into(), addr: "h:1".into(), metadata: json!({"v": 1}) }));
    // The state settles on the new lease.
    let mut st = reg.watch_state();
    let st = tokio::time::timeout(Duration::from_secs(20), st.wait_for(|s| matches!(s, RegistrationState::Registered { lease_id } if *lease_id != old_lease)))
        .await
        .expect("state not Registered with a new lease")
        .unwrap()
        .clone();
    let RegistrationState::Registered { lease_id } = st else { unreachable!() };
    assert_eq!(reg.lease_id(), lease_id);
    assert_eq!(reg.reregistrations(), 1);
    assert!(operator.lease_exists(lease_id).await.unwrap());
    let raw = operator.etcd().get(reg.key(), None).await.unwrap();
    assert_eq!(raw.kvs()[0].lease(), lease_id, "key must be attached to the new lease");
    reg.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_deleted_from_outside_is_put_back_on_the_same_lease() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let operator = client(&etcd).await;
    let reg = Registration::register(&registrar, RegisterOptions::new("svc", "a", "h:1")).await.unwrap();
    let lease = reg.lease_id();
    assert_eq!(operator.delete("svc/a").await.unwrap(), 1);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (list, _) = list_instances(&operator, "svc").await.unwrap();
        if list.len() == 1 {
            break;
        }
        assert!(Instant::now() < until, "key not put back within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reg.lease_id(), lease);
    assert_eq!(reg.reregistrations(), 0);
    assert_eq!(operator.etcd().get(reg.key(), None).await.unwrap().kvs()[0].lease(), lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_by_itself_after_etcd_is_wiped() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let watcher = client(&etcd).await;
    let ttl = 2;
    let reg = Registration::register(&registrar, RegisterOptions::new("svc", "a", "h:1").ttl(ttl)).await.unwrap();
    let view = ServiceView::start(&watcher, "svc").await.unwrap();
    assert_eq!(view.instances().len(), 1);
    let t0 = Instant::now();
    tokio::task::block_in_place(|| etcd.restart_wiped()).unwrap();
    let back = Instant::now();
    let fresh = client(&etcd).await;
    let limit = Duration::from_secs(20);
    loop {
        let (list, _) = list_instances(&fresh, "svc").await.unwrap();
        if list.len() == 1 && view.instances().len() == 1 && matches!(reg.state(), RegistrationState::Registered { .. }) {
            break;
        }
        assert!(back.elapsed() < limit, "not back within {limit:?}: etcd has {} instances, the view {}, state {:?}", list.len(), view.instances().len(), reg.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "registry: reappeared {:.0} ms after the wiped etcd came back ({:.0} ms after the wipe began), TTL {ttl} s",
        back.elapsed().as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    // At least one self-healing; two are possible when the key's deletion and the lease's
    // loss are noticed separately during the restart.
    assert!(reg.reregistrations() >= 1, "healed without re-registering?");
    assert!(fresh.lease_exists(reg.lease_id()).await.unwrap());
    reg.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_metadata_keeps_the_lease() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let reg = Registration::register(&c, RegisterOptions::new("svc", "a", "h:1")).await.unwrap();
    let view = ServiceView::start(&c, "svc").await.unwrap();
    let mut events = view.events();
    let lease = reg.lease_id();
    reg.update_metadata(json!({"weight": 5, "zone": "eu"})).await.unwrap();
    let (e, _) = wait_event(&mut events, Duration::from_secs(20), |e| matches!(e, InstanceEvent::Updated(_))).await;
    assert_eq!(e, InstanceEvent::Updated(Instance { id: "a".into(), addr: "h:1".into(), metadata: json!({"weight": 5, "zone": "eu"}) }));
    assert_eq!(reg.lease_id(), lease);
    assert_eq!(c.etcd().get(reg.key(), None).await.unwrap().kvs()[0].lease(), lease);
    assert_eq!(reg.instance().metadata, json!({"weight": 5, "zone": "eu"}));
    reg.close().await.unwrap();
    reg.close().await.unwrap(); // idempotent
    assert_eq!(reg.update_metadata(json!(1)).await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_interoperates_with_go_naming_endpoints() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let reg = Registration::register(&c, RegisterOptions::new("svc", "ours", "10.1.2.3:8080").metadata(json!({"version": "1.2"})))
        .await
        .unwrap();
    let plain = Registration::register(&c, RegisterOptions::new("svc", "plain", "10.1.2.4:8080")).await.unwrap();
    assert_eq!(reg.key(), "svc/ours");
    // Raw JSON exactly as Go writes naming.Update / endpoints: keys Op, Addr, Metadata.
    let raw = c.get("svc/ours").await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&raw).unwrap(), r#"{"Op":0,"Addr":"10.1.2.3:8080","Metadata":{"version":"1.2"}}"#);
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);
    assert_eq!((v["Op"].as_i64(), v["Addr"].as_str()), (Some(0), Some("10.1.2.3:8080")));
    let raw = c.get("svc/plain").await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&raw).unwrap(), r#"{"Op":0,"Addr":"10.1.2.4:8080","Metadata":null}"#);

    let view = ServiceView::start(&c, "svc").await.unwrap();
    let mut events = view.events();
    // Instances put by hand with etcdctl, in both Go formats (3.4 naming.Update, 3.5 endpoints.Endpoint).
    let out = etcd.etcdctl().args(["put", "svc/x", r#"{"Op":0,"Addr":"1.2.3.4:80"}"#]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (e, _) = wait_event(&mut events, Duration::from_secs(20), is_up("x")).await;
    assert_eq!(e, InstanceEvent::Up(Instance { id: "x".into(), addr: "1.2.3.4:80".into(), metadata: serde_json::Value::Null }));
    let out = etcd.etcdctl().args(["put", "svc/y", r#"{"Addr":"1.2.3.5:80","Metadata":{"a":1}}"#]).output().unwrap();
    assert!(out.status.success());
    wait_event(&mut events, Duration::from_secs(20), is_up("y")).await;
    // Garbage under the prefix is skipped, and the view keeps working.
    let out = etcd.etcdctl().args(["put", "svc/bad", "not json"]).output().unwrap();
    assert!(out.status.success());
    c.put("svc/z", r#"{"Op":0,"Addr":"1.2.3.6:80"}"#).await.unwrap();
    wait_event(&mut events, Duration::from_secs(20), is_up("z")).await;
    let ids: Vec<String> = view.instances().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["ours", "plain", "x", "y", "z"]);
    let (list, rev) = list_instances(&c, "svc").await.unwrap();
    assert_eq!(list, view.instances());
    assert!(rev >= view.revision());
    // Turning a good value into garbage makes the instance leave.
    c.put("svc/z", "}{").await.unwrap();
    wait_event(&mut events, Duration::from_secs(20), is_down("z")).await;
    drop(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_never_reports_what_was_deleted_before_its_snapshot() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let v = |a: &str| format!(r#"{{"Op":0,"Addr":"{a}"}}"#);
    c.put("svc/gone", v("h:1")).await.unwrap();
    c.put("svc/kept", v("h:2")).await.unwrap();
    c.delete("svc/gone").await.unwrap();
    c.put("other/zzz", v("h:9")).await.unwrap();
    let view = ServiceView::start(&c, "svc").await.unwrap();
    let snap_rev = view.revision();
    let mut events = view.events();
    assert_eq!(view.instances().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["kept"]);
    c.put("svc/new", v("h:3")).await.unwrap();
    // The very first event is the new one: nothing replayed from before the snapshot.
    let (e, rev) = tokio::time::timeout(Duration::from_secs(20), events.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&e, InstanceEvent::Up(i) if i.id == "new"), "{e:?}");
    assert!(rev > snap_rev);
    // "svc2/..." is not part of service "svc".
    c.put("svc2/a", v("h:4")).await.unwrap();
    c.put("svc/last", v("h:5")).await.unwrap();
    let (e, _) = tokio::time::timeout(Duration::from_secs(20), events.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&e, InstanceEvent::Up(i) if i.id == "last"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickers_changed_and_close() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let view = ServiceView::start(&c, "svc").await.unwrap();
    assert_eq!(view.pick_round_robin(), None);
    assert_eq!(view.pick_random(), None);
    let waiter = {
        let view = view.clone();
        tokio::spawn(async move { view.changed().await })
    };
    let mut regs = Vec::new();
    for id in ["a", "b", "c"] {
        regs.push(Registration::register(&c, RegisterOptions::new("svc", id, format!("{id}:1"))).await.unwrap());
    }
    let first = tokio::time::timeout(Duration::from_secs(20), waiter).await.unwrap().unwrap().unwrap();
    assert!(!first.is_empty());
    while view.instances().len() < 3 {
        tokio::time::timeout(Duration::from_secs(20), view.changed()).await.unwrap().unwrap();
    }
    let mut seen: Vec<String> = (0..3).map(|_| view.pick_round_robin().unwrap().id).collect();
    seen.sort();
    assert_eq!(seen, ["a", "b", "c"], "round robin must visit every instance once per round");
    for _ in 0..20 {
        let r = view.pick_random().unwrap();
        assert!(["a", "b", "c"].contains(&r.id.as_str()));
    }
    // Dropping a registration (no close) still removes it, in the background.
    let mut events = view.events();
    drop(regs.pop());
    wait_event(&mut events, Duration::from_secs(20), is_down("c")).await;
    // Close: streams end, changed() fails, reads still work.
    let clone = view.clone();
    view.close();
    assert!(tokio::time::timeout(Duration::from_secs(20), events.next()).await.unwrap().is_none());
    assert!(view.events().next().await.is_none());
    assert_eq!(clone.changed().await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(clone.instances().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_invalid_argument() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let cases = [
        RegisterOptions::new("", "a", "h:1"),
        RegisterOptions::new("svc", "", "h:1"),
        RegisterOptions::new("svc", "a/b", "h:1"),
        RegisterOptions::new("svc", "/", "h:1"),
        RegisterOptions::new("svc/", "a", "h:1"),
        RegisterOptions::new("svc", "a", ""),
        RegisterOptions::new("svc", "a", "   "),
        RegisterOptions::new("svc", "a\0", "h:1"),
        RegisterOptions::new("svc", "a", "h:1").ttl(0),
        RegisterOptions::new("svc", "a", "h:1").ttl(-1),
    ];
    for opts in cases {
        let e = Registration::register(&c, opts.clone()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{opts:?}: {e}");
    }
    for svc in ["", "svc/"] {
        assert_eq!(list_instances(&c, svc).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(ServiceView::start(&c, svc).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    // Nothing was written by the rejected calls.
    assert_eq!(c.etcd().get("", Some(etcd_client::GetOptions::new().with_all_keys().with_count_only())).await.unwrap().count(), 0);
    // Odd but valid strings round-trip through the wire format.
    let md = json!({"quote": "\"", "unicode": "héllo ✓", "nested": [1, null, {"x": true}], "empty": ""});
    let reg = Registration::register(&c, RegisterOptions::new("svc with spaces", "ïd-1", "[::1]:80").metadata(md.clone()))
        .await
        .unwrap();
    let (list, _) = list_instances(&c, "svc with spaces").await.unwrap();
    assert_eq!(list, vec![Instance { id: "ïd-1".into(), addr: "[::1]:80".into(), metadata: md }]);
    reg.close().await.unwrap();
}

async fn wait_gauge(etcd: &EtcdCluster, name: &str, want: f64, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let got = etcd_gauge(etcd, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "{name}: {got}, expected {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Close every registration; then etcd counts no watcher (no watch outlives its owners).
async fn close_all_and_see_no_watcher_left(etcd: &EtcdCluster, regs: Vec<Registration>) {
    for r in regs {
        r.close().await.unwrap();
    }
    wait_gauge(etcd, "etcd_debugging_mvcc_watcher_total", 0.0, Duration::from_secs(10)).await;
}

async fn wait_put_back(operator: &etcd_recipes::Client, reg: &Registration, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let got = operator.etcd().get(reg.key(), None).await.unwrap();
        if let Some(kv) = got.kvs().first() {
            assert_eq!(kv.lease(), reg.lease_id(), "put back on its own lease");
            return;
        }
        assert!(Instant::now() < until, "{} not put back within {within:?}", reg.key());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The registrations of one client watch their keys on one shared watch stream, and the
/// registrations of one service share one watch: etcd counts one stream and two watchers
/// for 40 registrations (the first one's own key, then the service's deletes). A key
/// deleted from outside is put back, whichever watch saw it, also after the member
/// holding that stream froze (the stream moves, and the watches resume where they were);
/// closing the last registration closes the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_share_one_watch_stream_that_survives_its_member_freezing() {
    init_tracing();
    let mut etcd = EtcdCluster::start(3).unwrap();
    let registrar = etcd_recipes::Client::connect(etcd.client_options().with_request_timeout(Duration::from_secs(3))).await.unwrap();
    let operator = client(&etcd).await;
    const N: usize = 40;
    let mut regs = Vec::new();
    for i in 0..N {
        regs.push(Registration::register(&registrar, RegisterOptions::new("many", format!("i{i}"), "h:1").ttl(10)).await.unwrap());
    }
    wait_gauge(&etcd, "etcd_debugging_mvcc_watch_stream_total", 1.0, Duration::from_secs(10)).await;
    wait_gauge(&etcd, "etcd_debugging_mvcc_watcher_total", 2.0, Duration::from_secs(10)).await;
    for reg in &regs[..3] {
        assert_eq!(operator.delete(&format!("many/{}", reg.instance().id)).await.unwrap(), 1);
    }
    for reg in &regs[..3] {
        wait_put_back(&operator, reg, Duration::from_secs(20)).await;
    }
    // Freeze the member that holds the stream; a delete on another member must still be
    // seen (after the probe moves the stream) and repaired.
    let mut holder = None;
    for i in 0..etcd.len() {
        if member_gauge(&etcd.endpoint(i), "etcd_debugging_mvcc_watch_stream_total").await == Some(1.0) {
            holder = Some(i);
        }
    }
    let holder = holder.expect("one member holds the shared stream");
    etcd.pause(holder).unwrap();
    let other = (holder + 1) % etcd.len();
    let op2 = etcd_recipes::Client::connect(etcd_recipes::ClientOptions::new(vec![etcd.endpoint(other)])).await.unwrap();
    let victim = &regs[N - 1];
    assert_eq!(op2.delete(&format!("many/{}", victim.instance().id)).await.unwrap(), 1);
    wait_put_back(&op2, victim, Duration::from_secs(20)).await;
    etcd.resume(holder).unwrap();
    assert!(regs.iter().all(|r| matches!(r.state(), RegistrationState::Registered { .. })), "every registration still registered");
    close_all_and_see_no_watcher_left(&etcd, regs).await;
    wait_gauge(&etcd, "etcd_debugging_mvcc_watch_stream_total", 0.0, Duration::from_secs(10)).await;
}

/// 64 registrations of one service started at once (some are covered by the service's
/// watch, some started before it and watch their own keys): one delete of the whole
/// service, 64 events in one watch response, and every key is put back on its own lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_started_together_all_heal_after_one_delete_of_the_service() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let operator = client(&etcd).await;
    const N: usize = 64;
    let regs: Vec<Registration> = futures::future::join_all(
        (0..N).map(|i| Registration::register(&registrar, RegisterOptions::new("burst", format!("i{i}"), "h:1").ttl(10))),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    let deleted = operator.etcd().delete("burst/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!(deleted.deleted(), N as i64);
    for reg in &regs {
        wait_put_back(&operator, reg, Duration::from_secs(20)).await;
    }
    assert_eq!(regs.iter().map(|r| r.reregistrations()).sum::<u64>(), 0, "put back on the same leases");
    close_all_and_see_no_watcher_left(&etcd, regs).await;
}

/// The service's watch restarts, after etcd restarted, from a revision that was compacted
/// meanwhile: etcd cancels it, and every registration it served checks its key and
/// watches it on its own (etcd counts a watcher per registration), and still heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_watch_cancelled_by_compaction_hands_its_keys_to_their_own_watches() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    const N: usize = 5;
    let mut regs = Vec::new();
    for i in 0..N {
        regs.push(Registration::register(&registrar, RegisterOptions::new("compacted", format!("i{i}"), "h:1").ttl(10)).await.unwrap());
    }
    wait_gauge(&etcd, "etcd_debugging_mvcc_watcher_total", 2.0, Duration::from_secs(10)).await;
    // Move the store's revision on, then compact past every watch's start.
    for i in 0..20 {
        registrar.put(&format!("other/{i}"), "x").await.unwrap();
    }
    etcd.compact().await.unwrap();
    etcd.restart(0).unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    wait_gauge(&etcd, "etcd_debugging_mvcc_watcher_total", N as f64, Duration::from_secs(20)).await;
    let operator = client(&etcd).await;
    for reg in [&regs[0], &regs[3]] {
        assert_eq!(operator.delete(&format!("compacted/{}", reg.instance().id)).await.unwrap(), 1);
        wait_put_back(&operator, reg, Duration::from_secs(20)).await;
    }
    assert!(regs.iter().all(|r| matches!(r.state(), RegistrationState::Registered { .. })), "every registration still registered");
    close_all_and_see_no_watcher_left(&etcd, regs).await;
}

/// Registrations of one service joining its watch while others leave it, on two runtime
/// threads at once, for several rounds (100 joining while the previous 100 leave): every
/// one registers and closes within the bound, and nothing is left watching in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_joining_and_leaving_one_service_at_once_never_block() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let registrar = client(&etcd).await;
    let mut previous: Vec<Registration> = Vec::new();
    for round in 0..4 {
        let joining = futures::future::join_all((0..100).map(|i| {
            let c = registrar.clone();
            tokio::spawn(async move {
                Registration::register(&c, RegisterOptions::new("churn", format!("r{round}-{i}"), "h:1").ttl(10)).await
            })
        }));
        let leaving = futures::future::join_all(previous.drain(..).map(|r| tokio::spawn(async move { r.close().await })));
        let (joined, left) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(joining, leaving) })
            .await
            .expect("registrations joining and leaving finished within 60 s");
        assert!(left.into_iter().all(|r| r.unwrap().is_ok()), "every close succeeded in round {round}");
        previous = joined.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(previous.len(), 100);
    }
    close_all_and_see_no_watcher_left(&etcd, previous).await;
}
