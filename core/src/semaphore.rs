//! [`Semaphore`]: at most N holders of one name at any instant, fair (FIFO), with fencing
//! tokens and a loss signal per holder.
//!
//! etcd's Go module has no semaphore; the layout follows its lock (`concurrency.Mutex`).
//!
//! # Protocol
//!
//! A semaphore named `name` with N permits is the key prefix `<namespace><name>/`. Each
//! contender puts one key, `<namespace><name>/<lease id in lowercase hex>`, attached to
//! its [`Session`]'s lease, in one create-or-get transaction. Its value is N in decimal
//! ASCII (`"3"`): the permit count the contender expects.
//!
//! The **holders** are the N keys with the smallest create revisions. A contender whose
//! key is not among them waits: it reads every key up to its own (create revision ≤ its
//! own), keeps the set of keys ahead of it, and follows the DELETEs under the prefix after
//! the read's revision, on its client's shared watch of the prefix (one per client,
//! subscribed before the read: see [`crate::waitqueue`]). A deletion only shrinks that local set; it reads etcd again only when
//! fewer than N keys are left ahead (so a release does not make every waiter read: the
//! herd is one small watch event per waiter, no requests). After every wait the read
//! that lets it in also shows its own key: if the key is gone (the session expired while
//! waiting) the acquire fails with [`Error::SessionLost`]; it never reports a permit it
//! does not hold. On timeout, cancellation or any error while waiting, the key is
//! deleted.
//!
//! **Capacity is never exceeded**, also when sessions are lost: a key only goes away
//! when it is deleted or its lease expires, and a holder's [`Session`] declares itself
//! lost before its lease can expire (its deadline), so by the time the next waiter
//! counts itself in, the holder that lost its permit has been told (`lost()`), and its
//! guarded writes ([`LockGuard::fence`]) are refused by etcd (`FENCED`).
//!
//! **Mixed permit counts are refused.** If a key ahead of ours (or sharing the holders'
//! window) carries another count, the acquire fails with [`Error::InvalidArgument`]
//! (and our key is removed): two processes configured with different N would each
//! believe a different capacity, so neither bound would hold. A key whose value is not a
//! count (a lock or an election using the same name) is refused the same way.
//!
//! The **fencing token** is the create revision of the permit's key: unique, and larger
//! for every later acquisition.
//!
//! # One session, many tasks
//!
//! The key depends only on the lease, so one session holds at most one permit of a
//! given semaphore: a second acquire through the same session waits (in-process, FIFO)
//! until the first permit is released. Per-use sessions (the usual way,
//! [`SessionSource::per_use`]) have no such limit.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::{semaphore::Semaphore, SessionSource};
//! let sem = Semaphore::new(SessionSource::per_use(&client, 10)?, "downloads", 3)?;
//! let permit = sem.acquire().await?;
//! permit.fence().put("downloads/last-token", permit.fencing_token().to_string()).await?;
//! permit.release().await?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;
use tracing::{debug, info, info_span, Instrument};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::session::{Session, SessionSource};
use crate::waitqueue::{pause_after_error, PrefixDeletes, local_slot, member_key, on_session, queue_prefix, sleep_opt, Cleanup};

/// The largest permit count (a bound against typos such as a byte count).
pub const MAX_PERMITS: u32 = 1_000_000;

/// A counting semaphore: a name, a permit count, and where its sessions come from.
/// Cheap to clone. See the [module docs](self) for the protocol.
#[derive(Clone, Debug)]
pub struct Semaphore {
    source: SessionSource,
    name: String,
    prefix: String,
    permits: u32,
    timeout: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Wait,
    Try,
}

impl Semaphore {
    /// A semaphore called `name` with `permits` holders at most, on a shared session
    /// (`&session`) or a fresh session per acquisition ([`SessionSource::per_use`]).
    /// [`Error::InvalidArgument`] for a bad name (as for a lock) or `permits` outside
    /// `1..=`[`MAX_PERMITS`].
    pub fn new(source: impl Into<SessionSource>, name: &str, permits: u32) -> Result<Semaphore> {
        let source = source.into();
        if permits == 0 || permits > MAX_PERMITS {
            return Err(Error::invalid(format!("permits must be 1..={MAX_PERMITS}, got {permits}")));
        }
        let prefix = queue_prefix(source.client(), "semaphore name", name)?;
        Ok(Semaphore { source, name: name.to_string(), prefix, permits, timeout: None })
    }

