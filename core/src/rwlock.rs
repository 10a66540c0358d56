//! [`RwLock`]: a distributed read-write lock, wire-compatible with etcd's Go
//! `recipe.RWMutex` (`contrib/recipes/rwmutex.go`): a Go reader or writer and one of ours
//! share the lock.
//!
//! # Protocol (Go's, key for key)
//!
//! A lock named `name` is the prefix `<namespace><name>/`. A reader puts
//! `<namespace><name>/read/<unix nanoseconds>`, a writer
//! `<namespace><name>/write/<unix nanoseconds>`, empty value, attached to the session's
//! lease, created only if absent (`If Version(key) == 0 Then Put`; on a clash another
//! timestamp is tried: Go's `newUniqueEphemeralKey`). The key's revision orders the
//! contenders:
//! - a **reader** waits until no key under `<name>/write` has a lower revision (it
//!   shares the lock with every reader, and waits for earlier writers only);
//! - a **writer** waits until no key under `<name>/` has a lower revision (every
//!   earlier reader and writer).
//!
//! Each waits for the DELETE of the last such key, then looks again (Go's
//! `waitOnLastRev`). Go compares mod revisions; these keys are never modified, so their
//! mod revision is their create revision, which is what we compare.
//!
//! **Writers are not starved**: a reader arriving after a waiting writer has a higher
//! revision than the writer's key, so it waits behind it.
//!
//! Beyond Go: after every wait our key is read again, and if it is gone (the session
//! expired meanwhile) the acquire fails with [`Error::SessionLost`] instead of reporting
//! a lock it does not hold; on timeout, cancellation or error our key is deleted; a
//! holder gets a [`LockGuard`] with a fencing token (the key's create revision), guarded
//! writes and a loss signal.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::{rwlock::RwLock, SessionSource};
//! let rw = RwLock::new(SessionSource::per_use(&client, 10)?, "catalog")?;
//! let reading = rw.read().await?; // shared with other readers
//! reading.release().await?;
//! let writing = rw.write().await?; // alone
//! writing.fence().put("catalog/version", "2").await?;
//! writing.release().await?;
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;
use tracing::{info, info_span, Instrument};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::session::{Session, SessionSource};
use crate::waitqueue::{key_has_rev, on_session, queue_prefix, sleep_opt, wait_deletes, Cleanup};

/// A distributed read-write lock: a name plus where its sessions come from. Cheap to
/// clone. See the [module docs](self) for the protocol.
#[derive(Clone, Debug)]
pub struct RwLock {
    source: SessionSource,
    name: String,
    /// `<ns><name>/`
    prefix: String,
    timeout: Option<Duration>,
}

/// Which side of the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Shared with other readers.
    Read,
    /// Alone.
    Write,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Read => "read",
            Side::Write => "write",
        }
    }
}

/// The lock prefix (`<name>/`) and side of a contender key `<name>/read|write/<unix nanos>`.
/// Read-only, for the inspector.
pub(crate) fn parse_key(key: &[u8]) -> Option<(&[u8], Side)> {
    let slash = key.iter().rposition(|b| *b == b'/')?;
    let (head, nanos) = (&key[..slash], &key[slash + 1..]);
    if nanos.is_empty() || !nanos.iter().all(u8::is_ascii_digit) {
        return None;
    }
    for side in [Side::Read, Side::Write] {
        if let Some(name) = head.strip_suffix(side.word().as_bytes()).filter(|n| n.ends_with(b"/") && n.len() > 1) {
            return Some((name, side));
        }
    }
    None
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Wait,
    Try,
}

impl RwLock {
    /// A read-write lock called `name`, on a shared session (`&session`) or a fresh
    /// session per acquisition ([`SessionSource::per_use`]). Names follow the lock's
    /// rules ([`Error::InvalidArgument`] for an empty name, one with NUL, over 4096 bytes
    /// or ending in `/`).
    pub fn new(source: impl Into<SessionSource>, name: &str) -> Result<RwLock> {
        let source = source.into();
        let prefix = queue_prefix(source.client(), "rwlock name", name)?;
        Ok(RwLock { source, name: name.to_string(), prefix, timeout: None })
    }

