//! [`Lock`]: a distributed mutex with fencing tokens, wire-compatible with etcd's Go
//! `concurrency.Mutex`, `etcdctl lock` and the etcd server's Lock RPC.
//!
//! # Protocol
//!
//! A lock named `name` is the key prefix `<namespace><name>/`. Each contender puts one
//! key, `<namespace><name>/<lease id in lowercase hex>`, with an empty value, attached to
//! its [`Session`]'s lease. The owner is the key with the smallest create revision
//! (fair FIFO order). A waiter learns how many keys are ahead of it from its own
//! create-or-get transaction, watches the prefix and counts their deletes (a key created
//! after ours is never ahead of it), so a handoff costs the holder's delete and one watch
//! event, and no request from the waiters (no thundering herd). The same watch sees our
//! own key: if it is deleted while waiting (the session expired or was revoked) the
//! acquire fails with [`Error::SessionLost`]; it never reports a lock it does not hold.
//! On timeout, cancellation (dropping the future) or any error while waiting, the
//! waiter's key is deleted.
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
//! The next one starts only once the release is confirmed, so no other key of that name
//! exists while a guard lives, and a release deletes the key by name, as Go's `Unlock`
//! does (one delete; a transaction guarded by the token would cost etcd more).
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, OwnedMutexGuard};
use tokio::time::Instant;
use tracing::{info, info_span, warn, Instrument};

use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::session::{Session, SessionSource};
use crate::waitqueue::{
    enter, local_slot, release_key, member_key, on_session, queue_prefix, sleep_opt, wait_turn, Cleanup, Turn,
};

/// A distributed lock: a name plus where its sessions come from (one shared
/// [`Session`], or a fresh one per acquisition). Cheap to clone. See the
/// [module docs](self) for the protocol and naming rules.
#[derive(Clone, Debug)]
pub struct Lock {
    source: SessionSource,
    name: String,
    prefix: String,
    timeout: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Wait,
    Try,
}

impl Lock {
    /// A lock called `name` (namespaced by the session's client), on a shared session
    /// (`&session`) or a fresh session per acquisition ([`SessionSource::per_use`]).
    /// [`Error::InvalidArgument`] for an empty name, one over 4096 bytes, one with NUL,
    /// or one ending in `/`.
    pub fn new(source: impl Into<SessionSource>, name: &str) -> Result<Lock> {
        let source = source.into();
        let prefix = queue_prefix(source.client(), "lock name", name)?;
        Ok(Lock { source, name: name.to_string(), prefix, timeout: None })
    }

    /// Make [`Lock::acquire`] give up after `timeout` ([`Error::LockTimeout`]); `None`:
    /// wait as long as it takes (the default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Lock {
        self.timeout = timeout;
        self
    }

    /// The lock name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session backing this lock, when it is a shared one.
    pub fn session(&self) -> Option<&Session> {
        match &self.source {
            SessionSource::Shared(s) => Some(s),
            SessionSource::PerUse { .. } => None,
        }
    }

    /// Wait until the lock is ours (FIFO among contenders), up to the timeout set with
    /// [`Lock::with_timeout`] if any. Cancel by dropping the future: our key is deleted.
    /// [`Error::SessionLost`] if the session is lost while waiting; [`Error::Closed`] if
    /// the client is closed meanwhile.
    pub async fn acquire(&self) -> Result<LockGuard> {
        self.acquire_within(self.timeout).await
    }

    /// Take the lock if it is free, else fail at once with [`Error::LockTimeout`]
    /// (our key is removed again).
    pub async fn try_acquire(&self) -> Result<LockGuard> {
        self.run(Mode::Try, None).await
    }

    /// Like [`Lock::acquire`], but give up after `timeout` with [`Error::LockTimeout`]
    /// (our key is deleted before this returns).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        self.acquire_within(Some(timeout)).await
    }

    /// Wait at most `timeout` (`None`: as long as it takes).
    pub async fn acquire_within(&self, timeout: Option<Duration>) -> Result<LockGuard> {
        self.run(Mode::Wait, timeout.map(|t| Instant::now() + t)).await
    }

    async fn run(&self, mode: Mode, deadline: Option<Instant>) -> Result<LockGuard> {
        let waiting = crate::metrics::lock_wait_started(&self.name, mode == Mode::Wait);
        on_session(&self.source, deadline, || self.busy("timed out"), |session, owned| async move {
            self.acquire_on(&session, owned, mode, deadline).await
        })
        .await
        .inspect(|_| waiting.acquired())
    }

    async fn acquire_on(&self, session: &Session, owned: bool, mode: Mode, deadline: Option<Instant>) -> Result<LockGuard> {
        let key = member_key(&self.prefix, session.lease_id());
        let span = info_span!("etcd_recipes.lock.acquire", name = %self.name, key = %key, try_only = mode == Mode::Try);
        let session_lost = |r: Option<String>| Error::SessionLost {
            lease_id: session.lease_id(),
            reason: r.unwrap_or_else(|| "was closed".into()),
        };
        async move {
            session.ensure_alive()?;
            let slot = local_slot(&key);
            let local = match mode {
                Mode::Try => slot.try_lock_owned().map_err(|_| self.busy("held by another task of this session"))?,
                Mode::Wait => {
                    let take = slot.lock_owned();
                    tokio::select! {
                        g = take => g,
                        r = session.lost() => return Err(session_lost(r)),
                        _ = sleep_opt(deadline) => return Err(self.busy("timed out")),
                    }
                }
            };
            let client = session.client().clone();
            let mut cleanup = Cleanup::new(client.clone(), key.clone(), Some(local));
            // Armed before the request: if it is cancelled or fails after etcd applied
            // it, the key is still removed.
            cleanup.arm();
            let work = async {
                let entered = enter(&client, &self.prefix, &key, Vec::new(), session.lease_id())
                    .await
                    .map_err(|e| session.lost_in_etcd(e))?;
                let rev = entered.rev;
                if entered.owner_rev.is_none_or(|o| o == rev) {
                    // The transaction itself saw our key as the owner: no wait, nothing to re-check.
                    return Ok(Some((rev, Turn::Ours { at: entered.header_rev })));
                }
                if mode == Mode::Try {
                    return Ok(None);
                }
                let turn = wait_turn(&client, &self.prefix, &key, rev, entered.ahead()).await?;
                Ok::<_, Error>(Some((rev, turn)))
            };
            let outcome = tokio::select! {
                r = work => r,
                r = session.lost() => Err(session_lost(r)),
                _ = sleep_opt(deadline) => Ok(None),
            };
            let rev = match outcome {
                Ok(Some((rev, Turn::Ours { .. }))) => rev,
                Ok(Some((_, Turn::KeyGone))) => {
                    cleanup.run().await;
                    return Err(Error::SessionLost {
                        lease_id: session.lease_id(),
                        reason: format!("lock key {key} vanished while waiting (lease expired or revoked)"),
                    });
                }
                Ok(None) => {
                    cleanup.run().await;
                    return Err(self.busy(if mode == Mode::Try { "held by another owner" } else { "timed out" }));
                }
                Err(e) => {
                    cleanup.run().await;
                    return Err(e);
                }
            };
            if let Err(e) = session.ensure_alive() {
                cleanup.run().await;
                return Err(e);
            }
            let local = cleanup.disarm();
            info!(token = rev, "lock acquired");
            Ok(LockGuard::new(self, session.clone(), owned, key, rev, local))
        }
        .instrument(span)
        .await
    }

    fn busy(&self, reason: &str) -> Error {
        Error::LockTimeout { name: format!("lock {:?}", self.name), reason: reason.to_string() }
    }
}

