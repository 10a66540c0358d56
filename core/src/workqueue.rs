//! [`WorkQueue`]: a reliable work queue with at-least-once delivery: claims under the
//! consumer's lease, ack / nack, delayed delivery and dead letters.
//!
//! # Protocol
//!
//! A queue named `name` owns the key prefix `<namespace><name>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `<name>/items/<id>` | the item: a header line `wq1 <deliveries> <not-before ms>\n`, then the payload bytes | none |
//! | `<name>/claims/<id>` | `<claimant lease hex> <nonce hex>` | the consumer's session |
//! | `<name>/dead/<id>` | the item (same encoding) after `max_deliveries` failed deliveries | none |
//!
//! - **ids** are `<unix nanoseconds, 20 digits>-<64 random bits, 16 hex digits>`:
//!   unique, and ordered by creation time (as Go's `recipe.newUniqueKV`). Items are
//!   delivered in id order, roughly FIFO: waiting consumers pick among the first few
//!   visible items so that they do not all race for the same one.
//! - **put**: `If CreateRevision(item) == 0 Then Put(item)`. A value put by hand
//!   (`etcdctl put <name>/items/x hello`), without the header, is an item with no
//!   delivery yet and no delay.
//! - **visible** item: no claim key, and its not-before time (wall clock, ms since the
//!   Unix epoch) has come. The item is never deleted on receive.
//! - **receive** claims the first visible item in one transaction:
//!   `If ModRevision(item) == seen AND CreateRevision(claim) == 0
//!    Then Put(item, deliveries + 1), Put(claim, lease = our session)`.
//!   The claim's create revision is the delivery's **fencing token**. The claim lives as
//!   long as the consumer's session: a consumer that dies (or whose lease is revoked)
//!   releases its claims when its lease expires, so the *visibility limit* is the lease
//!   TTL, and a live consumer extends it simply by keeping its session alive.
//! - **ack**: `If CreateRevision(claim) == token Then Delete(item), Delete(claim)`:
//!   only the current claimant can ack ([`Error::Fenced`] otherwise).
//! - **nack**: `If CreateRevision(claim) == token Then Delete(claim)` (and, with a delay,
//!   `Put(item)` with a new not-before time): the item is visible again.
//! - **dead letters**: each claim counts a delivery in the item. After `max_deliveries`
//!   failed deliveries (nacked, dropped, or claim lost with the consumer's lease) the
//!   item moves atomically to `<name>/dead/<id>` (at the nack, or when the next consumer
//!   finds it unclaimed). [`WorkQueue::requeue_dead`] moves it back with its count reset.
//! - **waiting**: a receiver reads the items and claims at one revision R, then watches
//!   `<name>/` from R+1 and scans again when an item is put (not by a claim) or a claim is
//!   deleted, or when the earliest delayed item becomes due. No polling; compaction and
//!   member restarts only make it scan again.
//!
//! # Guarantees
//!
//! Every item put is delivered until it is acked or dead-lettered (at least once). A
//! consumer that dies mid-item never loses it: once its lease goes, the item is visible
//! again, with its delivery count (attempt number) one higher on the next delivery.
//! Without faults, each item is delivered exactly once. Delays use the producer's and
//! consumers' wall clocks: clock skew between hosts shifts when an item becomes due.
//!
//! A receive that gives up ([`Error::LockTimeout`], [`WorkQueue::try_receive`] on an
//! empty queue, [`Error::Closed`], cancellation) leaves no claim behind.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::{workqueue::WorkQueue, SessionSource};
//! let queue = WorkQueue::new(SessionSource::per_use(&client, 10)?, "jobs/thumbnails")?
//!     .with_max_deliveries(Some(5))?;
//! queue.put("img-42.png", None).await?;
//! let item = queue.receive().await?;
//! println!("{} (attempt {})", item.value_string()?, item.deliveries());
//! item.ack().await?; // FENCED if our claim was lost meanwhile
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::{check_key, Client};
use crate::endpoints::MemberWatch;
use crate::error::{Error, ErrorKind, Result};
use crate::session::{Session, SessionSource};
use crate::waitqueue::{check_name, sleep_opt};

