//! [`ConfigView`]: a watched, local copy of one key or of every key under a prefix.
//!
//! The view loads its keys at a revision `R` (one Get), then watches from `R + 1`
//! and applies each watch response whole, so readers never see half of a
//! multi-key transaction and the view never moves backwards in revision.
//! When the watch is cancelled for compaction, or the stream breaks (member
//! restarted, connection lost), the view re-reads and re-watches from the new
//! revision, and tells subscribers what changed in between. A periodic
//! reconcile (see [`ConfigOptions::reconcile_interval`]) compares the local copy
//! with etcd at the same revision and repairs any drift.
//!
//! Reads ([`ConfigView::get`] and friends) are local: a read lock and a hash
//! lookup, tens of nanoseconds, no network.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::config::{ConfigOptions, ConfigView};
//! let view = ConfigView::prefix(&client, "app/config/", ConfigOptions::default()).await?;
//! let timeout_ms: Option<u64> = view.get_json("app/config/timeout_ms")?;
//! let mut changes = view.changes();
//! while let Some(change) = changes.next().await {
//!     let change = change?;
//!     println!("{} changed at revision {}", change.key, change.revision);
//! }
//! # let _ = timeout_ms; Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Event, EventType, KeyValue};
use futures::Stream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};

use crate::mirror::{load, spawn_mirror, subscription_stream, warn_if_backwards, Range, Sink, CHANNEL_CAPACITY};

/// Options of a [`ConfigView`].
#[derive(Clone, Debug)]
pub struct ConfigOptions {
    /// How often the view compares its copy with etcd and repairs drift
    /// (default 30 s; `Duration::ZERO` turns the reconcile off).
    pub reconcile_interval: Duration,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions { reconcile_interval: Duration::from_secs(30) }
    }
}

impl ConfigOptions {
    /// The defaults (reconcile every 30 s).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the reconcile interval (`Duration::ZERO` = off).
    pub fn reconcile_interval(mut self, every: Duration) -> Self {
        self.reconcile_interval = every;
        self
    }
}

/// One change seen by a [`ConfigView`]: a key put, updated or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The key, relative to the client namespace (as given to [`ConfigView::get`]).
    pub key: String,
    /// The value before the change (`None`: the key did not exist).
    pub old: Option<Vec<u8>>,
    /// The value after the change (`None`: the key was deleted).
    pub new: Option<Vec<u8>>,
    /// The etcd revision at which the view saw the change.
    pub revision: i64,
}

/// Every key and value of a [`ConfigView`] and the revision they reflect, read together
/// (no change can fall between the two). Derefs to the map of values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// The etcd revision the values reflect.
    pub revision: i64,
    /// Every cached key (namespace-relative) and its value.
    pub values: BTreeMap<String, Arc<[u8]>>,
}

impl std::ops::Deref for ConfigSnapshot {
    type Target = BTreeMap<String, Arc<[u8]>>;
    fn deref(&self) -> &Self::Target {
        &self.values
    }
}

impl IntoIterator for ConfigSnapshot {
    type Item = (String, Arc<[u8]>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Arc<[u8]>>;
    fn into_iter(self) -> Self::IntoIter {
        self.values.into_iter()
    }
}

/// Which changes a subscription receives (see [`ConfigView::changes_matching`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ChangeFilter {
    /// Every change the view sees.
    #[default]
    All,
    /// The changes of one key.
    Key(String),
    /// The changes of the keys that start with this prefix.
    Prefix(String),
}

impl ChangeFilter {
    /// Does `change` pass?
    pub fn matches(&self, change: &ConfigChange) -> bool {
        match self {
            ChangeFilter::All => true,
            ChangeFilter::Key(k) => change.key == *k,
            ChangeFilter::Prefix(p) => change.key.starts_with(p.as_str()),
        }
    }
}

/// One step of a [`ConfigView`]'s copy: what one watch response (one or more whole etcd
/// revisions) or one re-read changed, applied at once. A face that keeps a mirror of the view
/// (the Python and Node faces keep a `dict` / `Map`) applies each batch whole, in order, so
/// that it never shows half of a multi-key transaction. See [`ConfigView::batches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigBatch {
    /// The batch's place in the view's sequence (1, 2, ...; see [`ConfigView::sequence`]).
    pub seq: u64,
    /// The etcd revision the copy reflects after this batch.
    pub revision: i64,
    /// True when `changes` is the whole state (a re-read, or a catch-up after the subscriber
    /// fell behind): the mirror is cleared, then the changes applied.
    pub reset: bool,
    /// Each key (namespace-relative) and its new value (`None`: deleted), in etcd's order.
    pub changes: Vec<(String, Option<Arc<[u8]>>)>,
}

