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
//! let mut changes = view.subscribe();
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
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Event, EventType, GetOptions, KeyValue, WatchOptions};
use futures::Stream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};

/// How many changes a subscriber may fall behind before it is told it lagged.
pub(crate) const CHANNEL_CAPACITY: usize = 4096;

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

// ---------------------------------------------------------------------------
// The mirror engine shared by ConfigView and registry::ServiceView.
// ---------------------------------------------------------------------------

/// What a mirror keeps in sync with etcd. Methods are called from the mirror task only.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Replace the whole local state by this snapshot (a Get at `revision`), telling
    /// subscribers the difference.
    fn reset(&self, kvs: &[KeyValue], revision: i64);
    /// Apply the events of one watch response, all at once.
    fn apply(&self, events: &[Event]);
    /// The revision the local state reflects.
    fn revision(&self) -> i64;
    /// Does the local state equal this snapshot taken at [`Sink::revision`]?
    fn matches(&self, kvs: &[KeyValue]) -> bool;
}

/// A key (full, namespaced) or a key prefix.
#[derive(Clone, Debug)]
pub(crate) struct Range {
    pub key: String,
    pub prefix: bool,
}

impl Range {
    fn get_options(&self) -> GetOptions {
        if self.prefix {
            GetOptions::new().with_prefix()
        } else {
            GetOptions::new()
        }
    }
}

/// Get the range at one revision (the current one, or `at` if given).
pub(crate) async fn load(client: &Client, range: &Range, at: Option<i64>) -> Result<(Vec<KeyValue>, i64)> {
    let mut opts = range.get_options();
    if let Some(rev) = at {
        opts = opts.with_revision(rev);
    }
    let mut resp = client
        .read(|mut c| {
            let (k, o) = (range.key.clone(), opts.clone());
            async move { c.get(k, Some(o)).await }
        })
        .await
        .map_err(|e| match e {
            Error::Compacted { compact_revision, .. } => {
                Error::Compacted { requested: at.unwrap_or(0), compact_revision }
            }
            other => other,
        })?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.take_kvs(), rev))
}

/// Why the watch loop ended.
enum Restart {
    /// Compaction, drift or a clean end: re-read at once.
    Now,
    /// An error: re-read after a backoff.
    Later,
}

/// Spawn the task that keeps `sink` in sync with `range`, starting from a state already
/// loaded at `loaded_rev`. The task holds the sink weakly and ends when it is gone.
pub(crate) fn spawn_mirror<S: Sink>(
    client: Client,
    range: Range,
    sink: Weak<S>,
    loaded_rev: i64,
    reconcile: Duration,
    what: &'static str,
) -> JoinHandle<()> {
    let span = info_span!("etcd_recipes.mirror", what, key = %range.key, prefix = range.prefix);
    tokio::spawn(mirror(client, range, sink, loaded_rev, reconcile).instrument(span))
}

