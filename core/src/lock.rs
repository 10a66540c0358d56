//! [`Lock`]: a distributed mutex with fencing tokens, wire-compatible with etcd's Go
//! `concurrency.Mutex`, `etcdctl lock` and the etcd server's Lock RPC.
//!
//! # Protocol
//!
//! A lock named `name` is the key prefix `<namespace><name>/`. Each contender puts one
//! key, `<namespace><name>/<lease id in lowercase hex>`, with an empty value, attached to
//! its [`Session`]'s lease. The owner is the key with the smallest create revision. A
//! waiter watches only the key just ahead of it (fair FIFO order, no thundering herd)
//! and, after every wait, re-reads its own key: if the key is gone (the session expired
//! while waiting) the acquire fails with [`Error::SessionLost`]; it never reports a lock
//! it does not hold. On timeout, cancellation (dropping the future) or any error while
//! waiting, the waiter's key is deleted.
//!
//! The **fencing token** is the create revision of the lock key: it strictly increases
//! from one holder to the next. [`LockGuard::fence`] offers writes guarded by
//! `CreateRevision(lockKey) == token`, which etcd refuses once the lock is not ours.
//!
//! # Names
//!
//! A name must be non-empty, at most 4096 bytes, without NUL, and must not end in `/`
//! (`"a/"` would make the prefix `"a//"`: almost certainly a mistake, so it is refused
//! rather than silently normalised, which would break interoperability with a Go
//! service using the literal name).
//!
//! Names are **prefixes**, exactly as in Go and `etcdctl`: the keys of lock `"a/b"`
//! (`a/b/<lease>`) lie under the prefix of lock `"a"` (`a/`). So:
//! - a holder or waiter of `"a/b"` is queued ahead of later contenders of `"a"`:
//!   lock `"a"` is not acquired while `"a/b"` is held by someone who came first;
//! - a holder of `"a"` does **not** block `"a/b"` (`a/<lease>` is not under `a/b/`).
//!
//! Each name on its own is still a correct mutex (at most one holder). To get
//! independent locks, do not use a name that is a `/`-separated prefix of another lock
//! name (use `"jobs/a"` and `"jobs/a-b"`, not `"jobs/a"` and `"jobs/a/b"`).
//!
//! # One session, many tasks
//!
//! The key depends only on the lease, so two acquires of the same name through the same
//! session would share one key (Go then treats the second as already holding the lock).
//! Here they are serialised in-process: the second waits (FIFO) until the first guard is
//! released, so a lock shared by tasks of one process still excludes them from each other.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::{lock::Lock, Session};
//! let session = Session::new(&client, 10).await?;
//! let lock = Lock::new(&session, "jobs/nightly-report")?;
//! let guard = lock.acquire().await?;
//! // Writes that only happen while the lock is still ours:
//! guard.fence().put("reports/last", "done").await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchFilterType, WatchOptions,
};
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::session::Session;

/// Validate a lock or election name; see the module docs.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    check_key(what, name)?;
    if name.ends_with('/') {
        return Err(Error::invalid(format!(
            "{what} {name:?} ends with '/': the key prefix would be {:?}; drop the trailing '/'",
            format!("{name}/")
        )));
    }
    Ok(())
}

/// `<ns><name>/<lease hex>`, as Go's `fmt.Sprintf("%s%x", pfx, lease)`.
pub(crate) fn member_key(prefix: &str, lease_id: i64) -> String {
    format!("{prefix}{lease_id:x}")
}

/// Get the key with the smallest create revision under `prefix` (the owner / leader).
pub(crate) fn first_under(prefix: &str) -> (String, GetOptions) {
    (
        prefix.to_string(),
        GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1),
    )
}

/// Deletes a contender key when the acquire/campaign future is dropped, unless disarmed.
/// Error paths call [`Cleanup::run`] to delete before returning.
pub(crate) struct Cleanup {
    client: Client,
    key: String,
    armed: bool,
    local: Option<OwnedMutexGuard<()>>,
}

