//! [`Barrier`] and [`DoubleBarrier`], wire-compatible with etcd's Go `contrib/recipes`
//! (`recipe.NewBarrier`, `recipe.NewDoubleBarrier`; `client/v3/experimental/recipes` in
//! later etcd versions): a Go process and ours hold, release, wait on, enter and leave
//! the same barriers.
//!
//! # Barrier protocol
//!
//! A barrier named `name` is one key, `<namespace><name>`, with an empty value and no
//! lease. [`Barrier::hold`] creates it (put-if-absent: `If Version(key) == 0 Then Put`),
//! [`Barrier::release`] deletes it, [`Barrier::wait`] returns at once when the key does
//! not exist and otherwise watches it until it is deleted. The key has no lease: a
//! holder that dies leaves the barrier held until someone releases it (as in Go).
//!
//! Go's `Wait` watches from the revision of its read for a PUT *followed by* a DELETE,
//! so a Go waiter that starts after other writes happened in the store since the hold
//! only wakes on a release that follows a new hold. Ours waits for the key's DELETE (a
//! released barrier is released), and survives compaction and reconnects by re-reading:
//! if the key is gone, or has a different create revision (released and held again
//! meanwhile), the wait is over.
//!
//! # Double barrier protocol
//!
//! A double barrier named `name` for `count` parties uses the keys
//! `<namespace><name>/waiters/<unix nanos>` (one per party, empty value, under the
//! party's session lease, created put-if-absent) and `<namespace><name>/ready` (no lease).
//!
//! - **Enter**: create my waiter key, count the keys under the prefix `<name>/waiters`.
//!   More than `count`: the barrier is full (Go: `ErrTooManyClients`; we delete our key
//!   and fail with [`Error::LockTimeout`]). Exactly `count`: put `<name>/ready`, which
//!   releases everyone; fewer: wait for a PUT of `<name>/ready` after my key was created.
//! - **Leave** (Go's protocol exactly): read the waiter keys; none: done. One left: delete
//!   `ready`, delete mine, done. Otherwise, of the keys ordered by mod revision, the
//!   lowest waits for the highest to be deleted and looks again; every other party
//!   deletes its own key and waits for the lowest to be deleted, then looks again. So
//!   `leave` returns only once every party has left.
//!
//! Waiter keys live under the session lease, so a party whose session is lost
//! disappears from the barrier: while others wait in `enter`, its place is free again
//! (they keep waiting until `count` live parties have entered); while others wait in
//! `leave`, it counts as having left. The party itself gets [`Error::SessionLost`] from
//! its `enter` / `leave`, and [`DoubleBarrier::lost`] resolves with the reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType,
    WatchOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::{check_key, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::session::{Session, SessionSource};
use crate::waitqueue::{check_name, sleep_opt};

// ---------------------------------------------------------------------------------------
// Shared by the barriers and the queues.

/// What a watch saw first.
pub(crate) enum Seen {
    /// An event of the wanted type.
    Event,
    /// The watch was cancelled by compaction: re-read.
    Compacted,
}

/// Watch `key` (a prefix when `prefix`) from revision `from` until the first event of
/// type `want`.
pub(crate) async fn wait_event(client: &Client, key: &str, prefix: bool, from: i64, want: EventType) -> Result<Seen> {
    let filter = match want {
        EventType::Put => WatchFilterType::NoDelete,
        EventType::Delete => WatchFilterType::NoPut,
    };
    let mut opts = WatchOptions::new().with_start_revision(from).with_filters([filter]);
    if prefix {
        opts = opts.with_prefix();
    }
    let mut stream = client.watch(key.as_bytes().to_vec(), opts).await?;
    loop {
        match stream.message().await? {
            None => return Err(Error::Closed("watch stream")),
            Some(r) => {
                if r.canceled() {
                    if r.compact_revision() > 0 {
                        return Ok(Seen::Compacted);
                    }
                    return Err(Error::Etcd(etcd_client::Error::WatchError(format!(
                        "watch cancelled: {}",
                        r.cancel_reason()
                    ))));
                }
                if r.events().iter().any(|e| e.event_type() == want) {
                    return Ok(Seen::Event);
                }
            }
        }
    }
}

/// After a failed watch: errors that re-reading cannot fix end the wait; the rest are
/// retried after a growing pause.
pub(crate) async fn after_watch_error(e: Error, backoff: &mut Duration) -> Result<()> {
    // Here a closed stream means a closed client: the wait ends.
    if e.kind() == ErrorKind::Closed {
        return Err(e);
    }
    crate::waitqueue::pause_after_error(e, backoff).await
}

/// Go's `time.Now().UnixNano()` for unique keys, strictly increasing within this process
/// (two keys made in the same nanosecond would collide and cost a retry).
pub(crate) fn unique_nanos() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Go's `putNewKV`: `If Version(key) == 0 Then Put(key, value, lease)`. Returns the
/// revision of the put, or `None` when the key exists. Sent once: a put-if-absent whose
/// answer was lost ends as [`Error::UnknownOutcome`].
pub(crate) async fn put_new(client: &Client, key: &str, value: Vec<u8>, lease: i64) -> Result<Option<i64>> {
    let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    let txn = Txn::new()
        .when(vec![Compare::version(key, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key, value, opts)]);
    let resp = client
        .write(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(resp.succeeded().then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
}

/// `Get(key)`: the create and mod revisions of `key` if it exists, and the read's revision.
async fn read_key(client: &Client, key: &str) -> Result<(Option<(i64, i64)>, i64)> {
    let resp = client.range(key, None).await?;
    let header = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().first().map(|kv| (kv.create_revision(), kv.mod_revision())), header))
}

async fn delete(client: &Client, key: &str) -> Result<i64> {
    let k = key.to_string();
    let resp = client
        .idempotent(|mut c| {
            let k = k.clone();
            async move { c.delete(k, None).await }
        })
        .await?;
    Ok(resp.deleted())
}

fn gave_up(what: String, reason: &str) -> Error {
    Error::LockTimeout { name: what, reason: reason.to_string() }
}

// ---------------------------------------------------------------------------------------
// Barrier

/// One key that blocks [`Barrier::wait`] while it exists. Cheap to clone.
///
/// ```no_run
/// # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
/// use etcd_recipes::barrier::Barrier;
/// let gate = Barrier::new(&client, "deploy/gate")?;
/// gate.hold().await?;              // workers now block in wait()
/// gate.release().await?;           // ...and all go at once
/// gate.wait().await?;              // returns at once: not held
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Barrier {
    client: Client,
    name: String,
    key: String,
    timeout: Option<Duration>,
}

impl Barrier {
    /// The barrier `name` (the key `<namespace><name>`). [`Error::InvalidArgument`] for an
    /// empty name, one over 4096 bytes or one with NUL.
    pub fn new(client: &Client, name: &str) -> Result<Barrier> {
        check_key("barrier name", name)?;
        Ok(Barrier { client: client.clone(), name: name.to_string(), key: client.full_key(name), timeout: None })
    }

    /// Make [`Barrier::wait`] give up after `timeout` ([`Error::LockTimeout`]).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Barrier {
        self.timeout = timeout;
        self
    }

    /// The barrier name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full etcd key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Create the barrier key so that waiters block. True if this call created it, false
    /// if it was held already (Go's `Hold` returns `ErrKeyExists` then).
    pub async fn hold(&self) -> Result<bool> {
        self.client.ensure_open()?;
        let held = put_new(&self.client, &self.key, Vec::new(), 0).await?.is_some();
        info!(barrier = %self.name, created = held, "barrier held");
        Ok(held)
    }

    /// Delete the barrier key: every waiter returns. True if it was held.
    pub async fn release(&self) -> Result<bool> {
        self.client.ensure_open()?;
        let n = delete(&self.client, &self.key).await?;
        info!(barrier = %self.name, was_held = n > 0, "barrier released");
        Ok(n > 0)
    }

    /// Is the barrier key there now?
    pub async fn is_held(&self) -> Result<bool> {
        self.client.ensure_open()?;
        Ok(read_key(&self.client, &self.key).await?.0.is_some())
    }

    /// Return when the barrier is not held: at once if the key does not exist, else when
    /// it is deleted. Up to the timeout set with [`Barrier::with_timeout`], if any.
    pub async fn wait(&self) -> Result<()> {
        self.wait_within(self.timeout).await
    }

    /// Like [`Barrier::wait`], giving up after `timeout` with [`Error::LockTimeout`].
    /// [`Error::Closed`] when the client is closed meanwhile.
    pub async fn wait_within(&self, timeout: Option<Duration>) -> Result<()> {
        self.client.ensure_open()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let span = info_span!("etcd_recipes.barrier.wait", barrier = %self.name);
        let closed = self.client.closed();
        tokio::select! {
            r = self.wait_released().instrument(span) => r,
            _ = sleep_opt(deadline) => Err(gave_up(format!("barrier {:?}", self.name), "still held (timed out)")),
            _ = closed => Err(Error::Closed("client")),
        }
    }

    async fn wait_released(&self) -> Result<()> {
        let mut held_since: Option<i64> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let (kv, rev) = read_key(&self.client, &self.key).await?;
            let Some((create, _)) = kv else { return Ok(()) };
            if held_since.is_some_and(|c| c != create) {
                // Released and held again while we were not watching: it was released.
                return Ok(());
            }
            held_since = Some(create);
            debug!(create, from = rev + 1, "barrier held; waiting for its delete");
            match wait_event(&self.client, &self.key, false, rev + 1, EventType::Delete).await {
                Ok(Seen::Event) => return Ok(()),
                Ok(Seen::Compacted) => {}
                Err(e) => after_watch_error(e, &mut backoff).await?,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// DoubleBarrier

/// The state of one party that entered.
struct Party {
    session: Session,
    /// The session was made for this entry: close it when leaving.
    owned: bool,
    key: String,
    /// Create revision of our waiter key.
    rev: i64,
    /// Set when the party left normally (or gave up): `lost()` then resolves with `None`.
    done: watch::Sender<bool>,
    /// Our key was deleted by us (in `leave`).
    deleted: bool,
}

impl Drop for Party {
    fn drop(&mut self) {
        self.done.send_replace(true);
        if self.deleted || self.owned {
            // Dropping our own session revokes its lease and so the key.
            return;
        }
        let (client, key) = (self.session.client().clone(), self.key.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = delete(&client, &key).await {
                    warn!(%key, error = %e, "could not delete double barrier key; it goes with its lease");
                }
            });
        }
    }
}

/// Blocks [`DoubleBarrier::enter`] until `count` parties have entered, then
/// [`DoubleBarrier::leave`] until all of them have left. One object is one party; make
/// one per participant. See the [module docs](self) for the protocol.
///
/// ```no_run
/// # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
/// use etcd_recipes::{barrier::DoubleBarrier, SessionSource};
/// let round = DoubleBarrier::new(SessionSource::per_use(&client, 10)?, "batch/42", 3)?;
/// round.enter().await?; // all 3 start together
/// // ... work ...
/// round.leave().await?; // and finish together
/// # Ok(()) }
/// ```
pub struct DoubleBarrier {
    source: SessionSource,
    name: String,
    /// `<ns><name>`
    base: String,
    count: usize,
    timeout: Option<Duration>,
    party: Arc<tokio::sync::Mutex<Option<Party>>>,
    /// The current party's session and done flag, for `lost()` without the async lock.
    watching: Mutex<Option<(Session, watch::Receiver<bool>)>>,
}

impl std::fmt::Debug for DoubleBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoubleBarrier").field("name", &self.name).field("count", &self.count).finish()
    }
}