/// Items read per request while looking for a visible one.
const PAGE: i64 = 128;
/// Visible items kept from one scan (tried in turn before scanning again).
const KEEP: usize = 8;
/// Waiting receivers start at a random one of the first this many visible items.
const SPREAD: usize = 4;
const HEADER: &[u8] = b"wq1 ";

/// A reliable work queue. Cheap to clone. See the [module docs](self) for the protocol.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    source: SessionSource,
    name: String,
    prefix: String,
    max_deliveries: Option<u32>,
    timeout: Option<Duration>,
}

/// An item in the dead-letter area (`<name>/dead/<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The item id.
    pub id: String,
    /// The payload.
    pub value: Vec<u8>,
    /// How many deliveries failed.
    pub deliveries: u32,
}

/// A visible item found by a scan.
struct Ready {
    id: String,
    key: String,
    mod_rev: i64,
    deliveries: u32,
    not_before: u64,
    payload: Vec<u8>,
}

struct Scan {
    rev: i64,
    ready: Vec<Ready>,
    /// The earliest not-before time of an unclaimed item not yet due (ms since the epoch).
    next_due: Option<u64>,
    /// Visible items seen (all of them when the scan was full).
    visible: usize,
}

enum Claimed {
    Got(WorkItem),
    /// Someone else claimed, acked or changed it first.
    Gone,
    /// It had no delivery left: moved to the dead letters.
    Dead,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn encode(deliveries: u32, not_before: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("wq1 {deliveries} {not_before}\n").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Which part of a work queue a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Item,
    Claim,
    Dead,
}

/// `<name>/items|claims|dead/<id>` with an id as this module makes them
/// (`<20 digits>-<16 hex>`): the queue prefix (`<name>/`), the part and the id.
/// Read-only, for the inspector.
pub(crate) fn parse_key(key: &[u8]) -> Option<(&[u8], Part, &[u8])> {
    let slash = key.iter().rposition(|b| *b == b'/')?;
    let (head, id) = (&key[..slash], &key[slash + 1..]);
    let ok_id = id.len() == 37
        && id[..20].iter().all(u8::is_ascii_digit)
        && id[20] == b'-'
        && id[21..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if !ok_id {
        return None;
    }
    for (seg, part) in [(&b"/items"[..], Part::Item), (b"/claims", Part::Claim), (b"/dead", Part::Dead)] {
        if let Some(name) = head.strip_suffix(seg) {
            return Some((&key[..name.len() + 1], part, id));
        }
    }
    None
}

/// `(deliveries, not_before_ms, payload)`; a value without our header is a fresh item.
pub(crate) fn decode(raw: &[u8]) -> (u32, u64, &[u8]) {
    let parsed = raw.strip_prefix(HEADER).and_then(|rest| {
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let line = std::str::from_utf8(&rest[..nl]).ok()?;
        let (d, nb) = line.split_once(' ')?;
        Some((d.parse().ok()?, nb.parse().ok()?, &rest[nl + 1..]))
    });
    parsed.unwrap_or((0, 0, raw))
}

/// The end of the range of keys starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unexpected() -> Error {
    Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))
}

fn check_id(id: &str) -> Result<()> {
    check_key("item id", id)?;
    if id.contains('/') {
        return Err(Error::invalid(format!("item id {id:?} must not contain '/'")));
    }
    Ok(())
}

impl WorkQueue {
    /// The queue called `name` (namespaced by the client). Claims are made on a shared
    /// [`Session`] (`&session`), or on a fresh session per delivery
    /// ([`SessionSource::per_use`]) that is closed when the item is acked or nacked.
    /// [`Error::InvalidArgument`] for an empty name, one over 4096 bytes, with NUL, or
    /// ending in `/`.
    pub fn new(source: impl Into<SessionSource>, name: &str) -> Result<WorkQueue> {
        let source = source.into();
        check_name("work queue name", name)?;
        let prefix = source.client().full_key(&format!("{name}/"));
        Ok(WorkQueue { source, name: name.to_string(), prefix, max_deliveries: None, timeout: None })
    }

    /// Move an item to the dead letters after `max` failed deliveries (`None`: never, the
    /// default). [`Error::InvalidArgument`] for `Some(0)`.
    pub fn with_max_deliveries(mut self, max: Option<u32>) -> Result<WorkQueue> {
        if max == Some(0) {
            return Err(Error::invalid("max_deliveries must be at least 1"));
        }
        self.max_deliveries = max;
        Ok(self)
    }