impl Cleanup {
    pub(crate) fn new(client: Client, key: String, local: Option<OwnedMutexGuard<()>>) -> Self {
        Cleanup { client, key, armed: false, local }
    }
    pub(crate) fn arm(&mut self) {
        self.armed = true;
    }
    /// Keep the key (it is now owned by a guard); hand over the in-process guard.
    pub(crate) fn disarm(mut self) -> Option<OwnedMutexGuard<()>> {
        self.armed = false;
        self.local.take()
    }
    /// Delete the key now (bounded by the request timeout), then release the local slot.
    pub(crate) async fn run(mut self) {
        if self.armed {
            self.armed = false;
            let key = self.key.clone();
            if let Err(e) = delete_key(&self.client, &key).await {
                warn!(%key, error = %e, "could not delete contender key; it goes with its lease");
            }
        }
        self.local.take();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, key, local) = (self.client.clone(), self.key.clone(), self.local.take());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                debug!(%key, "acquire cancelled; deleting contender key");
                h.spawn(async move {
                    let _ = delete_key(&client, &key).await;
                    drop(local);
                });
            }
            Err(_) => warn!(%key, "no tokio runtime to delete contender key; it goes with its lease"),
        }
    }
}

async fn delete_key(client: &Client, key: &str) -> Result<()> {
    let t = client.request_timeout();
    let k = key.to_string();
    let fut = client.idempotent(|mut c| {
        let k = k.clone();
        async move { c.delete(k, None).await }
    });
    match tokio::time::timeout(t, fut).await {
        Err(_) => Err(Error::timeout(format!("delete of {key}"), t)),
        Ok(r) => r.map(|_| ()),
    }
}

/// Delete `key` only while it still has create revision `rev`.
pub(crate) async fn guarded_delete(client: &Client, key: &str, rev: i64) -> Result<bool> {
    let txn = Txn::new()
        .when(vec![Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then(vec![TxnOp::delete(key, None)]);
    let t = client.request_timeout();
    let fut = client.idempotent(|mut c| {
        let txn = txn.clone();
        async move { c.txn(txn).await }
    });
    match tokio::time::timeout(t, fut).await {
        Err(_) => Err(Error::timeout(format!("delete of {key}"), t)),
        Ok(r) => Ok(r?.succeeded()),
    }
}

/// What the create-or-get transaction found.
pub(crate) struct Entered {
    /// Create revision of our key.
    pub rev: i64,
    /// True if this call created the key; false if it already existed (same lease).
    pub created: bool,
    /// Create revision of the current owner (smallest under the prefix), if any.
    pub owner_rev: Option<i64>,
    /// Value our key had, when it already existed.
    pub existing_value: Option<Vec<u8>>,
}

/// `If CreateRevision(key)==0 Then Put(key, value, lease), Get(first) Else Get(key), Get(first)`.
pub(crate) async fn enter(client: &Client, prefix: &str, key: &str, value: Vec<u8>, lease: i64) -> Result<Entered> {
    let (p, first) = first_under(prefix);
    let txn = Txn::new()
        .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(vec![
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(p.clone(), Some(first.clone())),
        ])
        .or_else(vec![TxnOp::get(key, None), TxnOp::get(p, Some(first))]);
    // Create-if-absent, then read: applying it twice changes nothing, so it is retried.
    let resp = client
        .idempotent(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let ops = resp.op_responses();
    let owner_rev = match ops.get(1) {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.create_revision()),
        _ => return Err(Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))),
    };
    if resp.succeeded() {
        return Ok(Entered { rev: header_rev, created: true, owner_rev, existing_value: None });
    }
    match ops.first() {
        Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
            Some(kv) => Ok(Entered {
                rev: kv.create_revision(),
                created: false,
                owner_rev,
                existing_value: Some(kv.value().to_vec()),
            }),
            // Deleted between the compare and the get cannot happen inside one txn.
            None => Err(Error::Etcd(etcd_client::Error::InvalidArgs(format!("key {key} vanished inside a txn")))),
        },
        _ => Err(Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))),
    }
}

