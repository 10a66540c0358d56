//! Read-only views of what coordination state etcd holds, for operators and the
//! `etcd-recipes` inspector CLI: who holds each lock and who waits, who leads each
//! election, which service instances are registered, what each queue holds.
//!
//! Everything is read at one revision, in the key layouts of this crate, which are etcd's
//! Go layouts: locks and leaders taken with `etcdctl lock` / `etcdctl elect` or by Go
//! services (`concurrency.Mutex`, `concurrency.Election`, `recipe.RWMutex`,
//! `recipe.Queue`, `naming/endpoints`) show up the same as ours.
//!
//! Without a name, [`overview`] finds recipes by the shape of their keys:
//! - `<name>/<lease hex>` attached to that very lease: a contender of a lock (empty
//!   values), a semaphore (every value the same permit count) or an election (any other
//!   value: the proposals);
//! - `<name>/read|write/<unix nanos>` under a lease: a read-write lock;
//! - `<name>/items|claims|dead/<id>`: a work queue; `<name>/<unix nanos>` without a lease:
//!   a queue; `<name>/<%05d>/<%016d>` without a lease: a priority queue;
//! - a value `{"Op":0,"Addr":...}`: a service instance.
//!
//! etcd keeps no timestamps, so how long a waiter has waited is not in etcd: these
//! functions give each contender's create revision (its place and fencing token) and
//! lease TTL; the CLI's `watch` measures wait times from when it first saw each key.

use std::collections::{BTreeMap, HashMap};

use etcd_client::{GetOptions, KeyValue, LeaseTimeToLiveOptions, SortOrder, SortTarget};
use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};

/// One key of a lock, semaphore, read-write lock or election queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contender {
    /// The key, without the client's namespace.
    pub key: String,
    pub lease_id: i64,
    /// The lease as it appears in the key (`%x`).
    pub lease_hex: String,
    /// The key's create revision: its place in the queue and its fencing token.
    pub create_revision: i64,
    /// The key's value as text (lossy UTF-8): an election's proposal, a semaphore's count.
    pub value: String,
    /// `"read"` or `"write"` for a read-write lock.
    pub side: Option<String>,
    /// Seconds left on the lease (`None`: the lease was not found).
    pub ttl: Option<i64>,
    /// The lease's granted TTL, seconds.
    pub granted_ttl: Option<i64>,
}

/// A lock (or a semaphore, or a read-write lock): its holders and its waiters, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LockState {
    /// The lock name (without namespace and trailing `/`).
    pub name: String,
    /// `"lock"`, `"semaphore"` or `"rwlock"`.
    pub kind: String,
    /// A semaphore's permit count.
    pub permits: Option<u32>,
    /// Who holds it now (a lock: one; a semaphore: up to `permits`; a read-write lock:
    /// one writer or the readers ahead of the first writer).
    pub holders: Vec<Contender>,
    /// Who waits, first in line first.
    pub waiters: Vec<Contender>,
}

/// An election: its leader and every candidate in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ElectionState {
    pub name: String,
    /// The candidate with the smallest create revision.
    pub leader: Option<Contender>,
    /// Every candidate after the leader, next in line first.
    pub candidates: Vec<Contender>,
}

/// One registered instance of a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceState {
    pub id: String,
    pub addr: String,
    pub metadata: serde_json::Value,
    /// Its readiness as registered (`"ready"`, `"not_ready"`, `"draining"`): the
    /// metadata's `"readiness"` key, absent when ready (see [`crate::registry`]).
    pub readiness: String,
    /// Takes traffic: its readiness is `"ready"`.
    pub ready: bool,
    pub lease_id: i64,
    pub ttl: Option<i64>,
}

/// A service and its instances, by id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub instances: Vec<InstanceState>,
}

/// A queue and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueState {
    pub name: String,
    /// `"queue"`, `"priority_queue"` or `"work_queue"`.
    pub kind: String,
    /// Items in the queue (a work queue: not yet acked, claimed ones included).
    pub items: usize,
    /// A work queue's items claimed by a consumer now.
    pub claimed: usize,
    /// A work queue's items not due yet (delayed delivery).
    pub delayed: usize,
    /// A work queue's dead letters.
    pub dead: usize,
}

/// One key of a config prefix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigEntry {
    pub key: String,
    /// The value as text (lossy UTF-8; see `binary`).
    pub value: String,
    /// The value is not UTF-8 text.
    pub binary: bool,
    pub mod_revision: i64,
    pub version: i64,
    pub lease_id: i64,
}

/// Every recipe found under the client's namespace (or a prefix of it), at one revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    pub revision: i64,
    pub locks: Vec<LockState>,
    pub elections: Vec<ElectionState>,
    pub services: Vec<ServiceState>,
    pub queues: Vec<QueueState>,
}

