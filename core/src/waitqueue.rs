//! The wait queue shared by [`crate::lock`] and [`crate::election`] (and every recipe
//! that waits its turn): the key layout and the waiting of etcd's Go
//! `concurrency.Mutex` / `concurrency.Election`.
//!
//! A contender puts `<prefix><lease hex>` under its lease in one create-or-get
//! transaction ([`enter`]); the owner is the key with the smallest create revision. A
//! lock or election waiter counts the keys ahead of it go on one watch of the prefix,
//! which also sees its own key ([`wait_turn`]); other recipes wait like Go, for the key
//! just ahead ([`wait_deletes`]). The waiters of a client on one prefix (locks, elections,
//! semaphores, read-write locks) share one watch of it, which stays open between waits
//! ([`QueueWatches`]). Recipes that wait like Go re-read their own key after every wait
//! ([`key_has_rev`]). [`Cleanup`] removes a contender's key on
//! error, timeout or cancellation; [`release_key`] removes a holder's key (only while it
//! is still the same holder's).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchFilterType, WatchOptions,
};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};
use crate::session::{Session, SessionSource};

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

/// The queue prefix of `key` when it is a contender key `<prefix><lease hex>` of `lease`
/// (the inverse of [`member_key`]; read-only, for the inspector).
pub(crate) fn member_prefix(key: &[u8], lease: i64) -> Option<&[u8]> {
    if lease == 0 {
        return None;
    }
    let hex = format!("{lease:x}");
    let prefix = key.strip_suffix(hex.as_bytes())?;
    prefix.ends_with(b"/").then_some(prefix)
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

/// Remove a holder's key on release: a plain delete (Go's `Unlock`) while the holder
/// keeps this process's slot for the key (`slot_held`, see [`local_slot`]), else
/// [`guarded_delete`].
///
/// Why the plain delete removes exactly this holder's key: the key's name is the
/// holder's lease (`<prefix><lease hex>`), a lease belongs to one session of one
/// process, and in that process the slot lets one acquisition of the key exist at a
/// time, the next one only after this delete is confirmed. So no other key of that name
/// can exist between the acquisition and the end of its release, also when the delete
/// is retried after an unknown outcome. The guarded transaction costs etcd more: in
/// uncontended acquire-and-release cycles (bench L1) etcd made 5-15% more cycles per
/// second with the plain delete. Keys named by the hold rather than the lease (the
/// read-write lock's) keep the guard.
pub(crate) async fn release_key(client: &Client, key: &str, token: i64, slot_held: bool) -> Result<()> {
    if slot_held {
        delete_key(client, key).await
    } else {
        guarded_delete(client, key, token).await.map(|_| ())
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
    /// The transaction's revision.
    pub header_rev: i64,
    /// How many keys the prefix held at `header_rev`, ours included.
    pub count: i64,
    /// The first keys under the prefix by create revision (at most [`AHEAD_KEYS`] + 1),
    /// with their create revisions: all of them when `count` is no larger.
    pub first_keys: Vec<(Vec<u8>, i64)>,
}

/// Up to this many keys ahead, a waiter knows them by name (from its own transaction or
/// recount) and watches the prefix without previous values: etcd then reads nothing for
/// each delete it sends to each waiter. With more, it counts deletes by their previous
/// values (the create revision of the key that went).
pub(crate) const AHEAD_KEYS: usize = 64;

impl Entered {
    /// What this transaction tells a waiter about the keys ahead of it: when it created our
    /// key, every other key under the prefix at its revision was created before ours.
    pub(crate) fn ahead(&self) -> Option<Ahead> {
        self.created.then(|| {
            let all = self.first_keys.len() as i64 >= self.count;
            let keys = all.then(|| self.first_keys.iter().filter(|(_, c)| *c < self.rev).map(|(k, _)| k.clone()).collect());
            Ahead { rev: self.header_rev, count: self.count - 1, keys }
        })
    }
}

/// The number of keys under a prefix created before ours, as of a revision (our key
/// existing then).
#[derive(Clone, Debug)]
pub(crate) struct Ahead {
    pub rev: i64,
    pub count: i64,
    /// Those keys by name, when known (at most [`AHEAD_KEYS`] of them).
    pub keys: Option<HashSet<Vec<u8>>>,
}

/// `If CreateRevision(key)==0 Then Put(key, value, lease), Get(first) Else Get(key), Get(first)`.
pub(crate) async fn enter(client: &Client, prefix: &str, key: &str, value: Vec<u8>, lease: i64) -> Result<Entered> {
    // The first keys by create revision, names only: the owner is the first, and a waiter
    // behind a short queue learns every key ahead of it by name.
    let p = prefix.to_string();
    let first = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(AHEAD_KEYS as i64 + 1);
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
    let (owner_rev, count, first_keys) = match ops.get(1) {
        Some(TxnOpResponse::Get(g)) => (
            g.kvs().first().map(|kv| kv.create_revision()),
            g.count(),
            g.kvs().iter().map(|kv| (kv.key().to_vec(), kv.create_revision())).collect(),
        ),
        _ => return Err(Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))),
    };
    if resp.succeeded() {
        return Ok(Entered { rev: header_rev, created: true, owner_rev, existing_value: None, header_rev, count, first_keys });
    }
    match ops.first() {
        Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
            Some(kv) => Ok(Entered {
                rev: kv.create_revision(),
                created: false,
                owner_rev,
                existing_value: Some(kv.value().to_vec()),
                header_rev,
                count,
                first_keys,
            }),
            // Deleted between the compare and the get cannot happen inside one txn.
            None => Err(Error::Etcd(etcd_client::Error::InvalidArgs(format!("key {key} vanished inside a txn")))),
        },
        _ => Err(Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))),
    }
}

