//! The election's Python face: `client.election(name, ttl=)` -> `Election`;
//! `async with election.campaign(value) as leadership`, `await election.leader()`,
//! `async for leader in election.observe()`; `client.observe_leader(name)` without a session.

use std::sync::{Arc, Mutex};

use etcd_recipes::election::{self, Election, LeaderInfo, LeaderObserver, Leadership};
use etcd_recipes::{Client, Session};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::client::Bytes;
use crate::convert::Value;
use crate::errors::{CoreResultExt, FResult};
use crate::lock::{fence_delete, fence_put, fence_txn, SessionSource};
use crate::runtime::{ready_py, rt, spawn_py, InRt};
use crate::stream::StreamCell;

/// Who leads an election.
#[pyclass(module = "etcd_recipes._native", name = "LeaderInfo", frozen, eq)]
#[derive(PartialEq)]
pub struct PyLeaderInfo {
    info: LeaderInfo,
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
    /// Create revision of the leader key (its fencing token).
    #[getter]
    fn revision(&self) -> i64 {
        self.info.revision
    }
    /// The lease of the leader key.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.info.lease_id
    }
    fn __repr__(&self) -> String {
        format!(
            "LeaderInfo(key={:?}, value={:?}, revision={})",
            self.info.key,
            String::from_utf8_lossy(&self.info.value),
            self.info.revision
        )
    }
}

fn info(i: Option<LeaderInfo>) -> Option<PyLeaderInfo> {
    i.map(|info| PyLeaderInfo { info })
}

/// An election (etcd `concurrency.Election` layout). Candidates campaign with a value.
#[pyclass(module = "etcd_recipes._native", name = "Election", frozen)]
pub struct PyElection {
    client: Client,
    source: SessionSource,
    name: String,
}

impl PyElection {
    pub fn new(py: Python<'_>, client: Client, source: SessionSource, name: String) -> PyResult<Self> {
        // Same name rules as the observer; fail at the call site.
        let _g = rt().enter();
        election::observe(&client, &name).py_err(py)?;
        Ok(PyElection { client, source, name })
    }
}

#[pymethods]
impl PyElection {
    /// The election name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Stand as a candidate with `value`. Await it for a `Leadership`, or use
    /// `async with election.campaign(value) as leadership:` (resigns on exit).
    fn campaign(&self, value: Value) -> PyCampaign {
        PyCampaign {
            source: self.source.clone(),
            name: self.name.clone(),
            value: value.0,
            entered: Mutex::new(None),
        }
    }

    /// The current leader, or None.
    fn leader<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        leader_py(py, self.client.clone(), self.name.clone())
    }

    /// The current leader (or None) first, then every change: `async for leader in ...`.
    fn observe(&self, py: Python<'_>) -> PyResult<PyLeaderObserver> {
        observe_py(py, &self.client, &self.name)
    }

    fn __repr__(&self) -> String {
        format!("Election(name={:?})", self.name)
    }
}

pub fn leader_py<'py>(py: Python<'py>, client: Client, name: String) -> PyResult<Bound<'py, PyAny>> {
    spawn_py(py, async move { Ok(info(election::current_leader(&client, &name).await?)) })
}

pub fn observe_py(py: Python<'_>, client: &Client, name: &str) -> PyResult<PyLeaderObserver> {
    let _g = rt().enter();
    let obs: LeaderObserver = election::observe(client, name).py_err(py)?;
    Ok(PyLeaderObserver { cell: StreamCell::new(obs) })
}

struct Held {
    leadership: InRt<Leadership>,
    session: Option<InRt<Session>>,
    /// Revoke the lease at interpreter exit (only for a session we own).
    _exit: Option<crate::exit::ExitHook>,
}

impl Held {
    async fn resign(&self) -> etcd_recipes::Result<()> {
        let r = self.leadership.resign().await;
        if let Some(s) = &self.session {
            s.close().await?;
        }
        r
    }
}

async fn campaign(source: SessionSource, name: String, value: Vec<u8>) -> FResult<Arc<Held>> {
    let (session, owned) = source.get().await?;
    let hook = owned.then(|| crate::exit::track_session(&session));
    let r = async { Election::new(&session, &name)?.campaign(value).await }.await;
    match r {
        Ok(l) => Ok(Arc::new(Held { leadership: InRt::new(l), session: owned.then(|| InRt::new(session)), _exit: hook })),
        Err(e) => {
            if owned {
                let _ = session.close().await;
            }
            Err(e.into())
        }
    }
}

