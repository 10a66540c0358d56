//! The lock's Python face: `client.lock(name, ttl=, timeout=)` -> `Lock`;
//! `async with lock as guard`, `await lock.acquire()` / `try_acquire()` -> `LockGuard`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_recipes::lock::{Lock, LockGuard};
use etcd_recipes::{Client, Fence, FencedOp, Session};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::Value;
use crate::errors::{CoreResultExt, FResult};
use crate::runtime::{ready_py, spawn_py, InRt};

/// Guarded-transaction operations from Python: `("put", key, value)` / `("delete", key)`.
pub fn fenced_ops(ops: &Bound<'_, PyAny>) -> PyResult<Vec<FencedOp>> {
    let bad = || PyTypeError::new_err("ops must be a list of (\"put\", key, value) or (\"delete\", key) tuples");
    let mut out = Vec::new();
    for op in ops.try_iter().map_err(|_| bad())? {
        let op = op?;
        let t = op.cast::<PyTuple>().map_err(|_| bad())?;
        let verb: String = t.get_item(0).map_err(|_| bad())?.extract().map_err(|_| bad())?;
        match (verb.as_str(), t.len()) {
            ("put", 3) => {
                let key: String = t.get_item(1)?.extract()?;
                let value: Value = t.get_item(2)?.extract()?;
                out.push(FencedOp::put(key, value.0));
            }
            ("delete", 2) => out.push(FencedOp::delete(t.get_item(1)?.extract::<String>()?)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Guarded writes shared by `LockGuard` and `Leadership`.
pub fn fence_put<'py>(py: Python<'py>, fence: Fence, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
    spawn_py(py, async move { Ok(fence.put(&key, value.0).await?) })
}
pub fn fence_delete<'py>(py: Python<'py>, fence: Fence, key: String) -> PyResult<Bound<'py, PyAny>> {
    spawn_py(py, async move { Ok(fence.delete(&key).await?) })
}
pub fn fence_txn<'py>(py: Python<'py>, fence: Fence, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let ops = fenced_ops(ops)?;
    spawn_py(py, async move { Ok(fence.txn(ops).await?) })
}

/// How a recipe gets its session: the caller's, or a fresh one per acquisition.
#[derive(Clone)]
pub enum SessionSource {
    Given(Session),
    PerUse { client: Client, ttl: i64 },
}

impl SessionSource {
    pub fn from_args(client: Client, ttl: i64, session: Option<PyRef<'_, crate::session::PySession>>) -> PyResult<Self> {
        if ttl <= 0 {
            return Err(PyValueError::new_err(format!("ttl must be at least 1 second, got {ttl}")));
        }
        Ok(match session {
            Some(s) => SessionSource::Given((*s.inner).clone()),
            None => SessionSource::PerUse { client, ttl },
        })
    }

    /// The session to use, and whether we own it (close it when done).
    pub async fn get(&self) -> etcd_recipes::Result<(Session, bool)> {
        match self {
            SessionSource::Given(s) => Ok((s.clone(), false)),
            SessionSource::PerUse { client, ttl } => Ok((Session::new(client, *ttl).await?, true)),
        }
    }
}

/// A held lock and, when the lock made it, the session behind it.
pub struct HeldLock {
    guard: InRt<LockGuard>,
    session: Option<InRt<Session>>,
    /// Revoke the lease at interpreter exit (only for a session we own).
    _exit: Option<crate::exit::ExitHook>,
}

impl HeldLock {
    async fn release(&self) -> etcd_recipes::Result<()> {
        let r = self.guard.release().await;
        if let Some(s) = &self.session {
            s.close().await?;
        }
        r
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Wait(Option<Duration>),
    Try,
}

/// A distributed lock (etcd `concurrency.Mutex` layout). `async with lock as guard:`
/// acquires (waiting up to `timeout`, forever if None) and releases on exit.
#[pyclass(module = "etcd_recipes._native", name = "Lock", frozen)]
pub struct PyLock {
    source: SessionSource,
    name: String,
    timeout: Option<Duration>,
    /// Guards taken by `async with`, per asyncio task (a Lock object may be shared by tasks).
    entered: Mutex<Vec<(usize, Arc<HeldLock>)>>,
}

impl PyLock {
    pub fn new(py: Python<'_>, source: SessionSource, name: String, timeout: Option<Duration>) -> PyResult<Self> {
        // With a session at hand, a bad name fails here, at the call site.
        if let SessionSource::Given(s) = &source {
            Lock::new(s, &name).py_err(py)?;
        }
        Ok(PyLock { source, name, timeout, entered: Mutex::new(Vec::new()) })
    }

    fn acquire_py<'py>(&self, py: Python<'py>, mode: Mode) -> PyResult<Bound<'py, PyAny>> {
        let (source, name) = (self.source.clone(), self.name.clone());
        spawn_py(py, async move { acquire(source, name, mode).await.map(PyLockGuard::new) })
    }
}