/// Wait until no key under `prefix` has a create revision below `my_rev` (Go's
/// `waitDeletes`): repeatedly find the key just ahead and wait for its DELETE.
/// Survives watch errors and compaction by re-reading.
pub(crate) async fn wait_deletes(client: &Client, prefix: &str, my_rev: i64) -> Result<()> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let opts = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(my_rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let p = prefix.to_string();
        let resp = client
            .read(|mut c| {
                let (p, o) = (p.clone(), opts.clone());
                async move { c.get(p, Some(o)).await }
            })
            .await?;
        let Some(ahead) = resp.kvs().first() else { return Ok(()) };
        let ahead_key = ahead.key().to_vec();
        let from = resp.header().map(|h| h.revision()).unwrap_or(0);
        debug!(ahead = %String::from_utf8_lossy(&ahead_key), from, "waiting for the key ahead to go");
        // The key existed at `from`, so its delete comes at `from + 1` or later. Starting
        // there (not at `from`, as Go does) keeps the watcher in etcd's "synced" group:
        // a watch starting at or below the current revision is served by a catch-up loop
        // that runs only every 100 ms.
        match wait_delete(client, &ahead_key, from + 1).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) if matches!(e.kind(), crate::ErrorKind::PermissionDenied | crate::ErrorKind::InvalidArgument) => {
                return Err(e)
            }
            Err(e) => {
                debug!(error = %e, "watch failed; re-reading");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Resolve when `key` is deleted at or after revision `from`. Ok(()) also when the watch
/// was cancelled by compaction (the caller re-reads anyway).
async fn wait_delete(client: &Client, key: &[u8], from: i64) -> Result<()> {
    let opts = WatchOptions::new().with_start_revision(from).with_filters([WatchFilterType::NoPut]);
    let mut stream = client.watch(key.to_vec(), opts).await?;
    loop {
        match stream.message().await? {
            None => return Err(Error::Closed("watch stream")),
            Some(r) => {
                if r.canceled() {
                    if r.compact_revision() > 0 {
                        return Ok(());
                    }
                    return Err(Error::Etcd(etcd_client::Error::WatchError(format!(
                        "watch cancelled: {}",
                        r.cancel_reason()
                    ))));
                }
                if r.events().iter().any(|e| e.event_type() == EventType::Delete) {
                    return Ok(());
                }
            }
        }
    }
}

/// Does `key` still exist with create revision `rev`? Returns the read's revision too.
pub(crate) async fn key_has_rev(client: &Client, key: &str, rev: i64) -> Result<(bool, i64)> {
    let k = key.to_string();
    let resp = client
        .read(|mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        })
        .await?;
    let header = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().first().map(|kv| kv.create_revision()) == Some(rev), header))
}

/// In-process slots: one per full lock key (that is, per lease and name).
static LOCAL: Mutex<Option<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

fn local_slot(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    if let Some(m) = map.get(key).and_then(Weak::upgrade) {
        return m;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let m = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key.to_string(), Arc::downgrade(&m));
    m
}

/// A distributed lock: a name plus the [`Session`] whose lease backs our key.
/// Cheap to clone. See the [module docs](self) for the protocol and naming rules.
#[derive(Clone, Debug)]
pub struct Lock {
    session: Session,
    name: String,
    prefix: String,
    key: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Wait,
    Try,
}

impl Lock {
    /// A lock called `name` (namespaced by the session's client).
    /// [`Error::InvalidArgument`] for an empty name, one over 4096 bytes, one with NUL,
    /// or one ending in `/`.
    pub fn new(session: &Session, name: &str) -> Result<Lock> {
        let (prefix, key) = queue_keys(session, "lock name", name)?;
        Ok(Lock { session: session.clone(), name: name.to_string(), prefix, key })
    }