impl DoubleBarrier {
    /// A double barrier `name` for `count` parties, on a shared session (`&session`) or a
    /// fresh session per entry ([`SessionSource::per_use`]; closed on leave).
    /// [`Error::InvalidArgument`] for a bad name (as a lock name) or a count of 0.
    pub fn new(source: impl Into<SessionSource>, name: &str, count: usize) -> Result<DoubleBarrier> {
        let source = source.into();
        check_name("double barrier name", name)?;
        if count == 0 {
            return Err(Error::invalid("double barrier count must be at least 1"));
        }
        let base = source.client().full_key(name);
        Ok(DoubleBarrier {
            source,
            name: name.to_string(),
            base,
            count,
            timeout: None,
            party: Arc::new(tokio::sync::Mutex::new(None)),
            watching: Mutex::new(None),
        })
    }

    /// Make `enter` and `leave` give up after `timeout` ([`Error::LockTimeout`]).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> DoubleBarrier {
        self.timeout = timeout;
        self
    }

    /// The barrier name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many parties the barrier waits for.
    pub fn count(&self) -> usize {
        self.count
    }

    fn waiters(&self) -> String {
        format!("{}/waiters", self.base)
    }

    fn ready(&self) -> String {
        format!("{}/ready", self.base)
    }

    /// Our waiter key while entered.
    pub async fn key(&self) -> Option<String> {
        self.party.lock().await.as_ref().map(|p| p.key.clone())
    }

    /// Wait until `count` parties have entered (up to the timeout set with
    /// [`DoubleBarrier::with_timeout`]).
    pub async fn enter(&self) -> Result<()> {
        self.enter_within(self.timeout).await
    }

    /// Like [`DoubleBarrier::enter`], giving up after `timeout` with
    /// [`Error::LockTimeout`] (our key is deleted first). [`Error::LockTimeout`] at once
    /// when more than `count` parties are in (the barrier is full: a round is still
    /// leaving, or parties disagree on the count); [`Error::SessionLost`] when our session
    /// is lost while waiting; [`Error::Closed`] when the client is closed;
    /// [`Error::InvalidArgument`] when this party entered already.
    pub async fn enter_within(&self, timeout: Option<Duration>) -> Result<()> {
        let client = self.source.client().clone();
        client.ensure_open()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.party.clone().try_lock_owned().map_err(|_| self.busy_party())?;
        if slot.is_some() {
            return Err(Error::invalid(format!("double barrier {:?}: this party entered already; leave first", self.name)));
        }
        let span = info_span!("etcd_recipes.double_barrier.enter", name = %self.name, count = self.count);
        let closed = client.closed();
        let session = async {
            tokio::select! {
                s = self.source.session() => s,
                _ = sleep_opt(deadline) => Err(self.gave_up("timed out")),
            }
        };
        let (session, owned) = tokio::select! {
            r = session => r?,
            _ = closed => return Err(Error::Closed("client")),
        };
        let key = format!("{}/{}", self.waiters(), unique_nanos());
        let (done, done_rx) = watch::channel(false);
        let mut party = Party { session: session.clone(), owned, key: key.clone(), rev: 0, done, deleted: false };
        let outcome = tokio::select! {
            r = self.enter_on(&mut party, deadline).instrument(span) => r,
            _ = client.closed() => Err(Error::Closed("client")),
        };
        match outcome {
            Ok(()) => {
                *self.watching.lock().unwrap_or_else(|p| p.into_inner()) = Some((session, done_rx));
                *slot = Some(party);
                Ok(())
            }
            Err(e) => {
                self.give_up(party).await;
                // Closing the client also revokes our session: that is a close, not a loss.
                Err(if client.is_closed() { Error::Closed("client") } else { e })
            }
        }
    }

    async fn enter_on(&self, party: &mut Party, deadline: Option<Instant>) -> Result<()> {
        let session = party.session.clone();
        session.ensure_alive()?;
        let client = session.client().clone();
        // Go's newUniqueEphemeralKey: a fresh nanosecond key until one is new.
        let rev = loop {
            let created = tokio::select! {
                r = put_new(&client, &party.key, Vec::new(), session.lease_id()) => r.map_err(|e| session.lost_in_etcd(e))?,
                _ = sleep_opt(deadline) => return Err(self.gave_up("timed out")),
            };
            match created {
                Some(rev) => break rev,
                None => party.key = format!("{}/{}", self.waiters(), unique_nanos()),
            }
        };
        party.rev = rev;
        let n = count_prefix(&client, &self.waiters()).await?;
        debug!(key = %party.key, rev, entered = n, "entered double barrier");
        if n > self.count as i64 {
            return Err(self.gave_up(&format!("full: {n} parties are in, for a count of {}", self.count)));
        }
        if n == self.count as i64 {
            let ready = self.ready();
            client
                .idempotent(|mut c| {
                    let ready = ready.clone();
                    async move { c.put(ready, Vec::<u8>::new(), None).await }
                })
                .await?;
            info!(name = %self.name, "double barrier: all parties in");
            return Ok(());
        }
        let wait = self.wait_ready(&client, rev);
        tokio::select! {
            r = wait => r?,
            _ = key_deleted(&client, &party.key, rev) => return Err(Error::SessionLost {
                lease_id: session.lease_id(),
                reason: format!("double barrier key {} was deleted while waiting (lease expired or revoked)", party.key),
            }),
            r = session.lost() => return Err(Error::SessionLost {
                lease_id: session.lease_id(),
                reason: r.unwrap_or_else(|| "was closed".into()),
            }),
            _ = sleep_opt(deadline) => return Err(self.gave_up(&format!("timed out; fewer than {} parties entered", self.count))),
        }
        // No phantom entry: is our key still there?
        let (mine, _) = read_key(&client, &party.key).await?;
        if mine.map(|(c, _)| c) != Some(rev) {
            return Err(Error::SessionLost {
                lease_id: session.lease_id(),
                reason: format!("double barrier key {} vanished while waiting (lease expired or revoked)", party.key),
            });
        }
        session.ensure_alive()?;
        info!(name = %self.name, "double barrier: entered");
        Ok(())
    }

    /// Wait for a PUT of `<name>/ready` at or after revision `since`.
    async fn wait_ready(&self, client: &Client, since: i64) -> Result<()> {
        let ready = self.ready();
        let mut from = since;
        let mut backoff = Duration::from_millis(50);
        loop {
            match wait_event(client, &ready, false, from, EventType::Put).await {
                Ok(Seen::Event) => return Ok(()),
                Ok(Seen::Compacted) => {}
                Err(e) => after_watch_error(e, &mut backoff).await?,
            }
            let (kv, header) = read_key(client, &ready).await?;
            if kv.is_some_and(|(_, m)| m > since) {
                return Ok(());
            }
            from = header + 1;
        }
    }

    /// Wait until every party has left (up to the timeout set with
    /// [`DoubleBarrier::with_timeout`]).
    pub async fn leave(&self) -> Result<()> {
        self.leave_within(self.timeout).await
    }

    /// Like [`DoubleBarrier::leave`], giving up after `timeout` with
    /// [`Error::LockTimeout`]. Giving up (timeout, error, cancellation) still takes this
    /// party out of the barrier (our key is deleted), so the others do not wait for it.
    /// [`Error::InvalidArgument`] when this party has not entered;
    /// [`Error::SessionLost`] when our session was lost before we left.
    pub async fn leave_within(&self, timeout: Option<Duration>) -> Result<()> {
        let client = self.source.client().clone();
        client.ensure_open()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.party.clone().try_lock_owned().map_err(|_| self.busy_party())?;
        let Some(mut party) = slot.take() else {
            return Err(Error::invalid(format!("double barrier {:?}: this party has not entered", self.name)));
        };
        let span = info_span!("etcd_recipes.double_barrier.leave", name = %self.name, key = %party.key);
        let outcome = tokio::select! {
            r = self.leave_on(&mut party).instrument(span) => r,
            _ = sleep_opt(deadline) => Err(self.gave_up("timed out; not every party has left")),
            _ = client.closed() => Err(Error::Closed("client")),
        };
        self.give_up(party).await;
        match outcome {
            Err(_) if client.is_closed() => Err(Error::Closed("client")),
            other => other,
        }
    }

    async fn leave_on(&self, party: &mut Party) -> Result<()> {
        let session = party.session.clone();
        let client = session.client().clone();
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let (kvs, header) = list_waiters(&client, &self.waiters()).await?;
            let mine = kvs.iter().any(|(k, _)| *k == party.key);
            if kvs.is_empty() {
                // Everyone is out, but the last one out was lost before it could delete
                // `ready` (Go leaves it behind then): delete it unless a new round put it.
                delete_unless_newer(&client, &self.ready(), header).await?;
            }
            if first && !mine {
                return Err(Error::SessionLost {
                    lease_id: session.lease_id(),
                    reason: format!("double barrier key {} vanished before leaving (lease expired or revoked)", party.key),
                });
            }
            first = false;
            if kvs.is_empty() {
                return Ok(());
            }
            if kvs.len() == 1 {
                // The last one in: finish up.
                delete(&client, &self.ready()).await?;
                if mine {
                    delete(&client, &party.key).await?;
                    party.deleted = true;
                }
                info!(name = %self.name, "double barrier: everyone left");
                return Ok(());
            }
            let lowest = kvs.iter().min_by_key(|(_, m)| *m).cloned().expect("not empty");
            let highest = kvs.iter().max_by_key(|(_, m)| *m).cloned().expect("not empty");
            let (watch_key, watch_rev) = if lowest.0 == party.key {
                // The lowest waits for the highest to go, and keeps its key meanwhile.
                highest
            } else {
                if mine {
                    delete(&client, &party.key).await?;
                    party.deleted = true;
                }
                lowest
            };
            debug!(waiting_for = %watch_key, parties = kvs.len(), "leaving double barrier");
            let wait = wait_event(&client, &watch_key, false, watch_rev, EventType::Delete);
            let outcome = if party.deleted {
                wait.await
            } else {
                tokio::select! {
                    r = wait => r,
                    r = session.lost() => return Err(Error::SessionLost {
                        lease_id: session.lease_id(),
                        reason: r.unwrap_or_else(|| "was closed".into()),
                    }),
                }
            };
            match outcome {
                Ok(_) => {}
                Err(e) => after_watch_error(e, &mut backoff).await?,
            }
        }
    }

    /// The party is out (normally or not): delete our key if still there, close a session
    /// made for this entry, and let `lost()` resolve.
    async fn give_up(&self, mut party: Party) {
        *self.watching.lock().unwrap_or_else(|p| p.into_inner()) = None;
        party.done.send_replace(true);
        if party.owned {
            let _ = party.session.close().await;
        } else if !party.deleted && party.session.is_alive() {
            if let Err(e) = delete(party.session.client(), &party.key).await {
                warn!(key = %party.key, error = %e, "could not delete double barrier key; it goes with its lease");
            }
        }
        party.deleted = true;
    }

    /// Resolves when this party stops being in the barrier: `Some(reason)` when its
    /// session was **lost** while entered, `None` when it left (or never entered).
    pub async fn lost(&self) -> Option<String> {
        let current = self.watching.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (session, done) = current?;
        let mut rx = done.clone();
        tokio::select! {
            biased;
            _ = rx.wait_for(|d| *d) => None,
            r = session.lost() => if *done.borrow() { None } else { r },
        }
    }

    fn gave_up(&self, reason: &str) -> Error {
        gave_up(format!("double barrier {:?}", self.name), reason)
    }

    fn busy_party(&self) -> Error {
        Error::invalid(format!("double barrier {:?}: enter or leave already in progress for this party", self.name))
    }
}