/// The view's copy, every key and value with its revision and sequence number, to start a
/// mirror from (see [`ConfigView::batches`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigStart {
    /// The sequence number of the last batch the copy includes (0: none yet).
    pub seq: u64,
    /// The etcd revision the copy reflects.
    pub revision: i64,
    /// Every key (namespace-relative) and its value.
    pub values: Vec<(String, Arc<[u8]>)>,
}

/// The batches applied to a [`ConfigView`] after a [`ConfigStart`], in order and never
/// lost: a subscriber that falls more than 4096 batches behind gets one `reset` batch with
/// the whole current state instead of the batches it missed. Ends (`None`) when the view is
/// closed or dropped; holds the view weakly.
pub struct ConfigBatches {
    rx: broadcast::Receiver<Arc<ConfigBatch>>,
    view: std::sync::Weak<Inner>,
}

impl std::fmt::Debug for ConfigBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigBatches")
    }
}

impl ConfigBatches {
    /// The next batch, or `None` once the view is closed or dropped.
    pub async fn next(&mut self) -> Option<Arc<ConfigBatch>> {
        match self.rx.recv().await {
            Ok(b) => Some(b),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(n)) => self.catch_up(n),
        }
    }

    /// A batch that is ready now, without waiting (`None`: nothing ready, or the end).
    pub fn try_next(&mut self) -> Option<Arc<ConfigBatch>> {
        match self.rx.try_recv() {
            Ok(b) => Some(b),
            Err(broadcast::error::TryRecvError::Lagged(n)) => self.catch_up(n),
            Err(_) => None,
        }
    }

    /// Fell behind: subscribe again and hand over the whole state as one `reset` batch
    /// (read under the same lock as the subscription, so nothing falls between them).
    fn catch_up(&mut self, missed: u64) -> Option<Arc<ConfigBatch>> {
        let inner = self.view.upgrade()?;
        let (start, rx) = inner.subscribe_batches()?;
        debug!(missed, seq = start.seq, "config batch subscriber fell behind; catching up with the whole state");
        self.rx = rx;
        Some(Arc::new(ConfigBatch {
            seq: start.seq,
            revision: start.revision,
            reset: true,
            changes: start.values.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        }))
    }
}

/// The sequence number of the last batch a [`ConfigView`] applied (see
/// [`ConfigView::sequence`]); holds nothing else of the view.
#[derive(Clone, Debug)]
pub struct ConfigSequence(Arc<std::sync::atomic::AtomicU64>);

impl ConfigSequence {
    /// The sequence number of the last batch applied (and sent to batch subscribers).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

// ---------------------------------------------------------------------------
// ConfigView
// ---------------------------------------------------------------------------

/// FNV-1a: config keys are short and not attacker-chosen, and this keeps reads fast.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map = HashMap<String, Arc<[u8]>, BuildHasherDefault<Fnv>>;

struct Inner {
    client: Client,
    data: RwLock<Map>,
    revision: AtomicI64,
    tx: Mutex<Option<broadcast::Sender<ConfigChange>>>,
    /// Batch subscribers (faces' mirrors). Sent to under `data`'s write lock, and
    /// subscribed to under its read lock, so a subscription and the copy it starts from
    /// are taken at one point of the sequence.
    batches: Mutex<Option<broadcast::Sender<Arc<ConfigBatch>>>>,
    /// The number of batches applied; changed under `data`'s write lock.
    seq: Arc<std::sync::atomic::AtomicU64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn rel_key(&self, full: &[u8]) -> String {
        let rel = self.client.strip_namespace(full).unwrap_or(full);
        String::from_utf8_lossy(rel).into_owned()
    }

    fn send(&self, changes: Vec<ConfigChange>) {
        if changes.is_empty() {
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            for c in changes {
                let _ = tx.send(c);
            }
        }
    }

    fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Count one applied batch and hand it to the batch subscribers, if any. Called with
    /// `data`'s write lock held (the caller builds `changes` only when [`Inner::mirrored`]).
    fn publish(&self, revision: i64, reset: bool, changes: impl FnOnce() -> Vec<(String, Option<Arc<[u8]>>)>) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let tx = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
            let _ = tx.send(Arc::new(ConfigBatch { seq, revision, reset, changes: changes() }));
        }
    }

    /// Is anyone subscribed to batches?
    fn mirrored(&self) -> bool {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// A batch subscription and the copy it starts from, read under one lock (`None`: closed).
    fn subscribe_batches(&self) -> Option<(ConfigStart, broadcast::Receiver<Arc<ConfigBatch>>)> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        let rx = self.batches.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?.subscribe();
        let start = ConfigStart {
            seq: self.seq.load(Ordering::Acquire),
            revision: self.revision(),
            values: data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        Some((start, rx))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl crate::lifecycle::Child for Inner {
    fn close(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        self.stop();
        Box::pin(async {})
    }
}

impl Sink for Inner {
    fn reset(&self, kvs: &[KeyValue], revision: i64) {
        warn_if_backwards(self.revision(), revision);
        let mut fresh = Map::default();
        for kv in kvs {
            fresh.insert(self.rel_key(kv.key()), Arc::from(kv.value()));
        }
        // Nobody to tell (the first load, or no subscription): skip the difference, which
        // for a view of a million keys is a million copied values.
        let listening = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|tx| tx.receiver_count() > 0);
        let mut changes = Vec::new();
        {
            let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
            for (k, old) in data.iter().filter(|_| listening) {
                match fresh.get(k) {
                    Some(new) if new == old => {}
                    new => changes.push(ConfigChange {
                        key: k.clone(),
                        old: Some(old.to_vec()),
                        new: new.map(|v| v.to_vec()),
                        revision,
                    }),
                }
            }
            for (k, new) in fresh.iter().filter(|_| listening) {
                if !data.contains_key(k) {
                    changes.push(ConfigChange { key: k.clone(), old: None, new: Some(new.to_vec()), revision });
                }
            }
            let whole: Vec<_> = match self.mirrored() {
                true => fresh.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
                false => Vec::new(),
            };
            *data = fresh;
            self.revision.store(revision, Ordering::Release);
            self.publish(revision, true, || whole);
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        if !changes.is_empty() {
            info!(revision, changes = changes.len(), "re-read found changes");
        }
        self.send(changes);
    }

    fn apply(&self, events: &[Event]) {
        let current = self.revision();
        let mut changes = Vec::with_capacity(events.len());
        {
            let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
            let mirrored = self.mirrored();
            let mut batch: Vec<(String, Option<Arc<[u8]>>)> = Vec::new();
            let mut top = current;
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let rev = kv.mod_revision();
                if rev <= current {
                    continue; // already reflected (never go backwards)
                }
                top = top.max(rev);
                let key = self.rel_key(kv.key());
                match ev.event_type() {
                    EventType::Put => {
                        let new: Arc<[u8]> = Arc::from(kv.value());
                        if mirrored {
                            batch.push((key.clone(), Some(new.clone())));
                        }
                        let old = data.insert(key.clone(), new);
                        if old.as_deref() != Some(kv.value()) {
                            changes.push(ConfigChange {
                                key,
                                old: old.map(|v| v.to_vec()),
                                new: Some(kv.value().to_vec()),
                                revision: rev,
                            });
                        }
                    }
                    EventType::Delete => {
                        if mirrored {
                            batch.push((key.clone(), None));
                        }
                        if let Some(old) = data.remove(&key) {
                            changes.push(ConfigChange { key, old: Some(old.to_vec()), new: None, revision: rev });
                        }
                    }
                }
            }
            self.revision.store(top, Ordering::Release);
            if top > current {
                self.publish(top, false, || batch);
            }
        }
        self.send(changes);
    }

    fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    fn matches(&self, kvs: &[KeyValue]) -> bool {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        data.len() == kvs.len()
            && kvs.iter().all(|kv| data.get(&self.rel_key(kv.key())).map(|v| &v[..]) == Some(kv.value()))
    }
}

/// A local copy of one key, or of every key under a prefix, kept in sync by a watch.
///
/// Clones share the copy and its watch task; the task stops on [`ConfigView::close`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct ConfigView {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConfigView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigView")
            .field("revision", &self.revision())
            .field("keys", &self.inner.data.read().map(|d| d.len()).unwrap_or(0))
            .finish()
    }
}

impl ConfigView {
    /// A view of one key (namespace-relative). Returns once the key is loaded.
    pub async fn key(client: &Client, key: &str, opts: ConfigOptions) -> Result<ConfigView> {
        client.ensure_open()?;
        check_key("config key", key)?;
        Self::start(client, Range { key: client.full_key(key), prefix: false }, opts).await
    }