async fn mirror<S: Sink>(client: Client, range: Range, sink: Weak<S>, loaded_rev: i64, reconcile: Duration) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    let mut start_rev = Some(loaded_rev);
    loop {
        // 1. A consistent snapshot (skipped the first time: the constructor loaded it).
        let rev = match start_rev.take() {
            Some(r) => r,
            None => match load(&client, &range, None).await {
                Ok((kvs, rev)) => {
                    let Some(s) = sink.upgrade() else { return };
                    s.reset(&kvs, rev);
                    rev
                }
                Err(e) => {
                    debug!(error = %e, ?backoff, "re-read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        // 2. Watch from the next revision.
        let mut opts = WatchOptions::new().with_start_revision(rev + 1).with_prev_key();
        if range.prefix {
            opts = opts.with_prefix();
        }
        let mut stream = match client.watch(range.key.clone(), opts).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, ?backoff, "watch failed; re-reading");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut tick = (!reconcile.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + reconcile, reconcile);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // 3. Apply responses until something forces a re-read.
        let restart = loop {
            let reconcile_tick = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                info!(compact_revision = resp.compact_revision(), "watch cancelled by compaction; re-reading");
                                break Restart::Now;
                            }
                            warn!(reason = %resp.cancel_reason(), "watch cancelled by etcd; re-reading");
                            break Restart::Later;
                        }
                        if !resp.events().is_empty() {
                            let Some(s) = sink.upgrade() else { return };
                            s.apply(resp.events());
                        }
                        backoff = MIN_BACKOFF;
                    }
                    Ok(None) => {
                        info!("watch stream ended; re-reading");
                        break Restart::Later;
                    }
                    Err(e) => {
                        warn!(error = %e, "watch stream broken; re-reading");
                        break Restart::Later;
                    }
                },
                _ = reconcile_tick => {
                    let Some(s) = sink.upgrade() else { return };
                    let at = s.revision();
                    drop(s);
                    match load(&client, &range, Some(at)).await {
                        Ok((kvs, _)) => {
                            let Some(s) = sink.upgrade() else { return };
                            // Only compare if nothing was applied meanwhile.
                            if s.revision() == at && !s.matches(&kvs) {
                                warn!(revision = at, "local copy differs from etcd; repairing");
                                break Restart::Now;
                            }
                            debug!(revision = at, "reconciled: no drift");
                        }
                        Err(e) if e.kind() == crate::ErrorKind::Compacted => {
                            debug!(revision = at, "reconcile revision compacted; re-reading");
                            break Restart::Now;
                        }
                        Err(e) => debug!(error = %e, "reconcile read failed"),
                    }
                }
            }
        };
        if let Restart::Later = restart {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Warn when a re-read returns an older revision than we had: etcd lost its data
/// (restored or wiped) or this is another cluster. The new state is accepted.
pub(crate) fn warn_if_backwards(old: i64, new: i64) {
    if new < old {
        warn!(old, new, "etcd revision went backwards (data restored or wiped?); following the new state");
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
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Sink for Inner {
    fn reset(&self, kvs: &[KeyValue], revision: i64) {
        warn_if_backwards(self.revision(), revision);
        let mut fresh = Map::default();
        for kv in kvs {
            fresh.insert(self.rel_key(kv.key()), Arc::from(kv.value()));
        }
        let mut changes = Vec::new();
        {
            let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
            for (k, old) in data.iter() {
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
            for (k, new) in fresh.iter() {
                if !data.contains_key(k) {
                    changes.push(ConfigChange { key: k.clone(), old: None, new: Some(new.to_vec()), revision });
                }
            }
            *data = fresh;
            self.revision.store(revision, Ordering::Release);
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
                        if let Some(old) = data.remove(&key) {
                            changes.push(ConfigChange { key, old: Some(old.to_vec()), new: None, revision: rev });
                        }
                    }
                }
            }
            self.revision.store(top, Ordering::Release);
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
        check_key("config key", key)?;
        Self::start(client, Range { key: client.full_key(key), prefix: false }, opts).await
    }

    /// A view of every key under `prefix` (namespace-relative). Returns once loaded.
    pub async fn prefix(client: &Client, prefix: &str, opts: ConfigOptions) -> Result<ConfigView> {
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
        Ok(ConfigView { inner })
    }

    /// The cached bytes of `key` (namespace-relative), or `None`. Local: no network.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        data.get(key).cloned()
    }

    /// The cached value of `key` as UTF-8 text; [`Error::Decode`] (naming the key) if it is not.
    pub fn get_str(&self, key: &str) -> Result<Option<String>> {
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
        match self.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::Decode { key: key.to_string(), message: format!("invalid JSON: {e}") }),
        }
    }

    /// The cached value of `key` as a JSON value; see [`ConfigView::get_json`].
    pub fn get_json_value(&self, key: &str) -> Result<Option<serde_json::Value>> {
        self.get_json(key)
    }

    /// Every cached key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = data.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// A copy of every cached key and value.
    pub fn snapshot(&self) -> BTreeMap<String, Arc<[u8]>> {
        let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The etcd revision the cached copy reflects. Never decreases, unless etcd itself
    /// lost its data (then a warning is logged and the view follows the new state).
    pub fn revision(&self) -> i64 {
        self.inner.revision()
    }

    /// A new subscription to every change from now on (ends after [`ConfigView::close`]).
    pub fn subscribe(&self) -> ConfigChanges {
        let tx = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match tx.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1, // closed: the stream ends at once
        };
        ConfigChanges { inner: Box::pin(subscription_stream(rx, "config subscriber")) }
    }

    /// Stop watching. The cached values stay readable; subscriptions end.
    pub fn close(&self) {
        self.inner.stop();
    }
}

/// Turn a broadcast receiver into a stream: lagging is an error, closing ends it.
pub(crate) fn subscription_stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    who: &'static str,
) -> impl Stream<Item = Result<T>> + Send + 'static {
    futures::stream::unfold(rx, move |mut rx| async move {
        match rx.recv().await {
            Ok(v) => Some((Ok(v), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(n)) => Some((Err(lagged(who, n)), rx)),
        }
    })
}

pub(crate) fn lagged(who: &str, n: u64) -> Error {
    Error::Etcd(etcd_client::Error::WatchError(format!(
        "{who} lagged behind: {n} changes were dropped; read the current state again"
    )))
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
