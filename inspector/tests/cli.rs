//! The inspector against a real etcd: holders and waiters from Rust and from etcdctl
//! (etcd's own Go `concurrency` code), leaders, services, queues and config; JSON parsed
//! and asserted, tables asserted on their key columns, and `watch` redrawing on a change.
//! (The Python and Node suites hold locks and leaderships from their faces and check
//! the same output.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_recipes::election::Election;
use etcd_recipes::lock::Lock;
use etcd_recipes::registry::{RegisterOptions, Registration};
use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::workqueue::WorkQueue;
use etcd_recipes::{Client, ClientOptions, SessionSource};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(20);

fn cli(etcd: &EtcdCluster, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etcd-recipes"));
    c.env("ETCD_ENDPOINTS", etcd.endpoints().join(",")).args(args);
    c
}

/// Run the CLI; its stdout, failing (with its stderr) unless it exits 0.
fn run(etcd: &EtcdCluster, args: &[&str]) -> String {
    let out = cli(etcd, args).output().expect("run etcd-recipes");
    assert!(out.status.success(), "etcd-recipes {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn run_json(etcd: &EtcdCluster, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = run(etcd, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcd-recipes {args:?}: not JSON ({e}), {} bytes", text.len()))
}

/// The table row whose first column is `first` and that contains every one of `cells`.
fn row<'a>(table: &'a str, first: &str, cells: &[&str]) -> &'a str {
    table
        .lines()
        .find(|l| {
            let cols: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
            cols.first() == Some(&first) && cells.iter().all(|c| cols.contains(c))
        })
        .unwrap_or_else(|| panic!("no row {first:?} with {cells:?} among {} lines: {:?}", table.lines().count(), table.lines().next()))
}

/// A process (etcdctl) that prints its first line once it holds what it asked for.
struct Holder(Child);

impl Holder {
    fn start(mut cmd: Command) -> (Holder, String) {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn etcdctl");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(out).read_line(&mut first);
            let _ = tx.send(first);
        });
        let first = rx.recv_timeout(WITHIN).expect("etcdctl printed nothing");
        (Holder(child), first.trim().to_string())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn client(etcd: &EtcdCluster) -> Client {
    Client::connect(ClientOptions::new(etcd.endpoints())).await.expect("connect")
}

/// How many keys are under `prefix`.
async fn count(c: &Client, prefix: &str) -> i64 {
    let opts = etcd_recipes::etcd_client::GetOptions::new().with_prefix().with_count_only();
    c.etcd().get(prefix, Some(opts)).await.unwrap().count()
}