/// Every key under `prefix` (full) at one revision, in pages; and that revision.
async fn read_all(client: &Client, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
    const PAGE: i64 = 1000;
    let end = if prefix.is_empty() { vec![0] } else { crate::workqueue::prefix_end(prefix.as_bytes()) };
    let mut from = prefix.as_bytes().to_vec();
    if from.is_empty() {
        from.push(0);
    }
    let mut rev = 0;
    let mut out = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let mut resp = client.range(from.clone(), Some(opts)).await?;
        if rev == 0 {
            rev = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        out.extend(kvs);
        if !more {
            return Ok((out, rev));
        }
    }
}

/// `(ttl left, granted ttl)` of each lease; a lease etcd no longer has is left out.
async fn lease_ttls(client: &Client, leases: impl IntoIterator<Item = i64>) -> HashMap<i64, (i64, i64)> {
    let mut out = HashMap::new();
    for id in leases {
        if id == 0 || out.contains_key(&id) {
            continue;
        }
        let r = client
            .read(|mut c| async move { c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new())).await })
            .await;
        if let Ok(r) = r {
            if r.ttl() >= 0 {
                out.insert(id, (r.ttl(), r.granted_ttl()));
            }
        }
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn contender(client: &Client, kv: &KeyValue, side: Option<crate::rwlock::Side>) -> Contender {
    let key = client.strip_namespace(kv.key()).unwrap_or(kv.key());
    Contender {
        key: text(key),
        lease_id: kv.lease(),
        lease_hex: format!("{:x}", kv.lease()),
        create_revision: kv.create_revision(),
        value: text(kv.value()),
        side: side.map(|s| if s == crate::rwlock::Side::Read { "read" } else { "write" }.to_string()),
        ttl: None,
        granted_ttl: None,
    }
}

fn fill_ttls(c: &mut Contender, ttls: &HashMap<i64, (i64, i64)>) {
    if let Some((t, g)) = ttls.get(&c.lease_id) {
        c.ttl = Some(*t);
        c.granted_ttl = Some(*g);
    }
}

/// The name of a queue prefix (`<ns><name>/`).
fn name_of(client: &Client, prefix: &[u8]) -> String {
    let p = client.strip_namespace(prefix).unwrap_or(prefix);
    text(p.strip_suffix(b"/").unwrap_or(p))
}

/// A permit count, when `v` is one (`"3"`).
fn permits(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok().filter(|n| *n >= 1)
}

/// Holders and waiters of contenders sorted by create revision.
fn lock_of(name: String, mut cs: Vec<(Contender, Vec<u8>)>, force_lock: bool) -> LockState {
    cs.sort_by_key(|(c, _)| c.create_revision);
    let rw = cs.iter().any(|(c, _)| c.side.is_some());
    let sem = if force_lock || rw {
        None
    } else {
        let first = cs.first().and_then(|(_, v)| permits(v));
        first.filter(|n| cs.iter().all(|(_, v)| permits(v) == Some(*n)))
    };
    let all: Vec<Contender> = cs.into_iter().map(|(c, _)| c).collect();
    let held = if rw {
        match all.first() {
            Some(c) if c.side.as_deref() == Some("write") => 1,
            _ => all.iter().take_while(|c| c.side.as_deref() == Some("read")).count(),
        }
    } else {
        sem.map_or(1, |n| n as usize).min(all.len())
    };
    let mut holders = all;
    let waiters = holders.split_off(held.min(holders.len()));
    let kind = if rw { "rwlock" } else if sem.is_some() { "semaphore" } else { "lock" };
    LockState { name, kind: kind.into(), permits: sem, holders, waiters }
}

fn election_of(name: String, mut cs: Vec<Contender>) -> ElectionState {
    cs.sort_by_key(|c| c.create_revision);
    let mut it = cs.into_iter();
    ElectionState { name, leader: it.next(), candidates: it.collect() }
}

fn instance(client: &Client, kv: &KeyValue) -> Option<(String, InstanceState)> {
    let key = client.strip_namespace(kv.key()).unwrap_or(kv.key());
    let slash = key.iter().rposition(|b| *b == b'/')?;
    let (service, id) = (text(&key[..slash]), text(&key[slash + 1..]));
    if service.is_empty() || id.is_empty() {
        return None;
    }
    let i = crate::registry::decode_value(&id, kv.value()).ok()?;
    let readiness = i.readiness();
    let ready = readiness == crate::registry::Readiness::Ready;
    let readiness = readiness.as_str().to_string();
    Some((service, InstanceState { id, addr: i.addr, metadata: i.metadata, readiness, ready, lease_id: kv.lease(), ttl: None }))
}