/// Proof that we hold a [`Lock`]. Releases on [`LockGuard::release`] or on drop
/// (a background delete, when a tokio runtime is running). When the lock made its own
/// session for this acquisition, releasing (or dropping) the guard closes it.
pub struct LockGuard {
    session: Session,
    /// The session was made for this acquisition: close it on release.
    owned: bool,
    name: String,
    key: String,
    token: i64,
    fence: Fence,
    released: watch::Sender<bool>,
    deleted: AtomicBool,
    local: Mutex<Option<OwnedMutexGuard<()>>>,
    /// The guard came with this process's slot for its key: its release deletes the key
    /// by name (see [`release_key`]).
    slot_held: bool,
    holding: crate::metrics::Holding,
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
    fn new(lock: &Lock, session: Session, owned: bool, key: String, token: i64, local: Option<OwnedMutexGuard<()>>) -> LockGuard {
        LockGuard::held(&lock.name, session, owned, key, token, local)
    }

    /// A guard over `key` (create revision `token`, under `session`'s lease), for every
    /// recipe whose holder proves ownership by one key exactly as a lock does (semaphore
    /// permits, read-write lock holds): same release, loss signal and fencing.
    pub(crate) fn held(name: &str, session: Session, owned: bool, key: String, token: i64, local: Option<OwnedMutexGuard<()>>) -> LockGuard {
        let client = session.client().clone();
        LockGuard {
            session,
            owned,
            name: name.to_string(),
            fence: Fence::new(client, key.clone(), token),
            key,
            token,
            released: watch::channel(false).0,
            deleted: AtomicBool::new(false),
            slot_held: local.is_some(),
            local: Mutex::new(local),
            holding: crate::metrics::lock_held(name),
        }
    }

    /// The full etcd key of the lock, `<namespace><name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease behind the lock.
    pub fn lease_id(&self) -> i64 {
        self.session.lease_id()
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

    /// Resolves when the lock stops being ours: `Some(reason)` when it was **lost** (the
    /// session was lost: renewals not confirmed, the lease expired or was revoked), `None`
    /// when it ended normally (released, dropped, its session or client closed).
    pub async fn lost(&self) -> Option<String> {
        let mut rx = self.released.subscribe();
        tokio::select! {
            biased;
            _ = rx.wait_for(|r| *r) => None,
            r = self.session.lost() => if *self.released.borrow() { None } else { r },
        }
    }

    /// Delete our key (no other holder's key ever has its name while this guard lives),
    /// and close the session when it was made for this acquisition. Idempotent; a failed
    /// delete can be retried, and is retried on drop.
    pub async fn release(&self) -> Result<()> {
        self.released.send_replace(true);
        self.holding.released();
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let span = info_span!("etcd_recipes.lock.release", name = %self.name, key = %self.key, token = self.token);
        async {
            if self.owned {
                // Revoking the lease deletes the key in the same step.
                self.session.close().await?;
            } else if self.session.state() != crate::SessionState::Closed {
                release_key(self.session.client(), &self.key, self.token, self.slot_held).await?;
            }
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
        if self.owned {
            // Dropping the last handle of our own session revokes its lease (and so the key).
            drop(local);
            return;
        }
        let (client, key, token, slot_held) = (self.session.client().clone(), self.key.clone(), self.token, self.slot_held);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let span = info_span!("etcd_recipes.lock.release", key = %key, token, on_drop = true);
                h.spawn(
                    async move {
                        match release_key(&client, &key, token, slot_held).await {
                            Ok(()) => info!("lock released"),
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