async fn until_keys(c: &Client, prefix: &str, n: i64) {
    let until = tokio::time::Instant::now() + WITHIN;
    loop {
        let have = count(c, prefix).await;
        if have == n {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "{prefix}: {have} keys, want {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_show_holder_token_and_waiters_in_order_from_rust_and_etcdctl() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    // Rust holds "jobs/a"; etcdctl waits behind it; another Rust acquire waits last.
    let lock = Lock::new(SessionSource::per_use(&c, 10).unwrap(), "jobs/a").unwrap();
    let held = lock.acquire().await.unwrap();
    let mut ctl = etcd.etcdctl();
    ctl.args(["lock", "jobs/a"]);
    // Killed on drop, also when an assertion below fails.
    let mut ctl_child = Holder(ctl.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    until_keys(&c, "jobs/a/", 2).await;
    let l2 = Lock::new(SessionSource::per_use(&c, 5).unwrap(), "jobs/a").unwrap();
    let third = tokio::spawn(async move { l2.acquire().await });
    until_keys(&c, "jobs/a/", 3).await;
    // etcdctl holds "jobs/b" alone.
    let (_b, b_key) = Holder::start({
        let mut x = etcd.etcdctl();
        x.args(["lock", "jobs/b"]);
        x
    });
    assert!(b_key.starts_with("jobs/b/"), "etcdctl lock printed {b_key:?}");

    let one = run_json(&etcd, &["locks", "jobs/a"]);
    assert_eq!(one["kind"], "lock");
    assert_eq!(one["holders"].as_array().unwrap().len(), 1);
    assert_eq!(one["holders"][0]["lease_id"], held.lease_id());
    assert_eq!(one["holders"][0]["create_revision"], held.fencing_token());
    assert_eq!(one["holders"][0]["key"], held.key());
    let ttl = one["holders"][0]["ttl"].as_i64().unwrap();
    assert!((1..=10).contains(&ttl), "holder ttl {ttl}");
    assert_eq!(one["holders"][0]["granted_ttl"], 10);
    let waiters = one["waiters"].as_array().unwrap();
    assert_eq!(waiters.len(), 2);
    let (w1, w2) = (waiters[0]["create_revision"].as_i64().unwrap(), waiters[1]["create_revision"].as_i64().unwrap());
    assert!(held.fencing_token() < w1 && w1 < w2, "order: {} {w1} {w2}", held.fencing_token());
    // etcdctl lock's session TTL is 10 s; our second acquire's 5 s: etcdctl is first.
    assert_eq!(waiters[0]["granted_ttl"], 10);
    let ctl_lease = waiters[0]["lease_id"].as_i64().unwrap();
    assert_eq!(waiters[1]["granted_ttl"], 5);

    let all = run_json(&etcd, &["locks"]);
    let names: Vec<&str> = all.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["jobs/a", "jobs/b"]);
    assert_eq!(all[1]["holders"][0]["key"], b_key.as_str());

    let table = run(&etcd, &["locks"]);
    let lease_hex = format!("{:x}", held.lease_id());
    let token = held.fencing_token().to_string();
    row(&table, "jobs/a", &["lock", "holder", &lease_hex, &token]);
    row(&table, "jobs/a", &["waiter 1", &w1.to_string()]);
    row(&table, "jobs/a", &["waiter 2", &w2.to_string()]);
    row(&table, "jobs/b", &["holder"]);
    assert!(table.starts_with("LOCK"), "header first");

    // The holder releases: etcdctl holds, our second acquire is the only waiter.
    held.release().await.unwrap();
    let until = tokio::time::Instant::now() + WITHIN;
    loop {
        let one = run_json(&etcd, &["locks", "jobs/a"]);
        if one["holders"][0]["create_revision"] == w1 {
            assert_eq!(one["waiters"].as_array().unwrap().len(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "etcdctl did not become the holder");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ctl_child.0.kill();
    let _ = ctl_child.0.wait();
    // Its session goes with its lease; do not wait for the TTL.
    c.revoke_lease(ctl_lease).await.unwrap();
    let last = third.await.unwrap().unwrap();
    let one = run_json(&etcd, &["locks", "jobs/a"]);
    assert_eq!(one["holders"][0]["create_revision"], last.fencing_token());
    last.release().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_semaphores_services_queues_and_config() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    // Election "sched": etcdctl leads, ours is the next candidate.
    let (_leader, leader_key) = Holder::start({
        let mut x = etcd.etcdctl();
        x.args(["elect", "sched", "ctl-node"]);
        x
    });
    assert!(leader_key.starts_with("sched/"), "etcdctl elect printed {leader_key:?}");
    let e = Election::new(SessionSource::per_use(&c, 10).unwrap(), "sched").unwrap();
    let e2 = e.clone();
    let ours = tokio::spawn(async move { e2.campaign("rust-node").await });
    until_keys(&c, "sched/", 2).await;
    // Election "billing": ours leads alone.
    let b = Election::new(SessionSource::per_use(&c, 10).unwrap(), "billing").unwrap();
    let lead = b.campaign("rust-1").await.unwrap();

    let sched = run_json(&etcd, &["elections", "sched"]);
    assert_eq!(sched["leader"]["key"], leader_key.as_str());
    assert_eq!(sched["leader"]["value"], "ctl-node");
    assert_eq!(sched["candidates"][0]["value"], "rust-node");
    let all = run_json(&etcd, &["elections"]);
    let names: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["billing", "sched"]);
    assert_eq!(all[0]["leader"]["create_revision"], lead.fencing_token());
    let table = run(&etcd, &["elections"]);
    row(&table, "sched", &["leader", "ctl-node"]);
    row(&table, "sched", &["candidate 1", "rust-node"]);
    row(&table, "billing", &["leader", "rust-1", &lead.fencing_token().to_string()]);

    // A semaphore of 2 permits with 3 contenders.
    let sem = Semaphore::new(SessionSource::per_use(&c, 10).unwrap(), "dl", 2).unwrap();
    let p1 = sem.acquire().await.unwrap();
    let p2 = sem.acquire().await.unwrap();
    let s3 = sem.clone();
    let waiting = tokio::spawn(async move { s3.acquire().await });
    until_keys(&c, "dl/", 3).await;
    let all = run_json(&etcd, &["locks"]);
    let dl = all.as_array().unwrap().iter().find(|l| l["name"] == "dl").expect("semaphore listed");
    assert_eq!(dl["kind"], "semaphore");
    assert_eq!(dl["permits"], 2);
    assert_eq!(dl["holders"].as_array().unwrap().len(), 2);
    assert_eq!(dl["waiters"].as_array().unwrap().len(), 1);
    row(&run(&etcd, &["locks"]), "dl", &["semaphore(2)", "waiter 1"]);

    // Services: ours (one draining) and one put by hand, as a Go service would.
    let r1 = Registration::register(
        &c,
        RegisterOptions::new("api", "api-1", "10.0.0.1:80").metadata(serde_json::json!({"zone": "a"})),
    )
    .await
    .unwrap();
    let r2 = Registration::register(
        &c,
        RegisterOptions::new("api", "api-2", "10.0.0.2:80").readiness(etcd_recipes::registry::Readiness::Draining),
    )
    .await
    .unwrap();
    c.put("billing-svc/b-1", r#"{"Op":0,"Addr":"10.0.1.1:9000","Metadata":null}"#).await.unwrap();
    let api = run_json(&etcd, &["services", "api"]);
    let inst = api["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 2);
    assert_eq!((inst[0]["id"].as_str(), inst[0]["ready"].as_bool()), (Some("api-1"), Some(true)));
    assert_eq!(inst[0]["metadata"]["zone"], "a");
    assert_eq!(inst[0]["lease_id"], r1.lease_id());
    assert_eq!((inst[1]["id"].as_str(), inst[1]["ready"].as_bool()), (Some("api-2"), Some(false)));
    assert_eq!((inst[0]["readiness"].as_str(), inst[1]["readiness"].as_str()), (Some("ready"), Some("draining")));
    let table = run(&etcd, &["services"]);
    row(&table, "api", &["api-1", "10.0.0.1:80", "ready"]);
    row(&table, "api", &["api-2", "10.0.0.2:80", "draining"]);
    row(&table, "billing-svc", &["b-1", "10.0.1.1:9000", "ready"]);

    // Queues: a work queue with a claimed item and a dead letter, a Go-style FIFO queue.
    let wq = WorkQueue::new(SessionSource::per_use(&c, 10).unwrap(), "thumbs").unwrap().with_max_deliveries(Some(1)).unwrap();
    for i in 0..3 {
        wq.put(format!("img-{i}"), None).await.unwrap();
    }
    let claimed = wq.receive().await.unwrap();
    let dead = wq.receive().await.unwrap();
    dead.nack(None).await.unwrap();
    c.put("emails/1700000000000000001", "a").await.unwrap();
    c.put("emails/1700000000000000002", "b").await.unwrap();
    let qs = run_json(&etcd, &["queues"]);
    let find = |n: &str| qs.as_array().unwrap().iter().find(|q| q["name"] == n).cloned().unwrap_or(Value::Null);
    let t = find("thumbs");
    assert_eq!((t["kind"].as_str(), t["items"].as_i64(), t["claimed"].as_i64(), t["dead"].as_i64()), (Some("work_queue"), Some(2), Some(1), Some(1)));
    let e = find("emails");
    assert_eq!((e["kind"].as_str(), e["items"].as_i64()), (Some("queue"), Some(2)));
    let one = run_json(&etcd, &["queues", "thumbs"]);
    assert_eq!(one["items"], 2);
    row(&run(&etcd, &["queues"]), "thumbs", &["work_queue", "2", "1"]);

    // Config: every key under a prefix.
    c.put("app/db", "postgres://db").await.unwrap();
    c.put("app/flags", "{\"beta\":true}").await.unwrap();
    let cfg = run_json(&etcd, &["config", "app/"]);
    let keys: Vec<&str> = cfg["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/db", "app/flags"]);
    assert_eq!(cfg["entries"][0]["value"], "postgres://db");
    row(&run(&etcd, &["config", "app/"]), "app/db", &["postgres://db"]);

    claimed.ack().await.unwrap();
    for p in [p1, p2] {
        p.release().await.unwrap();
    }
    waiting.await.unwrap().unwrap().release().await.unwrap();
    ours.abort();
    lead.resign().await.unwrap();
    r1.close().await.unwrap();
    r2.close().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_option_and_errors() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("tenant-a/")).await.unwrap();
    let g = Lock::new(SessionSource::per_use(&c, 10).unwrap(), "l").unwrap().acquire().await.unwrap();
    let inside = run_json(&etcd, &["--namespace", "tenant-a/", "locks"]);
    assert_eq!(inside[0]["name"], "l");
    assert_eq!(inside[0]["holders"][0]["key"], "l/".to_string() + &format!("{:x}", g.lease_id()));
    let outside = run_json(&etcd, &["locks"]);
    assert_eq!(outside[0]["name"], "tenant-a/l");
    // Bad usage: exit code 2 and the usage text on stderr.
    let out = cli(&etcd, &["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
    // No etcd there: a clear failure, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-recipes")).args(["--endpoints", "127.0.0.1:1", "locks"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
    g.release().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redraws_when_a_lock_is_taken() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let mut child = Holder(cli(&etcd, &["--json", "watch", "--count", "2"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(Ok(l)) = lines.next() {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first: Value = serde_json::from_str(&rx.recv_timeout(WITHIN).expect("first frame")).unwrap();
    assert_eq!(first["locks"].as_array().unwrap().len(), 0);
    let g = Lock::new(SessionSource::per_use(&c, 10).unwrap(), "live").unwrap().acquire().await.unwrap();
    let second: Value = serde_json::from_str(&rx.recv_timeout(WITHIN).expect("a frame after the change")).unwrap();
    assert_eq!(second["locks"][0]["name"], "live");
    assert_eq!(second["locks"][0]["holders"][0]["create_revision"], g.fencing_token());
    assert!(second["revision"].as_i64() > first["revision"].as_i64());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "watch --count 2 exits after its second frame");
    g.release().await.unwrap();
    c.close().await;
}