/// How a [`wait_turn`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// No key created before ours is left, and ours still existed, at revision `at`.
    Ours { at: i64 },
    /// Our own key was deleted while waiting (its lease expired or was revoked).
    KeyGone,
}

/// Wait until no key under `prefix` has a create revision below `my_rev` (Go's
/// `waitDeletes`, same outcome), watching our own `key` too.
///
/// One watch of deletes on the whole prefix: a key created after ours can never be ahead
/// of it, so the set of keys ahead only shrinks, and following the deletes of keys
/// created before ours tells when it is empty, with no read after each delete. Up to
/// [`AHEAD_KEYS`] keys ahead are followed by name (the transaction or the recount names
/// them), on the client's shared watch of the prefix ([`QueueWatches`], no previous
/// values); with more, on a watch of this wait's own, each delete's previous value tells
/// whether the key that went was ahead. `ahead` is what the caller already knows (the
/// create-or-get transaction's count, at its revision); when the watch's view starts at
/// a later revision, or after a watch error, one read at that revision counts again. The
/// delete of our own key ends the wait with [`Turn::KeyGone`]: never "ours" with a key
/// that is gone.
pub(crate) async fn wait_turn(client: &Client, prefix: &str, key: &str, my_rev: i64, ahead: Option<Ahead>) -> Result<Turn> {
    let mut known = ahead;
    let mut backoff = Duration::from_millis(50);
    loop {
        let once = match known.take() {
            Some(a) if a.keys.is_some() => wait_turn_shared(client, prefix, key, my_rev, a).await,
            k => wait_turn_once(client, prefix, key, my_rev, k).await,
        };
        match once {
            Ok(t) => return Ok(t),
            Err(e) => pause_after_error(e, &mut backoff).await?,
        }
    }
}