    /// Make [`RwLock::read`] / [`RwLock::write`] give up after `timeout`
    /// ([`Error::LockTimeout`]); `None`: wait as long as it takes (the default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> RwLock {
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

    /// Wait for a read hold (behind every earlier writer), up to the lock's timeout.
    pub async fn read(&self) -> Result<LockGuard> {
        self.acquire_within(Side::Read, self.timeout).await
    }

    /// Wait for the write hold (behind every earlier reader and writer), up to the lock's timeout.
    pub async fn write(&self) -> Result<LockGuard> {
        self.acquire_within(Side::Write, self.timeout).await
    }

    /// A read hold if no earlier writer is there, else [`Error::LockTimeout`] at once.
    pub async fn try_read(&self) -> Result<LockGuard> {
        self.run(Side::Read, Mode::Try, None).await
    }

    /// The write hold if nobody else is there, else [`Error::LockTimeout`] at once.
    pub async fn try_write(&self) -> Result<LockGuard> {
        self.run(Side::Write, Mode::Try, None).await
    }

    /// Wait for `side` at most `timeout` (`None`: as long as it takes); then
    /// [`Error::LockTimeout`], our key deleted. [`Error::SessionLost`] if the session is
    /// lost while waiting, [`Error::Closed`] if the client closes meanwhile. Cancel by
    /// dropping the future: our key is deleted.
    pub async fn acquire_within(&self, side: Side, timeout: Option<Duration>) -> Result<LockGuard> {
        self.run(side, Mode::Wait, timeout.map(|t| Instant::now() + t)).await
    }

    async fn run(&self, side: Side, mode: Mode, deadline: Option<Instant>) -> Result<LockGuard> {
        let waiting = crate::metrics::lock_wait_started(&self.name, mode == Mode::Wait);
        on_session(&self.source, deadline, || self.busy(side, "timed out"), |session, owned| async move {
            self.acquire_on(&session, owned, side, mode, deadline).await
        })
        .await
        .inspect(|_| waiting.acquired())
    }

    /// The prefix whose earlier keys `side` waits for.
    fn blockers(&self, side: Side) -> String {
        match side {
            Side::Read => format!("{}write", self.prefix),
            Side::Write => self.prefix.clone(),
        }
    }