#[derive(Default)]
struct WorkCounts {
    items: usize,
    delayed: usize,
    dead: usize,
    claims: Vec<Vec<u8>>,
    ids: Vec<Vec<u8>>,
}

fn work_queue(name: String, w: WorkCounts) -> QueueState {
    let claimed = w.claims.iter().filter(|c| w.ids.contains(c)).count();
    QueueState { name, kind: "work_queue".into(), items: w.items, claimed, delayed: w.delayed, dead: w.dead }
}

/// Sort keys of one recipe kind into groups, by their queue prefix.
#[derive(Default)]
struct Groups {
    members: BTreeMap<Vec<u8>, Vec<KeyValue>>,
    rw: BTreeMap<Vec<u8>, Vec<(KeyValue, crate::rwlock::Side)>>,
    work: BTreeMap<Vec<u8>, WorkCounts>,
    fifo: BTreeMap<Vec<u8>, usize>,
    prio: BTreeMap<Vec<u8>, usize>,
    services: BTreeMap<String, Vec<InstanceState>>,
}

fn classify(client: &Client, kvs: &[KeyValue], now_ms: u64) -> Groups {
    use crate::workqueue::Part;
    let mut g = Groups::default();
    for kv in kvs {
        let key = kv.key();
        let lease = kv.lease();
        if let Some(p) = crate::waitqueue::member_prefix(key, lease) {
            g.members.entry(p.to_vec()).or_default().push(kv.clone());
        } else if let Some((p, side)) = (lease != 0).then(|| crate::rwlock::parse_key(key)).flatten() {
            g.rw.entry(p.to_vec()).or_default().push((kv.clone(), side));
        } else if let Some((p, part, id)) = crate::workqueue::parse_key(key) {
            let w = g.work.entry(p.to_vec()).or_default();
            match part {
                Part::Item => {
                    w.items += 1;
                    w.ids.push(id.to_vec());
                    if crate::workqueue::decode(kv.value()).1 > now_ms {
                        w.delayed += 1;
                    }
                }
                Part::Claim => w.claims.push(id.to_vec()),
                Part::Dead => w.dead += 1,
            }
        } else if let Some((p, _)) = (lease == 0).then(|| crate::queue::priority_prefix(key)).flatten() {
            *g.prio.entry(p.to_vec()).or_default() += 1;
        } else if let Some(p) = (lease == 0).then(|| crate::queue::fifo_prefix(key)).flatten() {
            *g.fifo.entry(p.to_vec()).or_default() += 1;
        } else if let Some((service, i)) = instance(client, kv) {
            g.services.entry(service).or_default().push(i);
        }
    }
    g
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Everything under the client's namespace + `prefix` (`""`: all of it), found by the
/// shape of its keys (see the [module docs](self)), at one revision.
pub async fn overview(client: &Client, prefix: &str) -> Result<Overview> {
    client.ensure_open()?;
    let (kvs, revision) = read_all(client, &client.full_key(prefix)).await?;
    let g = classify(client, &kvs, now_ms());
    let mut leases: Vec<i64> = g.members.values().flatten().map(|kv| kv.lease()).collect();
    leases.extend(g.rw.values().flatten().map(|(kv, _)| kv.lease()));
    leases.extend(g.services.values().flatten().map(|i| i.lease_id));
    let ttls = lease_ttls(client, leases).await;
    let mut locks = Vec::new();
    let mut elections = Vec::new();
    for (p, kvs) in &g.members {
        let name = name_of(client, p);
        let mut cs: Vec<(Contender, Vec<u8>)> = kvs.iter().map(|kv| (contender(client, kv, None), kv.value().to_vec())).collect();
        cs.iter_mut().for_each(|(c, _)| fill_ttls(c, &ttls));
        let all_empty = cs.iter().all(|(_, v)| v.is_empty());
        let sem = cs.first().and_then(|(_, v)| permits(v)).filter(|n| cs.iter().all(|(_, v)| permits(v) == Some(*n)));
        if all_empty || sem.is_some() {
            locks.push(lock_of(name, cs, false));
        } else {
            elections.push(election_of(name, cs.into_iter().map(|(c, _)| c).collect()));
        }
    }
    for (p, kvs) in &g.rw {
        let mut cs: Vec<(Contender, Vec<u8>)> =
            kvs.iter().map(|(kv, side)| (contender(client, kv, Some(*side)), Vec::new())).collect();
        cs.iter_mut().for_each(|(c, _)| fill_ttls(c, &ttls));
        locks.push(lock_of(name_of(client, p), cs, true));
    }
    locks.sort_by(|a, b| a.name.cmp(&b.name));
    let services = g
        .services
        .into_iter()
        .map(|(name, mut instances)| {
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            instances.iter_mut().for_each(|i| i.ttl = ttls.get(&i.lease_id).map(|t| t.0));
            ServiceState { name, instances }
        })
        .collect();
    let mut queues: Vec<QueueState> = Vec::new();
    for (p, w) in g.work {
        queues.push(work_queue(name_of(client, &p), w));
    }
    for (p, n) in g.fifo {
        queues.push(QueueState { name: name_of(client, &p), kind: "queue".into(), items: n, claimed: 0, delayed: 0, dead: 0 });
    }
    for (p, n) in g.prio {
        queues.push(QueueState {
            name: name_of(client, &p),
            kind: "priority_queue".into(),
            items: n,
            claimed: 0,
            delayed: 0,
            dead: 0,
        });
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Overview { revision, locks, elections, services, queues })
}

/// The contenders of the queue `<ns><name>/` in create-revision order, with their
/// lease TTLs, and the read's revision.
async fn contenders(client: &Client, name: &str) -> Result<(Vec<(Contender, Vec<u8>)>, i64)> {
    client.ensure_open()?;
    crate::waitqueue::check_name("name", name)?;
    let prefix = client.full_key(&format!("{name}/"));
    let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
    let resp = client.range(prefix.as_str(), Some(opts)).await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let kvs: Vec<&KeyValue> = resp.kvs().iter().filter(|kv| kv.lease() != 0).collect();
    let ttls = lease_ttls(client, kvs.iter().map(|kv| kv.lease())).await;
    let out = kvs
        .into_iter()
        .map(|kv| {
            let rel = &kv.key()[prefix.len()..];
            let side = crate::rwlock::parse_key(kv.key()).filter(|(p, _)| p.len() == prefix.len()).map(|(_, s)| s);
            let side = side.filter(|_| !rel.is_empty());
            let mut c = contender(client, kv, side);
            fill_ttls(&mut c, &ttls);
            (c, kv.value().to_vec())
        })
        .collect();
    Ok((out, rev))
}

/// Lock `name` (also a semaphore or read-write lock of that name): holders and waiters.
pub async fn lock(client: &Client, name: &str) -> Result<LockState> {
    let (cs, _) = contenders(client, name).await?;
    let force = cs.iter().all(|(_, v)| v.is_empty());
    Ok(lock_of(name.to_string(), cs, force))
}

/// Election `name`: its leader and candidates.
pub async fn election(client: &Client, name: &str) -> Result<ElectionState> {
    let (cs, _) = contenders(client, name).await?;
    Ok(election_of(name.to_string(), cs.into_iter().map(|(c, _)| c).collect()))
}

/// Service `name`: its instances (readiness, metadata, lease TTL).
pub async fn service(client: &Client, name: &str) -> Result<ServiceState> {
    client.ensure_open()?;
    crate::waitqueue::check_name("service name", name)?;
    let (kvs, _) = read_all(client, &client.full_key(&format!("{name}/"))).await?;
    let mut instances: Vec<InstanceState> = kvs
        .iter()
        .filter_map(|kv| instance(client, kv))
        .filter(|(s, _)| s == name)
        .map(|(_, i)| i)
        .collect();
    let ttls = lease_ttls(client, instances.iter().map(|i| i.lease_id)).await;
    instances.iter_mut().for_each(|i| i.ttl = ttls.get(&i.lease_id).map(|t| t.0));
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ServiceState { name: name.to_string(), instances })
}

/// Queue `name`, whatever its kind (a work queue, a queue or a priority queue).
pub async fn queue(client: &Client, name: &str) -> Result<QueueState> {
    crate::waitqueue::check_name("queue name", name)?;
    let o = overview(client, &format!("{name}/")).await?;
    o.queues
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| Error::invalid(format!("no queue named {name:?} (no item, claim or dead letter under {name}/)")))
}

/// Every key under the client's namespace + `prefix`, in key order, at one revision.
pub async fn config(client: &Client, prefix: &str) -> Result<(Vec<ConfigEntry>, i64)> {
    client.ensure_open()?;
    let (kvs, rev) = read_all(client, &client.full_key(prefix)).await?;
    let out = kvs
        .iter()
        .map(|kv| {
            let key = client.strip_namespace(kv.key()).unwrap_or(kv.key());
            ConfigEntry {
                key: text(key),
                value: text(kv.value()),
                binary: std::str::from_utf8(kv.value()).is_err(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                lease_id: kv.lease(),
            }
        })
        .collect();
    Ok((out, rev))
}