async fn wait_turn_once(client: &Client, prefix: &str, key: &str, my_rev: i64, known: Option<Ahead>) -> Result<Turn> {
    // From the current revision (start 0): etcd serves such a watcher from its "synced"
    // group at once, unless a write lands while it registers it (see [`QueueWatches`]);
    // one starting at or below the current revision waits for a catch-up loop that runs
    // every 100 ms. When the keys ahead are known by name, the deletes need no previous
    // values (which etcd reads from its store for every waiter).
    let by_name = known.as_ref().is_some_and(|a| a.keys.is_some());
    let mut opts = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
    if !by_name {
        opts = opts.with_prev_key();
    }
    let mut stream = client.watch(prefix.to_string(), opts).await?;
    let created = stream.message().await?.ok_or(Error::Closed("watch stream"))?;
    if created.canceled() {
        return Err(watch_cancelled(&created));
    }
    // Every event after the watch's start comes on it. A member behind the one that
    // applied our transaction may start it before our key existed: count from the later
    // of the two (a linearizable read at a revision waits until the member has it).
    let start = created.header().map(|h| h.revision()).unwrap_or(0);
    let base = start.max(my_rev).max(known.as_ref().map_or(0, |a| a.rev));
    let ahead = match known {
        Some(a) if a.rev == base => a,
        _ => match count_ahead(client, prefix, key, my_rev, base).await? {
            Some(a) => a,
            None => return Ok(Turn::KeyGone),
        },
    };
    let (mut count, mut names) = (ahead.count, ahead.keys);
    if by_name && names.is_none() {
        // More keys ahead than a waiter follows by name, and no previous values on this
        // watch: start again, counting by previous values.
        return Err(Error::Etcd(etcd_client::Error::WatchError("too many keys ahead to follow by name".into())));
    }
    debug!(ahead = count, by_name = names.is_some(), base, "waiting for the keys ahead to go");
    if count <= 0 {
        return Ok(Turn::Ours { at: base });
    }
    loop {
        let r = stream.message().await?.ok_or(Error::Closed("watch stream"))?;
        if r.canceled() {
            return Err(watch_cancelled(&r));
        }
        let (mut last, mut gone) = (base, false);
        for ev in r.events() {
            let Some(kv) = ev.kv() else { continue };
            if ev.event_type() != EventType::Delete || kv.mod_revision() <= base {
                continue;
            }
            last = last.max(kv.mod_revision());
            if kv.key() == key.as_bytes() {
                gone = true;
                continue;
            }
            match (&mut names, ev.prev_kv()) {
                // A key ahead leaves the set once; a key of the same name put again later
                // was created after ours.
                (Some(set), _) => {
                    if set.remove(kv.key()) {
                        count -= 1;
                    }
                }
                (None, Some(p)) if p.create_revision() < my_rev => count -= 1,
                (None, Some(_)) => {}
                // etcd could not read the previous value (compacted): count again.
                (None, None) => {
                    return Err(Error::Etcd(etcd_client::Error::WatchError("delete event without its previous value".into())))
                }
            }
        }
        if gone {
            return Ok(Turn::KeyGone);
        }
        if count <= 0 {
            return Ok(Turn::Ours { at: last });
        }
    }
}

/// The keys under `prefix` created before `my_rev`, at revision `rev` (by name when there
/// are at most [`AHEAD_KEYS`]); `None` when our own key (create revision `my_rev`) was no
/// longer there.
async fn count_ahead(client: &Client, prefix: &str, key: &str, my_rev: i64, rev: i64) -> Result<Option<Ahead>> {
    let opts = GetOptions::new().with_prefix().with_keys_only().with_max_create_revision(my_rev).with_revision(rev);
    let resp = client.range(prefix, Some(opts)).await?;
    let mine = resp.kvs().iter().any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == my_rev);
    if !mine {
        return Ok(None);
    }
    let before: Vec<&[u8]> = resp.kvs().iter().filter(|kv| kv.create_revision() < my_rev).map(|kv| kv.key()).collect();
    let keys = (before.len() <= AHEAD_KEYS).then(|| before.iter().map(|k| k.to_vec()).collect());
    Ok(Some(Ahead { rev, count: before.len() as i64, keys }))
}

/// After a wait was interrupted (a watch or a read failed, the shared watch ended):
/// errors that reading again cannot fix (permission, bad input) end the wait; the rest
/// are retried after `backoff`, which doubles up to 1 s.
pub(crate) async fn pause_after_error(e: Error, backoff: &mut Duration) -> Result<()> {
    if matches!(e.kind(), crate::ErrorKind::PermissionDenied | crate::ErrorKind::InvalidArgument) {
        return Err(e);
    }
    debug!(error = %e, "wait interrupted; reading again");
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    Ok(())
}

fn watch_cancelled(r: &etcd_client::WatchResponse) -> Error {
    Error::Etcd(etcd_client::Error::WatchError(format!(
        "watch cancelled (compact revision {}): {}",
        r.compact_revision(),
        r.cancel_reason()
    )))
}

