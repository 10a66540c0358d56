//! Health and metrics, converted: `client.health()` -> `Health`, and the process's
//! metrics as `metrics_snapshot()` (-> `list[MetricFamily]`) and `metrics_text()`
//! (Prometheus text format). Times are Unix seconds (as `time.time()`).

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One session of the client, as health sees it.
#[pyclass(module = "etcd_recipes._native", name = "SessionHealth", frozen, get_all)]
#[derive(Clone)]
pub struct PySessionHealth {
    /// The session's lease.
    lease_id: i64,
    /// Granted TTL, seconds.
    ttl: i64,
    /// Renewals are confirmed (not lost).
    alive: bool,
    /// When the last renewal was confirmed (Unix seconds; the grant when none yet).
    last_renew: f64,
    /// Why it was lost, when it was.
    lost: Option<String>,
}

/// One view (config or service discovery) of the client.
#[pyclass(module = "etcd_recipes._native", name = "ViewHealth", frozen, get_all)]
#[derive(Clone)]
pub struct PyViewHealth {
    /// `"config"` or `"service"`.
    kind: String,
    /// The key or prefix it mirrors (with the namespace).
    key: String,
    /// Its watch is running.
    watching: bool,
    /// Watching, and its last watch response was not behind etcd.
    current: bool,
    /// The revision the view reflects.
    revision: i64,
    /// Revisions its last watch response was behind etcd.
    lag: i64,
    /// Re-reads after compaction.
    compaction_rereads: u64,
}

/// Another component with a state (a registration).
#[pyclass(module = "etcd_recipes._native", name = "ComponentHealth", frozen, get_all)]
#[derive(Clone)]
pub struct PyComponentHealth {
    /// `"registration"`.
    kind: String,
    /// What it is (a registration: `service/id`).
    name: String,
    /// In order (a registration: registered).
    ok: bool,
    /// Its state in words.
    state: String,
}

/// A client's coordination health, for a readiness probe: `client.health()`.
#[pyclass(module = "etcd_recipes._native", name = "Health", frozen, get_all)]
pub struct PyHealth {
    /// Ready: the client open, no session lost, every view current, no registration recovering.
    healthy: bool,
    /// The client is not closed.
    open: bool,
    /// Sessions whose renewals are confirmed.
    sessions_alive: usize,
    /// Sessions declared lost (and not closed yet).
    sessions_lost: usize,
    /// The least recent confirmed renewal among alive sessions (Unix seconds), None without one.
    oldest_renew: Option<f64>,
    /// Views whose watch runs and is caught up.
    views_current: usize,
    /// Views re-reading or behind.
    views_behind: usize,
    /// Every session of the client.
    sessions: Vec<PySessionHealth>,
    /// Every view of the client.
    views: Vec<PyViewHealth>,
    /// Every registration of the client.
    components: Vec<PyComponentHealth>,
    /// What makes it unhealthy, one line each (empty when healthy).
    problems: Vec<String>,
}

#[pymethods]
impl PyHealth {
    fn __repr__(&self) -> String {
        format!(
            "Health(healthy={}, sessions_alive={}, sessions_lost={}, views_current={}, views_behind={}, problems={:?})",
            if self.healthy { "True" } else { "False" },
            self.sessions_alive,
            self.sessions_lost,
            self.views_current,
            self.views_behind,
            self.problems
        )
    }
}

impl From<etcd_recipes::health::Health> for PyHealth {
    fn from(h: etcd_recipes::health::Health) -> Self {
        PyHealth {
            healthy: h.healthy,
            open: h.open,
            sessions_alive: h.sessions_alive,
            sessions_lost: h.sessions_lost,
            oldest_renew: h.oldest_renew.map(unix),
            views_current: h.views_current,
            views_behind: h.views_behind,
            sessions: h
                .sessions
                .into_iter()
                .map(|s| PySessionHealth {
                    lease_id: s.lease_id,
                    ttl: s.ttl,
                    alive: s.alive,
                    last_renew: unix(s.last_renew),
                    lost: s.lost,
                })
                .collect(),
            views: h
                .views
                .into_iter()
                .map(|v| PyViewHealth {
                    kind: v.kind,
                    key: v.key,
                    watching: v.watching,
                    current: v.current,
                    revision: v.revision,
                    lag: v.lag,
                    compaction_rereads: v.compaction_rereads,
                })
                .collect(),
            components: h
                .components
                .into_iter()
                .map(|c| PyComponentHealth { kind: c.kind, name: c.name, ok: c.ok, state: c.state })
                .collect(),
            problems: h.problems,
        }
    }
}

/// One series of a metric: a counter's or gauge's `value`, or a histogram's `count`,
/// `sum` (seconds) and cumulative `buckets` (`(upper bound in seconds, count)`).
#[pyclass(module = "etcd_recipes._native", name = "MetricSample", frozen, get_all)]
#[derive(Clone)]
pub struct PyMetricSample {
    /// The value of the family's label (the lock, election, service or view), None without one.
    label_value: Option<String>,
    /// A counter's or gauge's value.
    value: f64,
    /// A histogram's observation count.
    count: u64,
    /// A histogram's sum of observations, seconds.
    sum: f64,
    /// A histogram's cumulative buckets: `(upper bound in seconds, observations <= it)`; +Inf is `count`.
    buckets: Vec<(f64, u64)>,
}

/// One metric of the process: its name, kind, help and series.
#[pyclass(module = "etcd_recipes._native", name = "MetricFamily", frozen, get_all)]
#[derive(Clone)]
pub struct PyMetricFamily {
    /// The metric name (`etcd_recipes_lock_wait_seconds`, ...).
    name: String,
    /// What it measures.
    help: String,
    /// `"counter"`, `"gauge"` or `"histogram"`.
    kind: String,
    /// The label that tells its series apart (`name`, `service`, `view`), None without one.
    label: Option<String>,
    /// One per label value.
    samples: Vec<PyMetricSample>,
}

/// Every metric of this process (locks, sessions, elections, registrations, views, work
/// queues) at one moment.
#[pyfunction]
pub fn metrics_snapshot() -> Vec<PyMetricFamily> {
    etcd_recipes::metrics::snapshot()
        .families
        .into_iter()
        .map(|f| PyMetricFamily {
            name: f.name,
            help: f.help,
            kind: f.kind.as_str().to_string(),
            label: f.label,
            samples: f
                .samples
                .into_iter()
                .map(|s| PyMetricSample { label_value: s.label_value, value: s.value, count: s.count, sum: s.sum, buckets: s.buckets })
                .collect(),
        })
        .collect()
}

/// Every metric of this process in the Prometheus text format (serve it at /metrics).
#[pyfunction]
pub fn metrics_text() -> String {
    etcd_recipes::metrics::prometheus_text()
}
