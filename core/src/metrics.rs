//! Metrics: what the recipes of this process are doing, recorded once in core.
//!
//! Every measurement goes two ways:
//! - into an **in-process registry** (atomics; histograms with fixed buckets), read with
//!   [`snapshot`] or rendered as Prometheus text with [`prometheus_text`]. The Python and
//!   Node faces read this one (`metrics_snapshot()`, a `prometheus_client` collector;
//!   `metricsSnapshot()`, `metricsText()`);
//! - through the [`metrics`](https://docs.rs/metrics) facade crate, so a Rust program
//!   plugs in any exporter (Prometheus, StatsD, OpenTelemetry bridges) by installing a
//!   recorder. Call [`describe`] after installing it to give the recorder the help texts.
//!
//! | name | kind | label | what |
//! |---|---|---|---|
//! | `etcd_recipes_lock_wait_seconds` | histogram | `name` | from `acquire` to the lock (permit, read/write hold) being ours |
//! | `etcd_recipes_lock_hold_seconds` | histogram | `name` | from acquired to released (or dropped) |
//! | `etcd_recipes_lock_waiters` | gauge | `name` | acquires of this process waiting now |
//! | `etcd_recipes_session_renew_seconds` | histogram | | keep-alive round trip of a lease renewal |
//! | `etcd_recipes_session_losses_total` | counter | | sessions declared lost (renewal not confirmed in time, lease gone) |
//! | `etcd_recipes_election_leader_changes_total` | counter | `name` | new leaders seen by this process (campaigns won here, observers), the first one included |
//! | `etcd_recipes_election_won_total` | counter | `name` | campaigns won by this process |
//! | `etcd_recipes_registrations_healed_total` | counter | `service` | registrations that re-registered with a new lease |
//! | `etcd_recipes_view_lag_revisions` | gauge | `view` | how far the last watch response of a view was behind etcd's revision |
//! | `etcd_recipes_view_compaction_rereads_total` | counter | `view` | views re-read because their watch was compacted away |
//! | `etcd_recipes_workqueue_depth` | gauge | `name` | visible (unclaimed, due) items at this process's last full scan |
//! | `etcd_recipes_workqueue_redeliveries_total` | counter | `name` | items delivered again (attempt 2 or later) |
//! | `etcd_recipes_workqueue_dead_letters_total` | counter | `name` | items moved to the dead letters by this process |
//!
//! **Label cardinality**: lock, semaphore, read-write lock, election, work queue and
//! service names are label values, as given (without the client's namespace); a view is
//! labelled by its key or prefix. Each distinct name is one series for the life of the
//! process: use a bounded set of names (not one lock per request id) when these metrics
//! are exported.
//!
//! Recording costs a hash lookup under a read lock and a few atomic adds (see the
//! README's figures); the lock path is dominated by its etcd round trips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::Client;

/// Upper bounds (seconds) of the histogram buckets; a last `+Inf` bucket is implied.
pub const BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What a metric family measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// `"counter"`, `"gauge"` or `"histogram"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

struct Def {
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    label: Option<&'static str>,
}

const fn def(name: &'static str, kind: MetricKind, label: Option<&'static str>, help: &'static str) -> Def {
    Def { name, help, kind, label }
}

use MetricKind::{Counter, Gauge, Histogram};

const LOCK_WAIT: usize = 0;
const LOCK_HOLD: usize = 1;
const LOCK_WAITERS: usize = 2;
const RENEW: usize = 3;
const LOSSES: usize = 4;
const LEADER_CHANGES: usize = 5;
const ELECTION_WON: usize = 6;
const HEALED: usize = 7;
const VIEW_LAG: usize = 8;
const VIEW_REREADS: usize = 9;
const WQ_DEPTH: usize = 10;
const WQ_REDELIVERED: usize = 11;
const WQ_DEAD: usize = 12;