/// Wait until no key under `prefix` has a create revision below `my_rev` (Go's
/// `waitDeletes`): repeatedly find the key just ahead and wait for its DELETE, on the
/// client's shared watch of the prefix ([`PrefixDeletes`]). Survives watch errors and
/// compaction by re-reading.
pub(crate) async fn wait_deletes(client: &Client, prefix: &str, my_rev: i64) -> Result<()> {
    let mut backoff = Duration::from_millis(50);
    let mut deletes: Option<PrefixDeletes> = None;
    loop {
        let waited = async {
            // Subscribed before the read: every delete after the read's revision comes on it.
            let d = match deletes.as_mut() {
                Some(d) => d,
                None => deletes.insert(PrefixDeletes::open(client, prefix).await?),
            };
            let opts = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(my_rev - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let resp = client.range(prefix, Some(opts)).await?;
            let Some(ahead) = resp.kvs().first() else { return Ok(true) };
            let ahead_key = ahead.key().to_vec();
            let from = resp.header().map(|h| h.revision()).unwrap_or(0);
            if from < d.from {
                return Ok(false); // a read from a member behind the watch's: read again
            }
            debug!(ahead = %String::from_utf8_lossy(&ahead_key), from, "waiting for the key ahead to go");
            loop {
                let m = d.next().await?;
                if m.deletes.iter().any(|(k, rev)| *k == ahead_key && *rev > from) {
                    return Ok::<bool, Error>(false);
                }
            }
        };
        match waited.await {
            Ok(true) => return Ok(()),
            Ok(false) => backoff = Duration::from_millis(50),
            Err(e) => {
                deletes = None;
                pause_after_error(e, &mut backoff).await?;
            }
        }
    }
}

/// Does `key` still exist with create revision `rev`? Returns the read's revision too.
pub(crate) async fn key_has_rev(client: &Client, key: &str, rev: i64) -> Result<(bool, i64)> {
    let resp = client.range(key, None).await?;
    let header = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().first().map(|kv| kv.create_revision()) == Some(rev), header))
}

/// In-process slots: one per full lock key (that is, per lease and name).
static LOCAL: Mutex<Option<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

pub(crate) fn local_slot(key: &str) -> Arc<tokio::sync::Mutex<()>> {
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

/// The queue prefix `<ns><name>/`, after checking `name`.
pub(crate) fn queue_prefix(client: &Client, what: &str, name: &str) -> Result<String> {
    check_name(what, name)?;
    Ok(client.full_key(&format!("{name}/")))
}

/// Resolves at `deadline`, or never.
pub(crate) async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}


/// Run one wait (acquire, campaign) on a session from `source`: made fresh for it when
/// per-use (giving up at `deadline` with `gave_up()` while it is granted), ended with
/// [`Error::Closed`] when the client closes, and the per-use session closed again when
/// the wait fails. `wait` gets the session and whether it owns it.
pub(crate) async fn on_session<T, F, Fut>(
    source: &SessionSource,
    deadline: Option<Instant>,
    gave_up: impl FnOnce() -> Error,
    wait: F,
) -> Result<T>
where
    F: FnOnce(Session, bool) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let client = source.client().clone();
    client.ensure_open()?;
    let made = async {
        tokio::select! {
            s = source.session() => s,
            _ = sleep_opt(deadline) => Err(gave_up()),
        }
    };
    let (session, owned) = tokio::select! {
        r = made => r?,
        _ = client.closed() => return Err(Error::Closed("client")),
    };
    let result = tokio::select! {
        biased;
        _ = client.closed() => Err(Error::Closed("client")),
        r = wait(session.clone(), owned) => r,
    };
    // Closing the client also closes the session a wait runs on; whichever the wait
    // noticed first, the caller learns the client was closed.
    let result = result.map_err(|e| if client.is_closed() { Error::Closed("client") } else { e });
    if result.is_err() && owned {
        let _ = session.close().await;
    }
    result
}

// ------------------------------------------------------------------ the shared queue watch

/// How long a queue watch with no waiter left stays open for the next waiter.
const QUEUE_WATCH_LINGER: Duration = Duration::from_secs(10);

/// The deletes under a queue prefix, from a [`QueueWatches`] watch, up to revision `rev`:
/// every delete with a revision at or below `rev` that the subscriber is to see is in
/// this message or came before it. A subscriber's first message has none (`rev` tells
/// where its view starts).
pub(crate) struct QueueDeletes {
    pub rev: i64,
    /// (key, revision of the delete)
    pub deletes: Vec<(Vec<u8>, i64)>,
}

type QueueWatchMap = Arc<Mutex<HashMap<String, Arc<QueueWatch>>>>;