    /// The lock name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session backing this lock.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Wait until the lock is ours (FIFO among contenders). Cancel by dropping the
    /// future: our key is deleted. [`Error::SessionLost`] if the session is lost
    /// while waiting.
    pub async fn acquire(&self) -> Result<LockGuard> {
        self.acquire_inner(Mode::Wait, None).await
    }

    /// Take the lock if it is free, else fail at once with [`Error::LockTimeout`]
    /// (our key is removed again).
    pub async fn try_acquire(&self) -> Result<LockGuard> {
        self.acquire_inner(Mode::Try, None).await
    }

    /// Like [`Lock::acquire`], but give up after `timeout` with [`Error::LockTimeout`]
    /// (our key is deleted before this returns).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        self.acquire_inner(Mode::Wait, Some(Instant::now() + timeout)).await
    }

    async fn acquire_inner(&self, mode: Mode, deadline: Option<Instant>) -> Result<LockGuard> {
        let span = info_span!("etcd_recipes.lock.acquire", name = %self.name, key = %self.key, try_only = mode == Mode::Try);
        async move {
            self.session.ensure_alive()?;
            let slot = local_slot(&self.key);
            let local = match mode {
                Mode::Try => slot.try_lock_owned().map_err(|_| self.busy("held by another task of this session"))?,
                Mode::Wait => {
                    let take = slot.lock_owned();
                    let lost = self.session.lost();
                    tokio::select! {
                        g = take => g,
                        r = lost => return Err(self.session_lost(r)),
                        _ = sleep_opt(deadline) => return Err(self.busy("timed out")),
                    }
                }
            };
            let client = self.session.client().clone();
            let mut cleanup = Cleanup::new(client.clone(), self.key.clone(), Some(local));
            // Armed before the request: if it is cancelled or fails after etcd applied
            // it, the key is still removed.
            cleanup.arm();
            let work = async {
                let entered = enter(&client, &self.prefix, &self.key, Vec::new(), self.session.lease_id())
                    .await
                    .map_err(|e| self.session.lost_in_etcd(e))?;
                let rev = entered.rev;
                if entered.owner_rev.is_none_or(|o| o == rev) {
                    // The transaction itself saw our key as the owner: no wait, nothing to re-check.
                    return Ok(Some((rev, false)));
                }
                if mode == Mode::Try {
                    return Ok(None);
                }
                wait_deletes(&client, &self.prefix, rev).await?;
                Ok::<_, Error>(Some((rev, true)))
            };
            let outcome = tokio::select! {
                r = work => r,
                r = self.session.lost() => Err(self.session_lost(r)),
                _ = sleep_opt(deadline) => Ok(None),
            };
            let (rev, waited) = match outcome {
                Ok(Some(r)) => r,
                Ok(None) => {
                    cleanup.run().await;
                    return Err(self.busy(if mode == Mode::Try { "held by another owner" } else { "timed out" }));
                }
                Err(e) => {
                    cleanup.run().await;
                    return Err(e);
                }
            };
            // After every wait: is our key still there (the session did not expire meanwhile)?
            let recheck = if waited { key_has_rev(&client, &self.key, rev).await } else { Ok((true, 0)) };
            match recheck {
                Ok((true, _)) => {}
                Ok((false, _)) => {
                    cleanup.run().await;
                    return Err(Error::SessionLost {
                        lease_id: self.session.lease_id(),
                        reason: format!("lock key {} vanished while waiting (lease expired or revoked)", self.key),
                    });
                }
                Err(e) => {
                    cleanup.run().await;
                    return Err(e);
                }
            }
            if let Err(e) = self.session.ensure_alive() {
                cleanup.run().await;
                return Err(e);
            }
            let local = cleanup.disarm();
            info!(token = rev, "lock acquired");
            Ok(LockGuard::new(self, rev, local))
        }
        .instrument(span)
        .await
    }

    fn busy(&self, reason: &str) -> Error {
        Error::LockTimeout { name: self.name.clone(), reason: reason.to_string() }
    }

    fn session_lost(&self, reason: String) -> Error {
        Error::SessionLost { lease_id: self.session.lease_id(), reason }
    }
}

