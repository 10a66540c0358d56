//! The watched configuration cache against a real etcd started by the testing harness.


use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_recipes::config::{ConfigChange, ConfigChanges, ConfigOptions, ConfigView};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Log lines written by the recipes, for tests that must prove which recovery path ran.
/// Each test runs in its own process under nextest, so the global subscriber is ours.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber; false if another one was installed first.
fn init_tracing() -> bool {
    init_tracing_at("etcd_recipes=info")
}

fn init_tracing_at(filter: &str) -> bool {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init()
        .is_ok()
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

async fn client(endpoints: Vec<String>) -> Client {
    Client::connect(ClientOptions::new(endpoints).with_connect_timeout(Duration::from_secs(10)))
        .await
        .expect("connect")
}

fn no_reconcile() -> ConfigOptions {
    ConfigOptions { reconcile_interval: Duration::ZERO }
}

/// Every change a subscriber has received so far, recorded by a background task.
/// Tests wait on it for what they assert; the subscriber runs behind the view itself.
#[derive(Clone)]
struct Seen {
    changes: Arc<Mutex<Vec<ConfigChange>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn now(&self) -> Vec<ConfigChange> {
        self.changes.lock().unwrap().clone()
    }

    /// Wait until the recorded changes satisfy `done`; fail with a summary otherwise.
    async fn wait(&self, what: &str, within: Duration, done: impl Fn(&[ConfigChange]) -> bool) -> Vec<ConfigChange> {
        let until = Instant::now() + within;
        loop {
            let seen = self.now();
            if done(&seen) {
                return seen;
            }
            let errors = self.errors.lock().unwrap().clone();
            assert!(
                Instant::now() < until,
                "subscriber never saw {what} within {within:?}; it saw {} (errors: {errors:?})",
                summary(&seen)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Record every change a subscriber sees, in a background task.
fn record(mut changes: ConfigChanges) -> Seen {
    let seen = Seen { changes: Arc::default(), errors: Arc::default() };
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(c) = changes.next().await {
            match c {
                Ok(c) => s.changes.lock().unwrap().push(c),
                Err(e) => s.errors.lock().unwrap().push(e.to_string()),
            }
        }
    });
    seen
}

/// A few KiB at most: the count, then key, value size and revision of the last few changes.
fn summary(seen: &[ConfigChange]) -> String {
    let tail: Vec<String> = seen
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|c| format!("{}={}@{}", c.key, c.new.as_ref().map_or("<deleted>".to_string(), |v| format!("{}B", v.len())), c.revision))
        .collect();
    format!("{} changes, last: [{}]", seen.len(), tail.join(", "))
}

fn has(seen: &[ConfigChange], key: &str, value: &str) -> bool {
    seen.iter().any(|c| c.key == key && c.new.as_deref() == Some(value.as_bytes()))
}

fn assert_monotonic(seen: &[ConfigChange]) {
    for w in seen.windows(2) {
        assert!(
            w[1].revision >= w[0].revision,
            "revision went backwards: {} at {} then {} at {}",
            w[0].key,
            w[0].revision,
            w[1].key,
            w[1].revision
        );
    }
}

/// The last lines of the captured log, at most 4 KiB.
fn log_tail() -> String {
    let logs = logs();
    let start = logs.len().saturating_sub(4096);
    let start = (start..logs.len()).find(|&i| logs.is_char_boundary(i)).unwrap_or(logs.len());
    logs[start..].to_string()
}

async fn wait_value(view: &ConfigView, key: &str, want: &str, within: Duration) {
    let until = Instant::now() + within;
    loop {
        if view.get(key).as_deref() == Some(want.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{key} is {} bytes ({:?}...), expected {want:?} within {within:?}",
            view.get(key).map_or(0, |v| v.len()),
            view.get(key).map(|v| String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_then_follows_puts_and_deletes() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("app/a", "1").await.unwrap();
    c.put("app/b", "x").await.unwrap();
    c.put("apple", "not under app/").await.unwrap();
    let view = ConfigView::prefix(&c, "app/", ConfigOptions::default()).await.unwrap();
    let one = ConfigView::key(&c, "app/a", ConfigOptions::default()).await.unwrap();
    assert_eq!(view.keys(), ["app/a", "app/b"]);
    assert_eq!(one.keys(), ["app/a"]);
    assert_eq!(view.get_string("app/a").unwrap().as_deref(), Some("1"));
    assert_eq!(view.get("apple"), None);
    let loaded = view.revision();
    assert!(loaded >= 3);
    let mut changes = view.changes();
    let r = c.put("app/a", "2").await.unwrap();
    let ch = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ch, ConfigChange { key: "app/a".into(), old: Some(b"1".to_vec()), new: Some(b"2".to_vec()), revision: r });
    assert_eq!(view.revision(), r);
    let r = c.delete("app/b").await.unwrap();
    assert_eq!(r, 1);
    let ch = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((ch.key.as_str(), ch.old.as_deref(), ch.new.as_deref()), ("app/b", Some(&b"x"[..]), None));
    assert_eq!(view.get("app/b"), None);
    wait_value(&one, "app/a", "2", Duration::from_secs(20)).await;
    assert_eq!(view.snapshot().len(), 1);
    // A multi-key transaction is applied whole: one revision, both keys.
    let txn = etcd_client::Txn::new().and_then(vec![
        etcd_client::TxnOp::put("app/t1", "a", None),
        etcd_client::TxnOp::put("app/t2", "b", None),
    ]);
    c.etcd().txn(txn).await.unwrap();
    let c1 = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().unwrap().unwrap();
    assert!(view.get("app/t1").is_some() && view.get("app/t2").is_some(), "half a transaction visible");
    let c2 = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(c1.revision, c2.revision);
    // Close: subscriptions end, values stay readable.
    view.close();
    assert!(tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().is_none());
    assert!(view.changes().next().await.is_none());
    assert_eq!(view.get_string("app/a").unwrap().as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_after_many_rapid_puts() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    let writer = client(etcd.endpoints()).await;
    let view = ConfigView::key(&c, "cfg/k", ConfigOptions::default()).await.unwrap();
    let prefix = ConfigView::prefix(&c, "cfg/", ConfigOptions::default()).await.unwrap();
    let seen = record(view.changes());
    // 4 writers, 150 puts each, as fast as etcd takes them; the last write (by revision) wins.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..150 {
                last = writer.put("cfg/k", format!("{w}-{i}")).await.unwrap();
                writer.put(&format!("cfg/other{w}"), format!("{i}")).await.unwrap();
            }
            last
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let final_value = writer.get("cfg/k").await.unwrap().unwrap();
    let final_value = String::from_utf8(final_value).unwrap();
    wait_value(&view, "cfg/k", &final_value, Duration::from_secs(20)).await;
    wait_value(&prefix, "cfg/k", &final_value, Duration::from_secs(20)).await;
    for w in 0..4 {
        wait_value(&prefix, &format!("cfg/other{w}"), "149", Duration::from_secs(20)).await;
    }
    let seen = seen
        .wait("the final value", Duration::from_secs(20), |s| s.last().and_then(|c| c.new.as_deref()) == Some(final_value.as_bytes()))
        .await;
    assert_eq!(seen.len(), 600, "every put to the key is one change: {}", summary(&seen));
    assert_monotonic(&seen);
    assert_eq!(seen.last().unwrap().new.as_deref(), Some(final_value.as_bytes()));
    // Consecutive changes chain: each old is the previous new.
    for w in seen.windows(2) {
        assert!(w[1].old == w[0].new, "changes do not chain at revision {}", w[1].revision);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_after_sigstop_then_put_and_compact() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("cfg/k", "v0").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", no_reconcile()).await.unwrap();
    let seen = record(view.changes());
    // Hold the watch back long enough for the client to give up on the connection
    // (keep-alive 2 s + 2 s), then write and compact as soon as the member runs again.
    etcd.pause(0).unwrap();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    etcd.resume(0).unwrap();
    let writer = client(etcd.endpoints()).await;
    for i in 1..=20 {
        writer.put("cfg/k", format!("v{i}")).await.unwrap();
    }
    writer.put("cfg/new", "n").await.unwrap();
    writer.delete("cfg/gone").await.unwrap();
    etcd.compact().await.unwrap();
    writer.put("cfg/after", "a").await.unwrap();
    wait_value(&view, "cfg/k", "v20", Duration::from_secs(20)).await;
    wait_value(&view, "cfg/after", "a", Duration::from_secs(20)).await;
    assert_eq!(view.keys(), ["cfg/after", "cfg/k", "cfg/new"]);
    let seen = seen.wait("cfg/after", Duration::from_secs(20), |s| has(s, "cfg/after", "a")).await;
    assert_monotonic(&seen);
    assert_eq!(view.revision(), writer.revision().await.unwrap());
}

/// A TCP proxy whose forwarding can be frozen: the client's connection stays open
/// but nothing flows, so etcd's sender backs up and its watcher falls behind.
struct Proxy {
    addr: String,
    frozen: watch::Sender<bool>,
}

async fn start_proxy(target: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_string();
    let (frozen, rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else { continue };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, rx.clone()));
            tokio::spawn(pump(ro, wi, rx.clone()));
        }
    });
    Proxy { addr, frozen }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The watch itself is cancelled by compaction (etcd's slow watcher falls behind a
/// compaction) and the view must re-read: this fails if that recovery is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_its_watch_is_cancelled_by_compaction() {
    let captured = init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let proxy = start_proxy(etcd.endpoint(0)).await;
    // The freeze must not look like a dead connection: with pings answered only after
    // the thaw, a short keep-alive would drop the connection (the stream-broken path)
    // instead of letting etcd cancel the lagging watch for compaction.
    let c = Client::connect(
        ClientOptions::new([proxy.addr.clone()])
            .with_connect_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(60), Duration::from_secs(60)),
    )
    .await
    .expect("connect");
    let writer = client(etcd.endpoints()).await;
    writer.put("big/k", "v0").await.unwrap();
    let view = ConfigView::prefix(&c, "big/", no_reconcile()).await.unwrap();
    let seen = record(view.changes());
    writer.put("big/k", "v1").await.unwrap();
    wait_value(&view, "big/k", "v1", Duration::from_secs(20)).await;

    // Freeze the view's connection, flood the key so etcd's watcher for it falls behind
    // (flow control, then its 128-response buffer), and compact past it. The client's
    // keep-alive is long, so the connection itself survives however long this takes.
    let t = Instant::now();
    proxy.frozen.send_replace(true);
    let blob = "x".repeat(64 * 1024);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (writer, blob) = (writer.clone(), blob.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..16 {
                writer.put("big/k", format!("{w}-{i}-{blob}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    writer.put("big/k", "final").await.unwrap();
    writer.put("big/side", "s").await.unwrap();
    let compacted = etcd.compact().await.unwrap();
    let frozen_for = t.elapsed();
    proxy.frozen.send_replace(false);
    println!("config: froze the view's connection for {frozen_for:?}, compacted at {compacted}");

    wait_value(&view, "big/k", "final", Duration::from_secs(20)).await;
    wait_value(&view, "big/side", "s", Duration::from_secs(20)).await;
    assert!(view.revision() >= compacted);
    let seen = seen.wait("big/side", Duration::from_secs(20), |s| has(s, "big/side", "s")).await;
    assert_monotonic(&seen);
    // The view still follows new writes.
    writer.put("big/k", "later").await.unwrap();
    wait_value(&view, "big/k", "later", Duration::from_secs(20)).await;
    if captured {
        assert!(
            logs().contains("watch cancelled by compaction"),
            "the compaction path did not run (froze for {frozen_for:?}); log tail:\n{}",
            log_tail()
        );
        let rereads = etcd_recipes::metrics::snapshot().value("etcd_recipes_view_compaction_rereads_total", Some("big/"));
        assert!(rereads >= 1.0, "compaction re-reads counted: {rereads}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_after_member_restart() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("cfg/k", "before").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", no_reconcile()).await.unwrap();
    let seen = record(view.changes());
    let before = view.revision();
    tokio::task::block_in_place(|| etcd.restart(0)).unwrap();
    let writer = client(etcd.endpoints()).await;
    writer.put("cfg/k", "after").await.unwrap();
    writer.put("cfg/k2", "new").await.unwrap();
    wait_value(&view, "cfg/k", "after", Duration::from_secs(20)).await;
    wait_value(&view, "cfg/k2", "new", Duration::from_secs(20)).await;
    assert!(view.revision() > before);
    // And keeps following.
    writer.put("cfg/k", "again").await.unwrap();
    wait_value(&view, "cfg/k", "again", Duration::from_secs(20)).await;
    let seen = seen.wait("cfg/k = again", Duration::from_secs(20), |s| has(s, "cfg/k", "again")).await;
    assert_monotonic(&seen);
    let values: Vec<_> =
        seen.iter().filter(|c| c.key == "cfg/k").filter_map(|c| c.new.as_deref().map(String::from_utf8_lossy)).collect();
    assert_eq!(values, ["after", "again"], "{}", summary(&seen));
}

/// Wait until the captured log has more than `after` lines containing `needle`.
async fn wait_log(needle: &str, after: usize, within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let n = logs().matches(needle).count();
        if n > after {
            return n;
        }
        assert!(Instant::now() < until, "no new {needle:?} log line within {within:?}; log tail:\n{}", log_tail());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reconcile_runs_without_disturbing_the_view() {
    // This test proves which path ran from the view's own log, so it needs the capture
    // (nextest runs each test in its own process; scripts/test uses nextest).
    assert!(init_tracing_at("etcd_recipes=debug"), "another tracing subscriber was installed first");
    const CLEAN: &str = "reconciled: no drift";
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("cfg/k", "1").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", ConfigOptions::new().reconcile_interval(Duration::from_millis(200)))
        .await
        .unwrap();
    let seen = record(view.changes());
    // After each put, a reconcile runs against the new state and finds no drift.
    let mut clean = 0;
    for i in 2..=5 {
        c.put("cfg/k", format!("{i}")).await.unwrap();
        wait_value(&view, "cfg/k", &format!("{i}"), Duration::from_secs(20)).await;
        clean = wait_log(CLEAN, clean, Duration::from_secs(20)).await;
    }
    // A write outside the view moves etcd past the view's revision; compacting there makes
    // the reconcile's read at the view's revision fail, and the view re-reads instead.
    c.put("elsewhere", "x").await.unwrap();
    etcd.compact().await.unwrap();
    wait_log("reconcile revision compacted; re-reading", 0, Duration::from_secs(20)).await;
    let clean_before = logs().matches(CLEAN).count();
    wait_log(CLEAN, clean_before, Duration::from_secs(20)).await;
    assert_eq!(view.get_string("cfg/k").unwrap().as_deref(), Some("5"));
    let seen = seen.wait("cfg/k = 5", Duration::from_secs(20), |s| has(s, "cfg/k", "5")).await;
    assert_eq!(seen.len(), 4, "reconcile must not invent changes: {}", summary(&seen));
    assert!(!logs().contains("differs from etcd"), "false drift reported; log tail:\n{}", log_tail());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Limits {
    max: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_give_decode_errors_naming_the_key_and_the_view_keeps_working() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("cfg/limits", r#"{"max": 3}"#).await.unwrap();
    c.put("cfg/bytes", vec![0xff, 0xfe, 0x00]).await.unwrap();
    c.put("cfg/broken", "{not json").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", ConfigOptions::default()).await.unwrap();
    assert_eq!(view.get_json::<Limits>("cfg/limits").unwrap(), Some(Limits { max: 3 }));
    assert_eq!(view.get_json_value("cfg/limits").unwrap(), Some(serde_json::json!({"max": 3})));
    assert_eq!(view.get_json::<Limits>("cfg/missing").unwrap(), None);
    let e = view.get_json::<Limits>("cfg/broken").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("cfg/broken"), "{e}");
    let e = view.get_json_value("cfg/broken").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    // Valid JSON, wrong shape: also a decode error.
    let e = view.get_json::<Limits>("cfg/bytes").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    let e = view.get_string("cfg/bytes").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("cfg/bytes"), "{e}");
    assert_eq!(view.get("cfg/bytes").as_deref(), Some(&[0xff, 0xfe, 0x00][..]));
    // The view keeps working: a fix is picked up.
    c.put("cfg/broken", r#"{"max": 7}"#).await.unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while view.get_json::<Limits>("cfg/broken").is_err() {
        assert!(Instant::now() < until, "fixed value not seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(view.get_json::<Limits>("cfg/broken").unwrap(), Some(Limits { max: 7 }));
    // Bad names.
    for bad in ["", "a\0b"] {
        assert_eq!(ConfigView::key(&c, bad, ConfigOptions::default()).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(ConfigView::prefix(&c, bad, ConfigOptions::default()).await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    // Dropping the last clone stops the watch: subscriptions end.
    let mut sub = view.changes();
    let clone = view.clone();
    drop(view);
    c.put("cfg/limits", r#"{"max": 4}"#).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().is_some());
    drop(clone);
    assert!(tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_is_applied_and_stripped() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("ns1/")).await.unwrap();
    c.etcd().put("cfg/x", "outside namespace", None).await.unwrap();
    c.put("cfg/x", "inside").await.unwrap();
    let view = ConfigView::prefix(&c, "cfg/", ConfigOptions::default()).await.unwrap();
    assert_eq!(view.keys(), ["cfg/x"]);
    assert_eq!(view.get_string("cfg/x").unwrap().as_deref(), Some("inside"));
    let mut sub = view.changes();
    c.put("cfg/y", "1").await.unwrap();
    let ch = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ch.key, "cfg/y");
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Pool {
    size: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_user_decoders_name_the_key_when_a_value_does_not_decode() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("svc/pool", r#"{"size": 8}"#).await.unwrap();
    c.put("svc/port", "8080").await.unwrap();
    c.put("svc/bad-port", "eighty").await.unwrap();
    c.put("svc/bin", vec![0xff, 0xfe]).await.unwrap();
    let view = ConfigView::prefix(&c, "svc/", no_reconcile()).await.unwrap();
    assert_eq!(view.len(), 4);
    // Present values decode; absent ones give the default.
    assert_eq!(view.get_json_or("svc/pool", Pool { size: 1 }).unwrap(), Pool { size: 8 });
    assert_eq!(view.get_json_or("svc/missing", Pool { size: 1 }).unwrap(), Pool { size: 1 });
    assert_eq!(view.get_string_or("svc/port", "80").unwrap(), "8080");
    assert_eq!(view.get_string_or("svc/missing", "80").unwrap(), "80");
    assert_eq!(&view.get_or("svc/missing", b"d")[..], b"d");
    let port = |v: &[u8]| std::str::from_utf8(v).map_err(|e| e.to_string())?.parse::<u16>().map_err(|e| e.to_string());
    assert_eq!(view.get_with("svc/port", port).unwrap(), Some(8080));
    assert_eq!(view.get_with("svc/missing", port).unwrap(), None);
    // A present value that does not decode is an error naming the key, never the default.
    let e = view.get_with("svc/bad-port", port).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("svc/bad-port") && e.to_string().contains("invalid digit"), "{e}");
    let e = view.get_json_or("svc/port", Pool { size: 1 }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.to_string().contains("svc/port"), "{e}");
    let e = view.get_string_or("svc/bin", "x").unwrap_err();
    assert!(e.kind() == ErrorKind::Decode && e.to_string().contains("svc/bin"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_prefix_subscriptions_see_only_their_changes_in_order() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    let view = ConfigView::prefix(&c, "app/", no_reconcile()).await.unwrap();
    let all = record(view.changes());
    let one = record(view.changes_for("app/a"));
    let sub = record(view.changes_under("app/db/"));
    c.put("app/a", "1").await.unwrap();
    c.put("app/db/host", "h").await.unwrap();
    c.put("app/ab", "not app/a").await.unwrap();
    c.put("app/db/port", "5432").await.unwrap();
    c.put("app/a", "2").await.unwrap();
    c.delete("app/db/host").await.unwrap();
    let last = c.put("app/end", "x").await.unwrap();
    let all = all.wait("app/end", Duration::from_secs(20), |s| has(s, "app/end", "x")).await;
    assert_eq!(all.len(), 7, "{}", summary(&all));
    assert_eq!(all.last().map(|c| c.revision), Some(last));
    // The filtered subscriptions run behind the same view: once the full one has seen the
    // last change, theirs are delivered too (same channel, same order).
    let one = one.wait("app/a = 2", Duration::from_secs(20), |s| has(s, "app/a", "2")).await;
    let sub = sub.wait("app/db/host deleted", Duration::from_secs(20), |s| s.iter().any(|c| c.key == "app/db/host" && c.new.is_none())).await;
    let keys = |s: &[ConfigChange]| s.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&one), ["app/a", "app/a"], "{}", summary(&one));
    assert_eq!(keys(&sub), ["app/db/host", "app/db/port", "app/db/host"], "{}", summary(&sub));
    assert_monotonic(&one);
    assert_monotonic(&sub);
}

/// A snapshot's values are etcd's at exactly its revision, while a writer changes two
/// keys together in every transaction: reading the values and the revision apart would
/// pair values with the wrong revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_values_are_etcds_at_its_revision_under_concurrent_writes() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("snap/x", "0").await.unwrap();
    c.put("snap/y", "0").await.unwrap();
    let view = ConfigView::prefix(&c, "snap/", no_reconcile()).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let v = i.to_string();
                let txn = etcd_client::Txn::new().and_then(vec![
                    etcd_client::TxnOp::put("snap/x", v.clone(), None),
                    etcd_client::TxnOp::put("snap/y", v, None),
                ]);
                c.etcd().txn(txn).await.unwrap();
            }
            i
        })
    };
    let mut raw = c.etcd();
    let mut checked = 0;
    let mut revisions = std::collections::BTreeSet::new();
    while checked < 200 {
        let snap = view.snapshot();
        assert_eq!(snap.get("snap/x"), snap.get("snap/y"), "half a transaction in a snapshot at {}", snap.revision);
        let at = raw
            .get("snap/", Some(etcd_client::GetOptions::new().with_prefix().with_revision(snap.revision)))
            .await
            .unwrap();
        let etcd_values: std::collections::BTreeMap<String, Vec<u8>> =
            at.kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), kv.value().to_vec())).collect();
        let ours: std::collections::BTreeMap<String, Vec<u8>> = snap.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
        assert_eq!(ours, etcd_values, "snapshot at revision {} differs from etcd at that revision", snap.revision);
        revisions.insert(snap.revision);
        checked += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    println!("config: {checked} snapshots checked at {} distinct revisions during {writes} transactions", revisions.len());
    assert!(revisions.len() > 1, "the writer never moved the view during the checks ({writes} transactions)");
}

/// Write `n` keys `{prefix}{i:07}` of `value_len` bytes, 128 to a transaction (etcd's
/// default limit), 8 transactions in flight. Returns the last revision.
async fn bulk_put(c: &Client, prefix: &str, n: usize, value_len: usize) -> i64 {
    let value = "v".repeat(value_len);
    let per_txn = (128usize).min(((1 << 20) / (value_len + 32)).max(1));
    let batches: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(per_txn).map(|c| c.to_vec()).collect();
    let mut last = 0;
    for group in batches.chunks(8) {
        let mut tasks = Vec::new();
        for batch in group {
            let mut etcd = c.etcd();
            let ops: Vec<etcd_client::TxnOp> =
                batch.iter().map(|i| etcd_client::TxnOp::put(format!("{prefix}{i:07}"), value.clone(), None)).collect();
            tasks.push(tokio::spawn(async move { etcd.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap() }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            last = last.max(r.header().unwrap().revision());
        }
    }
    last
}

/// More keys and bytes than one gRPC response carries (4 MiB): the view reads the prefix
/// in pages at one revision, while a writer adds keys; the periodic reconcile and the
/// re-read after compaction page too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_larger_than_one_response_loads_in_pages_at_one_revision() {
    assert!(init_tracing_at("etcd_recipes=debug"), "another tracing subscriber was installed first");
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    // 24 MiB in 96 values of 256 KiB, and 30,000 small keys.
    bulk_put(&c, "big/blob/", 96, 256 * 1024).await;
    bulk_put(&c, "big/small/", 30_000, 64).await;
    // A single Get of the whole prefix is refused: this test is about more than one response.
    let whole = c.etcd().get("big/", Some(etcd_client::GetOptions::new().with_prefix())).await;
    assert!(whole.is_err(), "one response carried the whole prefix; the test needs a larger one");
    // A writer adds keys at the end of the range while the view loads.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.put(&format!("big/tail/{i:07}"), "t").await.unwrap();
                i += 1;
            }
            i
        })
    };
    let t = Instant::now();
    let view = ConfigView::prefix(&c, "big/", ConfigOptions::new().reconcile_interval(Duration::from_millis(300)))
        .await
        .unwrap();
    let load_time = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tail_written = writer.await.unwrap();
    // The snapshot and its revision are read together; the view may have moved on since
    // the load (the tail writes keep arriving), so compare with etcd at the snapshot's revision.
    let snap = view.snapshot();
    let at = snap.revision;
    let count = c
        .etcd()
        .get("big/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only().with_revision(at)))
        .await
        .unwrap()
        .count();
    println!("config: loaded {} keys in {load_time:?} at revision {at}; {tail_written} tail keys written meanwhile", snap.len());
    assert_eq!(snap.len() as i64, count, "the view is not etcd's state at its revision {at}");
    // And the load itself (the tail writes went on during it): the view's own log line gives
    // the revision it loaded at and how many keys it read; etcd had exactly that many then.
    let line = logs().lines().find(|l| l.contains("config view loaded") && l.contains("key=big/")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no load log line; log tail:\n{}", log_tail()));
    let field = |name: &str| -> i64 {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)).and_then(|v| v.parse().ok()).unwrap_or(-1)
    };
    let (loaded_at, loaded_keys) = (field("revision="), field("keys="));
    let then = c
        .etcd()
        .get("big/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only().with_revision(loaded_at)))
        .await
        .unwrap()
        .count();
    assert_eq!(loaded_keys, then, "the load read {loaded_keys} keys at revision {loaded_at}; etcd had {then} then");
    assert_eq!(snap.keys().filter(|k| k.starts_with("big/small/")).count(), 30_000);
    assert_eq!(snap.keys().filter(|k| k.starts_with("big/blob/")).count(), 96);
    assert!(snap.values().filter(|v| v.len() == 256 * 1024).count() == 96, "a large value was cut");
    // The reconcile reads the whole prefix at the view's revision, in pages too.
    wait_log("reconciled: no drift", 0, Duration::from_secs(60)).await;
    assert!(!logs().contains("reconcile read failed"), "reconcile failed; log tail:\n{}", log_tail());
    // After a compaction past the view's revision, the re-read pages as well.
    let seen = record(view.changes());
    c.put("big/zz-after", "a").await.unwrap();
    c.put("elsewhere", "x").await.unwrap();
    etcd.compact().await.unwrap();
    wait_log("reconcile revision compacted; re-reading", 0, Duration::from_secs(60)).await;
    let clean = logs().matches("reconciled: no drift").count();
    wait_log("reconciled: no drift", clean, Duration::from_secs(60)).await;
    seen.wait("big/zz-after", Duration::from_secs(20), |s| has(s, "big/zz-after", "a")).await;
    let now = c.etcd().get("big/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
    assert_eq!(view.len() as i64, now);
}

/// A mirror fed by `batches()`: the start, then each batch applied whole.
#[derive(Default)]
struct Replica {
    seq: u64,
    revision: i64,
    values: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Replica {
    fn from_start(start: etcd_recipes::config::ConfigStart) -> Replica {
        let values = start.values.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        Replica { seq: start.seq, revision: start.revision, values }
    }

    fn apply(&mut self, b: &etcd_recipes::config::ConfigBatch) {
        assert!(b.seq > self.seq, "batch {} after batch {}", b.seq, self.seq);
        assert!(b.reset || b.revision > self.revision, "batch at revision {} after {}", b.revision, self.revision);
        if b.reset {
            self.values.clear();
        }
        for (k, v) in &b.changes {
            match v {
                Some(v) => self.values.insert(k.clone(), v.to_vec()),
                None => self.values.remove(k),
            };
        }
        self.seq = b.seq;
        self.revision = b.revision;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_rebuild_the_view_exactly_and_a_subscriber_that_falls_behind_catches_up_whole() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(etcd.endpoints()).await;
    c.put("b/x", "0").await.unwrap();
    c.put("b/y", "0").await.unwrap();
    let view = ConfigView::prefix(&c, "b/", no_reconcile()).await.unwrap();
    let (start, mut batches) = view.batches();
    assert_eq!((start.revision, start.values.len()), (view.revision(), 2));
    let mut replica = Replica::from_start(start);
    // A second subscriber that does not read while up to 6000 batches go by (more than the
    // channel holds): it gets one reset batch with the whole state, then goes on.
    let (slow_start, mut slow) = view.batches();
    let mut slow_replica = Replica::from_start(slow_start);
    let mut raw = c.etcd();
    let n = 6000u64;
    let mut last_rev = 0;
    let mut fast_batches = 0usize;
    for i in 1..=n {
        let v = i.to_string();
        let mut ops = vec![etcd_client::TxnOp::put("b/x", v.clone(), None), etcd_client::TxnOp::put("b/y", v, None)];
        if i % 7 == 0 {
            ops.push(etcd_client::TxnOp::delete(format!("b/t{}", i - 7), None));
            ops.push(etcd_client::TxnOp::put(format!("b/t{i}"), "t", None));
        }
        last_rev = raw.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap().header().unwrap().revision();
        // The fast subscriber keeps up: every batch whole (both keys of each transaction).
        while let Some(b) = batches.try_next() {
            assert!(!b.reset, "the subscriber that keeps up got a reset at {}", b.revision);
            let xy: Vec<_> = b.changes.iter().filter(|(k, _)| k == "b/x" || k == "b/y").map(|(_, v)| v.clone()).collect();
            assert!(xy.len() % 2 == 0 && xy.chunks(2).all(|p| p[0] == p[1]), "half a transaction in batch {}", b.seq);
            replica.apply(&b);
            fast_batches += 1;
        }
    }
    let check = |r: &Replica| {
        let view_now = view.snapshot();
        let ours: std::collections::BTreeMap<String, Vec<u8>> = view_now.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
        (r.revision == view_now.revision && r.values == ours, view_now.revision)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.revision < last_rev {
        assert!(Instant::now() < deadline, "the subscriber stopped at revision {} (want {last_rev})", replica.revision);
        let b = tokio::time::timeout(Duration::from_secs(10), batches.next()).await.unwrap().unwrap();
        replica.apply(&b);
        fast_batches += 1;
    }
    assert_eq!(check(&replica), (true, last_rev));
    assert_eq!(view.sequence().get(), replica.seq);
    // The slow one: a reset first when it missed more than the channel holds (4096
    // batches; etcd may put several revisions in one watch response), then up to date.
    let first = slow.next().await.unwrap();
    assert_eq!(first.reset, fast_batches > 4096, "{fast_batches} batches; the slow subscriber's first: {}", first.seq);
    println!("config batches: {n} transactions in {fast_batches} batches; the slow subscriber caught up: {}", first.reset);
    slow_replica.apply(&first);
    while let Some(b) = slow.try_next() {
        slow_replica.apply(&b);
    }
    assert_eq!(check(&slow_replica), (true, last_rev));
    // etcd agrees at that revision.
    let at = raw.get("b/", Some(etcd_client::GetOptions::new().with_prefix().with_revision(last_rev))).await.unwrap();
    let etcd_values: std::collections::BTreeMap<String, Vec<u8>> =
        at.kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), kv.value().to_vec())).collect();
    assert_eq!(replica.values, etcd_values);
    // Close ends the batches; a start after it is the last copy.
    view.close();
    assert!(tokio::time::timeout(Duration::from_secs(10), batches.next()).await.unwrap().is_none());
    let (after, mut none) = view.batches();
    assert_eq!(after.revision, last_rev);
    assert!(none.next().await.is_none());
}