/// A client's watches of wait-queue prefixes: one per prefix, shared by the client's
/// waiters on it (lock, election, semaphore and read-write lock waits), and kept open for
/// [`QUEUE_WATCH_LINGER`] after the last one leaves.
///
/// Why not a watch per wait: etcd (3.4 and 3.5) turns a watch "from now" into one from
/// the revision it read just before registering it; when a write lands in between (under
/// contention, a few waits in a hundred), the watcher starts behind the store and etcd
/// serves it from a catch-up loop that runs every 100 ms (`syncWatchersLoop`). A waiter on
/// such a watcher saw its turn come 0-100 ms late: 8 workers on one lock spent 0.8-1.8 s
/// of a 2-3 s run in such stalls (41-66 of 800 handoffs); semaphore and read-write lock
/// waits, which watched from a read's revision, lost time the same way. A watch that stays open has
/// caught up once and for all; a waiter also needs no watch created (nor cancelled) for
/// each wait, and, when the watch's view is not past the waiter's own transaction, no
/// recount either.
pub(crate) struct QueueWatches {
    by_prefix: QueueWatchMap,
    /// Dropped with the client: every queue watch task ends.
    dropped: tokio::sync::watch::Sender<()>,
}

struct QueueWatch {
    state: Mutex<QueueWatchState>,
}

struct QueueWatchState {
    /// Every delete up to this revision has been handed out (0: the watch is not open yet).
    rev: i64,
    subscribers: Vec<tokio::sync::mpsc::UnboundedSender<QueueDeletes>>,
    /// The task ended: nobody subscribes here any more.
    ended: bool,
}

impl QueueWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueWatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand out the deletes up to `rev` (the first message for those that have none yet).
    fn hand_out(&self, rev: i64, deletes: Vec<(Vec<u8>, i64)>) {
        let mut st = self.lock();
        let first = st.rev == 0;
        st.rev = st.rev.max(rev);
        let rev = st.rev;
        st.subscribers.retain(|s| {
            let msg = QueueDeletes { rev, deletes: if first { Vec::new() } else { deletes.clone() } };
            s.send(msg).is_ok()
        });
    }
}

impl Default for QueueWatches {
    fn default() -> Self {
        QueueWatches { by_prefix: Arc::new(Mutex::new(HashMap::new())), dropped: tokio::sync::watch::channel(()).0 }
    }
}

impl QueueWatches {
    /// The deletes under `prefix` from now on, on the client's shared watch of it (opened
    /// if there is none). The first message tells the revision the view starts from; the
    /// channel closes when the watch ends (its member out of rotation, the stream broken,
    /// the client closing): then wait again.
    pub(crate) fn subscribe(&self, client: &Client, prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<QueueDeletes> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut map = self.by_prefix.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(prefix) {
            let mut st = w.lock();
            if !st.ended {
                if st.rev > 0 {
                    let _ = tx.send(QueueDeletes { rev: st.rev, deletes: Vec::new() });
                }
                st.subscribers.push(tx);
                return rx;
            }
        }
        let w = Arc::new(QueueWatch { state: Mutex::new(QueueWatchState { rev: 0, subscribers: vec![tx], ended: false }) });
        map.insert(prefix.to_string(), w.clone());
        tokio::spawn(run_queue_watch(
            client.members().clone(),
            client.closed(),
            self.dropped.subscribe(),
            client.request_timeout(),
            prefix.to_string(),
            w,
            Arc::downgrade(&self.by_prefix),
        ));
        rx
    }
}