/// The queue prefix `<ns><name>/` and this session's key in it, after checking `name`.
/// Shared by locks and elections, whose key layouts are the same.
pub(crate) fn queue_keys(session: &Session, what: &str, name: &str) -> Result<(String, String)> {
    check_name(what, name)?;
    let prefix = session.client().full_key(&format!("{name}/"));
    let key = member_key(&prefix, session.lease_id());
    Ok((prefix, key))
}

pub(crate) async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Proof that we hold a [`Lock`]. Releases on [`LockGuard::release`] or on drop
/// (a background delete, when a tokio runtime is running).
pub struct LockGuard {
    session: Session,
    name: String,
    key: String,
    token: i64,
    fence: Fence,
    released: watch::Sender<bool>,
    deleted: AtomicBool,
    local: Mutex<Option<OwnedMutexGuard<()>>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

impl LockGuard {
    fn new(lock: &Lock, token: i64, local: Option<OwnedMutexGuard<()>>) -> LockGuard {
        let client = lock.session.client().clone();
        LockGuard {
            session: lock.session.clone(),
            name: lock.name.clone(),
            key: lock.key.clone(),
            token,
            fence: Fence::new(client, lock.key.clone(), token),
            released: watch::channel(false).0,
            deleted: AtomicBool::new(false),
            local: Mutex::new(local),
        }
    }

    /// The full etcd key of the lock, `<namespace><name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: the create revision of our key. Strictly increases from one
    /// holder of this lock to the next.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// Writes guarded by `CreateRevision(key) == token`: refused by etcd once the lock
    /// is no longer ours.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Not released and the session alive. (etcd is the judge: use [`LockGuard::fence`]
    /// for writes that must not happen after the lock is lost.)
    pub fn is_held(&self) -> bool {
        !*self.released.borrow() && self.session.is_alive()
    }

    /// Resolves when the lock stops being ours as far as this process knows: the session
    /// is lost or closed, or the guard is released. Returns the reason.
    pub async fn lost(&self) -> String {
        let mut rx = self.released.subscribe();
        tokio::select! {
            _ = rx.wait_for(|r| *r) => "lock released".to_string(),
            r = self.session.lost() => r,
        }
    }

    /// Delete our key (only if it is still this holder's: guarded by the token).
    /// Idempotent; a failed delete can be retried, and is retried on drop.
    pub async fn release(&self) -> Result<()> {
        self.released.send_replace(true);
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let span = info_span!("etcd_recipes.lock.release", name = %self.name, key = %self.key, token = self.token);
        async {
            guarded_delete(self.session.client(), &self.key, self.token).await?;
            self.deleted.store(true, Ordering::Release);
            self.local.lock().unwrap_or_else(|p| p.into_inner()).take();
            info!("lock released");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.released.send_replace(true);
        if self.deleted.load(Ordering::Acquire) {
            return;
        }
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (client, key, token) = (self.session.client().clone(), self.key.clone(), self.token);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let span = info_span!("etcd_recipes.lock.release", key = %key, token, on_drop = true);
                h.spawn(
                    async move {
                        match guarded_delete(&client, &key, token).await {
                            Ok(_) => info!("lock released"),
                            Err(e) => warn!(error = %e, "release on drop failed; the key goes with its lease"),
                        }
                        drop(local);
                    }
                    .instrument(span),
                );
            }
            Err(_) => warn!(%key, "lock guard dropped outside a tokio runtime; the key goes with its lease"),
        }
    }
}
