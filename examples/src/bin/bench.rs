//! Benchmarks from BENCH.md, Rust side: ours vs the raw `etcd-client` crate, side by
//! side against one freshly started single-member etcd, in one run.
//!
//! `cargo run --release -p etcd-recipes-examples --bin bench [-- K1 K2 ... S1 R1 Q1 W1 F1]`
//! (R1 and Q1 run etcd's Go recipes through tests/go/bench: needs `go` and the etcd Go sources.)
//! (F1 starts a 3-member cluster of its own and runs with a follower, then the leader, paused.)
//! (V1, view scale, runs only when named: config views of 10k, 100k and 1M keys and of 100 MiB.)
//! `--endpoints a,b` runs against that etcd instead of starting one; `--side ours|raw` runs
//! one side of each named workload (K1-K3, L1, L2, E1, E2, D1, D2, D2V, C1, C2, S1, R1, Q1, W1, F1):
//! bench/run.py's Rust side (F1 there: `ready` on stdout, then `fault` and `end` on stdin).
//! Prints one JSON line per workload and side: side, lang, workload, value, unit, ok
//! (and `ratio` = ours / raw on our line).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_recipes::etcd_client;
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::config::{ConfigOptions, ConfigView};
use etcd_recipes::election::Election;
use etcd_recipes::registry::{RegisterOptions, Registration, ServiceView};
use etcd_recipes::lock::{Lock, LockGuard};
use etcd_recipes::queue::Queue;
use etcd_recipes::rwlock::RwLock;
use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::workqueue::WorkQueue;
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session, SessionSource};
use futures::stream::{self, StreamExt};
use serde_json::json;

fn emit(side: &str, workload: &str, value: f64, unit: &str, ok: bool, ratio: Option<f64>) {
    let mut line = json!({"side": side, "lang": "rust", "workload": workload, "value": (value * 100.0).round() / 100.0, "unit": unit, "ok": ok});
    if let Some(r) = ratio {
        line["ratio"] = json!((r * 1000.0).round() / 1000.0);
    }
    println!("{line}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

const N: usize = 20_000;
const INFLIGHT: usize = 64;

async fn k1_ours(c: &Client) -> f64 {
    let value = Arc::new(vec![b'x'; 256]);
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let (c, v) = (c.clone(), value.clone());
            async move {
                c.put(&format!("bench/k/{i}"), v.as_slice()).await.expect("put");
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k1_raw(c: &etcd_client::Client) -> f64 {
    let value = Arc::new(vec![b'x'; 256]);
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let (mut c, v) = (c.kv_client(), value.clone());
            async move {
                c.put(format!("bench/raw/{i}"), v.as_slice(), None).await.expect("put");
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k2_ours(c: &Client) -> f64 {
    k2_ours_at(c, "bench/k/").await
}

async fn k2_ours_at(c: &Client, prefix: &str) -> f64 {
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let c = c.clone();
            async move {
                assert!(c.get(&format!("{prefix}{i}")).await.expect("get").is_some());
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k2_raw(c: &etcd_client::Client) -> f64 {
    k2_raw_at(c, "bench/raw/").await
}

async fn k2_raw_at(c: &etcd_client::Client, prefix: &str) -> f64 {
    let t = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(INFLIGHT, |i| {
            let mut c = c.kv_client();
            async move {
                assert_eq!(c.get(format!("{prefix}{i}"), None).await.expect("get").kvs().len(), 1);
            }
        })
        .await;
    N as f64 / t.elapsed().as_secs_f64()
}

async fn k3_ours(c: &Client) -> f64 {
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        c.put(&format!("bench/seq/{i}"), "v").await.expect("put");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

async fn k3_raw(c: &etcd_client::Client) -> f64 {
    let mut kv = c.kv_client();
    let mut lat = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        kv.put(format!("bench/rawseq/{i}"), "v", None).await.expect("put");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

/// L1: acquire+release cycles of one lock by one client, uncontended.
async fn l1_ours(c: &Client) -> f64 {
    let session = Session::new(c, 10).await.expect("session");
    let lock = Lock::new(&session, "bench/l1").expect("lock");
    let t = Instant::now();
    for _ in 0..500 {
        let g = lock.acquire().await.expect("acquire");
        g.release().await.expect("release");
    }
    let r = 500.0 / t.elapsed().as_secs_f64();
    session.close().await.ok();
    r
}

/// L1 with the raw crate's Lock RPC (the etcd server's lock), on a kept-alive lease.
async fn l1_raw(c: &etcd_client::Client) -> f64 {
    let mut c = c.clone();
    let lease = c.lease_grant(10, None).await.expect("grant").id();
    let t = Instant::now();
    for _ in 0..500 {
        let key = c
            .lock("bench/l1raw", Some(etcd_client::LockOptions::new().with_lease(lease)))
            .await
            .expect("lock")
            .key()
            .to_vec();
        c.unlock(key).await.expect("unlock");
    }
    let r = 500.0 / t.elapsed().as_secs_f64();
    c.lease_revoke(lease).await.ok();
    r
}

/// L2: 8 workers, each its own client and session, 100 cycles each; inside: get, +1, put.
async fn l2_ours(endpoints: &[String]) -> (f64, bool) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Client::connect(ClientOptions::new(endpoints.to_vec())).await.expect("connect"));
    }
    clients[0].put("bench/l2-counter", "0").await.expect("put");
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let session = Session::new(&c, 10).await.expect("session");
                let lock = Lock::new(&session, "bench/l2").expect("lock");
                for _ in 0..100 {
                    let g = lock.acquire().await.expect("acquire");
                    let v: u64 = String::from_utf8(c.get("bench/l2-counter").await.expect("get").unwrap_or_default())
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    c.put("bench/l2-counter", (v + 1).to_string()).await.expect("put");
                    g.release().await.expect("release");
                }
                session.close().await.ok();
                c
            })
        })
        .collect();
    let mut last = None;
    for t in tasks {
        last = Some(t.await.expect("worker"));
    }
    let rate = 800.0 / t.elapsed().as_secs_f64();
    let end = last.expect("clients").get("bench/l2-counter").await.expect("get").unwrap_or_default();
    (rate, end == b"800")
}

/// L2 with the server Lock RPC.
async fn l2_raw(endpoints: &[String]) -> (f64, bool) {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(etcd_client::Client::connect(endpoints, None).await.expect("connect"));
    }
    clients[0].put("bench/l2raw-counter", "0", None).await.expect("put");
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let lease = c.lease_grant(10, None).await.expect("grant").id();
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.expect("keepalive");
                let ka = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                            break;
                        }
                    }
                });
                for _ in 0..100 {
                    let key = c
                        .lock("bench/l2raw", Some(etcd_client::LockOptions::new().with_lease(lease)))
                        .await
                        .expect("lock")
                        .key()
                        .to_vec();
                    let resp = c.get("bench/l2raw-counter", None).await.expect("get");
                    let v: u64 = std::str::from_utf8(resp.kvs()[0].value()).expect("utf8").parse().expect("number");
                    c.put("bench/l2raw-counter", (v + 1).to_string(), None).await.expect("put");
                    c.unlock(key).await.expect("unlock");
                }
                ka.abort();
                c.lease_revoke(lease).await.ok();
                c
            })
        })
        .collect();
    let mut last = None;
    for t in tasks {
        last = Some(t.await.expect("worker"));
    }
    let rate = 800.0 / t.elapsed().as_secs_f64();
    let resp = last.expect("clients").get("bench/l2raw-counter", None).await.expect("get");
    (rate, resp.kvs()[0].value() == b"800")
}

/// E1: two candidates; the leader resigns; ms until the other leads (median over 30).
async fn e1_ours(c: &Client) -> f64 {
    e1_ours_split(c).await.0
}