    /// A view of every key under `prefix` (namespace-relative). Returns once loaded.
    pub async fn prefix(client: &Client, prefix: &str, opts: ConfigOptions) -> Result<ConfigView> {
        client.ensure_open()?;
        check_key("config prefix", prefix)?;
        Self::start(client, Range { key: client.full_key(prefix), prefix: true }, opts).await
    }

    async fn start(client: &Client, range: Range, opts: ConfigOptions) -> Result<ConfigView> {
        let (kvs, rev) = load(client, &range, None).await?;
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let inner = Arc::new(Inner {
            client: client.clone(),
            data: RwLock::new(Map::default()),
            revision: AtomicI64::new(0),
            tx: Mutex::new(Some(tx)),
            batches: Mutex::new(Some(broadcast::channel(CHANNEL_CAPACITY).0)),
            seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            task: Mutex::new(None),
        });
        inner.reset(&kvs, rev);
        debug!(key = %range.key, prefix = range.prefix, revision = rev, keys = kvs.len(), "config view loaded");
        let task = spawn_mirror(
            client.clone(),
            range,
            Arc::downgrade(&inner),
            rev,
            opts.reconcile_interval,
            "config",
        );
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let child: std::sync::Weak<dyn crate::lifecycle::Child> = Arc::downgrade(&inner) as _;
        client.scope().adopt(child);
        Ok(ConfigView { inner })
    }

    /// Is `key` in the view now? Local: no network.
    pub fn has(&self, key: &str) -> bool {
        self.inner.data.read().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// The cached bytes of `key` (namespace-relative), or `None`. Local: no network.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        data.get(key).cloned()
    }

