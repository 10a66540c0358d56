//! The watch mirror shared by [`crate::config::ConfigView`] and
//! [`crate::registry::ServiceView`]: a local copy of one key or a key prefix, loaded at
//! one revision and kept in sync by a watch from the next.
//!
//! Each watch response is applied whole, so a reader never sees half of a multi-key
//! transaction, and the copy never moves backwards in revision. When the watch is
//! cancelled for compaction or the stream breaks (member restarted, connection lost),
//! the mirror re-reads and re-watches from the new revision; a periodic reconcile
//! compares the copy with etcd at one revision and repairs any drift.

use std::sync::Weak;
use std::time::Duration;

use etcd_client::{Event, GetOptions, KeyValue, WatchOptions};
use futures::Stream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::Client;
use crate::error::{Error, Result};

/// How many changes a subscriber may fall behind before it is told it lagged.
pub(crate) const CHANNEL_CAPACITY: usize = 4096;

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
    /// The end of the key range: the key itself (one key) or the first key after the prefix.
    fn end(&self) -> Vec<u8> {
        if self.prefix {
            prefix_end(self.key.as_bytes())
        } else {
            let mut k = self.key.as_bytes().to_vec();
            k.push(0);
            k
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented; `\0` (every key) if there is none.
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

/// A page aims at this many bytes: under the 4 MiB a gRPC response may carry, and large,
/// because etcd counts the keys left in the range for every page (a read of N keys in
/// pages of P costs about N²/2P index steps in etcd).
const PAGE_BYTES: usize = 3 << 20;
/// The first page's key count (before the value sizes are known), and the bounds of later ones.
const FIRST_PAGE: i64 = 64;
const MAX_PAGE: i64 = 50_000;

/// Get the range at one revision (the current one, or `at` if given).
///
/// A prefix is read in pages (`limit` keys from the key after the last one read), every
/// page at the revision of the first, so the result is one consistent snapshot however
/// many keys or bytes the prefix holds. The page size follows the sizes seen: about
/// [`PAGE_BYTES`] a page, halved when etcd's answer is still too large for one response.
/// A revision compacted before the last page is read fails with [`Error::Compacted`];
/// the mirror then reads again at the current revision.
pub(crate) async fn load(client: &Client, range: &Range, at: Option<i64>) -> Result<(Vec<KeyValue>, i64)> {
    load_hinted(client, range, at, &mut FIRST_PAGE.clone()).await
}

/// [`load`], starting with `limit` keys a page and leaving there the size the sizes seen
/// suggest, for the next read of the same range (a mirror re-reads and reconciles).
async fn load_hinted(client: &Client, range: &Range, at: Option<i64>, limit: &mut i64) -> Result<(Vec<KeyValue>, i64)> {
    // At the current revision: a compaction while the pages are read (they are read at
    // the first page's revision) only means reading again, at the new current revision.
    let mut tries = 0;
    loop {
        match load_pages(client, range, at, limit).await {
            Err(e) if at.is_none() && e.kind() == crate::ErrorKind::Compacted && tries < 3 => {
                tries += 1;
                debug!(error = %e, "compacted while reading pages; reading again");
            }
            other => return other,
        }
    }
}

async fn load_pages(client: &Client, range: &Range, at: Option<i64>, hint: &mut i64) -> Result<(Vec<KeyValue>, i64)> {
    let compacted = |e: Error| match e {
        Error::Compacted { compact_revision, .. } => Error::Compacted { requested: at.unwrap_or(0), compact_revision },
        other => other,
    };
    let end = range.end();
    let mut from = range.key.clone().into_bytes();
    let mut revision = at;
    let mut limit = *hint;
    let mut out: Vec<KeyValue> = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if let Some(rev) = revision {
            opts = opts.with_revision(rev);
        }
        let page = client.range(from.clone(), Some(opts)).await;
        let mut resp = match page {
            Ok(r) => r,
            // More than one response can carry: fewer keys a page.
            Err(e) if limit > 1 && too_large(&e) => {
                limit = (limit / 2).max(1);
                *hint = limit;
                debug!(limit, "page too large for one response; reading fewer keys a page");
                continue;
            }
            Err(e) => return Err(compacted(e)),
        };
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let more = resp.more();
        let kvs = resp.take_kvs();
        if revision.is_none() {
            revision = Some(rev);
        }
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
            let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len() + 32).sum();
            let per_key = (bytes / kvs.len()).max(1);
            limit = ((PAGE_BYTES / per_key) as i64).clamp(1, MAX_PAGE);
            *hint = limit;
        }
        if out.is_empty() {
            out = kvs;
        } else {
            out.extend(kvs);
        }
        if !more || out.is_empty() {
            return Ok((out, revision.unwrap_or(rev)));
        }
    }
}

/// Was this read refused because its answer would not fit in one gRPC response?
fn too_large(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("message length too large") || text.contains("larger than max")
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
    let view = crate::metrics::track_view(&client, what, &range.key);
    tokio::spawn(mirror(client, range, sink, loaded_rev, reconcile, view).instrument(span))
}

async fn mirror<S: Sink>(client: Client, range: Range, sink: Weak<S>, loaded_rev: i64, reconcile: Duration, view: crate::metrics::TrackedView) {
    view.reread(loaded_rev);
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    let mut start_rev = Some(loaded_rev);
    let mut page = FIRST_PAGE;
    loop {
        // 1. A consistent snapshot (skipped the first time: the constructor loaded it).
        let rev = match start_rev.take() {
            Some(r) => r,
            None => match load_hinted(&client, &range, None, &mut page).await {
                Ok((kvs, rev)) => {
                    let Some(s) = sink.upgrade() else { return };
                    s.reset(&kvs, rev);
                    view.reread(rev);
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
        view.watching(true);
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
                                view.compacted();
                                break Restart::Now;
                            }
                            warn!(reason = %resp.cancel_reason(), "watch cancelled by etcd; re-reading");
                            break Restart::Later;
                        }
                        if !resp.events().is_empty() {
                            let Some(s) = sink.upgrade() else { return };
                            s.apply(resp.events());
                            view.applied(resp.header().map_or(0, |h| h.revision()), s.revision());
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
                    match load_hinted(&client, &range, Some(at), &mut page).await {
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
        view.watching(false);
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