/// E1, and how much of it the resign call itself takes (medians, ms).
async fn e1_ours_split(c: &Client) -> (f64, f64) {
    let s1 = Session::new(c, 10).await.expect("session");
    let s2 = Session::new(c, 10).await.expect("session");
    let (e1, e2) = (Election::new(&s1, "bench/e1").expect("e"), Election::new(&s2, "bench/e1").expect("e"));
    let mut times = Vec::new();
    let mut leader = e1.campaign("a").await.expect("campaign");
    let mut resigns = Vec::new();
    let mut next_is_e2 = true;
    for _ in 0..30 {
        let other = if next_is_e2 { e2.clone() } else { e1.clone() };
        let waiting = tokio::spawn(async move { let l = other.campaign("b").await.expect("campaign"); (l, Instant::now()) });
        tokio::time::sleep(Duration::from_millis(20)).await; // the other is queued
        let t = Instant::now();
        leader.resign().await.expect("resign");
        resigns.push(t.elapsed().as_secs_f64() * 1e3);
        let (l, at) = waiting.await.expect("task");
        times.push(at.duration_since(t).as_secs_f64() * 1e3);
        leader = l;
        next_is_e2 = !next_is_e2;
    }
    leader.resign().await.ok();
    (median(times), median(resigns))
}