static DEFS: [Def; 13] = [
    def("etcd_recipes_lock_wait_seconds", Histogram, Some("name"), "Time from acquire to the lock (permit, read/write hold) being ours."),
    def("etcd_recipes_lock_hold_seconds", Histogram, Some("name"), "Time a lock (permit, read/write hold) was held, acquired to released."),
    def("etcd_recipes_lock_waiters", Gauge, Some("name"), "Acquires of this process waiting for the lock now."),
    def("etcd_recipes_session_renew_seconds", Histogram, None, "Round trip of a session's lease renewal."),
    def("etcd_recipes_session_losses_total", Counter, None, "Sessions declared lost (renewal not confirmed in time, lease expired or revoked)."),
    def("etcd_recipes_election_leader_changes_total", Counter, Some("name"), "New leaders seen by this process (campaigns won here and observers), the first one included."),
    def("etcd_recipes_election_won_total", Counter, Some("name"), "Campaigns won by this process."),
    def("etcd_recipes_registrations_healed_total", Counter, Some("service"), "Registrations that re-registered themselves with a new lease."),
    def("etcd_recipes_view_lag_revisions", Gauge, Some("view"), "Revisions the last watch response of a view was behind etcd."),
    def("etcd_recipes_view_compaction_rereads_total", Counter, Some("view"), "Views re-read because their watch revision was compacted."),
    def("etcd_recipes_workqueue_depth", Gauge, Some("name"), "Visible (unclaimed, due) items of a work queue at this process's last full scan."),
    def("etcd_recipes_workqueue_redeliveries_total", Counter, Some("name"), "Work items delivered again (attempt 2 or later)."),
    def("etcd_recipes_workqueue_dead_letters_total", Counter, Some("name"), "Work items moved to the dead letters by this process."),
];