    /// Make [`WorkQueue::receive`] give up after `timeout` ([`Error::LockTimeout`]);
    /// `None`: wait as long as it takes (the default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> WorkQueue {
        self.timeout = timeout;
        self
    }

    /// The queue name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dead-letter limit, if any.
    pub fn max_deliveries(&self) -> Option<u32> {
        self.max_deliveries
    }

    fn client(&self) -> &Client {
        self.source.client()
    }
    fn items(&self) -> String {
        format!("{}items/", self.prefix)
    }
    fn claims(&self) -> String {
        format!("{}claims/", self.prefix)
    }
    fn dead(&self) -> String {
        format!("{}dead/", self.prefix)
    }

    /// Add an item; with `delay`, it is not delivered before that much time has passed.
    /// Returns its id.
    pub async fn put(&self, value: impl Into<Vec<u8>>, delay: Option<Duration>) -> Result<String> {
        let payload = value.into();
        let not_before = match delay {
            Some(d) if !d.is_zero() => now_ms().saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
            _ => 0,
        };
        let value = encode(0, not_before, &payload);
        let client = self.client();
        client.ensure_open()?;
        loop {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let id = format!("{nanos:020}-{:016x}", rand::random::<u64>());
            let key = format!("{}{id}", self.items());
            let txn = Txn::new()
                .when(vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(key.clone(), value.clone(), None)]);
            let attempts = AtomicU32::new(0);
            // Create-if-absent: sending it again changes nothing, so it is retried.
            let resp = client
                .idempotent(|mut c| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            // Not created on a later attempt: the earlier one did it.
            if resp.succeeded() || attempts.load(Ordering::Relaxed) > 1 {
                debug!(queue = %self.name, %id, delayed = not_before > 0, "item put");
                return Ok(id);
            }
            // An id taken already (same nanosecond and 64 random bits): draw again.
        }
    }

    /// Wait for an item and claim it, up to the timeout set with
    /// [`WorkQueue::with_timeout`] if any. See [`WorkQueue::receive_within`].
    pub async fn receive(&self) -> Result<WorkItem> {
        self.receive_within(self.timeout).await
    }

    /// Wait at most `timeout` (`None`: as long as it takes) for a visible item and claim
    /// it. [`Error::LockTimeout`] when the time runs out, [`Error::Closed`] when the
    /// client closes meanwhile, [`Error::SessionLost`] when a shared session is lost. No
    /// claim is left behind on any error or on cancellation (dropping the future).
    pub async fn receive_within(&self, timeout: Option<Duration>) -> Result<WorkItem> {
        self.run(false, timeout.map(|t| Instant::now() + t)).await
    }

    /// Claim a visible item if there is one now, else fail at once with
    /// [`Error::LockTimeout`].
    pub async fn try_receive(&self) -> Result<WorkItem> {
        self.run(true, None).await
    }

    async fn run(&self, try_only: bool, deadline: Option<Instant>) -> Result<WorkItem> {
        let client = self.client().clone();
        client.ensure_open()?;
        let span = info_span!("etcd_recipes.workqueue.receive", queue = %self.name, try_only);
        // A shared session is known now; a per-use one is made when an item is there to claim.
        let mut held: Option<(Session, bool)> = match &self.source {
            SessionSource::Shared(s) => Some((s.clone(), false)),
            SessionSource::PerUse { .. } => None,
        };
        let result = tokio::select! {
            biased;
            _ = client.closed() => Err(Error::Closed("client")),
            r = self.receive_on(&mut held, try_only, deadline).instrument(span) => r,
        };
        // Closing the client also closes the session a wait runs on; whichever the wait
        // noticed first, the caller learns the client was closed.
        let result = result.map_err(|e| if client.is_closed() { Error::Closed("client") } else { e });
        if let (Err(_), Some((session, true))) = (&result, &held) {
            let _ = session.close().await;
        }
        result
    }

    async fn receive_on(&self, held: &mut Option<(Session, bool)>, try_only: bool, deadline: Option<Instant>) -> Result<WorkItem> {
        let mut waker = Waker::new(self.client().clone(), self.prefix.clone(), self.items(), self.claims());
        loop {
            if let Some((s, _)) = held.as_ref() {
                s.ensure_alive()?;
            }
            let scan = self.scan(KEEP, false).await?;
            let mut ready = scan.ready;
            if ready.len() > 1 {
                // Spread concurrent receivers over the first few visible items.
                let k = rand::random_range(0..ready.len().min(SPREAD));
                ready.rotate_left(k);
            }
            let found = !ready.is_empty();
            for r in ready {
                if held.is_none() {
                    *held = Some(self.source.session().await?);
                }
                let (session, owned) = held.as_ref().expect("set above");
                match self.claim(session, *owned, r).await? {
                    Claimed::Got(item) => return Ok(item),
                    Claimed::Gone | Claimed::Dead => {}
                }
            }
            if found {
                // Others were faster; there may be more visible items further on.
                continue;
            }
            if try_only {
                return Err(self.busy("no visible item"));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.busy("timed out"));
            }
            let due = scan.next_due.map(|ms| {
                let wait = ms.saturating_sub(now_ms()).saturating_add(2);
                Instant::now() + Duration::from_millis(wait)
            });
            let until = match (due, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let lost = async {
                match held.as_ref() {
                    Some((s, _)) => s.lost().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = waker.wait(scan.rev, until) => { r?; }
                r = lost => {
                    let (s, _) = held.as_ref().expect("lost only resolves with a session");
                    return Err(Error::SessionLost {
                        lease_id: s.lease_id(),
                        reason: r.unwrap_or_else(|| "was closed".into()),
                    });
                }
            }
        }
    }

    fn busy(&self, reason: &str) -> Error {
        Error::LockTimeout { name: format!("work queue {:?}", self.name), reason: reason.to_string() }
    }

    /// Read claims and items at one revision; keep up to `keep` visible items (in id
    /// order). Stops after the first page with a visible item unless `full`.
    async fn scan(&self, keep: usize, full: bool) -> Result<Scan> {
        let (items, claims) = (self.items(), self.claims());
        let client = self.client();
        let first = Txn::new().and_then(vec![
            TxnOp::get(claims.clone(), Some(GetOptions::new().with_prefix().with_keys_only())),
            TxnOp::get(items.clone(), Some(GetOptions::new().with_prefix().with_limit(PAGE))),
        ]);
        let resp = client
            .read(|mut c| {
                let t = first.clone();
                async move { c.txn(t).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let (claimed, mut page, mut more) = match resp.op_responses().as_slice() {
            [TxnOpResponse::Get(c), TxnOpResponse::Get(i)] => {
                let claimed: HashSet<Vec<u8>> =
                    c.kvs().iter().filter_map(|kv| kv.key().strip_prefix(claims.as_bytes()).map(<[u8]>::to_vec)).collect();
                (claimed, i.kvs().to_vec(), i.more())
            }
            _ => return Err(unexpected()),
        };
        let now = now_ms();
        let mut scan = Scan { rev, ready: Vec::new(), next_due: None, visible: 0 };
        loop {
            for kv in &page {
                let Some(id) = kv.key().strip_prefix(items.as_bytes()) else { continue };
                if claimed.contains(id) {
                    continue;
                }
                let (deliveries, not_before, payload) = decode(kv.value());
                if not_before > now {
                    scan.next_due = Some(scan.next_due.map_or(not_before, |d| d.min(not_before)));
                    continue;
                }
                scan.visible += 1;
                if scan.ready.len() < keep {
                    scan.ready.push(Ready {
                        id: String::from_utf8_lossy(id).into_owned(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        mod_rev: kv.mod_revision(),
                        deliveries,
                        not_before,
                        payload: payload.to_vec(),
                    });
                }
            }
            if !more || (!full && !scan.ready.is_empty()) {
                if !more { crate::metrics::workqueue_depth(&self.name, scan.visible) }
                return Ok(scan);
            }
            let Some(last) = page.last() else { return Ok(scan) };
            let mut from = last.key().to_vec();
            from.push(0);
            let opts = GetOptions::new().with_range(prefix_end(items.as_bytes())).with_revision(rev).with_limit(PAGE);
            let mut r = client.range(from.clone(), Some(opts)).await?;
            more = r.more();
            page = r.take_kvs();
        }
    }

    /// Claim `r` for `session`, or dead-letter it when it has no delivery left.
    async fn claim(&self, session: &Session, owned: bool, r: Ready) -> Result<Claimed> {
        let client = session.client().clone();
        let claim_key = format!("{}{}", self.claims(), r.id);
        let dead_key = format!("{}{}", self.dead(), r.id);
        let unclaimed = vec![
            Compare::mod_revision(r.key.clone(), CompareOp::Equal, r.mod_rev),
            Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
        ];
        if self.max_deliveries.is_some_and(|m| r.deliveries >= m) {
            let txn = Txn::new().when(unclaimed).and_then(vec![
                TxnOp::delete(r.key.clone(), None),
                TxnOp::put(dead_key, encode(r.deliveries, 0, &r.payload), None),
            ]);
            // Guarded by the item's revision: sending it twice changes nothing.
            let resp = client
                .idempotent(|mut c| {
                    let t = txn.clone();
                    async move { c.txn(t).await }
                })
                .await?;
            if resp.succeeded() {
                info!(queue = %self.name, id = %r.id, deliveries = r.deliveries, "item moved to the dead letters");
                crate::metrics::workqueue_dead_lettered(&self.name);
            }
            return Ok(Claimed::Dead);
        }
        let lease = session.lease_id();
        let mark = format!("{lease:x} {:016x}", rand::random::<u64>());
        let deliveries = r.deliveries.saturating_add(1);
        let txn = Txn::new()
            .when(unclaimed)
            .and_then(vec![
                TxnOp::put(r.key.clone(), encode(deliveries, r.not_before, &r.payload), None),
                TxnOp::put(claim_key.clone(), mark.clone(), Some(PutOptions::new().with_lease(lease))),
            ])
            .or_else(vec![TxnOp::get(claim_key.clone(), None)]);
        // If this future is dropped while the request is out, our claim (if made) goes.
        let mut guard = ClaimCleanup { client: client.clone(), key: claim_key.clone(), mark: mark.clone(), armed: true };
        // Guarded by the item's revision, so it can be sent again; a later attempt that
        // finds our own mark on the claim means an earlier one was applied.
        let resp = client
            .idempotent(|mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await
            .map_err(|e| session.lost_in_etcd(e));
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                guard.run().await;
                return Err(e);
            }
        };
        let token = if resp.succeeded() {
            resp.header().map(|h| h.revision()).unwrap_or(0)
        } else {
            match resp.op_responses().first() {
                Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
                    Some(kv) if kv.value() == mark.as_bytes() => kv.create_revision(),
                    _ => {
                        guard.armed = false;
                        return Ok(Claimed::Gone);
                    }
                },
                _ => {
                    guard.run().await;
                    return Err(unexpected());
                }
            }
        };
        guard.armed = false;
        info!(queue = %self.name, id = %r.id, deliveries, token, "item claimed");
        crate::metrics::workqueue_delivered(&self.name, deliveries);
        Ok(Claimed::Got(WorkItem {
            session: session.clone(),
            owned,
            queue: self.name.clone(),
            id: r.id,
            item_key: r.key,
            claim_key,
            dead_key,
            token,
            deliveries,
            payload: r.payload,
            max_deliveries: self.max_deliveries,
            done: watch::channel(false).0,
            settled: AtomicBool::new(false),
        }))
    }

    /// How many items are visible now (unclaimed and due).
    pub async fn length(&self) -> Result<usize> {
        Ok(self.scan(0, true).await?.visible)
    }

    /// The dead letters, in id order.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let dead = self.dead();
        let mut out = Vec::new();
        let mut from = dead.clone().into_bytes();
        let end = prefix_end(dead.as_bytes());
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE * 4);
            let mut r = self.client().range(from.clone(), Some(opts)).await?;
            let more = r.more();
            let kvs = r.take_kvs();
            for kv in &kvs {
                let (deliveries, _, payload) = decode(kv.value());
                let id = kv.key().strip_prefix(dead.as_bytes()).unwrap_or(kv.key());
                out.push(DeadLetter { id: String::from_utf8_lossy(id).into_owned(), value: payload.to_vec(), deliveries });
            }
            match (more, kvs.last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Move dead letter `id` back into the queue with its delivery count reset. False if
    /// there is no such dead letter.
    pub async fn requeue_dead(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        let (dead_key, item_key) = (format!("{}{id}", self.dead()), format!("{}{id}", self.items()));
        let client = self.client();
        loop {
            let resp = client.range(dead_key.as_str(), None).await?;
            let Some(kv) = resp.kvs().first() else { return Ok(false) };
            let (_, _, payload) = decode(kv.value());
            let txn = Txn::new()
                .when(vec![
                    Compare::mod_revision(dead_key.clone(), CompareOp::Equal, kv.mod_revision()),
                    Compare::create_revision(item_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then(vec![TxnOp::delete(dead_key.clone(), None), TxnOp::put(item_key.clone(), encode(0, 0, payload), None)]);
            let attempts = AtomicU32::new(0);
            let resp = client
                .idempotent(|mut c| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let t = txn.clone();
                    async move { c.txn(t).await }
                })
                .await?;
            if resp.succeeded() || attempts.load(Ordering::Relaxed) > 1 {
                info!(queue = %self.name, %id, "dead letter requeued");
                return Ok(true);
            }
        }
    }

    /// Requeue every dead letter; returns how many were moved.
    pub async fn requeue_all_dead(&self) -> Result<usize> {
        let mut n = 0;
        for d in self.dead_letters().await? {
            if self.requeue_dead(&d.id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Deletes our claim (recognised by its unique mark) if the claim request is abandoned.
struct ClaimCleanup {
    client: Client,
    key: String,
    mark: String,
    armed: bool,
}

impl ClaimCleanup {
    fn txn(&self) -> Txn {
        Txn::new()
            .when(vec![Compare::value(self.key.clone(), CompareOp::Equal, self.mark.clone())])
            .and_then(vec![TxnOp::delete(self.key.clone(), None)])
    }
    async fn run(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let txn = self.txn();
        let t = self.client.request_timeout();
        let fut = self.client.idempotent(|mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        });
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(t, fut).await.map_err(|_| Error::timeout("claim clean-up", t)) {
            warn!(key = %self.key, error = %e, "could not remove an abandoned claim; it goes with its lease");
        }
    }
}

impl Drop for ClaimCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let (client, txn, key) = (self.client.clone(), self.txn(), self.key.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            debug!(%key, "receive cancelled during a claim; removing it");
            h.spawn(async move {
                let _ = client
                    .idempotent(|mut c| {
                        let t = txn.clone();
                        async move { c.txn(t).await }
                    })
                    .await;
            });
        }
    }
}

/// Wakes a waiting receiver when something may have become visible.
struct Waker {
    client: Client,
    prefix: String,
    items: String,
    claims: String,
    stream: Option<MemberWatch>,
    backoff: Duration,
}

impl Waker {
    fn new(client: Client, prefix: String, items: String, claims: String) -> Waker {
        Waker { client, prefix, items, claims, stream: None, backoff: Duration::from_millis(50) }
    }

    /// Resolve when an item may have become visible after revision `seen`, when the watch
    /// broke (scan again), or at `until`.
    async fn wait(&mut self, seen: i64, until: Option<Instant>) -> Result<()> {
        loop {
            if self.stream.is_none() {
                let opts = WatchOptions::new().with_prefix().with_start_revision(seen + 1);
                let opened = tokio::select! {
                    r = self.client.watch(self.prefix.clone(), opts) => r,
                    _ = sleep_opt(until) => return Ok(()),
                };
                match opened {
                    Ok(s) => self.stream = Some(s),
                    Err(e) => return self.broken(Error::from(e), until).await,
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = sleep_opt(until) => return Ok(()),
            };
            match msg {
                Err(e) => return self.broken(Error::from(e), until).await,
                Ok(None) => return self.broken(Error::Closed("watch stream"), until).await,
                Ok(Some(r)) if r.canceled() => {
                    self.stream = None;
                    if r.compact_revision() > 0 {
                        debug!(compact = r.compact_revision(), "watch compacted; scanning again");
                        return Ok(());
                    }
                    return self.broken(Error::Etcd(etcd_client::Error::WatchError(r.cancel_reason().to_string())), until).await;
                }
                Ok(Some(r)) => {
                    self.backoff = Duration::from_millis(50);
                    if self.relevant(r.events(), seen) {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn relevant(&self, events: &[etcd_client::Event], seen: i64) -> bool {
        let (items, claims) = (self.items.as_bytes(), self.claims.as_bytes());
        // Items written by a claim transaction (its claim is put at the same revision).
        let claimed: HashSet<(i64, &[u8])> = events
            .iter()
            .filter(|e| e.event_type() == EventType::Put)
            .filter_map(|e| e.kv())
            .filter_map(|kv| kv.key().strip_prefix(claims).map(|id| (kv.mod_revision(), id)))
            .collect();
        events.iter().any(|e| {
            let Some(kv) = e.kv() else { return false };
            if kv.mod_revision() <= seen {
                return false;
            }
            match e.event_type() {
                EventType::Put => {
                    kv.key().strip_prefix(items).is_some_and(|id| !claimed.contains(&(kv.mod_revision(), id)))
                }
                EventType::Delete => kv.key().starts_with(claims),
            }
        })
    }

    /// The watch broke: wait a little (not past `until`) and tell the caller to scan again.
    async fn broken(&mut self, e: Error, until: Option<Instant>) -> Result<()> {
        self.stream = None;
        if self.client.is_closed() {
            return Err(Error::Closed("client"));
        }
        if e.kind() == ErrorKind::PermissionDenied {
            return Err(e);
        }
        debug!(error = %e, "work queue watch broke; scanning again");
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = sleep_opt(until) => {}
        }
        Ok(())
    }
}

/// A claimed item: its payload, its delivery count, and the claim that only this
/// consumer can [`ack`](WorkItem::ack) or [`nack`](WorkItem::nack). Dropping it without
/// either releases the claim (a failed delivery, as a nack without delay).
pub struct WorkItem {
    session: Session,
    /// The session was made for this delivery: closed on ack / nack / drop.
    owned: bool,
    queue: String,
    id: String,
    item_key: String,
    claim_key: String,
    dead_key: String,
    token: i64,
    deliveries: u32,
    payload: Vec<u8>,
    max_deliveries: Option<u32>,
    done: watch::Sender<bool>,
    /// Acked or nacked (the claim is gone by our hand).
    settled: AtomicBool,
}

impl std::fmt::Debug for WorkItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkItem")
            .field("queue", &self.queue)
            .field("id", &self.id)
            .field("deliveries", &self.deliveries)
            .field("token", &self.token)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

impl WorkItem {
    /// The item id (unique in its queue, ordered by creation time).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The full etcd key of the item, `<namespace><name>/items/<id>`.
    pub fn key(&self) -> &str {
        &self.item_key
    }

    /// The payload.
    pub fn value(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as UTF-8 text; [`Error::Decode`] naming the item key if it is not.
    pub fn value_string(&self) -> Result<String> {
        String::from_utf8(self.payload.clone())
            .map_err(|e| Error::Decode { key: self.item_key.clone(), message: format!("not UTF-8: {e}") })
    }

    /// The payload decoded from JSON; [`Error::Decode`] naming the item key if it does not decode.
    pub fn value_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::Decode { key: self.item_key.clone(), message: format!("invalid JSON: {e}") })
    }

    /// Which delivery this is (the attempt number: 1 the first time).
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// The fencing token of this delivery: the create revision of our claim. Strictly
    /// increases from one delivery of the item to the next.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// The lease the claim lives on.
    pub fn lease_id(&self) -> i64 {
        self.session.lease_id()
    }

    /// Not acked or nacked, and the session alive. (etcd is the judge: `ack` is refused
    /// with [`Error::Fenced`] once the claim is not ours.)
    pub fn is_held(&self) -> bool {
        !*self.done.borrow() && self.session.is_alive()
    }

    /// Resolves when the claim stops being ours: `Some(reason)` when it was **lost** (the
    /// session was lost: renewals not confirmed, the lease expired or was revoked), `None`
    /// when it ended normally (acked, nacked, dropped, the session or client closed).
    pub async fn lost(&self) -> Option<String> {
        let mut rx = self.done.subscribe();
        tokio::select! {
            biased;
            _ = rx.wait_for(|d| *d) => None,
            r = self.session.lost() => if *self.done.borrow() { None } else { r },
        }
    }

    /// Apply `then` only while the claim is ours; false when it was not.
    async fn guarded(&self, then: Vec<TxnOp>, acking: bool) -> Result<bool> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(self.claim_key.clone(), CompareOp::Equal, self.token)])
            .and_then(then)
            .or_else(vec![TxnOp::get(self.item_key.clone(), Some(GetOptions::new().with_count_only()))]);
        let attempts = AtomicU32::new(0);
        let client = self.session.client();
        // Guarded by the claim's revision: sending it twice changes nothing.
        let resp = client
            .idempotent(|mut c| {
                attempts.fetch_add(1, Ordering::Relaxed);
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let item_left = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g.count() > 0,
            _ => return Err(unexpected()),
        };
        // Refused on a later attempt: an earlier one was applied if the claim is gone our
        // way (an ack also removed the item; a nack only the claim).
        Ok(attempts.load(Ordering::Relaxed) > 1 && (!acking || !item_left))
    }

    fn fenced(&self, what: &str) -> Error {
        Error::Fenced(format!(
            "{what} of item {} refused: claim {} no longer has create revision {} (the claim was lost; the item is redelivered)",
            self.id, self.claim_key, self.token
        ))
    }

    async fn finish(&self) {
        self.settled.store(true, Ordering::Release);
        self.done.send_replace(true);
        if self.owned {
            let _ = self.session.close().await;
        }
    }

    /// Done with the item: delete it and our claim in one transaction, only while the
    /// claim is ours ([`Error::Fenced`] otherwise: the claim was lost and the item is or
    /// will be delivered again).
    pub async fn ack(&self) -> Result<()> {
        if self.settled.load(Ordering::Acquire) {
            return Err(Error::invalid(format!("item {} was already acked or nacked", self.id)));
        }
        let span = info_span!("etcd_recipes.workqueue.ack", queue = %self.queue, id = %self.id, token = self.token);
        async {
            let ok = self
                .guarded(vec![TxnOp::delete(self.item_key.clone(), None), TxnOp::delete(self.claim_key.clone(), None)], true)
                .await?;
            self.finish().await;
            if !ok {
                return Err(self.fenced("ack"));
            }
            info!("item acked");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Give the item back: release our claim so that it is delivered again (not before
    /// `delay` when given). When this was its last allowed delivery, the item moves to the
    /// dead letters instead. [`Error::Fenced`] when the claim was no longer ours.
    pub async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        if self.settled.load(Ordering::Acquire) {
            return Err(Error::invalid(format!("item {} was already acked or nacked", self.id)));
        }
        let span = info_span!("etcd_recipes.workqueue.nack", queue = %self.queue, id = %self.id, token = self.token);
        async {
            let dead = self.max_deliveries.is_some_and(|m| self.deliveries >= m);
            let mut then = vec![TxnOp::delete(self.claim_key.clone(), None)];
            if dead {
                then.push(TxnOp::delete(self.item_key.clone(), None));
                then.push(TxnOp::put(self.dead_key.clone(), encode(self.deliveries, 0, &self.payload), None));
            } else if let Some(d) = delay.filter(|d| !d.is_zero()) {
                let nb = now_ms().saturating_add(d.as_millis().min(u64::MAX as u128) as u64);
                then.push(TxnOp::put(self.item_key.clone(), encode(self.deliveries, nb, &self.payload), None));
            }
            let ok = self.guarded(then, false).await?;
            self.finish().await;
            if !ok {
                return Err(self.fenced("nack"));
            }
            if dead {
                info!(deliveries = self.deliveries, "item nacked on its last delivery; moved to the dead letters");
                crate::metrics::workqueue_dead_lettered(&self.queue);
            } else {
                info!("item nacked");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

impl Drop for WorkItem {
    fn drop(&mut self) {
        self.done.send_replace(true);
        if self.settled.load(Ordering::Acquire) || self.owned {
            // Our own session goes with this handle: its drop revokes the lease (and the claim).
            return;
        }
        let (client, key, token) = (self.session.client().clone(), self.claim_key.clone(), self.token);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = crate::waitqueue::guarded_delete(&client, &key, token).await;
            });
        } else {
            warn!(%key, "work item dropped outside a tokio runtime; its claim goes with its lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_encoding_round_trips() {
        let v = encode(3, 1234, b"hello\nworld");
        assert_eq!(decode(&v), (3, 1234, &b"hello\nworld"[..]));
        assert_eq!(decode(b"plain"), (0, 0, &b"plain"[..]));
        assert_eq!(decode(b"wq1 x 1\nz"), (0, 0, &b"wq1 x 1\nz"[..]));
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
    }
}