/// E1 with the server Election RPC (campaign blocks server-side until leader).
async fn e1_raw(c: &etcd_client::Client) -> f64 {
    let mut c = c.clone();
    let l1 = c.lease_grant(10, None).await.expect("grant").id();
    let l2 = c.lease_grant(10, None).await.expect("grant").id();
    let mut times = Vec::new();
    let mut leader = c.campaign("bench/e1raw", "a", l1).await.expect("campaign").take_leader().expect("leader");
    let mut next = l2;
    for _ in 0..30 {
        let mut c2 = c.clone();
        let waiting = tokio::spawn(async move {
            let r = c2.campaign("bench/e1raw", "b", next).await.expect("campaign");
            (r.leader().cloned().expect("leader"), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        c.resign(Some(etcd_client::ResignOptions::new().with_leader(leader))).await.expect("resign");
        let (l, at) = waiting.await.expect("task");
        times.push(at.duration_since(t).as_secs_f64() * 1e3);
        leader = l;
        next = if next == l1 { l2 } else { l1 };
    }
    c.lease_revoke(l1).await.ok();
    c.lease_revoke(l2).await.ok();
    median(times)
}

/// D1: a discovery view runs; one instance registers; ms until the view has it (median over 200).
async fn d1_ours(c: &Client) -> f64 {
    let view = ServiceView::start(c, "bench-d1").await.expect("view");
    let mut events = view.events();
    let mut times = Vec::new();
    for i in 0..200 {
        let id = format!("i{i}");
        let t = Instant::now();
        let reg = Registration::register(c, RegisterOptions::new("bench-d1", id.clone(), "127.0.0.1:1").ttl(30))
            .await
            .expect("register");
        loop {
            let (ev, _) = events.next().await.expect("stream").expect("event");
            if matches!(&ev, etcd_recipes::registry::InstanceEvent::Up(x) if x.id == id) {
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(view.instances().iter().any(|x| x.id == id));
        reg.close().await.expect("close");
        loop {
            let (ev, _) = events.next().await.expect("stream").expect("event");
            if matches!(&ev, etcd_recipes::registry::InstanceEvent::Down { id: d } if *d == id) {
                break;
            }
        }
    }
    view.close();
    median(times)
}

/// D1 peer: a raw prefix watch, a lease grant + put in the endpoints format.
async fn d1_raw(c: &etcd_client::Client) -> f64 {
    let mut c = c.clone();
    let mut stream = c
        .watch("bench-d1raw/", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    stream.message().await.expect("created");
    let mut times = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let lease = c.lease_grant(30, None).await.expect("grant").id();
        c.put(
            format!("bench-d1raw/i{i}"),
            r#"{"Op":0,"Addr":"127.0.0.1:1","Metadata":null}"#,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
        stream.message().await.expect("event");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        c.lease_revoke(lease).await.expect("revoke");
        stream.message().await.expect("delete event");
    }
    median(times)
}

/// C1: a config view of one key; the key is put; ms until the view returns it (median over 200).
async fn c1_ours(c: &Client) -> f64 {
    let view = ConfigView::key(c, "bench/c1", ConfigOptions::default()).await.expect("view");
    let mut changes = view.changes();
    let mut times = Vec::new();
    for i in 0..200 {
        let v = format!("v{i}");
        let t = Instant::now();
        c.put("bench/c1", v.clone()).await.expect("put");
        loop {
            changes.next().await.expect("stream").expect("change");
            if view.get("bench/c1").as_deref() == Some(v.as_bytes()) {
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    view.close();
    median(times)
}

/// C1 peer: a raw watch on the key.
async fn c1_raw(c: &etcd_client::Client) -> f64 {
    let mut c = c.clone();
    let mut stream = c.watch("bench/c1raw", None).await.expect("watch");
    stream.message().await.expect("created");
    let mut times = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        c.put("bench/c1raw", format!("v{i}"), None).await.expect("put");
        stream.message().await.expect("event");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    median(times)
}

/// C2: local reads of one key from a config view, vs a RwLock<HashMap> fed by a watch.
async fn c2(c: &Client) -> (f64, f64) {
    c.put("bench/c2", "value").await.expect("put");
    let view = ConfigView::key(c, "bench/c2", ConfigOptions::default()).await.expect("view");
    let n = 5_000_000u64;
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..n {
        hits += view.get(std::hint::black_box("bench/c2")).is_some() as u64;
    }
    let ours = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(hits, n);
    let map = std::sync::RwLock::new(std::collections::HashMap::<String, Arc<[u8]>>::new());
    map.write().expect("lock").insert("bench/c2".into(), Arc::from(&b"value"[..]));
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..n {
        hits += map.read().expect("lock").get(std::hint::black_box("bench/c2")).cloned().is_some() as u64;
    }
    let plain = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(hits, n);
    view.close();
    (ours, plain)
}

/// One timed operation of a fault run: when it started (since the fault), how long it
/// took, and whether it failed.
type Sample = (f64, f64, bool);

/// Ops in a loop until `stop`: `op` returns Err on failure. Each sample is
/// (start since `fault_at` in s, latency in ms, failed).
async fn sample_loop<F, Fut>(fault_at: Instant, stop: Instant, mut op: F) -> Vec<Sample>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut out = Vec::new();
    let mut i = 0;
    while Instant::now() < stop {
        let t0 = Instant::now();
        let failed = op(i).await.is_err();
        if failed {
            // A failure that returns at once must not spin (nor starve other tasks).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let since = t0.saturating_duration_since(fault_at).as_secs_f64() - fault_at.saturating_duration_since(t0).as_secs_f64();
        out.push((since, t0.elapsed().as_secs_f64() * 1e3, failed));
        i += 1;
    }
    out
}

fn p99_in(samples: &[Sample], from: f64, to: f64) -> (f64, usize, usize) {
    let v: Vec<f64> = samples.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).collect();
    let errors = samples.iter().filter(|s| s.0 >= from && s.0 < to && s.2).count();
    if v.is_empty() {
        return (f64::NAN, 0, errors);
    }
    let mut v = v;
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (v[((v.len() - 1) as f64 * 0.99).round() as usize], v.len(), errors)
}

/// F1: a 3-member cluster; puts and lock cycles from our client on all three endpoints,
/// puts from the raw etcd-client crate and from `etcdctl put` (a process per op), side
/// by side, while one member (`leader` or a follower) is SIGSTOPped for 10 s.
async fn f1(leader: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??;
    let eps = etcd.endpoints();
    // The leader, as every member reports it.
    let mut victim = 0;
    for (i, ep) in eps.iter().enumerate() {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await?;
        let st = c.status().await?;
        let is_leader = st.header().map(|h| h.member_id()) == Some(st.leader());
        if is_leader == leader {
            victim = i;
            break;
        }
    }
    let ours = Client::connect(ClientOptions::new(eps.clone())).await?;
    let raw = etcd_client::Client::connect(eps.clone(), None).await?;
    // The lock cycles' session; replaced (and counted) when lost.
    let session = Arc::new(tokio::sync::Mutex::new(Session::new(&ours, 3).await?));
    let sessions_lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    ours.put("bench/f1", "warm").await?;
    let fault_at = Instant::now() + Duration::from_secs(2);
    let stop = fault_at + Duration::from_secs(12);
    let ctl = etcd_recipes::testing::etcdctl_binary();
    let eps_arg = format!("--endpoints={}", eps.join(","));
    let c = ours.clone();
    let puts = tokio::spawn(sample_loop(fault_at, stop, move |i| {
        let c = c.clone();
        async move { c.put("bench/f1/ours", format!("{i}")).await.map(|_| ()).map_err(|e| e.to_string()) }
    }));
    let (c, session2, lost2) = (ours.clone(), session.clone(), sessions_lost.clone());
    let locks = tokio::spawn(sample_loop(fault_at, stop, move |i| {
        let (c, session, lost) = (c.clone(), session2.clone(), lost2.clone());
        async move {
            let mut s = session.lock().await;
            if !s.is_alive() {
                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *s = Session::new(&c, 3).await.map_err(|e| e.to_string())?;
            }
            let lock = Lock::new(&*s, "bench/f1-lock").map_err(|e| e.to_string())?;
            let g = lock.acquire_timeout(Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
            let r = g.fence().put("bench/f1/locked", format!("{i}")).await.map(|_| ()).map_err(|e| e.to_string());
            let _ = g.release().await;
            r
        }
    }));
    let raw2 = raw.clone();
    let raw_puts = tokio::spawn(sample_loop(fault_at, stop, move |i| {
        let mut c = raw2.clone();
        async move { c.put("bench/f1/raw", format!("{i}"), None).await.map(|_| ()).map_err(|e| e.to_string()) }
    }));
    let ctl_puts = tokio::spawn(sample_loop(fault_at, stop, move |i| {
        let (ctl, eps_arg) = (ctl.clone(), eps_arg.clone());
        async move {
            let out = tokio::process::Command::new(ctl)
                .env("ETCDCTL_API", "3")
                .args([eps_arg.as_str(), "put", "bench/f1/etcdctl", &i.to_string()])
                .output()
                .await
                .map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
        }
    }));
    let fault = async {
        tokio::time::sleep_until(fault_at.into()).await;
        etcd.pause(victim).expect("pause");
        tokio::time::sleep(Duration::from_secs(10)).await;
        etcd.resume(victim).expect("resume");
    };
    fault.await;
    let (puts, locks, raw_puts, ctl_puts) = (puts.await?, locks.await?, raw_puts.await?, ctl_puts.await?);
    let which = if leader { "leader" } else { "follower" };
    let lost = sessions_lost.load(std::sync::atomic::Ordering::Relaxed) > 0 || !session.lock().await.is_alive();
    for (side, samples) in [("ours-put", &puts), ("ours-lock-cycle", &locks), ("raw-etcd-client-put", &raw_puts), ("etcdctl-put", &ctl_puts)] {
        let (start_p99, n1, e1) = p99_in(samples, 0.0, 2.0);
        let (after_p99, n2, e2) = p99_in(samples, 2.0, 10.0);
        let longest = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        let mut line = json!({"side": side, "lang": "rust", "workload": format!("F1-{which}"), "longest_op_ms": longest.round(),
            "value": (start_p99 * 100.0).round() / 100.0, "unit": "ms p99, first 2 s of the fault",
            "after_p99_ms": (after_p99 * 100.0).round() / 100.0, "ops": n1 + n2, "errors": e1 + e2,
            "ok": start_p99 <= 1500.0 && after_p99 <= 200.0});
        if side == "ours-lock-cycle" {
            line["sessions_lost"] = json!(if lost { 1 } else { 0 });
            line["ok"] = json!(line["ok"].as_bool().unwrap_or(false) && !lost);
        }
        println!("{line}");
    }
    let _ = session.lock().await.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// S1, R1, Q1, W1: the semaphore, the read-write lock, the queue and the work queue. Each
// runs ROUNDS rounds; where etcd's Go packages have the recipe (R1: recipe.RWMutex, Q1:
// recipe.Queue) the rounds alternate ours, Go, ours, Go, ... against the same etcd, the Go
// side being tests/go/bench (built offline by `testing::go_program`). Lines carry the
// median as `value`, every round in `rounds` and `[min, max]` in `spread`.

const ROUNDS: usize = 3;

fn spread(v: &[f64]) -> serde_json::Value {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    json!([(lo * 100.0).round() / 100.0, (hi * 100.0).round() / 100.0])
}

/// One line for a side measured over rounds: the median as `value`, the rounds and their spread.
#[allow(clippy::too_many_arguments)]
fn emit_rounds(side: &str, lang: &str, workload: &str, rounds: &[f64], unit: &str, ok: bool, ratio: Option<f64>, extra: serde_json::Value) {
    let mut line = json!({"side": side, "lang": lang, "workload": workload, "value": (median(rounds.to_vec()) * 100.0).round() / 100.0,
        "unit": unit, "ok": ok, "rounds": rounds.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(), "spread": spread(rounds)});
    if let Some(r) = ratio {
        line["ratio"] = json!((r * 1000.0).round() / 1000.0);
    }
    if let (Some(l), Some(e)) = (line.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            l.insert(k.clone(), v.clone());
        }
    }
    println!("{line}");
}

/// A peer that lacks the recipe: BENCH.md allows n/a.
fn emit_na(side: &str, lang: &str, workload: &str, unit: &str, why: &str) {
    println!("{}", json!({"side": side, "lang": lang, "workload": workload, "value": null, "unit": unit, "ok": null, "n/a": why}));
}

/// Runs `tests/go/bench <args>` against `endpoints`; its one JSON line.
async fn go_bench(endpoints: &[String], args: &[String]) -> serde_json::Value {
    let bin = tokio::task::spawn_blocking(|| etcd_recipes::testing::go_program("bench")).await.expect("task").expect("build tests/go/bench");
    let out = tokio::process::Command::new(bin)
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .await
        .expect("run tests/go/bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("tests/go/bench {args:?}: no JSON line (exit {:?}): {}", out.status.code(), String::from_utf8_lossy(&out.stderr))
    });
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert!(v.get("event").is_none(), "tests/go/bench {args:?} failed: {v}");
    v
}

async fn connect_n(endpoints: &[String], n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Client::connect(ClientOptions::new(endpoints.to_vec())).await.expect("connect"));
    }
    out
}

async fn count_prefix(c: &Client, prefix: &str) -> i64 {
    c.etcd()
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count")
        .count()
}

/// Changes the record at `key` from s to f(s) in one transaction guarded by the record's
/// mod revision and by `guard`'s fence, so the check is made in etcd. `false` when f
/// refuses the state it saw (an overlap) or the hold was lost.
async fn guarded_update(raw: &mut etcd_client::Client, guard: &LockGuard, key: &str, f: impl Fn(&str) -> Option<String>) -> bool {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    loop {
        let got = raw.get(key, None).await.expect("get");
        let (now, modrev) = got
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.mod_revision()))
            .unwrap_or_default();
        let Some(next) = f(&now) else { return false };
        let txn = Txn::new()
            .when(vec![guard.fence().compare(), Compare::mod_revision(key, CompareOp::Equal, modrev)])
            .and_then(vec![TxnOp::put(key, next, None)]);
        if raw.txn(txn).await.expect("txn").succeeded() {
            return true;
        }
        if !guard.is_held() {
            return false;
        }
    }
}

/// S1: 12 workers (each its own client and session), 50 permit cycles each on a
/// 3-permit semaphore; inside, a counter in etcd is raised and lowered under the permit's
/// fence: raising it above 3 is refused and counted. (acquisitions/s, ok, most inside)
async fn s1_ours(endpoints: &[String], round: usize) -> (f64, bool, i64) {
    let name = format!("bench-s1/ours-{round:02}");
    let inside = format!("bench-s1/inside-{round:02}");
    let clients = connect_n(endpoints, 12).await;
    let mut sessions = Vec::new();
    for c in &clients {
        sessions.push(Session::new(c, 10).await.expect("session"));
    }
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .zip(&sessions)
        .map(|(c, s)| {
            let sem = Semaphore::new(s, &name, 3).expect("semaphore");
            let (mut raw, inside) = (c.etcd(), inside.clone());
            tokio::spawn(async move {
                let (mut over, mut most) = (0, 0i64);
                for _ in 0..50 {
                    let g = sem.acquire().await.expect("acquire");
                    let seen = std::sync::atomic::AtomicI64::new(0);
                    let up = |s: &str| {
                        let n = s.parse::<i64>().unwrap_or(0) + 1;
                        seen.store(n, std::sync::atomic::Ordering::Relaxed);
                        (n <= 3).then(|| n.to_string())
                    };
                    if guarded_update(&mut raw, &g, &inside, up).await {
                        most = most.max(seen.load(std::sync::atomic::Ordering::Relaxed));
                        let down = |s: &str| s.parse::<i64>().ok().filter(|n| *n > 0).map(|n| (n - 1).to_string());
                        if !guarded_update(&mut raw, &g, &inside, down).await {
                            over += 1;
                        }
                    } else {
                        over += 1;
                    }
                    g.release().await.expect("release");
                }
                (over, most)
            })
        })
        .collect();
    let (mut over, mut most) = (0, 0);
    for t in tasks {
        let (o, m) = t.await.expect("worker");
        over += o;
        most = most.max(m);
    }
    let rate = 600.0 / t.elapsed().as_secs_f64();
    for s in &sessions {
        s.close().await.ok();
    }
    let end = clients[0].get(&inside).await.expect("get").unwrap_or_default();
    let left = count_prefix(&clients[0], &format!("{name}/")).await;
    (rate, over == 0 && end == b"0" && left == 0, most)
}

fn readers_in(s: &str) -> Option<u32> {
    if s.is_empty() { Some(0) } else { s.strip_prefix('r').and_then(|n| n.parse().ok()) }
}

/// R1: 8 readers + 2 writers (each its own client and session), 100 cycles each on one
/// RwLock; inside, the occupancy record ("" / "r<n>" / "w") is changed in etcd under the
/// hold's fence, refusing a reader beside a writer and a writer beside anyone. The Go side
/// (tests/go/bench r1) does the same with recipe.RWMutex and a mod-revision CAS.
async fn r1_ours(endpoints: &[String], round: usize) -> (f64, bool, u64) {
    let name = format!("bench-r1/ours-{round:02}");
    let state = format!("{name}-state");
    let clients = connect_n(endpoints, 10).await;
    let mut sessions = Vec::new();
    for c in &clients {
        sessions.push(Session::new(c, 10).await.expect("session"));
    }
    let t = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .zip(&sessions)
        .enumerate()
        .map(|(i, (c, s))| {
            let rw = RwLock::new(s, &name).expect("rwlock");
            let (mut raw, state, writer) = (c.etcd(), state.clone(), i < 2);
            tokio::spawn(async move {
                let mut overlaps = 0u64;
                for _ in 0..100 {
                    if writer {
                        let g = rw.write().await.expect("write");
                        if !guarded_update(&mut raw, &g, &state, |s| (s.is_empty() || s == "r0").then(|| "w".to_string())).await {
                            overlaps += 1;
                        }
                        if !guarded_update(&mut raw, &g, &state, |s| (s == "w").then(String::new)).await {
                            overlaps += 1;
                        }
                        g.release().await.expect("release");
                    } else {
                        let g = rw.read().await.expect("read");
                        if !guarded_update(&mut raw, &g, &state, |s| readers_in(s).map(|n| format!("r{}", n + 1))).await {
                            overlaps += 1;
                        }
                        let down = |s: &str| readers_in(s).filter(|n| *n > 0).map(|n| format!("r{}", n - 1));
                        if !guarded_update(&mut raw, &g, &state, down).await {
                            overlaps += 1;
                        }
                        g.release().await.expect("release");
                    }
                }
                overlaps
            })
        })
        .collect();
    let mut overlaps = 0;
    for t in tasks {
        overlaps += t.await.expect("worker");
    }
    let rate = 1000.0 / t.elapsed().as_secs_f64();
    for s in &sessions {
        s.close().await.ok();
    }
    let end = clients[0].get(&state).await.expect("get").unwrap_or_default();
    let left = count_prefix(&clients[0], &format!("{name}/")).await;
    (rate, overlaps == 0 && (end.is_empty() || end == b"r0") && left == 0, overlaps)
}

/// Q1: 2 producers enqueue 2,500 values each, 2 consumers dequeue until all 5,000 are
/// taken, each its own client; items/s from the first enqueue to the last dequeue. ok:
/// every value taken exactly once, nothing left under the queue.
async fn q1_ours(endpoints: &[String], round: usize) -> (f64, bool, serde_json::Value) {
    const ITEMS: usize = 5000;
    let name = format!("bench-q1/ours-{round:02}");
    let producers = connect_n(endpoints, 2).await;
    let consumers = connect_n(endpoints, 2).await;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<Vec<u8>, u32>::with_capacity(ITEMS)));
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let finished = Arc::new(std::sync::OnceLock::<Instant>::new());
    let t = Instant::now();
    let ctasks: Vec<_> = consumers
        .iter()
        .map(|c| {
            let q = Queue::new(c, &name).expect("queue");
            let (seen, taken, finished) = (seen.clone(), taken.clone(), finished.clone());
            tokio::spawn(async move {
                while taken.load(std::sync::atomic::Ordering::Acquire) < ITEMS {
                    match q.dequeue_within(Some(Duration::from_millis(100))).await {
                        Ok(item) => {
                            *seen.lock().expect("seen").entry(item.value).or_default() += 1;
                            if taken.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == ITEMS {
                                let _ = finished.set(Instant::now());
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::LockTimeout => {}
                        Err(e) => panic!("dequeue: {e}"),
                    }
                }
            })
        })
        .collect();
    let ptasks: Vec<_> = producers
        .iter()
        .enumerate()
        .map(|(p, c)| {
            let q = Queue::new(c, &name).expect("queue");
            tokio::spawn(async move {
                for k in 0..ITEMS / 2 {
                    q.enqueue(format!("p{p}-{k}")).await.expect("enqueue");
                }
            })
        })
        .collect();
    for p in ptasks {
        p.await.expect("producer");
    }
    for c in ctasks {
        c.await.expect("consumer");
    }
    let rate = ITEMS as f64 / finished.get().expect("finished").duration_since(t).as_secs_f64();
    let (distinct, dups) = {
        let seen = seen.lock().expect("seen");
        (seen.len(), seen.values().map(|n| n - 1).sum::<u32>())
    };
    let left = count_prefix(&producers[0], &format!("{name}/")).await;
    (rate, distinct == ITEMS && dups == 0 && left == 0, json!({"distinct": distinct, "duplicates": dups, "left": left}))
}

/// W1: one producer puts 2,000 items (16 in flight) while 4 consumers (each its own
/// client and session) receive and ack; after 100 acks the first consumer takes one more
/// item and is killed while holding it: its lease is revoked from an admin client and its
/// task aborted (its client dropped). items/s until the last ack. ok: every item acked
/// exactly once (or dead-lettered), no item or claim left.
async fn w1_ours(endpoints: &[String], admin: &etcd_client::Client, round: usize) -> (f64, bool, serde_json::Value) {
    const ITEMS: usize = 2000;
    let name = format!("bench-w1/ours-{round:02}");
    let producer = connect_n(endpoints, 1).await.remove(0);
    let clients = connect_n(endpoints, 4).await;
    let mut sessions = Vec::new();
    for c in &clients {
        sessions.push(Session::new(c, 10).await.expect("session"));
    }
    let acked = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, u32>::with_capacity(ITEMS)));
    let redelivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let finished = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<(i64, String)>();
    let mut kill_tx = Some(kill_tx);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let q = WorkQueue::new(s, &name).expect("work queue").with_max_deliveries(Some(5)).expect("max");
        let (acked, redelivered, count, finished) = (acked.clone(), redelivered.clone(), count.clone(), finished.clone());
        let mut victim = if i == 0 { kill_tx.take() } else { None };
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while count.load(std::sync::atomic::Ordering::Acquire) < ITEMS {
                let item = match q.receive_within(Some(Duration::from_millis(100))).await {
                    Ok(item) => item,
                    Err(e) if e.kind() == ErrorKind::LockTimeout => continue,
                    Err(e) => panic!("receive: {e}"),
                };
                if mine == 100 {
                    if let Some(tx) = victim.take() {
                        // Killed while holding this item: park until aborted.
                        let _ = tx.send((item.lease_id(), item.id().to_string()));
                        std::future::pending::<()>().await;
                    }
                }
                if item.deliveries() > 1 {
                    redelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                match item.ack().await {
                    Ok(()) => {
                        mine += 1;
                        *acked.lock().expect("acked").entry(item.id().to_string()).or_default() += 1;
                        if count.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == ITEMS {
                            let _ = finished.set(Instant::now());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Fenced => {}
                    Err(e) => panic!("ack: {e}"),
                }
            }
        }));
    }
    let q = WorkQueue::new(&sessions[1], &name).expect("work queue");
    let pq = WorkQueue::new(SessionSource::per_use(&producer, 10).expect("source"), &name).expect("work queue");
    let put = stream::iter(0..ITEMS).for_each_concurrent(16, |k| {
        let pq = pq.clone();
        async move {
            pq.put(format!("item-{k}"), None).await.expect("put");
        }
    });
    let kill = async {
        let (lease, held) = kill_rx.await.expect("the victim took an item");
        admin.lease_client().revoke(lease).await.expect("revoke");
        held
    };
    let (_, held) = tokio::join!(put, kill);
    let mut tasks = tasks.into_iter();
    let victim = tasks.next().expect("victim");
    victim.abort();
    let _ = victim.await;
    for t in tasks {
        t.await.expect("consumer");
    }
    let rate = ITEMS as f64 / finished.get().expect("finished").duration_since(t).as_secs_f64();
    let dead = q.dead_letters().await.expect("dead letters").len();
    let (acked, twice, held_acked) = {
        let acked = acked.lock().expect("acked");
        (acked.len(), acked.values().filter(|n| **n > 1).count(), acked.get(&held).copied().unwrap_or(0))
    };
    let items_left = count_prefix(&producer, &format!("{name}/items/")).await;
    let claims_left = count_prefix(&producer, &format!("{name}/claims/")).await;
    for s in &sessions[1..] {
        s.close().await.ok();
    }
    let ok = acked + dead == ITEMS && twice == 0 && items_left == 0 && claims_left == 0 && (held_acked == 1 || dead > 0);
    (rate, ok, json!({"acked": acked, "acked_twice": twice, "dead_lettered": dead, "redelivered": redelivered.load(std::sync::atomic::Ordering::Relaxed),
        "killed_item_acked": held_acked, "items_left": items_left, "claims_left": claims_left}))
}

/// Resident memory of this process, in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Write `n` keys `{prefix}{i:08}` of `value_len` bytes: up to 128 puts a transaction
/// (etcd's default limit) and at most ~1 MiB a transaction, 16 transactions in flight.
async fn bulk_put(raw: &etcd_client::Client, prefix: &str, n: usize, value_len: usize) {
    let value = "v".repeat(value_len);
    let per_txn = 128usize.min(((1 << 20) / (value_len + 48)).max(1));
    let starts: Vec<usize> = (0..n).step_by(per_txn).collect();
    stream::iter(starts)
        .for_each_concurrent(16, |start| {
            let (mut kv, value) = (raw.kv_client(), value.clone());
            async move {
                let ops: Vec<etcd_client::TxnOp> = (start..(start + per_txn).min(n))
                    .map(|i| etcd_client::TxnOp::put(format!("{prefix}{i:08}"), value.clone(), None))
                    .collect();
                kv.txn(etcd_client::Txn::new().and_then(ops)).await.expect("bulk put");
            }
        })
        .await;
}

/// V1: a config view over a prefix of `n` keys of `value_len` bytes: load time, resident
/// memory added while it is held, and whether it holds exactly etcd's keys at its revision.
async fn v1(c: &Client, raw: &etcd_client::Client, n: usize, value_len: usize) -> (f64, f64, bool) {
    let prefix = format!("bench/v1/{n}x{value_len}/");
    bulk_put(raw, &prefix, n, value_len).await;
    let before = rss_bytes();
    let t = Instant::now();
    let view = ConfigView::prefix(c, &prefix, ConfigOptions::new().reconcile_interval(Duration::ZERO)).await.expect("view");
    let secs = t.elapsed().as_secs_f64();
    let held = rss_bytes().saturating_sub(before) as f64;
    let ok = view.len() == n && view.get(&format!("{prefix}{:08}", n - 1)).is_some_and(|v| v.len() == value_len);
    view.close();
    drop(view);
    // Leave etcd as small as it was for the next size.
    let _ = raw.kv_client().delete(prefix, Some(etcd_client::DeleteOptions::new().with_prefix())).await;
    (secs, held, ok)
}

/// D2: `n` instances register, each with its own lease (64 in flight); a fresh client then
/// loads them into a view. Returns (s to register, s to load, all seen).
async fn d2_ours(c: &Client, endpoints: &[String], n: usize) -> (f64, f64, bool) {
    let service = format!("bench-d2-{}", std::process::id());
    let t = Instant::now();
    let regs: Vec<Registration> = stream::iter(0..n)
        .map(|i| {
            let (c, service) = (c.clone(), service.clone());
            async move {
                Registration::register(&c, RegisterOptions::new(service, format!("i{i}"), "127.0.0.1:1").ttl(30))
                    .await
                    .expect("register")
            }
        })
        .buffer_unordered(INFLIGHT)
        .collect()
        .await;
    let register_s = t.elapsed().as_secs_f64();
    let fresh = Client::connect(ClientOptions::new(endpoints.to_vec())).await.expect("connect");
    let t = Instant::now();
    let view = ServiceView::start(&fresh, &service).await.expect("view");
    let load_s = t.elapsed().as_secs_f64();
    let seen = view.instances().len();
    view.close();
    stream::iter(regs).for_each_concurrent(INFLIGHT, |r| async move { r.close().await.ok(); }).await;
    (register_s, load_s, seen == n)
}

/// D2 with the raw crate: a lease grant and a put in the endpoints format per instance;
/// a fresh client loads the prefix with one range read.
async fn d2_raw(c: &etcd_client::Client, endpoints: &[String], n: usize) -> (f64, f64, bool) {
    let prefix = format!("bench-d2raw-{}/", std::process::id());
    let t = Instant::now();
    let leases: Vec<i64> = stream::iter(0..n)
        .map(|i| {
            let (mut c, prefix) = (c.clone(), prefix.clone());
            async move {
                let lease = c.lease_grant(30, None).await.expect("grant").id();
                let value = r#"{"Op":0,"Addr":"127.0.0.1:1","Metadata":null}"#;
                c.put(format!("{prefix}i{i}"), value, Some(etcd_client::PutOptions::new().with_lease(lease))).await.expect("put");
                lease
            }
        })
        .buffer_unordered(INFLIGHT)
        .collect()
        .await;
    let register_s = t.elapsed().as_secs_f64();
    let mut fresh = etcd_client::Client::connect(endpoints, None).await.expect("connect");
    let t = Instant::now();
    let got = fresh.get(prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    let seen = got.kvs().iter().filter(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).is_ok()).count();
    let load_s = t.elapsed().as_secs_f64();
    stream::iter(leases).for_each_concurrent(INFLIGHT, |l| { let mut c = c.clone(); async move { c.lease_revoke(l).await.ok(); } }).await;
    (register_s, load_s, seen == n)
}

// ---------------------------------------------------------------------------------------
// E2, S1, R1, Q1, W1 and F1 as one side each for bench/run.py (`--side ours|raw`).

/// E2 candidates: TTL 2 s; kills per run (the figure is their median).
const E2_TTL: i64 = 2;
const E2_KILLS: usize = 3;

/// A raw lease of `ttl` s kept alive every ttl/3 s until the returned task is aborted.
async fn raw_lease(c: &etcd_client::Client, ttl: i64) -> Result<(i64, tokio::task::JoinHandle<()>), etcd_client::Error> {
    let mut c = c.clone();
    let lease = c.lease_grant(ttl, None).await?.id();
    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
    let every = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
    let task = tokio::spawn(async move {
        loop {
            if keeper.keep_alive().await.is_err() || !matches!(stream.message().await, Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(every).await;
        }
    });
    Ok((lease, task))
}

/// The E2 child: campaigns on $BENCH_E2_NAME with TTL 2 s (ours: an Election on a Session;
/// raw: the Election RPC on a kept-alive lease), prints `leader <lease id>`, then waits to be killed.
async fn e2_child(ours: bool, c: &Client, raw: &etcd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("BENCH_E2_NAME")?;
    if ours {
        let session = Session::new(c, E2_TTL).await?;
        let l = Election::new(&session, &name)?.campaign("old").await?;
        println!("leader {}", l.lease_id());
        std::future::pending::<()>().await;
    } else {
        let (lease, _keep) = raw_lease(raw, E2_TTL).await?;
        raw.clone().campaign(name.as_str(), "old", lease).await?;
        println!("leader {lease}");
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// E2: a child process leads (TTL 2 s); our candidate (TTL 2 s) queues behind it; the child
/// is SIGKILLed; ms until our campaign returns. ok: at that moment etcd reports the old
/// leader's lease gone (TimeToLive -1), i.e. we did not lead before it had really expired.
async fn e2_side(ours: bool, c: &Client, raw: &etcd_client::Client, eps: &[String]) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let (mut times, mut ok, mut early) = (Vec::new(), true, 0);
    let exe = std::env::current_exe()?;
    for turn in 0..E2_KILLS {
        let name = format!("bench-e2/rust-{}-{}-{turn}", if ours { "ours" } else { "raw" }, std::process::id());
        let mut child = tokio::process::Command::new(&exe)
            .args(["--endpoints", &eps.join(","), "--side", if ours { "ours" } else { "raw" }, "E2CHILD"])
            .env("BENCH_E2_NAME", &name)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut out = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().ok_or("stdout")?));
        let old: i64 = loop {
            let line = out.next_line().await?.ok_or("the E2 child ended before leading")?;
            if let Some(id) = line.strip_prefix("leader ") {
                break id.trim().parse()?;
            }
        };
        let (ms, ttl_after) = if ours {
            let session = Session::new(c, E2_TTL).await?;
            let e = Election::new(&session, &name)?;
            let waiting = tokio::spawn(async move { e.campaign("new").await.map(|l| (l, Instant::now())) });
            while count_prefix(c, &format!("{name}/")).await < 2 {
                tokio::time::sleep(Duration::from_millis(2)).await; // until our candidate is queued
            }
            let t = Instant::now();
            child.start_kill()?;
            let (l, at) = waiting.await??;
            let ttl = raw.clone().lease_time_to_live(old, None).await?.ttl();
            ok &= l.is_leader();
            l.resign().await?;
            session.close().await?;
            (at.duration_since(t).as_secs_f64() * 1e3, ttl)
        } else {
            let (lease, keep) = raw_lease(raw, E2_TTL).await?;
            let mut c2 = raw.clone();
            let n2 = name.clone();
            let waiting = tokio::spawn(async move { c2.campaign(n2.as_str(), "new", lease).await.map(|r| (r, Instant::now())) });
            loop {
                let n = raw.clone().get(format!("{name}/"), Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await?.count();
                if n >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let t = Instant::now();
            child.start_kill()?;
            let (r, at) = waiting.await??;
            let ttl = raw.clone().lease_time_to_live(old, None).await?.ttl();
            ok &= r.leader().is_some_and(|l| l.lease() == lease);
            keep.abort();
            raw.clone().lease_revoke(lease).await?;
            (at.duration_since(t).as_secs_f64() * 1e3, ttl)
        };
        let _ = child.wait().await;
        if ttl_after != -1 {
            early += 1;
        }
        times.push(ms);
    }
    let max = times.iter().cloned().fold(0.0, f64::max);
    Ok(json!({"side": if ours { "ours" } else { "raw-etcd-client-election-rpc" }, "lang": "rust", "workload": "E2",
        "value": (median(times.clone()) * 100.0).round() / 100.0, "unit": "ms", "ok": ok && early == 0,
        "max_ms": (max * 100.0).round() / 100.0, "kills": times.len(), "led_before_expiry": early}))
}

/// F1 (one side): puts and lock cycles in a loop on a client of all three members; prints
/// `ready`, then reads `fault` (the driver has SIGSTOPped a member) and `end` (resumed, and
/// stop) on stdin. Latencies by phase: p99 of the ops in flight at the fault or started in its
/// first 2 s, and of those started in its 2-10 s. Lock cycles hold a session (ours) or a kept-alive lease (raw) of TTL 3
/// s: ok = it was never lost.
async fn f1_side(ours: bool, c: &Client, raw: &etcd_client::Client) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicUsize::new(0));
    type Samples = Vec<(Instant, f64, bool)>;
    async fn looped<F, Fut>(stop: Arc<AtomicBool>, mut op: F) -> Samples
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            let r = op(i).await;
            if let (Err(e), true) = (&r, std::env::var_os("BENCH_DEBUG").is_some()) {
                eprintln!("F1 op failed: {e}");
            }
            let failed = r.is_err();
            out.push((t0, t0.elapsed().as_secs_f64() * 1e3, failed));
            if failed {
                tokio::time::sleep(Duration::from_millis(5)).await; // a failure at once must not spin
            }
            i += 1;
        }
        out
    }
    let tag = format!("bench-f1/rust-{}-{}", if ours { "ours" } else { "raw" }, std::process::id());
    let (puts, locks, lease_task) = if ours {
        let session = Arc::new(tokio::sync::Mutex::new(Session::new(c, 3).await?));
        let (c1, k1) = (c.clone(), format!("{tag}/put"));
        let puts = tokio::spawn(looped(stop.clone(), move |i| {
            let (c, k) = (c1.clone(), k1.clone());
            async move { c.put(&k, i.to_string()).await.map(|_| ()).map_err(|e| e.to_string()) }
        }));
        let (c2, lost2, s2, lk) = (c.clone(), lost.clone(), session.clone(), format!("{tag}/lock"));
        let locks = tokio::spawn(looped(stop.clone(), move |i| {
            let (c, lost, s, lk) = (c2.clone(), lost2.clone(), s2.clone(), lk.clone());
            async move {
                let mut s = s.lock().await;
                if !s.is_alive() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    *s = Session::new(&c, 3).await.map_err(|e| e.to_string())?;
                }
                let g = Lock::new(&*s, &lk).map_err(|e| e.to_string())?.acquire_timeout(Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
                let r = g.fence().put(&format!("{lk}-value"), i.to_string()).await.map(|_| ()).map_err(|e| e.to_string());
                let _ = g.release().await;
                r
            }
        }));
        let check: futures::future::BoxFuture<'static, bool> = Box::pin(async move {
            let s = session.lock().await;
            let alive = s.is_alive();
            let _ = s.close().await;
            alive
        });
        (puts, locks, check)
    } else {
        let (lease, keep) = raw_lease(raw, 3).await?;
        let (r1, k1) = (raw.clone(), format!("{tag}/put"));
        let puts = tokio::spawn(looped(stop.clone(), move |i| {
            let (mut c, k) = (r1.clone(), k1.clone());
            async move { c.put(k, i.to_string(), None).await.map(|_| ()).map_err(|e| e.to_string()) }
        }));
        let (r2, lk) = (raw.clone(), format!("{tag}/lock"));
        let locks = tokio::spawn(looped(stop.clone(), move |i| {
            let (mut c, lk) = (r2.clone(), lk.clone());
            async move {
                let opts = etcd_client::LockOptions::new().with_lease(lease);
                let key = tokio::time::timeout(Duration::from_secs(10), c.lock(lk.as_str(), Some(opts)))
                    .await
                    .map_err(|_| "lock timeout".to_string())?
                    .map_err(|e| e.to_string())?
                    .key()
                    .to_vec();
                let r = c.put(format!("{lk}-value"), i.to_string(), None).await.map(|_| ()).map_err(|e| e.to_string());
                let _ = c.unlock(key).await;
                r
            }
        }));
        let raw2 = raw.clone();
        let check: futures::future::BoxFuture<'static, bool> = Box::pin(async move {
            let alive = raw2.clone().lease_time_to_live(lease, None).await.map(|r| r.ttl() > 0).unwrap_or(false);
            keep.abort();
            let _ = raw2.clone().lease_revoke(lease).await;
            alive
        });
        (puts, locks, check)
    };
    println!("ready");
    let lines = tokio::task::spawn_blocking(|| {
        let (mut fault, mut end) = (None, None);
        for line in std::io::stdin().lines() {
            match line.as_deref().map(str::trim) {
                Ok("fault") => fault = Some(Instant::now()),
                Ok("end") => {
                    end = Some(Instant::now());
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (fault, end)
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let (puts, locks) = (puts.await?, locks.await?);
    let alive = lease_task.await;
    let fault = lines.0.ok_or("no `fault` line on stdin")?;
    let phase = |s: &Samples, from: f64, to: f64| {
        let mut v: Vec<f64> = Vec::new();
        let mut errors = 0;
        for (t0, ms, failed) in s {
            // In the phase: started in it, or (the first phase) still running when the fault began.
            let since = t0.saturating_duration_since(fault).as_secs_f64() - fault.saturating_duration_since(*t0).as_secs_f64();
            if since < to && (since >= from || (from == 0.0 && since + ms / 1e3 >= 0.0)) {
                v.push(*ms);
                errors += *failed as usize;
            }
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let p99 = if v.is_empty() { f64::NAN } else { v[((v.len() - 1) as f64 * 0.99).round() as usize] };
        ((p99 * 100.0).round() / 100.0, v.len(), errors)
    };
    let (ps, pn1, pe1) = phase(&puts, 0.0, 2.0);
    let (pa, pn2, pe2) = phase(&puts, 2.0, 10.0);
    let (ls, ln1, le1) = phase(&locks, 0.0, 2.0);
    let (la, ln2, le2) = phase(&locks, 2.0, 10.0);
    let sessions_lost = lost.load(Ordering::Relaxed) + usize::from(!alive);
    Ok(json!({"side": if ours { "ours" } else { "raw-etcd-client" }, "lang": "rust", "workload": "F1", "value": ps, "unit": "ms p99",
        "after_p99_ms": pa, "lock_p99_ms": ls, "lock_after_p99_ms": la, "ops": pn1 + pn2, "lock_cycles": ln1 + ln2,
        "errors": pe1 + pe2 + le1 + le2, "sessions_lost": sessions_lost, "ok": sessions_lost == 0 && pn1 + pn2 > 0 && ln1 + ln2 > 0}))
}

/// One side (`ours` or `raw`) of one card workload against a given etcd, for bench/run.py;
/// K2 reads the keys `bench/k2/<i>` the driver wrote.
async fn one_side(side: &str, w: &str, ours: &Client, raw: &etcd_client::Client, eps: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let o = side == "ours";
    let rawname = |what: &str| if what.is_empty() { "raw-etcd-client".to_string() } else { format!("raw-etcd-client-{what}") };
    match w {
        "K1" if o => emit("ours", w, k1_ours(ours).await, "ops/s", true, None),
        "K1" => emit(&rawname(""), w, k1_raw(raw).await, "ops/s", true, None),
        "K2" if o => emit("ours", w, k2_ours_at(ours, "bench/k2/").await, "ops/s", true, None),
        "K2" => emit(&rawname(""), w, k2_raw_at(raw, "bench/k2/").await, "ops/s", true, None),
        "K3" if o => emit("ours", w, k3_ours(ours).await, "us", true, None),
        "K3" => emit(&rawname(""), w, k3_raw(raw).await, "us", true, None),
        "L1" if o => emit("ours", w, l1_ours(ours).await, "cycles/s", true, None),
        "L1" => emit(&rawname("lock-rpc"), w, l1_raw(raw).await, "cycles/s", true, None),
        "L2" => {
            let (v, ok) = if o { l2_ours(eps).await } else { l2_raw(eps).await };
            emit(&if o { "ours".into() } else { rawname("lock-rpc") }, w, v, "handoffs/s", ok, None)
        }
        "E1" if o => {
            let (ms, resign) = e1_ours_split(ours).await;
            println!("{}", json!({"side": "ours", "lang": "rust", "workload": w, "value": (ms * 1000.0).round() / 1000.0, "unit": "ms",
                "ok": true, "resign_ms": (resign * 1000.0).round() / 1000.0}));
        }
        "E1" => emit(&rawname("election-rpc"), w, e1_raw(raw).await, "ms", true, None),
        "D1" if o => emit("ours", w, d1_ours(ours).await, "ms", true, None),
        "D1" => emit(&rawname("watch"), w, d1_raw(raw).await, "ms", true, None),
        "D2" => {
            let (reg, load, ok) = if o { d2_ours(ours, eps, 2000).await } else { d2_raw(raw, eps, 2000).await };
            let side = if o { "ours".to_string() } else { rawname("") };
            println!("{}", json!({"side": side, "lang": "rust", "workload": w, "value": (reg * 1000.0).round() / 1000.0, "unit": "s",
                "ok": ok, "load_s": (load * 10000.0).round() / 10000.0}));
        }
        "D2V" => {
            // A fresh client's view of the 10,000 instances the driver wrote under bench-d2v/.
            let seen = if o {
                let fresh = Client::connect(ClientOptions::new(eps.to_vec())).await?;
                let t = Instant::now();
                let view = ServiceView::start(&fresh, "bench-d2v").await?;
                let (secs, n) = (t.elapsed().as_secs_f64(), view.instances().len());
                view.close();
                (secs, n)
            } else {
                let mut fresh = etcd_client::Client::connect(eps, None).await?;
                let t = Instant::now();
                let got = fresh.get("bench-d2v/", Some(etcd_client::GetOptions::new().with_prefix())).await?;
                let n = got.kvs().iter().filter(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).is_ok()).count();
                (t.elapsed().as_secs_f64(), n)
            };
            let side = if o { "ours".to_string() } else { rawname("") };
            println!("{}", json!({"side": side, "lang": "rust", "workload": w, "value": (seen.0 * 10000.0).round() / 10000.0,
                "unit": "s", "ok": seen.1 == 10_000, "seen": seen.1}));
        }
        "C1" if o => emit("ours", w, c1_ours(ours).await, "ms", true, None),
        "C1" => emit(&rawname("watch"), w, c1_raw(raw).await, "ms", true, None),
        "C2" => {
            let (v, plain) = c2(ours).await;
            emit("ours", w, v, "reads/s", true, None);
            emit("rwlock-hashmap", w, plain, "reads/s", true, None);
        }
        "E2" => println!("{}", e2_side(o, ours, raw, eps).await?),
        "S1" | "R1" | "Q1" | "W1" if !o => println!("{}", json!({"side": rawname(""), "lang": "rust", "workload": w, "value": null, "ok": null,
            "na": "the raw etcd-client crate has no semaphore, read-write lock or queue (its Lock RPC is a mutex)"})),
        "S1" => {
            let (rate, ok, most) = s1_ours(eps, std::process::id() as usize).await;
            println!("{}", json!({"side": "ours", "lang": "rust", "workload": w, "value": (rate * 100.0).round() / 100.0, "unit": "acquisitions/s", "ok": ok && most <= 3, "most_inside": most}));
        }
        "R1" => {
            let (rate, ok, overlaps) = r1_ours(eps, std::process::id() as usize).await;
            println!("{}", json!({"side": "ours", "lang": "rust", "workload": w, "value": (rate * 100.0).round() / 100.0, "unit": "cycles/s", "ok": ok, "overlaps": overlaps}));
        }
        "Q1" => {
            let (rate, ok, mut x) = q1_ours(eps, std::process::id() as usize).await;
            x.as_object_mut().ok_or("json")?.extend([("side".into(), json!("ours")), ("lang".into(), json!("rust")), ("workload".into(), json!(w)),
                ("value".into(), json!((rate * 100.0).round() / 100.0)), ("unit".into(), json!("items/s")), ("ok".into(), json!(ok))]);
            println!("{x}");
        }
        "W1" => {
            let (rate, ok, mut x) = w1_ours(eps, raw, std::process::id() as usize).await;
            x.as_object_mut().ok_or("json")?.extend([("side".into(), json!("ours")), ("lang".into(), json!("rust")), ("workload".into(), json!(w)),
                ("value".into(), json!((rate * 100.0).round() / 100.0)), ("unit".into(), json!("items/s")), ("ok".into(), json!(ok))]);
            println!("{x}");
        }
        "F1" => println!("{}", f1_side(o, ours, raw).await?),
        "E2CHILD" => e2_child(o, ours, raw).await?,
        _ => return Err(format!("--side {side}: no workload {w}").into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Workloads by name; `--endpoints a,b` runs against that etcd instead of starting one,
    // `--side ours|raw` runs only that side of each workload (bench/run.py alternates them).
    let (mut wanted, mut endpoints, mut side) = (Vec::new(), None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        match flag.as_str() {
            "--endpoints" => endpoints = Some(inline.or_else(|| args.next()).ok_or("--endpoints needs a value")?),
            "--side" => side = Some(inline.or_else(|| args.next()).ok_or("--side needs ours or raw")?),
            _ => wanted.push(a.to_uppercase()),
        }
    }
    let run = |w: &str| wanted.is_empty() || wanted.iter().any(|x| x == w);
    let etcd = match endpoints {
        Some(_) => None,
        None => Some(tokio::task::spawn_blocking(|| EtcdCluster::start(1)).await??),
    };
    let eps: Vec<String> = match (&etcd, &endpoints) {
        (Some(e), _) => e.endpoints(),
        (None, Some(list)) => list.split(',').map(str::to_string).collect(),
        (None, None) => unreachable!("an etcd or endpoints"),
    };
    let ours = Client::connect(ClientOptions::new(eps.clone())).await?;
    let raw = etcd_client::Client::connect(eps.clone(), None).await?;
    // Warm both connections (not in E2's child: it only campaigns and waits to be killed).
    let warm = if wanted.iter().any(|w| w == "E2CHILD") { 0 } else { 200 };
    for i in 0..warm {
        ours.put(&format!("bench/warm/{i}"), "v").await?;
        raw.kv_client().put(format!("bench/warm/{i}"), "v", None).await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(side) = side {
        if side != "ours" && side != "raw" {
            return Err(format!("--side {side}: ours or raw").into());
        }
        for w in &wanted {
            one_side(&side, w, &ours, &raw, &eps).await?;
        }
        return Ok(());
    }

    if run("K1") {
        // Alternate the order so that neither side always gets the cooler store.
        let r1 = k1_raw(&raw).await;
        let o1 = k1_ours(&ours).await;
        let o2 = k1_ours(&ours).await;
        let r2 = k1_raw(&raw).await;
        let (o, r) = ((o1 + o2) / 2.0, (r1 + r2) / 2.0);
        emit("raw-etcd-client", "K1", r, "ops/s", true, None);
        emit("ours", "K1", o, "ops/s", true, Some(o / r));
    }
    if run("K2") {
        if !run("K1") {
            k1_ours(&ours).await;
            k1_raw(&raw).await;
        }
        let r1 = k2_raw(&raw).await;
        let o1 = k2_ours(&ours).await;
        let o2 = k2_ours(&ours).await;
        let r2 = k2_raw(&raw).await;
        let (o, r) = ((o1 + o2) / 2.0, (r1 + r2) / 2.0);
        emit("raw-etcd-client", "K2", r, "ops/s", true, None);
        emit("ours", "K2", o, "ops/s", true, Some(o / r));
    }
    if run("K3") {
        let r = k3_raw(&raw).await;
        let o = k3_ours(&ours).await;
        emit("raw-etcd-client", "K3", r, "us", true, None);
        emit("ours", "K3", o, "us", true, Some(o / r));
    }
    if run("L1") {
        let r = l1_raw(&raw).await;
        let o = l1_ours(&ours).await;
        emit("raw-etcd-client-lock-rpc", "L1", r, "cycles/s", true, None);
        emit("ours", "L1", o, "cycles/s", true, Some(o / r));
    }
    if run("L2") {
        let (o, ook) = l2_ours(&eps).await;
        let (r, rok) = l2_raw(&eps).await;
        emit("raw-etcd-client-lock-rpc", "L2", r, "handoffs/s", rok, None);
        emit("ours", "L2", o, "handoffs/s", ook, Some(o / r));
    }
    if run("E1") {
        let r = e1_raw(&raw).await;
        let o = e1_ours(&ours).await;
        emit("raw-etcd-client-election-rpc", "E1", r, "ms", true, None);
        emit("ours", "E1", o, "ms", true, Some(o / r));
    }
    if run("D1") {
        let r = d1_raw(&raw).await;
        let o = d1_ours(&ours).await;
        emit("raw-etcd-client-watch", "D1", r, "ms", true, None);
        emit("ours", "D1", o, "ms", true, Some(o / r));
    }
    if run("C1") {
        let r = c1_raw(&raw).await;
        let o = c1_ours(&ours).await;
        emit("raw-etcd-client-watch", "C1", r, "ms", true, None);
        emit("ours", "C1", o, "ms", true, Some(o / r));
    }
    if run("C2") {
        let (o, plain) = c2(&ours).await;
        emit("rwlock-hashmap", "C2", plain, "reads/s", true, None);
        emit("ours", "C2", o, "reads/s", true, Some(o / plain));
    }
    if run("S1") {
        let (mut rates, mut ok, mut most) = (Vec::new(), true, 0);
        for round in 0..ROUNDS {
            let (r, o, m) = s1_ours(&eps, round).await;
            rates.push(r);
            ok &= o;
            most = most.max(m);
        }
        emit_na("go-etcd-concurrency", "go", "S1", "acquisitions/s", "etcd's Go concurrency and recipes packages have no semaphore");
        emit_rounds("ours", "rust", "S1", &rates, "acquisitions/s", ok && most == 3, None, json!({"most_inside": most}));
    }
    if run("R1") {
        let (mut o, mut g, mut ook, mut gok, mut overlaps) = (Vec::new(), Vec::new(), true, true, 0);
        for round in 0..ROUNDS {
            let (r, k, n) = r1_ours(&eps, round).await;
            o.push(r);
            ook &= k;
            overlaps += n;
            let v = go_bench(&eps, &["r1".into(), format!("--name=bench-r1/go-{round:02}")]).await;
            g.push(v["value"].as_f64().expect("value"));
            gok &= v["ok"].as_bool() == Some(true);
        }
        emit_rounds("go-etcd-recipes", "go", "R1", &g, "cycles/s", gok, None, json!({}));
        emit_rounds("ours", "rust", "R1", &o, "cycles/s", ook, Some(median(o.clone()) / median(g.clone())), json!({"overlaps": overlaps}));
    }
    if run("Q1") {
        let (mut o, mut g, mut ook, mut gok) = (Vec::new(), Vec::new(), true, true);
        let mut last = (json!({}), json!({}));
        for round in 0..ROUNDS {
            let (r, k, x) = q1_ours(&eps, round).await;
            o.push(r);
            ook &= k;
            let v = go_bench(&eps, &["q1".into(), format!("--name=bench-q1/go-{round:02}")]).await;
            g.push(v["value"].as_f64().expect("value"));
            gok &= v["ok"].as_bool() == Some(true);
            last = (x, json!({"distinct": v["distinct"], "duplicates": v["duplicates"], "left": v["left"]}));
        }
        emit_rounds("go-etcd-recipes", "go", "Q1", &g, "items/s", gok, None, last.1);
        emit_rounds("ours", "rust", "Q1", &o, "items/s", ook, Some(median(o.clone()) / median(g.clone())), last.0);
    }
    if run("W1") {
        let (mut rates, mut ok, mut last) = (Vec::new(), true, json!({}));
        for round in 0..ROUNDS {
            let (r, k, x) = w1_ours(&eps, &raw, round).await;
            rates.push(r);
            ok &= k;
            last = x;
        }
        emit_na("go-etcd-recipes", "go", "W1", "items/s", "etcd's Go packages have no reliable work queue (recipe.Queue deletes on dequeue)");
        emit_rounds("ours", "rust", "W1", &rates, "items/s", ok, None, last);
    }
    // V1 (view scale) runs only when named: it writes a million keys.
    if wanted.iter().any(|w| w == "V1") {
        for (n, len) in [(10_000usize, 64usize), (100_000, 64), (1_000_000, 64), (1_600, 64 * 1024)] {
            let (secs, held, ok) = v1(&ours, &raw, n, len).await;
            println!(
                "{}",
                json!({"side": "ours", "lang": "rust", "workload": "V1", "keys": n, "value_bytes": len,
                    "total_mib": ((n * len) as f64 / 1048576.0 * 10.0).round() / 10.0,
                    "value": (secs * 1000.0).round() / 1000.0, "unit": "s to load",
                    "rss_mib": (held / 1048576.0 * 10.0).round() / 10.0, "rss_bytes_per_key": (held / n as f64).round(), "ok": ok})
            );
        }
    }
    drop(etcd);
    if run("F1") {
        f1(false).await?;
        f1(true).await?;
    }
    Ok(())
}
