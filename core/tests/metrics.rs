//! Metrics and health against a real etcd: values after real contention, renewals,
//! losses, elections, healing, views and the work queue; the `metrics` facade sees the
//! same events. Each test runs in a process of its own (nextest), so the process-wide
//! registry starts empty.

mod common;
use common::{client, init_tracing};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_recipes::config::ConfigView;
use etcd_recipes::election::Election;
use etcd_recipes::health::health;
use etcd_recipes::lock::Lock;
use etcd_recipes::metrics::{prometheus_text, snapshot, MetricsSnapshot};
use etcd_recipes::registry::{RegisterOptions, Registration};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::workqueue::WorkQueue;
use etcd_recipes::{Session, SessionSource};

const WITHIN: Duration = Duration::from_secs(20);

/// Wait until `cond` holds on a fresh snapshot; on timeout fail with a summary of the
/// families involved (not the whole payload).
async fn until_snapshot(what: &str, names: &[&str], cond: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
    let until = Instant::now() + WITHIN;
    loop {
        let s = snapshot();
        if cond(&s) {
            return s;
        }
        if Instant::now() >= until {
            panic!("not true within {WITHIN:?}: {what}; {}", summary(&s, names));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(s: &MetricsSnapshot, names: &[&str]) -> String {
    let mut out = Vec::new();
    for n in names {
        if let Some(f) = s.family(n) {
            for x in &f.samples {
                out.push(format!("{n}{{{}}} value={} count={}", x.label_value.as_deref().unwrap_or(""), x.value, x.count));
            }
        }
    }
    format!("seen: [{}]", out.join(", "))
}

const WAIT: &str = "etcd_recipes_lock_wait_seconds";
const HOLD: &str = "etcd_recipes_lock_hold_seconds";
const WAITERS: &str = "etcd_recipes_lock_waiters";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waiters_show_in_the_gauge_and_every_wait_and_hold_is_timed() {
    init_tracing();
    let recorder = install_recorder();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let lock = Lock::new(SessionSource::per_use(&c, 10).unwrap(), "jobs/report").unwrap();
    let holder = lock.acquire().await.unwrap();
    let s = snapshot();
    assert_eq!(s.count(WAIT, Some("jobs/report")), 1, "{}", summary(&s, &[WAIT]));
    assert_eq!(s.value(WAITERS, Some("jobs/report")), 0.0);

    let (l1, l2) = (lock.clone(), lock.clone());
    let w1 = tokio::spawn(async move { l1.acquire().await });
    let w2 = tokio::spawn(async move { l2.acquire().await });
    // Both are queued in etcd behind the holder (two waiter keys besides the holder's).
    let prefix = c.full_key("jobs/report/");
    let until = Instant::now() + WITHIN;
    loop {
        let n = c
            .etcd()
            .get(prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix().with_count_only()))
            .await
            .unwrap()
            .count();
        if n == 3 {
            break;
        }
        assert!(Instant::now() < until, "waiters did not queue: {n} keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = snapshot();
    assert_eq!(s.value(WAITERS, Some("jobs/report")), 2.0, "{}", summary(&s, &[WAITERS]));

    holder.release().await.unwrap();
    let s = until_snapshot("one waiter got the lock", &[WAIT, WAITERS], |s| {
        s.count(WAIT, Some("jobs/report")) == 2 && s.value(WAITERS, Some("jobs/report")) == 1.0
    })
    .await;
    assert_eq!(s.count(HOLD, Some("jobs/report")), 1);
    // Which waiter got it: the one whose task ends first (the gauge moves a moment before
    // its task has returned, so `is_finished` could still say neither).
    let (mut w1, mut w2) = (w1, w2);
    let (first, other) = tokio::time::timeout(WITHIN, async {
        tokio::select! {
            r = &mut w1 => (r, w2),
            r = &mut w2 => (r, w1),
        }
    })
    .await
    .expect("the waiter that got the lock returned it");
    first.unwrap().unwrap().release().await.unwrap();
    let last = other.await.unwrap().unwrap();
    let s = snapshot();
    assert_eq!(s.count(WAIT, Some("jobs/report")), 3, "{}", summary(&s, &[WAIT]));
    assert_eq!(s.value(WAITERS, Some("jobs/report")), 0.0);
    assert_eq!(s.count(HOLD, Some("jobs/report")), 2);
    // Dropping the last guard also ends its hold.
    drop(last);
    let w = snapshot();
    assert_eq!(w.count(HOLD, Some("jobs/report")), 3);
    let waited = w.sample(WAIT, Some("jobs/report")).unwrap();
    // The waiters waited at least until the holder released: their waits are in buckets
    // above the holder's (instant) one, and the sum covers them.
    assert!(waited.sum > 0.0);
    assert_eq!(waited.buckets.last().unwrap().1, 3, "all three waits were under 300 s");

    // The facade saw the same: three wait records, a waiters gauge moved up and down.
    let rec = recorder.lock().unwrap().clone();
    let waits = rec.iter().filter(|(n, l, _)| n == WAIT && l == "name=jobs/report").count();
    assert_eq!(waits, 3, "facade wait records");
    let gauge_moves: f64 = rec.iter().filter(|(n, _, _)| n == WAITERS).map(|(_, _, v)| *v).sum();
    assert_eq!(gauge_moves, 0.0, "waiters gauge increments and decrements balance");
    assert!(rec.iter().any(|(n, _, v)| n == WAITERS && *v == 1.0));
    drop(rec);

    // The text format carries the same series.
    let text = prometheus_text();
    assert!(text.contains("# TYPE etcd_recipes_lock_wait_seconds histogram"));
    assert!(text.contains("etcd_recipes_lock_wait_seconds_count{name=\"jobs/report\"} 3"), "text format lacks the wait count");
    assert!(text.contains("etcd_recipes_lock_wait_seconds_bucket{name=\"jobs/report\",le=\"+Inf\"} 3"));
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_are_timed_and_a_revoked_lease_is_a_loss_and_unhealthy() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 2).await.unwrap();
    let h = health(&c);
    assert!(h.healthy, "{:?}", h.problems);
    assert_eq!((h.sessions_alive, h.sessions_lost), (1, 0));
    until_snapshot("a renewal was timed", &["etcd_recipes_session_renew_seconds"], |m| {
        m.count("etcd_recipes_session_renew_seconds", None) >= 1
    })
    .await;
    let h = health(&c);
    let age = h.oldest_renew.and_then(|t| t.elapsed().ok());
    assert!(age.is_some_and(|a| a < Duration::from_secs(2)), "last renew {age:?} ago");

    c.revoke_lease(s.lease_id()).await.unwrap();
    assert!(s.lost().await.is_some());
    let m = snapshot();
    assert_eq!(m.value("etcd_recipes_session_losses_total", None), 1.0);
    let h = health(&c);
    assert!(!h.healthy);
    assert_eq!((h.sessions_alive, h.sessions_lost), (0, 1));
    assert!(h.problems.iter().any(|p| p.contains(&format!("session {:x} lost", s.lease_id()))), "{:?}", h.problems);
    // A lost session closed by its owner is no longer reported.
    s.close().await.unwrap();
    let h = health(&c);
    assert!(h.healthy, "{:?}", h.problems);
    assert!(h.sessions.is_empty());
    c.close().await;
    let h = health(&c);
    assert!(!h.healthy && !h.open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_are_counted_once_per_new_leader() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let e = Election::new(SessionSource::per_use(&c, 10).unwrap(), "sched").unwrap();
    let mut observer = e.observe();
    let mut observer2 = e.observe();
    let first = e.campaign("a").await.unwrap();
    assert_eq!(observer.next().await.unwrap().unwrap().unwrap().fencing_token, first.fencing_token());
    assert_eq!(observer2.next().await.unwrap().unwrap().unwrap().fencing_token, first.fencing_token());
    let e2 = e.clone();
    let second = tokio::spawn(async move { e2.campaign("b").await });
    first.resign().await.unwrap();
    let second = second.await.unwrap().unwrap();
    // Two observers and a win saw the second leader: counted once.
    loop {
        if observer.next().await.unwrap().unwrap().is_some_and(|l| l.fencing_token == second.fencing_token()) {
            break;
        }
    }
    let m = snapshot();
    assert_eq!(m.value("etcd_recipes_election_won_total", Some("sched")), 2.0);
    assert_eq!(
        m.value("etcd_recipes_election_leader_changes_total", Some("sched")),
        2.0,
        "{}",
        summary(&m, &["etcd_recipes_election_leader_changes_total"])
    );
    second.resign().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_registrations_in_health_and_heals_and_compaction_rereads_counted() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    c.put("cfg/a", "1").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", Default::default()).await.unwrap();
    let reg = Registration::register(&c, RegisterOptions::new("api", "api-1", "10.0.0.1:80").ttl(5)).await.unwrap();
    let h = health(&c);
    assert!(h.healthy, "{:?}", h.problems);
    assert_eq!(h.views.len(), 1);
    assert!(h.views[0].watching && h.views[0].current && h.views[0].key.ends_with("cfg/"));
    assert_eq!(h.components.len(), 1);
    assert_eq!(h.components[0].name, "api/api-1");
    assert!(h.components[0].ok);

    // A write the view applies: still current, at that revision, lag 0.
    let rev = c.put("cfg/a", "2").await.unwrap();
    let until = Instant::now() + WITHIN;
    while view.revision() < rev {
        assert!(Instant::now() < until, "view did not apply the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let until = Instant::now() + WITHIN;
    loop {
        let h = health(&c);
        if h.views[0].revision >= rev {
            assert!(h.views[0].current && h.views[0].lag == 0, "{:?}", h.views[0]);
            break;
        }
        assert!(Instant::now() < until, "health did not see revision {rev}: {:?}", h.views[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Revoking the registration's lease: it heals with a new lease, counted.
    c.revoke_lease(reg.lease_id()).await.unwrap();
    until_snapshot("registration healed", &["etcd_recipes_registrations_healed_total"], |m| {
        m.value("etcd_recipes_registrations_healed_total", Some("api")) == 1.0
    })
    .await;
    let h = health(&c);
    assert!(h.components[0].ok, "{:?}", h.components);

    // The view's lag series exists, at 0; no compaction re-read yet (config.rs's
    // compaction test checks the counter after a real one).
    let m = snapshot();
    assert_eq!(m.value("etcd_recipes_view_compaction_rereads_total", Some(&c.full_key("cfg/"))), 0.0);
    assert_eq!(m.sample("etcd_recipes_view_lag_revisions", Some(&c.full_key("cfg/"))).map(|s| s.value), Some(0.0));

    // Closing the view and the registration removes them from health.
    view.close();
    reg.close().await.unwrap();
    let until = Instant::now() + WITHIN;
    loop {
        let h = health(&c);
        if h.views.is_empty() && h.components.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "closed view/registration still reported: {} views, {} components", h.views.len(), h.components.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_depth_and_redeliveries() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let q = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "thumbs").unwrap().with_max_deliveries(Some(2)).unwrap();
    for i in 0..3 {
        q.put(format!("item-{i}"), None).await.unwrap();
    }
    assert_eq!(q.length().await.unwrap(), 3);
    assert_eq!(snapshot().value("etcd_recipes_workqueue_depth", Some("thumbs")), 3.0);
    let (a, b, c3) = (q.receive().await.unwrap(), q.receive().await.unwrap(), q.receive().await.unwrap());
    assert_eq!(snapshot().value("etcd_recipes_workqueue_redeliveries_total", Some("thumbs")), 0.0);
    a.nack(None).await.unwrap();
    // The only visible item now is the nacked one: its second delivery.
    let again = q.receive().await.unwrap();
    assert_eq!(again.deliveries(), 2);
    again.nack(None).await.unwrap();
    let m = snapshot();
    assert_eq!(m.value("etcd_recipes_workqueue_redeliveries_total", Some("thumbs")), 1.0);
    assert_eq!(m.value("etcd_recipes_workqueue_dead_letters_total", Some("thumbs")), 1.0);
    b.nack(None).await.unwrap();
    c3.ack().await.unwrap();
    assert_eq!(q.length().await.unwrap(), 1);
    assert_eq!(snapshot().value("etcd_recipes_workqueue_depth", Some("thumbs")), 1.0);
    c.close().await;
}

// A minimal `metrics` recorder: (name, "label=value", value) per record.
type Records = Arc<Mutex<Vec<(String, String, f64)>>>;

struct Rec {
    records: Records,
}

struct Handle {
    name: String,
    labels: String,
    records: Records,
}

impl Handle {
    fn push(&self, v: f64) {
        self.records.lock().unwrap().push((self.name.clone(), self.labels.clone(), v));
    }
}

impl metrics::CounterFn for Handle {
    fn increment(&self, v: u64) {
        self.push(v as f64)
    }
    fn absolute(&self, v: u64) {
        self.push(v as f64)
    }
}

impl metrics::GaugeFn for Handle {
    fn increment(&self, v: f64) {
        self.push(v)
    }
    fn decrement(&self, v: f64) {
        self.push(-v)
    }
    fn set(&self, v: f64) {
        self.push(v)
    }
}

impl metrics::HistogramFn for Handle {
    fn record(&self, v: f64) {
        self.push(v)
    }
}

impl Rec {
    fn handle(&self, key: &metrics::Key) -> Arc<Handle> {
        let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect::<Vec<_>>().join(",");
        Arc::new(Handle { name: key.name().to_string(), labels, records: self.records.clone() })
    }
}

impl metrics::Recorder for Rec {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.handle(key))
    }
}

fn install_recorder() -> Records {
    let records: Records = Arc::default();
    metrics::set_global_recorder(Rec { records: records.clone() }).expect("one recorder per test process");
    etcd_recipes::metrics::describe();
    records
}
