//! Health and metrics, converted: `client.health()` -> `Health`, and the process's
//! metrics as `metricsSnapshot()` (-> `MetricFamily[]`) and `metricsText()` (Prometheus
//! text format). Times are ms since the Unix epoch (as `Date.now()`).

use std::time::{SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::i64n;
use napi_derive::napi;

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One session of the client, as health sees it.
#[napi(object, object_from_js = false)]
pub struct SessionHealth {
    /// The session's lease.
    pub lease_id: i64n,
    /// Granted TTL, seconds.
    pub ttl: i64,
    /// Renewals are confirmed (not lost).
    pub alive: bool,
    /// When the last renewal was confirmed (ms since the epoch, as `Date.now()`; the grant when none yet).
    pub last_renew: f64,
    /// Why it was lost, when it was.
    pub lost: Option<String>,
}

/// One view (config or service discovery) of the client.
#[napi(object, object_from_js = false)]
pub struct ViewHealth {
    /// `"config"` or `"service"`.
    pub kind: String,
    /// The key or prefix it mirrors (with the namespace).
    pub key: String,
    /// Its watch is running.
    pub watching: bool,
    /// Watching, and its last watch response was not behind etcd.
    pub current: bool,
    /// The revision the view reflects.
    pub revision: i64,
    /// Revisions its last watch response was behind etcd.
    pub lag: i64,
    /// Re-reads after compaction.
    pub compaction_rereads: i64,
}

/// Another component with a state (a registration).
#[napi(object, object_from_js = false)]
pub struct ComponentHealth {
    /// `"registration"`.
    pub kind: String,
    /// What it is (a registration: `service/id`).
    pub name: String,
    /// In order (a registration: registered).
    pub ok: bool,
    /// Its state in words.
    pub state: String,
}

/// A client's coordination health, for a readiness probe: `client.health()`.
#[napi(object, object_from_js = false)]
pub struct Health {
    /// Ready: the client open, no session lost, every view current, no registration recovering.
    pub healthy: bool,
    /// The client is not closed.
    pub open: bool,
    /// Sessions whose renewals are confirmed.
    pub sessions_alive: u32,
    /// Sessions declared lost (and not closed yet).
    pub sessions_lost: u32,
    /// The least recent confirmed renewal among alive sessions (ms since the epoch), null without one.
    pub oldest_renew: Option<f64>,
    /// Views whose watch runs and is caught up.
    pub views_current: u32,
    /// Views re-reading or behind.
    pub views_behind: u32,
    /// Every session of the client.
    pub sessions: Vec<SessionHealth>,
    /// Every view of the client.
    pub views: Vec<ViewHealth>,
    /// Every registration of the client.
    pub components: Vec<ComponentHealth>,
    /// What makes it unhealthy, one line each (empty when healthy).
    pub problems: Vec<String>,
}

impl From<etcd_recipes::health::Health> for Health {
    fn from(h: etcd_recipes::health::Health) -> Self {
        Health {
            healthy: h.healthy,
            open: h.open,
            sessions_alive: h.sessions_alive as u32,
            sessions_lost: h.sessions_lost as u32,
            oldest_renew: h.oldest_renew.map(unix_ms),
            views_current: h.views_current as u32,
            views_behind: h.views_behind as u32,
            sessions: h
                .sessions
                .into_iter()
                .map(|s| SessionHealth {
                    lease_id: i64n(s.lease_id),
                    ttl: s.ttl,
                    alive: s.alive,
                    last_renew: unix_ms(s.last_renew),
                    lost: s.lost,
                })
                .collect(),
            views: h
                .views
                .into_iter()
                .map(|v| ViewHealth {
                    kind: v.kind,
                    key: v.key,
                    watching: v.watching,
                    current: v.current,
                    revision: v.revision,
                    lag: v.lag,
                    compaction_rereads: v.compaction_rereads as i64,
                })
                .collect(),
            components: h
                .components
                .into_iter()
                .map(|c| ComponentHealth { kind: c.kind, name: c.name, ok: c.ok, state: c.state })
                .collect(),
            problems: h.problems,
        }
    }
}

/// One series of a metric: a counter's or gauge's `value`, or a histogram's `count`,
/// `sum` (seconds) and cumulative `buckets` (`[upper bound in seconds, count]` pairs).
#[napi(object, object_from_js = false)]
pub struct MetricSample {
    /// The value of the family's label (the lock, election, service or view), absent without one.
    pub label_value: Option<String>,
    /// A counter's or gauge's value.
    pub value: f64,
    /// A histogram's observation count.
    pub count: f64,
    /// A histogram's sum of observations, seconds.
    pub sum: f64,
    /// A histogram's cumulative buckets: `[upper bound in seconds, observations <= it]`; +Inf is `count`.
    pub buckets: Vec<Vec<f64>>,
}

/// One metric of the process: its name, kind, help and series.
#[napi(object, object_from_js = false)]
pub struct MetricFamily {
    /// The metric name (`etcd_recipes_lock_wait_seconds`, ...).
    pub name: String,
    /// What it measures.
    pub help: String,
    /// `"counter"`, `"gauge"` or `"histogram"`.
    #[napi(ts_type = "'counter' | 'gauge' | 'histogram'")]
    pub kind: String,
    /// The label that tells its series apart (`name`, `service`, `view`), absent without one.
    pub label: Option<String>,
    /// One per label value.
    pub samples: Vec<MetricSample>,
}

/// Every metric of this process (locks, sessions, elections, registrations, views, work
/// queues) at one moment.
#[napi]
pub fn metrics_snapshot() -> Vec<MetricFamily> {
    etcd_recipes::metrics::snapshot()
        .families
        .into_iter()
        .map(|f| MetricFamily {
            name: f.name,
            help: f.help,
            kind: f.kind.as_str().to_string(),
            label: f.label,
            samples: f
                .samples
                .into_iter()
                .map(|s| MetricSample {
                    label_value: s.label_value,
                    value: s.value,
                    count: s.count as f64,
                    sum: s.sum,
                    buckets: s.buckets.into_iter().map(|(le, c)| vec![le, c as f64]).collect(),
                })
                .collect(),
        })
        .collect()
}

/// Every metric of this process in the Prometheus text format (serve it at `/metrics`
/// with content type `text/plain; version=0.0.4`).
#[napi]
pub fn metrics_text() -> String {
    etcd_recipes::metrics::prometheus_text()
}