/// Resolves once `key` (created at `rev`) is gone: a party learns at once that its
/// lease was revoked, not at its next renewal.
async fn key_deleted(client: &Client, key: &str, rev: i64) {
    let mut from = rev + 1;
    loop {
        match wait_event(client, key, false, from, EventType::Delete).await {
            Ok(Seen::Event) => return,
            Ok(Seen::Compacted) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        match read_key(client, key).await {
            Ok((kv, _)) if kv.is_none_or(|(c, _)| c != rev) => return,
            Ok((_, header)) => from = header + 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn count_prefix(client: &Client, prefix: &str) -> Result<i64> {
    let resp = client.range(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await?;
    Ok(resp.count())
}

/// `If ModRevision(key) <= rev Then Delete(key)`.
async fn delete_unless_newer(client: &Client, key: &str, rev: i64) -> Result<()> {
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(key, CompareOp::Less, rev + 1)])
        .and_then(vec![TxnOp::delete(key, None)]);
    client
        .idempotent(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(())
}

/// The waiter keys (as text) with their mod revisions, in key order, and the read's revision.
async fn list_waiters(client: &Client, prefix: &str) -> Result<(Vec<(String, i64)>, i64)> {
    let p = prefix.to_string();
    let resp = client
        .read(|mut c| {
            let p = p.clone();
            async move {
                c.get(p, Some(GetOptions::new().with_prefix().with_keys_only().with_sort(SortTarget::Key, SortOrder::Ascend)))
                    .await
            }
        })
        .await?;
    let header = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision())).collect(), header))
}