    async fn acquire_on(&self, session: &Session, owned: bool, side: Side, mode: Mode, deadline: Option<Instant>) -> Result<LockGuard> {
        let span = info_span!("etcd_recipes.rwlock.acquire", name = %self.name, side = side.word(), try_only = mode == Mode::Try);
        let session_lost = |r: Option<String>| Error::SessionLost {
            lease_id: session.lease_id(),
            reason: r.unwrap_or_else(|| "was closed".into()),
        };
        async move {
            session.ensure_alive()?;
            let client = session.client().clone();
            let lease = session.lease_id();
            // Our key, once created; a Cleanup armed before each create request.
            let mut cleanup: Option<(Cleanup, String)> = None;
            let work = async {
                let (key, entry) = loop {
                    let key = format!("{}{}/{}", self.prefix, side.word(), unique_nanos());
                    let mut c = Cleanup::new(client.clone(), key.clone(), None);
                    c.arm();
                    cleanup = Some((c, key.clone()));
                    match self.create(&client, &key, side, lease).await.map_err(|e| session.lost_in_etcd(e))? {
                        Some(entry) => break (key, entry),
                        None => {
                            // Someone else's key (same nanosecond): not ours to delete.
                            if let Some((c, _)) = cleanup.take() {
                                c.disarm();
                            }
                        }
                    }
                };
                match entry {
                    Created::Free(rev) => Ok(Some((key, rev, false))),
                    Created::Blocked(_) if mode == Mode::Try => Ok(None),
                    Created::Blocked(rev) => {
                        wait_deletes(&client, &self.blockers(side), rev).await?;
                        Ok::<_, Error>(Some((key, rev, true)))
                    }
                }
            };
            let outcome = tokio::select! {
                r = work => r,
                r = session.lost() => Err(session_lost(r)),
                _ = sleep_opt(deadline) => Ok(None),
            };
            let drop_key = |c: Option<(Cleanup, String)>| async move {
                if let Some((c, _)) = c {
                    c.run().await;
                }
            };
            let (key, rev, waited) = match outcome {
                Ok(Some(r)) => r,
                Ok(None) => {
                    drop_key(cleanup).await;
                    let why = if mode == Mode::Try { "held by another owner" } else { "timed out" };
                    return Err(self.busy(side, why));
                }
                Err(e) => {
                    drop_key(cleanup).await;
                    return Err(e);
                }
            };
            // After every wait: is our key still there (the session did not expire meanwhile)?
            let recheck = if waited { key_has_rev(&client, &key, rev).await.map(|r| r.0) } else { Ok(true) };
            match recheck {
                Ok(true) => {}
                Ok(false) => {
                    drop_key(cleanup).await;
                    return Err(Error::SessionLost {
                        lease_id: lease,
                        reason: format!("rwlock key {key} vanished while waiting (lease expired or revoked)"),
                    });
                }
                Err(e) => {
                    drop_key(cleanup).await;
                    return Err(e);
                }
            }
            if let Err(e) = session.ensure_alive() {
                drop_key(cleanup).await;
                return Err(e);
            }
            if let Some((c, _)) = cleanup {
                c.disarm();
            }
            info!(key = %key, token = rev, "rwlock {} hold acquired", side.word());
            Ok(LockGuard::held(&self.name, session.clone(), owned, key, rev, None))
        }
        .instrument(span)
        .await
    }

    /// `If Version(key) == 0 Then Put(key, "", lease), Count(blockers) Else Get(key)`.
    /// `None`: the key exists and is not ours (pick another name).
    async fn create(&self, client: &Client, key: &str, side: Side, lease: i64) -> Result<Option<Created>> {
        let count = GetOptions::new().with_prefix().with_count_only();
        let txn = Txn::new()
            .when(vec![Compare::version(key, CompareOp::Equal, 0)])
            .and_then(vec![
                TxnOp::put(key, Vec::<u8>::new(), Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(self.blockers(side), Some(count)),
            ])
            .or_else(vec![TxnOp::get(key, None)]);
        // Retried: if an attempt was applied and its answer lost, the retry finds our own
        // key (same lease) and takes it as created.
        let resp = client
            .idempotent(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let unexpected = || Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()));
        let ops = resp.op_responses();
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let others = match ops.get(1) {
                Some(TxnOpResponse::Get(g)) => g.count(),
                _ => return Err(unexpected()),
            };
            // Inside the transaction every other key is older than ours; a writer's
            // count includes its own key.
            let mine = if side == Side::Write { 1 } else { 0 };
            return Ok(Some(if others > mine { Created::Blocked(rev) } else { Created::Free(rev) }));
        }
        match ops.first() {
            Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
                Some(kv) if kv.lease() == lease => Ok(Some(Created::Blocked(kv.create_revision()))),
                _ => Ok(None),
            },
            _ => Err(unexpected()),
        }
    }

    fn busy(&self, side: Side, reason: &str) -> Error {
        Error::LockTimeout { name: format!("rwlock {:?} ({})", self.name, side.word()), reason: reason.to_string() }
    }
}

enum Created {
    /// Nothing ahead of us: held, as seen by the creating transaction itself.
    Free(i64),
    /// Something may be ahead: wait (then re-check our key).
    Blocked(i64),
}

/// Unix nanoseconds, strictly increasing within this process (so two of our own
/// contenders never pick the same key).
fn unique_nanos() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(l) => last = l,
        }
    }
}

impl Session {
    /// A read-write lock named `name` on this session; see [`RwLock::new`].
    pub fn rwlock(&self, name: &str) -> Result<RwLock> {
        RwLock::new(self, name)
    }
}