async fn run_queue_watch(
    members: Arc<crate::endpoints::Members>,
    closing: impl std::future::Future<Output = ()> + Send + 'static,
    mut dropped: tokio::sync::watch::Receiver<()>,
    timeout: Duration,
    prefix: String,
    w: Arc<QueueWatch>,
    map: Weak<Mutex<HashMap<String, Arc<QueueWatch>>>>,
) {
    let watch = async {
        let opts = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
        let mut stream = crate::endpoints::MemberWatch::open(&members, prefix.clone(), opts, timeout).await?;
        let mut idle_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = stream.message() => {
                    let r = r?.ok_or(Error::Closed("watch stream"))?;
                    if r.canceled() {
                        return Err(watch_cancelled(&r));
                    }
                    let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                    let deletes = r
                        .events()
                        .iter()
                        .filter(|e| e.event_type() == EventType::Delete)
                        .filter_map(|e| e.kv().map(|kv| (kv.key().to_vec(), kv.mod_revision())))
                        .collect();
                    w.hand_out(rev, deletes);
                }
                _ = tick.tick() => {
                    let mut st = w.lock();
                    st.subscribers.retain(|s| !s.is_closed());
                    if !st.subscribers.is_empty() {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= QUEUE_WATCH_LINGER {
                        return Ok::<(), Error>(());
                    }
                }
            }
        }
    };
    let outcome = tokio::select! {
        r = watch => r,
        _ = closing => Ok(()),
        _ = dropped.changed() => Ok(()),
    };
    if let Err(e) = outcome {
        debug!(prefix = %prefix, error = %e, "queue watch ended; its waiters count again");
    }
    // Out of the map first (same lock order as `subscribe`), then the subscribers learn.
    let map = map.upgrade();
    let mut map = map.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
    let mut st = w.lock();
    st.ended = true;
    st.subscribers.clear();
    if let Some(m) = map.as_mut() {
        if m.get(&prefix).is_some_and(|x| Arc::ptr_eq(x, &w)) {
            m.remove(&prefix);
        }
    }
}

/// The deletes under a prefix on the client's shared watch of it ([`QueueWatches`]).
pub(crate) struct PrefixDeletes {
    rx: tokio::sync::mpsc::UnboundedReceiver<QueueDeletes>,
    /// Every delete after this revision comes from [`PrefixDeletes::next`]. A linearizable
    /// read made after `open` returned is at this revision or later.
    pub from: i64,
}

impl PrefixDeletes {
    /// Subscribe (opening the client's watch of `prefix` if there is none), and learn
    /// where the view starts.
    pub(crate) async fn open(client: &Client, prefix: &str) -> Result<PrefixDeletes> {
        let mut rx = client.queue_watches().subscribe(client, prefix);
        let t = client.request_timeout();
        match tokio::time::timeout(t, rx.recv()).await {
            Err(_) => Err(Error::timeout(format!("opening the watch of {prefix}"), t)),
            Ok(None) => Err(Error::Closed("watch stream")),
            Ok(Some(m)) => Ok(PrefixDeletes { rx, from: m.rev }),
        }
    }

    /// The next batch of deletes; [`Error::Closed`] when the watch ended (its member out
    /// of rotation, the stream broken, the client closing): read again and reopen.
    pub(crate) async fn next(&mut self) -> Result<QueueDeletes> {
        self.rx.recv().await.ok_or(Error::Closed("watch stream"))
    }
}

/// [`wait_turn_once`] for a waiter that knows the keys ahead of it by name, on the
/// client's shared watch of the prefix ([`QueueWatches`]).
async fn wait_turn_shared(client: &Client, prefix: &str, key: &str, my_rev: i64, known: Ahead) -> Result<Turn> {
    let mut deletes = PrefixDeletes::open(client, prefix).await?;
    // The watch hands out every delete after `deletes.from`. Up to `known.rev` our own
    // transaction named the keys ahead; past it, one read at the watch's revision does.
    let base = deletes.from.max(my_rev).max(known.rev);
    let ahead = if known.rev == base {
        known
    } else {
        match count_ahead(client, prefix, key, my_rev, base).await? {
            Some(a) => a,
            None => return Ok(Turn::KeyGone),
        }
    };
    let (mut count, Some(mut names)) = (ahead.count, ahead.keys) else {
        // More keys ahead than a waiter follows by name: the caller counts by previous values.
        return Err(Error::Etcd(etcd_client::Error::WatchError("too many keys ahead to follow by name".into())));
    };
    debug!(ahead = count, base, shared = true, "waiting for the keys ahead to go");
    if count <= 0 {
        return Ok(Turn::Ours { at: base });
    }
    loop {
        let m = deletes.next().await?;
        let (mut last, mut gone) = (base, false);
        for (k, rev) in m.deletes {
            if rev <= base {
                continue;
            }
            last = last.max(rev);
            if k == key.as_bytes() {
                gone = true;
            } else if names.remove(&k) {
                // A key ahead leaves the set once; a key of the same name put again later
                // was created after ours.
                count -= 1;
            }
        }
        if gone {
            return Ok(Turn::KeyGone);
        }
        if count <= 0 {
            return Ok(Turn::Ours { at: last });
        }
    }
}