/// A campaign in progress: `await` it, or `async with` it.
#[pyclass(module = "etcd_recipes._native", name = "Campaign", frozen)]
pub struct PyCampaign {
    source: SessionSource,
    name: String,
    value: Vec<u8>,
    entered: Mutex<Option<Arc<Held>>>,
}

impl PyCampaign {
    fn start<'py>(&self, py: Python<'py>, keep: Option<Py<PyCampaign>>) -> PyResult<Bound<'py, PyAny>> {
        let (source, name, value) = (self.source.clone(), self.name.clone(), self.value.clone());
        spawn_py(py, async move {
            let held = campaign(source, name, value).await?;
            if let Some(me) = keep {
                *me.get().entered.lock().unwrap_or_else(|p| p.into_inner()) = Some(held.clone());
            }
            Ok(PyLeadership { held })
        })
    }
}

#[pymethods]
impl PyCampaign {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start(py, None)?.call_method0("__await__")
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let keep = slf.clone().unbind();
        slf.get().start(slf.py(), Some(keep))
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.entered.lock().unwrap_or_else(|p| p.into_inner()).take();
        spawn_py(py, async move {
            if let Some(h) = held {
                h.resign().await?;
            }
            FResult::Ok(())
        })
    }
}

/// Being the leader. Ends with `resign()`, leaving `async with`, a lost session, or
/// our key deleted; `lost()` resolves then and `is_leader` turns false for good.
#[pyclass(module = "etcd_recipes._native", name = "Leadership", frozen)]
pub struct PyLeadership {
    held: Arc<Held>,
}

#[pymethods]
impl PyLeadership {
    /// True until leadership ends; never true again after that.
    #[getter]
    fn is_leader(&self) -> bool {
        self.held.leadership.is_leader()
    }
    /// Our full leader key.
    #[getter]
    fn key(&self) -> &str {
        self.held.leadership.key()
    }
    /// Create revision of our key.
    #[getter]
    fn revision(&self) -> i64 {
        self.held.leadership.revision()
    }
    /// Same as `revision`: the token downstream systems compare.
    #[getter]
    fn fencing_token(&self) -> i64 {
        self.held.leadership.revision()
    }
    /// The value last proclaimed.
    #[getter]
    fn value(&self) -> Bytes {
        Bytes(self.held.leadership.value())
    }
    /// Publish a new value (`NotLeaderError` if no longer leader).
    fn proclaim<'py>(&self, py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
        let held = self.held.clone();
        spawn_py(py, async move { Ok(held.leadership.proclaim(value.0).await?) })
    }
    /// Step down (idempotent); the next candidate takes over at once.
    fn resign<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.held.clone();
        spawn_py(py, async move { Ok(held.resign().await?) })
    }
    /// Resolves, with the reason, when leadership ends.
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.held.clone();
        spawn_py(py, async move { FResult::Ok(held.leadership.lost().await) })
    }
    /// Put only while leader (`FencedError` otherwise).
    fn put<'py>(&self, py: Python<'py>, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
        fence_put(py, self.held.leadership.fence().clone(), key, value)
    }
    /// Delete only while leader.
    fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        fence_delete(py, self.held.leadership.fence().clone(), key)
    }
    /// Atomic `[("put", k, v), ("delete", k)]` only while leader.
    fn txn<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        fence_txn(py, self.held.leadership.fence().clone(), ops)
    }
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready_py(slf.py(), slf.into_any())
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.resign(py)
    }
    fn __repr__(&self) -> String {
        format!("Leadership(key={:?}, revision={}, is_leader={})", self.key(), self.revision(), self.is_leader())
    }
}

/// `async for leader in ...`: the current leader (or None), then every change.
#[pyclass(module = "etcd_recipes._native", name = "LeaderObserver", frozen)]
pub struct PyLeaderObserver {
    cell: StreamCell<etcd_recipes::Result<Option<LeaderInfo>>>,
}

#[pymethods]
impl PyLeaderObserver {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cell.next_py(py, |item| Ok(info(item?)))
    }
    /// Stop observing.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cell.aclose_py(py)
    }
}
