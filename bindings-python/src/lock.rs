//! The lock's Python face: `client.lock(name, ttl=, timeout=)` / `session.lock(name)`
//! -> `Lock`; `async with lock as guard`, `await lock.acquire()` / `try_acquire()` ->
//! `LockGuard`. Guarded writes (`put`, `delete`, `txn`) are shared with `Leadership`.

use std::sync::{Arc, Mutex};

use etcd_recipes::lock::{Lock, LockGuard};
use etcd_recipes::{Fence, FencedOp};
use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use pyo3::types::PyTuple;

use crate::convert::Value;
use crate::errors::FResult;
use crate::runtime::{ready_py, spawn_py, InRt, Watchers};

/// Guarded-transaction operations from Python: `("put", key, value)` / `("delete", key)`.
fn fenced_ops(ops: &Bound<'_, PyAny>) -> PyResult<Vec<FencedOp>> {
    let bad = || PyTypeError::new_err("ops must be a list of (\"put\", key, value) or (\"delete\", key) tuples");
    let mut out = Vec::new();
    for op in ops.try_iter().map_err(|_| bad())? {
        let op = op?;
        let t = op.cast::<PyTuple>().map_err(|_| bad())?;
        let verb: String = t.get_item(0).map_err(|_| bad())?.extract().map_err(|_| bad())?;
        match (verb.as_str(), t.len()) {
            ("put", 3) => out.push(FencedOp::put(t.get_item(1)?.extract::<String>()?, t.get_item(2)?.extract::<Value>()?.0)),
            ("delete", 2) => out.push(FencedOp::delete(t.get_item(1)?.extract::<String>()?)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Guarded writes, shared by `LockGuard` and `Leadership`.
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

type Guard = Arc<InRt<LockGuard>>;

/// A distributed lock (etcd `concurrency.Mutex` layout). `async with lock as guard:`
/// acquires (waiting up to its `timeout`, forever if None) and releases on exit.
#[pyclass(module = "etcd_recipes._native", name = "Lock", frozen)]
pub struct PyLock {
    inner: Lock,
    /// Guards taken by `async with`, per asyncio task (a Lock object may be shared by tasks).
    entered: Arc<Mutex<Vec<(usize, Guard)>>>,
}

impl PyLock {
    pub fn new(inner: Lock) -> Self {
        PyLock { inner, entered: Arc::default() }
    }
}

fn current_task(py: Python<'_>) -> PyResult<usize> {
    Ok(py.import("asyncio")?.call_method0("current_task")?.as_ptr() as usize)
}

#[pymethods]
impl PyLock {
    /// The lock name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Wait for the lock (FIFO), at most `timeout` seconds (default: the lock's own
    /// timeout); `LockTimeoutError` when it runs out. Cancelling the awaiting task
    /// withdraws from the queue (our key is deleted).
    #[pyo3(signature = (*, timeout=None))]
    fn acquire<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (lock, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let g = match t {
                Some(t) => lock.acquire_timeout(t).await?,
                None => lock.acquire().await?,
            };
            Ok(PyLockGuard::new(Arc::new(InRt::new(g))))
        })
    }

    /// Take the lock only if it is free now; `LockTimeoutError` otherwise.
    fn try_acquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lock = self.inner.clone();
        spawn_py(py, async move { Ok(PyLockGuard::new(Arc::new(InRt::new(lock.try_acquire().await?)))) })
    }

    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (task, lock, entered) = (current_task(py)?, self.inner.clone(), self.entered.clone());
        spawn_py(py, async move {
            let g: Guard = Arc::new(InRt::new(lock.acquire().await?));
            entered.lock().unwrap_or_else(|p| p.into_inner()).push((task, g.clone()));
            Ok(PyLockGuard::new(g))
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
            if let Some(g) = held {
                g.release().await?;
            }
            FResult::Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("Lock(name={:?})", self.inner.name())
    }
}

/// Proof of holding a lock: its key, its fencing token, guarded writes.
/// Released by `release()`, by leaving `async with`, or when garbage-collected.
#[pyclass(module = "etcd_recipes._native", name = "LockGuard", frozen)]
pub struct PyLockGuard {
    inner: Guard,
    watchers: Watchers,
}

impl PyLockGuard {
    pub(crate) fn new(inner: Guard) -> Self {
        PyLockGuard { inner, watchers: Watchers::default() }
    }
}

#[pymethods]
impl PyLockGuard {
    /// The full etcd key of our lock entry (`<namespace><name>/<lease hex>`).
    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    /// The lock name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The lease behind the lock.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.inner.lease_id()
    }

    /// The create revision of our key: strictly increases from holder to holder.
    #[getter]
    fn fencing_token(&self) -> i64 {
        self.inner.fencing_token()
    }

    /// Not released, and the session is alive.
    #[getter]
    fn is_held(&self) -> bool {
        self.inner.is_held()
    }

    /// Resolves when the lock stops being ours: with the reason when it was lost (its
    /// session was lost), with None when it ended normally (released, session closed).
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let g = self.inner.clone();
        spawn_py(py, async move { FResult::Ok(g.lost().await) })
    }

    /// Call `callback(reason)` on the running event loop if the lock is lost (not when
    /// it is released). Keeps nothing alive.
    fn on_lost(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        let g = self.inner.clone();
        self.watchers.on_lost(py, callback, async move { g.lost().await })
    }

    /// Release: delete our key (and close the session made for this acquisition). Idempotent.
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let g = self.inner.clone();
        spawn_py(py, async move { Ok(g.release().await?) })
    }

    /// Put `value` at `key` only while the lock is ours (`FencedError` otherwise).
    fn put<'py>(&self, py: Python<'py>, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
        fence_put(py, self.inner.fence().clone(), key, value)
    }

    /// Delete `key` only while the lock is ours.
    fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        fence_delete(py, self.inner.fence().clone(), key)
    }

    /// Apply `[("put", k, v), ("delete", k), ...]` atomically, only while the lock is ours.
    fn txn<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        fence_txn(py, self.inner.fence().clone(), ops)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.watchers.traverse(&visit)
    }

    fn __clear__(&self) {
        self.watchers.clear()
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
