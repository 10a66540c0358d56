//! The election's Python face: `client.election(name, ttl=)` / `session.election(name)`
//! -> `Election`; `async with election.campaign(value) as leadership`,
//! `await election.leader()`, `async for leader in election.observe()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::election::{Election, LeaderInfo, Leadership};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::{Bytes, Value};
use crate::members::{class_methods, Entered};
use crate::runtime::{rt, spawn_py, InRt, Watchers};
use crate::stream::async_iterator;

/// Who leads an election.
#[pyclass(module = "etcd_recipes._native", name = "LeaderInfo", frozen, eq)]
#[derive(PartialEq)]
pub struct PyLeaderInfo {
    info: LeaderInfo,
}

impl From<LeaderInfo> for PyLeaderInfo {
    fn from(info: LeaderInfo) -> Self {
        PyLeaderInfo { info }
    }
}

#[pymethods]
impl PyLeaderInfo {
    /// The leader's full etcd key.
    #[getter]
    fn key(&self) -> &str {
        &self.info.key
    }
    /// The leader's proclaimed value.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.info.value)
    }
    /// The value as text (invalid UTF-8 replaced).
    #[getter]
    fn value_string(&self) -> String {
        String::from_utf8_lossy(&self.info.value).into_owned()
    }
    /// Create revision of the leader key: the leadership's fencing token.
    #[getter]
    fn fencing_token(&self) -> i64 {
        self.info.fencing_token
    }
    /// The lease of the leader key.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.info.lease_id
    }
    fn __repr__(&self) -> String {
        format!("LeaderInfo(key={:?}, value={:?}, fencing_token={})", self.info.key, self.value_string(), self.info.fencing_token)
    }
}

/// An election (etcd `concurrency.Election` layout). Candidates campaign with a value.
#[pyclass(module = "etcd_recipes._native", name = "Election", frozen)]
pub struct PyElection {
    inner: Election,
}

impl PyElection {
    pub fn new(inner: Election) -> Self {
        PyElection { inner }
    }
}

#[pymethods]
impl PyElection {
    /// The election name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Stand as a candidate with `value` and wait until leader, at most `timeout` seconds
    /// (default: the election's own timeout; `LockTimeoutError` when it runs out). Await
    /// it for a `Leadership`, or `async with election.campaign(value) as leadership:`
    /// (resigns on exit).
    #[pyo3(signature = (value, *, timeout=None))]
    fn campaign(&self, py: Python<'_>, value: Value, timeout: Option<f64>) -> PyResult<PyCampaign> {
        let timeout = crate::convert::timeout(py, timeout)?;
        Ok(PyCampaign { election: self.inner.clone(), value: value.0, timeout, entered: Entered::default() })
    }

    /// The current leader, or None.
    fn leader<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let e = self.inner.clone();
        spawn_py(py, async move { Ok(e.leader().await?.map(PyLeaderInfo::from)) })
    }

    /// The current leader (or None) first, then every change: `async for leader in ...`.
    fn observe(&self) -> PyLeaderObserver {
        let _g = rt().enter();
        PyLeaderObserver::new(self.inner.observe())
    }

    fn __repr__(&self) -> String {
        format!("Election(name={:?})", self.inner.name())
    }
}

/// Shared with core: a leader loop's term hands its `Arc<Leadership>` to Python.
type Held = Arc<InRt<Arc<Leadership>>>;

/// A campaign in progress: `await` it, or `async with` it.
#[pyclass(module = "etcd_recipes._native", name = "Campaign", frozen)]
pub struct PyCampaign {
    election: Election,
    value: Vec<u8>,
    timeout: Option<Duration>,
    entered: Entered<Held>,
}

impl PyCampaign {
    fn start(&self) -> impl Future<Output = etcd_recipes::Result<Held>> + Send + 'static {
        let (e, value, t) = (self.election.clone(), self.value.clone(), self.timeout);
        async move {
            let l = match t {
                Some(t) => e.campaign_within(value, Some(t)).await?,
                None => e.campaign(value).await?,
            };
            Ok(Arc::new(InRt::new(Arc::new(l))))
        }
    }
}

#[pymethods]
impl PyCampaign {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let start = self.start();
        spawn_py(py, async move { Ok(PyLeadership::new(start.await?)) })?.call_method0("__await__")
    }

    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.enter(py, self.start(), PyLeadership::new)
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.exit(py, |l| async move { l.resign().await })
    }
}

/// Being the leader. Ends with `resign()`, leaving `async with`, a lost session, or
/// our key deleted; `lost()` resolves then and `is_leader` turns false for good.
#[pyclass(module = "etcd_recipes._native", name = "Leadership", frozen)]
pub struct PyLeadership {
    inner: Held,
    watchers: Watchers,
}

impl PyLeadership {
    fn new(inner: Held) -> Self {
        PyLeadership { inner, watchers: Watchers::default() }
    }

    /// A leadership held by core (a leader loop's or latch's term).
    pub(crate) fn from_core(l: Arc<Leadership>) -> Self {
        PyLeadership::new(Arc::new(InRt::new(l)))
    }
}

class_methods! {
    impl PyLeadership {
        /// Our full leader key (`<namespace><name>/<lease hex>`).
        #[getter]
        fn key(&self) -> &str {
            self.inner.key()
        }
        /// The election name (namespace-relative).
        #[getter]
        fn name(&self) -> &str {
            self.inner.name()
        }
        /// The lease behind the leadership.
        #[getter]
        fn lease_id(&self) -> i64 {
            self.inner.lease_id()
        }
        /// Create revision of our key: strictly increases from leader to leader.
        #[getter]
        fn fencing_token(&self) -> i64 {
            self.inner.fencing_token()
        }
        /// The value last proclaimed (or campaigned with).
        #[getter]
        fn value(&self) -> Bytes {
            Bytes(self.inner.value())
        }
        /// The value as text (invalid UTF-8 replaced).
        #[getter]
        fn value_string(&self) -> String {
            String::from_utf8_lossy(&self.inner.value()).into_owned()
        }
        /// True until leadership ends; never true again after that.
        #[getter]
        fn is_leader(&self) -> bool {
            self.inner.is_leader()
        }
        /// Publish a new value (`NotLeaderError` if no longer leader).
        fn proclaim<'py>(&self, py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
            let l = self.inner.clone();
            spawn_py(py, async move { Ok(l.proclaim(value.0).await?) })
        }
        /// Step down (idempotent; closes the session made for the campaign); the next
        /// candidate takes over at once.
        fn resign<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let l = self.inner.clone();
            spawn_py(py, async move { Ok(l.resign().await?) })
        }
        fn __repr__(&self) -> String {
            format!("Leadership(key={:?}, fencing_token={}, is_leader={})", self.key(), self.fencing_token(), self.is_leader())
        }
    }
    /// Resolves when leadership ends: with the reason when it was lost (session lost, key
    /// deleted or replaced), with None when it ended normally (resigned, session closed).
    lost;
    /// Call `callback(reason)` on the running event loop if leadership is lost (not when
    /// we resign). Keeps nothing alive.
    on_lost;
    fenced("leader");
    gc(watchers);
    async_with(resign);
}

async_iterator! {
    /// `async for leader in ...`: the current leader (or None), then every change.
    PyLeaderObserver("LeaderObserver", etcd_recipes::Result<Option<LeaderInfo>>) => |item| Ok(item?.map(PyLeaderInfo::from))
}
