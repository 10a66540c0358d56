//! The read-write lock's Python face: `client.rwlock(name, ttl=, timeout=, session=)` /
//! `session.rwlock(name, timeout=)` -> `RwLock`; `await rw.read(timeout=)` / `write(timeout=)`
//! / `try_read()` / `try_write()` -> `LockGuard` (`async with await rw.read() as guard:`).

use std::sync::Arc;

use etcd_recipes::rwlock::{RwLock, Side};
use pyo3::prelude::*;

use crate::lock::PyLockGuard;
use crate::runtime::{spawn_py, InRt};

/// A distributed read-write lock (etcd Go `recipe.RWMutex` layout): readers share it,
/// a writer holds it alone, and a waiting writer goes before readers that come later.
#[pyclass(module = "etcd_recipes._native", name = "RwLock", frozen)]
pub struct PyRwLock {
    inner: RwLock,
}

impl PyRwLock {
    pub fn new(inner: RwLock) -> Self {
        PyRwLock { inner }
    }

    fn wait<'py>(&self, py: Python<'py>, side: Side, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (rw, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let g = match t {
                Some(t) => rw.acquire_within(side, Some(t)).await?,
                None if side == Side::Read => rw.read().await?,
                None => rw.write().await?,
            };
            Ok(PyLockGuard::new(Arc::new(InRt::new(g))))
        })
    }

    fn try_side<'py>(&self, py: Python<'py>, side: Side) -> PyResult<Bound<'py, PyAny>> {
        let rw = self.inner.clone();
        spawn_py(py, async move {
            let g = if side == Side::Read { rw.try_read().await? } else { rw.try_write().await? };
            Ok(PyLockGuard::new(Arc::new(InRt::new(g))))
        })
    }
}

#[pymethods]
impl PyRwLock {
    /// The lock name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Wait for a shared hold (behind every earlier writer), at most `timeout` seconds
    /// (default: the lock's own timeout); `LockTimeoutError` when it runs out.
    #[pyo3(signature = (*, timeout=None))]
    fn read<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        self.wait(py, Side::Read, timeout)
    }

    /// Wait for the exclusive hold (behind every earlier reader and writer), at most
    /// `timeout` seconds; `LockTimeoutError` when it runs out.
    #[pyo3(signature = (*, timeout=None))]
    fn write<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        self.wait(py, Side::Write, timeout)
    }

    /// A shared hold if no earlier writer is there; `LockTimeoutError` otherwise.
    fn try_read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.try_side(py, Side::Read)
    }

    /// The exclusive hold if nobody else is there; `LockTimeoutError` otherwise.
    fn try_write<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.try_side(py, Side::Write)
    }

    fn __repr__(&self) -> String {
        format!("RwLock(name={:?})", self.inner.name())
    }
}
