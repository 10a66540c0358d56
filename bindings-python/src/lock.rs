//! The lock's Python face: `client.lock(name, ttl=, timeout=)` / `session.lock(name)`
//! -> `Lock`; `async with lock as guard`, `await lock.acquire()` / `try_acquire()` ->
//! `LockGuard`. Guarded writes (`put`, `delete`, `txn`) are shared with `Leadership`.

use std::sync::Arc;

use etcd_recipes::lock::{Lock, LockGuard};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::members::{class_methods, Entered};
use crate::runtime::{spawn_py, InRt, Watchers};

type Guard = Arc<InRt<LockGuard>>;

/// A distributed lock (etcd `concurrency.Mutex` layout). `async with lock as guard:`
/// acquires (waiting up to its `timeout`, forever if None) and releases on exit.
#[pyclass(module = "etcd_recipes._native", name = "Lock", frozen)]
pub struct PyLock {
    inner: Lock,
    /// Guards taken by `async with`, per asyncio task (a Lock object may be shared by tasks).
    entered: Entered<Guard>,
}

impl PyLock {
    pub fn new(inner: Lock) -> Self {
        PyLock { inner, entered: Entered::default() }
    }
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
        let lock = self.inner.clone();
        self.entered.enter(py, async move { Ok(Arc::new(InRt::new(lock.acquire().await?))) }, PyLockGuard::new)
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.exit(py, |g| async move { g.release().await })
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

class_methods! {
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

        /// Release: delete our key (and close the session made for this acquisition). Idempotent.
        fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let g = self.inner.clone();
            spawn_py(py, async move { Ok(g.release().await?) })
        }

        fn __repr__(&self) -> String {
            format!("LockGuard(key={:?}, fencing_token={}, held={})", self.key(), self.fencing_token(), self.is_held())
        }
    }
    /// Resolves when the lock stops being ours: with the reason when it was lost (its
    /// session was lost), with None when it ended normally (released, session closed).
    lost;
    /// Call `callback(reason)` on the running event loop if the lock is lost (not when
    /// it is released). Keeps nothing alive.
    on_lost;
    fenced("the lock is ours");
    gc(watchers);
    async_with(release);
}