async fn acquire(source: SessionSource, name: String, mode: Mode) -> FResult<Arc<HeldLock>> {
    let (session, owned) = source.get().await?;
    // If the interpreter exits while we wait, the lease (and so our queued key) is revoked.
    let hook = owned.then(|| crate::exit::track_session(&session));
    let result = async {
        let lock = Lock::new(&session, &name)?;
        match mode {
            Mode::Wait(None) => lock.acquire().await,
            Mode::Wait(Some(t)) => lock.acquire_timeout(t).await,
            Mode::Try => lock.try_acquire().await,
        }
    }
    .await;
    match result {
        Ok(g) => Ok(Arc::new(HeldLock { guard: InRt::new(g), session: owned.then(|| InRt::new(session)), _exit: hook })),
        Err(e) => {
            if owned {
                let _ = session.close().await;
            }
            Err(e.into())
        }
    }
}

fn current_task(py: Python<'_>) -> PyResult<usize> {
    let t = py.import("asyncio")?.call_method0("current_task")?;
    Ok(t.as_ptr() as usize)
}

#[pymethods]
impl PyLock {
    /// The lock name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Wait for the lock (up to `timeout` seconds if given at creation, else forever).
    /// Cancelling the awaiting task withdraws from the queue (our key is deleted).
    fn acquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.acquire_py(py, Mode::Wait(self.timeout))
    }

    /// Take the lock only if it is free now; `LockTimeoutError` otherwise.
    fn try_acquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.acquire_py(py, Mode::Try)
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let task = current_task(py)?;
        let this = slf.get();
        let (source, name, timeout) = (this.source.clone(), this.name.clone(), this.timeout);
        let me: Py<PyLock> = slf.clone().unbind();
        spawn_py(py, async move {
            let held = acquire(source, name, Mode::Wait(timeout)).await?;
            me.get().entered.lock().unwrap_or_else(|p| p.into_inner()).push((task, held.clone()));
            Ok(PyLockGuard::new(held))
        })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let task = current_task(py)?;
        let held = {
            let mut e = self.entered.lock().unwrap_or_else(|p| p.into_inner());
            e.iter().rposition(|(t, _)| *t == task).map(|i| e.remove(i).1)
        };
        spawn_py(py, async move {
            if let Some(h) = held {
                h.release().await?;
            }
            FResult::Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("Lock(name={:?})", self.name)
    }
}

/// Proof of holding a lock: its key, its fencing token, guarded writes.
/// Released by `release()`, by leaving `async with`, or when garbage-collected.
#[pyclass(module = "etcd_recipes._native", name = "LockGuard", frozen)]
pub struct PyLockGuard {
    held: Arc<HeldLock>,
}

impl PyLockGuard {
    fn new(held: Arc<HeldLock>) -> Self {
        PyLockGuard { held }
    }
}

#[pymethods]
impl PyLockGuard {
    /// The full etcd key of our lock entry (`<namespace><name>/<lease hex>`).
    #[getter]
    fn key(&self) -> &str {
        self.held.guard.key()
    }

    /// The create revision of our key: strictly increases from holder to holder.
    #[getter]
    fn fencing_token(&self) -> i64 {
        self.held.guard.fencing_token()
    }

    /// The lease behind the lock.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.held.session.as_ref().map(|s| s.lease_id()).unwrap_or(0)
    }

    /// Not released, and the session is alive.
    #[getter]
    fn is_held(&self) -> bool {
        self.held.guard.is_held()
    }

    /// Resolves, with the reason, when the lock stops being ours (session lost, released).
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.held.clone();
        spawn_py(py, async move { FResult::Ok(held.guard.lost().await) })
    }

    /// Release (idempotent).
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.held.clone();
        spawn_py(py, async move { Ok(held.release().await?) })
    }

    /// Put `value` at `key` only while the lock is ours (`FencedError` otherwise).
    fn put<'py>(&self, py: Python<'py>, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
        fence_put(py, self.held.guard.fence().clone(), key, value)
    }

    /// Delete `key` only while the lock is ours.
    fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        fence_delete(py, self.held.guard.fence().clone(), key)
    }

    /// Apply `[("put", k, v), ("delete", k), ...]` atomically, only while the lock is ours.
    fn txn<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        fence_txn(py, self.held.guard.fence().clone(), ops)
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready_py(slf.py(), slf.into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.release(py)
    }

    fn __repr__(&self) -> String {
        format!("LockGuard(key={:?}, fencing_token={}, held={})", self.key(), self.fencing_token(), self.is_held())
    }
}


/// `client.lock(...)`.
pub fn make_lock(
    py: Python<'_>,
    client: Client,
    name: String,
    ttl: i64,
    timeout: Option<f64>,
    session: Option<PyRef<'_, crate::session::PySession>>,
) -> PyResult<PyLock> {
    let timeout = crate::convert::opt_seconds("timeout", timeout)?;
    PyLock::new(py, SessionSource::from_args(client, ttl, session)?, name, timeout)
}