    /// Make [`Semaphore::acquire`] give up after `timeout` ([`Error::LockTimeout`]); `None`:
    /// wait as long as it takes (the default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Semaphore {
        self.timeout = timeout;
        self
    }

    /// The semaphore name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The permit count.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The session backing this semaphore, when it is a shared one.
    pub fn session(&self) -> Option<&Session> {
        match &self.source {
            SessionSource::Shared(s) => Some(s),
            SessionSource::PerUse { .. } => None,
        }
    }

    /// Wait for a permit (FIFO among contenders), up to the timeout set with
    /// [`Semaphore::with_timeout`] if any. Cancel by dropping the future: our key is
    /// deleted. [`Error::SessionLost`] if the session is lost while waiting,
    /// [`Error::Closed`] if the client is closed meanwhile, [`Error::InvalidArgument`]
    /// if the holders were made with another permit count.
    pub async fn acquire(&self) -> Result<LockGuard> {
        self.acquire_within(self.timeout).await
    }

    /// Take a permit if one is free now, else fail at once with [`Error::LockTimeout`]
    /// (our key is removed again).
    pub async fn try_acquire(&self) -> Result<LockGuard> {
        self.run(Mode::Try, None).await
    }

    /// Like [`Semaphore::acquire`], but give up after `timeout` with [`Error::LockTimeout`]
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
        let span = info_span!("etcd_recipes.semaphore.acquire", name = %self.name, key = %key, permits = self.permits, try_only = mode == Mode::Try);
        let session_lost = |r: Option<String>| Error::SessionLost {
            lease_id: session.lease_id(),
            reason: r.unwrap_or_else(|| "was closed".into()),
        };
        async move {
            session.ensure_alive()?;
            let slot = local_slot(&key);
            let local = match mode {
                Mode::Try => slot.try_lock_owned().map_err(|_| self.busy("this session holds a permit already"))?,
                Mode::Wait => {
                    tokio::select! {
                        g = slot.lock_owned() => g,
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
                let rev = self.enter(&client, &key, session.lease_id()).await.map_err(|e| session.lost_in_etcd(e))?;
                match rev {
                    Entry::Holding(rev) => Ok(Some(rev)),
                    Entry::Waiting(_) if mode == Mode::Try => Ok(None),
                    Entry::Waiting(rev) => {
                        self.wait_turn(&client, &key, rev, session.lease_id()).await?;
                        Ok::<_, Error>(Some(rev))
                    }
                }
            };
            let outcome = tokio::select! {
                r = work => r,
                r = session.lost() => Err(session_lost(r)),
                _ = sleep_opt(deadline) => Ok(None),
            };
            let rev = match outcome {
                Ok(Some(rev)) => rev,
                Ok(None) => {
                    cleanup.run().await;
                    return Err(self.busy(if mode == Mode::Try { "no permit free" } else { "timed out" }));
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
            info!(token = rev, "semaphore permit acquired");
            Ok(LockGuard::held(&self.name, session.clone(), owned, key, rev, local))
        }
        .instrument(span)
        .await
    }

    /// Create-or-get our key and read the first N keys, in one transaction.
    async fn enter(&self, client: &Client, key: &str, lease: i64) -> Result<Entry> {
        let first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(self.permits as i64);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![
                TxnOp::put(key, self.permits.to_string(), Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(self.prefix.clone(), Some(first.clone())),
            ])
            .or_else(vec![TxnOp::get(key, None), TxnOp::get(self.prefix.clone(), Some(first))]);
        // Create-if-absent, then read: applying it twice changes nothing, so it is retried.
        let resp = client
            .idempotent(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let ops = resp.op_responses();
        let unexpected = || Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()));
        let firsts = match ops.get(1) {
            Some(TxnOpResponse::Get(g)) => g.kvs().to_vec(),
            _ => return Err(unexpected()),
        };
        let rev = if resp.succeeded() {
            header_rev
        } else {
            match ops.first() {
                Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
                    Some(kv) => {
                        self.check_count(kv)?;
                        kv.create_revision()
                    }
                    None => return Err(unexpected()),
                },
                _ => return Err(unexpected()),
            }
        };
        self.check_counts(&firsts, rev)?;
        if firsts.iter().any(|kv| kv.create_revision() == rev && kv.key() == key.as_bytes()) {
            Ok(Entry::Holding(rev))
        } else {
            Ok(Entry::Waiting(rev))
        }
    }

    /// Wait until our key (create revision `rev`) is among the first N, confirmed by a
    /// read that shows it there. [`Error::SessionLost`] when the key is gone.
    async fn wait_turn(&self, client: &Client, key: &str, rev: i64, lease: i64) -> Result<()> {
        let mut backoff = Duration::from_millis(50);
        // The client's shared watch of the prefix, subscribed before each read: every
        // delete after the read's revision comes on it (see `waitqueue::QueueWatches`).
        let mut deletes: Option<PrefixDeletes> = None;
        loop {
            let d = match deletes.as_mut() {
                Some(d) => d,
                None => match PrefixDeletes::open(client, &self.prefix).await {
                    Ok(d) => deletes.insert(d),
                    Err(e) => {
                        pause_after_error(e, &mut backoff).await?;
                        continue;
                    }
                },
            };
            let opts = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(rev)
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let resp = client.range(self.prefix.as_str(), Some(opts)).await?;
            let from = resp.header().map(|h| h.revision()).unwrap_or(0);
            let kvs = resp.kvs();
            self.check_counts(kvs, rev)?;
            if !kvs.iter().any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == rev) {
                return Err(Error::SessionLost {
                    lease_id: lease,
                    reason: format!("semaphore key {key} vanished while waiting (lease expired or revoked)"),
                });
            }
            let mut ahead: HashSet<Vec<u8>> =
                kvs.iter().filter(|kv| kv.create_revision() < rev).map(|kv| kv.key().to_vec()).collect();
            if ahead.len() < self.permits as usize {
                return Ok(());
            }
            if from < d.from {
                continue; // a read from a member behind the watch's: read again
            }
            debug!(ahead = ahead.len(), permits = self.permits, from, "waiting for holders to leave");
            match Self::watch_ahead(d, key, &mut ahead, from, self.permits as usize).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    deletes = None;
                    pause_after_error(e, &mut backoff).await?;
                }
            }
        }
    }

    /// Follow the deletes after revision `from`; return when fewer than `permits` keys are
    /// left ahead or our own key was deleted (the caller re-reads in every case).
    async fn watch_ahead(d: &mut PrefixDeletes, key: &str, ahead: &mut HashSet<Vec<u8>>, from: i64, permits: usize) -> Result<()> {
        loop {
            let m = d.next().await?;
            for (k, rev) in m.deletes {
                if rev <= from {
                    continue;
                }
                if k == key.as_bytes() {
                    return Ok(());
                }
                ahead.remove(&k);
            }
            if ahead.len() < permits {
                return Ok(());
            }
        }
    }

    /// Every key other than ours must carry our permit count.
    fn check_counts(&self, kvs: &[KeyValue], rev: i64) -> Result<()> {
        kvs.iter().filter(|kv| kv.create_revision() != rev).try_for_each(|kv| self.check_count(kv))
    }

    fn check_count(&self, kv: &KeyValue) -> Result<()> {
        let text = String::from_utf8_lossy(kv.value());
        match text.parse::<u32>() {
            Ok(n) if n == self.permits => Ok(()),
            Ok(n) => Err(Error::invalid(format!(
                "semaphore {:?} is in use with {n} permits (key {}), this one was made with {}: every contender must use the same count",
                self.name,
                String::from_utf8_lossy(kv.key()),
                self.permits
            ))),
            Err(_) => Err(Error::invalid(format!(
                "key {} under semaphore {:?} holds {:?}, not a permit count: is the name also used by a lock or an election?",
                String::from_utf8_lossy(kv.key()),
                self.name,
                text.chars().take(32).collect::<String>()
            ))),
        }
    }

    fn busy(&self, reason: &str) -> Error {
        Error::LockTimeout { name: format!("semaphore {:?}", self.name), reason: reason.to_string() }
    }
}

enum Entry {
    Holding(i64),
    Waiting(i64),
}

impl Session {
    /// A semaphore named `name` with `permits` holders at most, on this session; see
    /// [`Semaphore::new`].
    pub fn semaphore(&self, name: &str, permits: u32) -> Result<Semaphore> {
        Semaphore::new(self, name, permits)
    }
}