/// One series: a value (counter, gauge) or a histogram.
struct Series {
    value: AtomicI64,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Series {
    fn new() -> Series {
        Series {
            value: AtomicI64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

type Families = [RwLock<HashMap<String, Arc<Series>>>; 13];

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| std::array::from_fn(|_| RwLock::new(HashMap::new())))
}

fn series(family: usize, label: &str) -> Arc<Series> {
    let map = &families()[family];
    if let Some(s) = map.read().unwrap_or_else(|p| p.into_inner()).get(label) {
        return s.clone();
    }
    map.write().unwrap_or_else(|p| p.into_inner()).entry(label.to_string()).or_insert_with(|| Arc::new(Series::new())).clone()
}

fn add(family: usize, label: &str, n: i64) {
    series(family, label).value.fetch_add(n, Ordering::Relaxed);
    let d = &DEFS[family];
    match (d.kind, d.label) {
        (Counter, Some(l)) => metrics::counter!(d.name, l => label.to_string()).increment(n as u64),
        (Counter, None) => metrics::counter!(d.name).increment(n as u64),
        (_, Some(l)) => metrics::gauge!(d.name, l => label.to_string()).increment(n as f64),
        (_, None) => metrics::gauge!(d.name).increment(n as f64),
    }
}

fn set(family: usize, label: &str, v: i64) {
    series(family, label).value.store(v, Ordering::Relaxed);
    let d = &DEFS[family];
    match d.label {
        Some(l) => metrics::gauge!(d.name, l => label.to_string()).set(v as f64),
        None => metrics::gauge!(d.name).set(v as f64),
    }
}

fn observe(family: usize, label: &str, took: Duration) {
    let s = series(family, label);
    let secs = took.as_secs_f64();
    let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
    s.buckets[i].fetch_add(1, Ordering::Relaxed);
    s.sum_nanos.fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    let d = &DEFS[family];
    match d.label {
        Some(l) => metrics::histogram!(d.name, l => label.to_string()).record(secs),
        None => metrics::histogram!(d.name).record(secs),
    }
}

/// Give the installed [`metrics`] recorder the description of every family. Call it
/// once after installing a recorder (recording works without it).
pub fn describe() {
    for d in &DEFS {
        match d.kind {
            Counter => metrics::describe_counter!(d.name, d.help),
            Gauge => metrics::describe_gauge!(d.name, d.help),
            Histogram => metrics::describe_histogram!(d.name, metrics::Unit::Seconds, d.help),
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshot and text format
// ---------------------------------------------------------------------------

/// Every metric of this process at one moment (each series read atomically on its own).
#[derive(Clone, Debug, Serialize)]
pub struct MetricsSnapshot {
    pub families: Vec<MetricFamily>,
}

/// One metric (a name, its kind and help) and its series.
#[derive(Clone, Debug, Serialize)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    /// The label that tells series apart (`name`, `service`, `view`), if any.
    pub label: Option<String>,
    /// One per label value, sorted by it; a family without a label has at most one.
    pub samples: Vec<MetricSample>,
}

/// One series. Counters and gauges have `value`; histograms `count`, `sum` (seconds)
/// and cumulative `buckets` (`(upper bound in seconds, observations <= it)`, `+Inf`
/// excluded: that is `count`).
#[derive(Clone, Debug, Serialize)]
pub struct MetricSample {
    pub label_value: Option<String>,
    pub value: f64,
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<(f64, u64)>,
}

impl MetricsSnapshot {
    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The series of `name` with label value `label` (`None` for a family without a label).
    pub fn sample(&self, name: &str, label: Option<&str>) -> Option<&MetricSample> {
        self.family(name)?.samples.iter().find(|s| s.label_value.as_deref() == label)
    }

    /// A counter's or gauge's value (0 when the series was never recorded).
    pub fn value(&self, name: &str, label: Option<&str>) -> f64 {
        self.sample(name, label).map_or(0.0, |s| s.value)
    }

    /// A histogram's observation count (0 when never recorded).
    pub fn count(&self, name: &str, label: Option<&str>) -> u64 {
        self.sample(name, label).map_or(0, |s| s.count)
    }
}

/// Read every metric of this process.
pub fn snapshot() -> MetricsSnapshot {
    let mut out = Vec::with_capacity(DEFS.len());
    for (i, d) in DEFS.iter().enumerate() {
        let map = families()[i].read().unwrap_or_else(|p| p.into_inner());
        let mut samples: Vec<MetricSample> = map
            .iter()
            .map(|(label, s)| {
                let label_value = d.label.map(|_| label.clone());
                if d.kind == Histogram {
                    let mut acc = 0u64;
                    let mut buckets = Vec::with_capacity(BUCKETS.len());
                    for (b, c) in BUCKETS.iter().zip(s.buckets.iter()) {
                        acc += c.load(Ordering::Relaxed);
                        buckets.push((*b, acc));
                    }
                    let count = acc + s.buckets[BUCKETS.len()].load(Ordering::Relaxed);
                    let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                    MetricSample { label_value, value: 0.0, count, sum, buckets }
                } else {
                    let value = s.value.load(Ordering::Relaxed) as f64;
                    MetricSample { label_value, value, count: 0, sum: 0.0, buckets: Vec::new() }
                }
            })
            .collect();
        samples.sort_by(|a, b| a.label_value.cmp(&b.label_value));
        out.push(MetricFamily {
            name: d.name.to_string(),
            help: d.help.to_string(),
            kind: d.kind,
            label: d.label.map(str::to_string),
            samples,
        });
    }
    MetricsSnapshot { families: out }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{v}")
}

/// Every metric of this process in the Prometheus text exposition format (0.0.4),
/// ready to serve at `/metrics` (content type `text/plain; version=0.0.4`).
pub fn prometheus_text() -> String {
    render_prometheus(&snapshot())
}

/// A snapshot in the Prometheus text exposition format.
pub fn render_prometheus(snap: &MetricsSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for f in &snap.families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            let labels = |extra: Option<String>| -> String {
                let mut parts = Vec::new();
                if let (Some(l), Some(v)) = (&f.label, &s.label_value) {
                    parts.push(format!("{l}=\"{}\"", escape_label(v)));
                }
                parts.extend(extra);
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", parts.join(","))
                }
            };
            if f.kind == Histogram {
                for (le, c) in &s.buckets {
                    let _ = writeln!(out, "{}_bucket{} {c}", f.name, labels(Some(format!("le=\"{}\"", fmt_f64(*le)))));
                }
                let _ = writeln!(out, "{}_bucket{} {}", f.name, labels(Some("le=\"+Inf\"".into())), s.count);
                let _ = writeln!(out, "{}_sum{} {}", f.name, labels(None), fmt_f64(s.sum));
                let _ = writeln!(out, "{}_count{} {}", f.name, labels(None), s.count);
            } else {
                let _ = writeln!(out, "{}{} {}", f.name, labels(None), fmt_f64(s.value));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Recording: one small function per event, called from the recipes.
// ---------------------------------------------------------------------------

/// An acquire in progress: counted in `lock_waiters` while it waits (when `waits`),
/// and its wait time recorded by [`Waiting::acquired`].
pub(crate) struct Waiting {
    name: String,
    since: Instant,
    counted: bool,
}

/// An acquire of lock (semaphore, read-write lock) `name` begins.
pub(crate) fn lock_wait_started(name: &str, waits: bool) -> Waiting {
    if waits {
        add(LOCK_WAITERS, name, 1);
    }
    Waiting { name: name.to_string(), since: Instant::now(), counted: waits }
}

impl Waiting {
    /// The lock is ours: record how long it took.
    pub(crate) fn acquired(&self) {
        observe(LOCK_WAIT, &self.name, self.since.elapsed());
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.counted {
            add(LOCK_WAITERS, &self.name, -1);
        }
    }
}

/// Held by a lock guard: records the hold time once, at release or drop.
pub(crate) struct Holding {
    name: String,
    since: Instant,
    done: AtomicBool,
}

/// A lock (permit, read/write hold) named `name` was acquired.
pub(crate) fn lock_held(name: &str) -> Holding {
    Holding { name: name.to_string(), since: Instant::now(), done: AtomicBool::new(false) }
}

impl Holding {
    /// Released: record the hold time (once).
    pub(crate) fn released(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            observe(LOCK_HOLD, &self.name, self.since.elapsed());
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.released();
    }
}

/// The election name of a full queue prefix `<ns><name>/`.
fn election_name(client: &Client, prefix: &str) -> String {
    let name = client.strip_namespace(prefix.as_bytes()).unwrap_or(prefix.as_bytes());
    let name = name.strip_suffix(b"/").unwrap_or(name);
    String::from_utf8_lossy(name).into_owned()
}

/// The highest leader token seen per election (to count each new leader once).
fn leader_tokens() -> &'static Mutex<HashMap<String, i64>> {
    static T: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

fn leader_seen_named(name: &str, token: i64) {
    let newer = {
        let mut seen = leader_tokens().lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.entry(name.to_string()).or_insert(0);
        let newer = token > *last;
        *last = (*last).max(token);
        newer
    };
    if newer {
        add(LEADER_CHANGES, name, 1);
    }
}

/// An observer of the election under `prefix` (full, with namespace) saw leader `token`.
pub(crate) fn leader_seen(client: &Client, prefix: &str, token: i64) {
    leader_seen_named(&election_name(client, prefix), token);
}

/// A campaign of election `name` was won here with fencing token `token`.
pub(crate) fn election_won(name: &str, token: i64) {
    add(ELECTION_WON, name, 1);
    leader_seen_named(name, token);
}

/// The registration at `key` (full, with namespace) healed itself with a new lease.
pub(crate) fn registration_healed(client: &Client, key: &str) {
    let k = client.strip_namespace(key.as_bytes()).unwrap_or(key.as_bytes());
    let service = match k.iter().rposition(|b| *b == b'/') {
        Some(i) => &k[..i],
        None => k,
    };
    add(HEALED, &String::from_utf8_lossy(service), 1);
}

/// A work-queue scan of `name` read the whole queue and found `visible` items.
pub(crate) fn workqueue_depth(name: &str, visible: usize) {
    set(WQ_DEPTH, name, visible as i64);
}

/// An item of work queue `name` was claimed for attempt `deliveries` (1 = first).
pub(crate) fn workqueue_delivered(name: &str, deliveries: u32) {
    if deliveries > 1 {
        add(WQ_REDELIVERED, name, 1);
    }
}

/// An item of work queue `name` was moved to the dead letters here.
pub(crate) fn workqueue_dead_lettered(name: &str) {
    add(WQ_DEAD, name, 1);
}

// ---------------------------------------------------------------------------
// Per-client state for health: sessions, views, registrations.
// ---------------------------------------------------------------------------

/// How a session stands, for [`crate::health`].
#[derive(Clone, Debug)]
pub(crate) struct SessionEntry {
    pub lease_id: i64,
    pub ttl: i64,
    pub opened: Instant,
    pub last_renew: Option<Instant>,
    pub lost: Option<String>,
}

/// A view's watch, for [`crate::health`] and the lag metric.
pub(crate) struct ViewCell {
    pub kind: &'static str,
    pub key: String,
    pub watching: AtomicBool,
    pub revision: AtomicI64,
    pub lag: AtomicI64,
    pub rereads: AtomicU64,
}

/// Something with a state of its own that health reports (a registration).
pub(crate) trait Probe: Send + Sync {
    /// `(kind, name, ok, state)`.
    fn probe(&self) -> (&'static str, String, bool, String);
}

#[derive(Default)]
pub(crate) struct Board {
    pub sessions: HashMap<i64, SessionEntry>,
    pub views: Vec<Weak<ViewCell>>,
    pub probes: Vec<Weak<dyn Probe>>,
}

struct Boards {
    by_client: HashMap<usize, (Weak<crate::lifecycle::Scope>, Board)>,
}

fn boards() -> &'static Mutex<Boards> {
    static B: OnceLock<Mutex<Boards>> = OnceLock::new();
    B.get_or_init(|| Mutex::new(Boards { by_client: HashMap::new() }))
}

fn with_board<R>(client: &Client, f: impl FnOnce(&mut Board) -> R) -> R {
    let scope = client.scope();
    let id = Arc::as_ptr(scope) as usize;
    let mut b = boards().lock().unwrap_or_else(|p| p.into_inner());
    // A board whose client is gone (its address now reused) starts afresh.
    if b.by_client.get(&id).is_none_or(|(w, _)| w.strong_count() == 0) {
        // Clients that are gone leave their boards behind; drop those now.
        b.by_client.retain(|_, (w, _)| w.strong_count() > 0);
        b.by_client.insert(id, (Arc::downgrade(scope), Board::default()));
    }
    let board = &mut b.by_client.get_mut(&id).expect("inserted above").1;
    f(board)
}

/// Read a client's board (a copy of its sessions, its live views and probes).
pub(crate) fn read_board<R>(client: &Client, f: impl FnOnce(&Board) -> R) -> R {
    with_board(client, |b| {
        b.views.retain(|w| w.strong_count() > 0);
        b.probes.retain(|w| w.strong_count() > 0);
        f(b)
    })
}

/// A session was granted.
pub(crate) fn session_opened(client: &Client, lease_id: i64, ttl: i64) {
    let e = SessionEntry { lease_id, ttl, opened: Instant::now(), last_renew: None, lost: None };
    with_board(client, |b| b.sessions.insert(lease_id, e));
}

/// A renewal of `lease_id` was confirmed after `took`.
pub(crate) fn session_renewed(client: &Client, lease_id: i64, took: Duration) {
    observe(RENEW, "", took);
    with_board(client, |b| {
        if let Some(e) = b.sessions.get_mut(&lease_id) {
            e.last_renew = Some(Instant::now());
        }
    });
}

/// A session was declared lost.
pub(crate) fn session_lost(client: &Client, lease_id: i64, reason: &str) {
    add(LOSSES, "", 1);
    with_board(client, |b| {
        if let Some(e) = b.sessions.get_mut(&lease_id) {
            e.lost = Some(reason.to_string());
        }
    });
}

/// A session was closed or dropped: no longer reported.
pub(crate) fn session_closed(client: &Client, lease_id: i64) {
    with_board(client, |b| b.sessions.remove(&lease_id));
}

/// A view's watch: reported by health while this lives (the mirror task holds it).
pub(crate) struct TrackedView(Arc<ViewCell>);

/// A view of `key` (a `kind`: "config", "service") starts following etcd.
pub(crate) fn track_view(client: &Client, kind: &'static str, key: &str) -> TrackedView {
    let cell = Arc::new(ViewCell {
        kind,
        key: key.to_string(),
        watching: AtomicBool::new(false),
        revision: AtomicI64::new(0),
        lag: AtomicI64::new(0),
        rereads: AtomicU64::new(0),
    });
    with_board(client, |b| b.views.push(Arc::downgrade(&cell)));
    TrackedView(cell)
}

impl TrackedView {
    /// The watch is (re)established from the revision the view holds: caught up, unless
    /// a response says otherwise.
    pub(crate) fn watching(&self, on: bool) {
        self.0.watching.store(on, Ordering::Release);
        if on {
            self.0.lag.store(0, Ordering::Release);
            set(VIEW_LAG, &self.0.key, 0);
        }
    }

    /// A watch response with header revision `header` was applied; its last event was at
    /// `applied` (0: no event).
    pub(crate) fn applied(&self, header: i64, applied: i64) {
        let rev = applied.max(self.0.revision.load(Ordering::Acquire));
        self.0.revision.store(rev, Ordering::Release);
        let lag = if applied > 0 { (header - applied).max(0) } else { 0 };
        self.0.lag.store(lag, Ordering::Release);
        set(VIEW_LAG, &self.0.key, lag);
    }

    /// The view re-read etcd at `revision`.
    pub(crate) fn reread(&self, revision: i64) {
        self.0.revision.store(revision, Ordering::Release);
    }

    /// The view's watch was cancelled by compaction: it re-reads.
    pub(crate) fn compacted(&self) {
        self.0.rereads.fetch_add(1, Ordering::Relaxed);
        add(VIEW_REREADS, &self.0.key, 1);
    }
}

/// A component reported by health while the returned handle lives.
pub(crate) struct Tracked(#[allow(dead_code)] Arc<dyn Probe>);

/// Report `probe` in the health of `client` while the returned handle lives.
pub(crate) fn track(client: &Client, probe: Arc<dyn Probe>) -> Tracked {
    with_board(client, |b| b.probes.push(Arc::downgrade(&probe)));
    Tracked(probe)
}

/// A registration's state, as a probe.
struct RegistrationProbe {
    key: String,
    state: tokio::sync::watch::Receiver<crate::registry::RegistrationState>,
}

impl Probe for RegistrationProbe {
    fn probe(&self) -> (&'static str, String, bool, String) {
        use crate::registry::RegistrationState as S;
        let (ok, state) = match &*self.state.borrow() {
            S::Registered { lease_id } => (true, format!("registered (lease {lease_id:x})")),
            S::Recovering { reason } => (false, format!("recovering: {reason}")),
            S::Lost { reason } => (false, format!("lost: {reason}")),
            S::Closed => (true, "closed".to_string()),
        };
        ("registration", self.key.clone(), ok, state)
    }
}

/// Report the registration at `key` (its state seen through `state`) while the handle lives.
pub(crate) fn track_registration(
    client: &Client,
    key: &str,
    state: tokio::sync::watch::Receiver<crate::registry::RegistrationState>,
) -> Tracked {
    let key = String::from_utf8_lossy(client.strip_namespace(key.as_bytes()).unwrap_or(key.as_bytes())).into_owned();
    track(client, Arc::new(RegistrationProbe { key, state }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one lock acquisition adds to the lock path: a wait started and ended, a hold
    /// started and ended (no recorder installed: the facade's no-op one). The bound is
    /// loose (a loaded machine); the figure is printed for the README.
    #[test]
    fn recording_a_lock_cycle_is_cheap() {
        const N: u32 = 200_000;
        let names: Vec<String> = (0..8).map(|i| format!("bench-lock-{i}")).collect();
        let t = Instant::now();
        for i in 0..N {
            let name = &names[(i % 8) as usize];
            let w = lock_wait_started(name, true);
            w.acquired();
            drop(w);
            lock_held(name).released();
        }
        let per = t.elapsed() / N;
        println!("metrics: one lock cycle (wait + hold, 8 names) records in {per:?}");
        let s = snapshot();
        assert_eq!(s.count("etcd_recipes_lock_wait_seconds", Some("bench-lock-0")), u64::from(N / 8));
        assert_eq!(s.value("etcd_recipes_lock_waiters", Some("bench-lock-0")), 0.0);
        assert!(per < Duration::from_micros(200), "recording one lock cycle took {per:?}");
    }

    #[test]
    fn text_format_escapes_labels_and_lists_every_family() {
        add(HEALED, "we\"ird\\svc", 1);
        let text = prometheus_text();
        assert!(text.contains(r#"etcd_recipes_registrations_healed_total{service="we\"ird\\svc"} 1"#));
        for d in &DEFS {
            assert!(text.contains(&format!("# TYPE {} {}", d.name, d.kind.as_str())), "{}", d.name);
        }
    }
}
