//! The semaphore's Python face: `client.semaphore(name, permits, ttl=, timeout=, session=)` /
//! `session.semaphore(name, permits, timeout=)` -> `Semaphore`; `async with sem as permit`,
//! `await sem.acquire(timeout=)` / `try_acquire()` -> `LockGuard` (the same guard as a lock's).

use std::sync::Arc;

use etcd_recipes::lock::LockGuard;
use etcd_recipes::semaphore::{Semaphore, MAX_PERMITS};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::lock::PyLockGuard;
use crate::members::Entered;
use crate::runtime::{spawn_py, InRt};

type Guard = Arc<InRt<LockGuard>>;

/// A permit count from Python: `1..=MAX_PERMITS`, else `InvalidArgumentError` (never
/// `OverflowError`).
pub fn permits(py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<u32> {
    match n.extract::<i64>() {
        Ok(n) if (1..=MAX_PERMITS as i64).contains(&n) => Ok(n as u32),
        _ => Err(crate::errors::invalid(py, format!("permits must be an int in 1..={MAX_PERMITS}, got {n}"))),
    }
}

/// A counting semaphore: at most `permits` holders of `name` at once, FIFO.
/// `async with sem as permit:` acquires (waiting up to its `timeout`) and releases on exit.
#[pyclass(module = "etcd_recipes._native", name = "Semaphore", frozen)]
pub struct PySemaphore {
    inner: Semaphore,
    /// Permits taken by `async with`, per asyncio task (a Semaphore object may be shared by tasks).
    entered: Entered<Guard>,
}

impl PySemaphore {
    pub fn new(inner: Semaphore) -> Self {
        PySemaphore { inner, entered: Entered::default() }
    }
}

#[pymethods]
impl PySemaphore {
    /// The semaphore name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// How many holders at most.
    #[getter]
    fn permits(&self) -> u32 {
        self.inner.permits()
    }

    /// Wait for a permit (FIFO), at most `timeout` seconds (default: the semaphore's own
    /// timeout); `LockTimeoutError` when it runs out. Cancelling the awaiting task
    /// withdraws from the queue (our key is deleted).
    #[pyo3(signature = (*, timeout=None))]
    fn acquire<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (sem, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let g = match t {
                Some(t) => sem.acquire_timeout(t).await?,
                None => sem.acquire().await?,
            };
            Ok(PyLockGuard::new(Arc::new(InRt::new(g))))
        })
    }

    /// Take a permit only if one is free now; `LockTimeoutError` otherwise.
    fn try_acquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sem = self.inner.clone();
        spawn_py(py, async move { Ok(PyLockGuard::new(Arc::new(InRt::new(sem.try_acquire().await?)))) })
    }

    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sem = self.inner.clone();
        self.entered.enter(py, async move { Ok(Arc::new(InRt::new(sem.acquire().await?))) }, PyLockGuard::new)
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.exit(py, |g| async move { g.release().await })
    }

    fn __repr__(&self) -> String {
        format!("Semaphore(name={:?}, permits={})", self.inner.name(), self.inner.permits())
    }
}