    /// The cached value of `key` as UTF-8 text; [`Error::Decode`] (naming the key) if it is not.
    pub fn get_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match std::str::from_utf8(&v) {
                Ok(s) => Ok(Some(s.to_string())),
                Err(e) => Err(Error::Decode { key: key.to_string(), message: format!("not UTF-8: {e}") }),
            },
        }
    }

    /// The cached value of `key` decoded from JSON into `T`; [`Error::Decode`] (naming the key)
    /// if it does not decode. The view itself is unaffected by bad values.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_with(key, |v| serde_json::from_slice(v).map_err(|e| format!("invalid JSON: {e}")))
    }

    /// The cached value of `key` as a JSON value; see [`ConfigView::get_json`].
    pub fn get_json_value(&self, key: &str) -> Result<Option<serde_json::Value>> {
        self.get_json(key)
    }

    /// The cached value of `key` decoded by `decode` (any format, any validation);
    /// `None` when the key is absent, and [`Error::Decode`] naming the key, with the
    /// decoder's message, when `decode` fails.
    ///
    /// ```no_run
    /// # fn demo(view: &etcd_recipes::config::ConfigView) -> etcd_recipes::Result<()> {
    /// let port: Option<u16> = view.get_with("app/port", |v| std::str::from_utf8(v)
    ///     .map_err(|e| e.to_string())
    ///     .and_then(|s| s.trim().parse::<u16>().map_err(|e| e.to_string())))?;
    /// # let _ = port; Ok(()) }
    /// ```
    pub fn get_with<T, E: std::fmt::Display>(
        &self,
        key: &str,
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, E>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| Error::Decode { key: key.to_string(), message: e.to_string() }),
        }
    }

    /// The cached bytes of `key`, or `default` when the key is absent.
    pub fn get_or(&self, key: &str, default: &[u8]) -> Arc<[u8]> {
        self.get(key).unwrap_or_else(|| Arc::from(default))
    }

    /// The cached text of `key`, or `default` when the key is absent; [`Error::Decode`]
    /// when it is present but not UTF-8 (a bad value is an error, not the default).
    pub fn get_string_or(&self, key: &str, default: &str) -> Result<String> {
        Ok(self.get_string(key)?.unwrap_or_else(|| default.to_string()))
    }

    /// The cached value of `key` decoded from JSON into `T`, or `default` when the key is
    /// absent; [`Error::Decode`] when it is present but does not decode into `T`.
    pub fn get_json_or<T: serde::de::DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get_json(key)?.unwrap_or(default))
    }

    /// Every cached key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = data.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// How many keys the view holds.
    pub fn len(&self) -> usize {
        self.inner.data.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when the view holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every cached key and value, with the revision it reflects, read at once:
    /// the view applies a watch response (or a re-read) whole, under one lock, so the
    /// snapshot is etcd's state at exactly `revision` for the view's keys.
    pub fn snapshot(&self) -> ConfigSnapshot {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        ConfigSnapshot {
            revision: self.inner.revision(),
            values: data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The etcd revision the cached copy reflects. Never decreases, unless etcd itself
    /// lost its data (then a warning is logged and the view follows the new state).
    pub fn revision(&self) -> i64 {
        self.inner.revision()
    }

    /// A new subscription to every change from now on (ends after [`ConfigView::close`]).
    pub fn changes(&self) -> ConfigChanges {
        self.changes_matching(ChangeFilter::All)
    }

    /// A new subscription to the changes of one key (namespace-relative) from now on.
    pub fn changes_for(&self, key: &str) -> ConfigChanges {
        self.changes_matching(ChangeFilter::Key(key.to_string()))
    }

    /// A new subscription to the changes of the keys under `prefix` from now on.
    pub fn changes_under(&self, prefix: &str) -> ConfigChanges {
        self.changes_matching(ChangeFilter::Prefix(prefix.to_string()))
    }

    /// A new subscription to the changes that pass `filter`, from now on. Filtered
    /// subscriptions see the same changes, in the same order, as [`ConfigView::changes`].
    pub fn changes_matching(&self, filter: ChangeFilter) -> ConfigChanges {
        let tx = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match tx.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1, // closed: the stream ends at once
        };
        let all = subscription_stream(rx, "config subscriber");
        let inner: Pin<Box<dyn Stream<Item = Result<ConfigChange>> + Send>> = match filter {
            ChangeFilter::All => Box::pin(all),
            filter => Box::pin(futures::StreamExt::filter(all, move |r| {
                futures::future::ready(r.as_ref().map_or(true, |c| filter.matches(c)))
            })),
        };
        ConfigChanges { inner }
    }

    /// Start a mirror of the view: its copy now (every key and value, the revision, the
    /// sequence number), and every batch applied after it, in order. The two are taken
    /// under one lock, so the mirror neither misses nor repeats a change: apply the start,
    /// then each batch whole. After [`ConfigView::close`] the start is the last copy and the
    /// batches end at once.
    pub fn batches(&self) -> (ConfigStart, ConfigBatches) {
        let view = Arc::downgrade(&self.inner);
        match self.inner.subscribe_batches() {
            Some((start, rx)) => (start, ConfigBatches { rx, view }),
            None => {
                let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
                let start = ConfigStart {
                    seq: self.inner.seq.load(Ordering::Acquire),
                    revision: self.inner.revision(),
                    values: data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                (start, ConfigBatches { rx: broadcast::channel(1).1, view })
            }
        }
    }

    /// The view's batch counter: after a [`ConfigChange`] was received from a subscription,
    /// its batch is at or below this number (a face waits until its mirror has applied that
    /// many batches before it hands the change on, so that a read after the change sees it).
    pub fn sequence(&self) -> ConfigSequence {
        ConfigSequence(self.inner.seq.clone())
    }

    /// `items` (this view's changes), each passed on only once a mirror fed by
    /// [`ConfigView::batches`] has applied the batch it came with: after the item is
    /// received, a read of that mirror sees it (or a later state). `applied` carries the
    /// sequence number of the last batch the mirror has (`u64::MAX`: nothing to wait for).
    pub fn after_applied<T: Send + 'static>(
        &self,
        applied: tokio::sync::watch::Receiver<u64>,
        items: impl Stream<Item = T> + Send + 'static,
    ) -> impl Stream<Item = T> + Send + 'static {
        use futures::StreamExt;
        let seq = self.sequence();
        items.then(move |item| {
            // Received now, so its batch is at or below the batches core has applied now.
            let target = seq.get();
            let mut applied = applied.clone();
            async move {
                let _ = applied.wait_for(|a| *a >= target).await;
                item
            }
        })
    }

    /// Stop watching. The cached values stay readable; subscriptions end.
    pub fn close(&self) {
        self.inner.stop();
    }
}

/// The changes seen by a [`ConfigView`], in order: a `Stream` of `Result<ConfigChange>`.
///
/// A subscriber that falls more than 4096 changes behind gets one `Err` (kind `Etcd`,
/// "lagged behind") and then continues with newer changes. The stream ends (`None`)
/// when the view is closed or dropped.
pub struct ConfigChanges {
    inner: Pin<Box<dyn Stream<Item = Result<ConfigChange>> + Send>>,
}

impl std::fmt::Debug for ConfigChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigChanges")
    }
}

impl ConfigChanges {
    /// The next change, or `None` once the view is closed.
    pub async fn next(&mut self) -> Option<Result<ConfigChange>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for ConfigChanges {
    type Item = Result<ConfigChange>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
