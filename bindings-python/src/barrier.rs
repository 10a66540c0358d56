//! The barriers' Python face: `client.barrier(name, timeout=)` -> `Barrier` (`hold`,
//! `release`, `is_held`, `wait`); `client.double_barrier(name, count, ttl=, timeout=,
//! session=)` -> `DoubleBarrier` (`enter`, `leave`, `async with`, `lost`, `on_lost`).

use std::sync::Arc;

use etcd_recipes::barrier::{Barrier, DoubleBarrier};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyTuple};

use crate::errors::invalid;
use crate::members::class_methods;
use crate::runtime::{spawn_py, InRt, Watchers};

/// A party count from Python: an int of at least 1 (`InvalidArgumentError` otherwise).
pub fn count(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<usize> {
    if ob.is_instance_of::<PyBool>() || !ob.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err("count must be an int"));
    }
    match ob.extract::<i64>() {
        Ok(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as usize),
        _ => Err(invalid(py, format!("count must be between 1 and {}, got {ob}", u32::MAX))),
    }
}

/// One key that blocks `wait()` while it exists (etcd Go `recipe.Barrier`).
#[pyclass(module = "etcd_recipes._native", name = "Barrier", frozen)]
pub struct PyBarrier {
    inner: Barrier,
}

impl PyBarrier {
    pub fn new(inner: Barrier) -> Self {
        PyBarrier { inner }
    }
}

#[pymethods]
impl PyBarrier {
    /// The barrier name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The full etcd key.
    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    /// Create the barrier key so that waiters block. True if this call created it, False
    /// if it was held already.
    fn hold<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.inner.clone();
        spawn_py(py, async move { Ok(b.hold().await?) })
    }

    /// Delete the barrier key: every waiter returns. True if it was held.
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.inner.clone();
        spawn_py(py, async move { Ok(b.release().await?) })
    }

    /// Is the barrier key there now?
    fn is_held<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = self.inner.clone();
        spawn_py(py, async move { Ok(b.is_held().await?) })
    }

    /// Return when the barrier is not held (at once if it is not), waiting at most
    /// `timeout` seconds (default: the barrier's own timeout); `LockTimeoutError` then.
    #[pyo3(signature = (*, timeout=None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (b, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            match t {
                Some(t) => b.wait_within(Some(t)).await?,
                None => b.wait().await?,
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("Barrier(name={:?})", self.inner.name())
    }
}

/// `count` parties enter together and leave together (etcd Go `recipe.DoubleBarrier`).
/// `async with barrier:` enters, and leaves on exit.
#[pyclass(module = "etcd_recipes._native", name = "DoubleBarrier", frozen)]
pub struct PyDoubleBarrier {
    inner: Arc<InRt<DoubleBarrier>>,
    watchers: Watchers,
}

impl PyDoubleBarrier {
    pub fn new(inner: DoubleBarrier) -> Self {
        PyDoubleBarrier { inner: Arc::new(InRt::new(inner)), watchers: Watchers::default() }
    }
}

class_methods! {
    impl PyDoubleBarrier {
        /// The barrier name (namespace-relative).
        #[getter]
        fn name(&self) -> &str {
            self.inner.name()
        }

        /// How many parties the barrier waits for.
        #[getter]
        fn count(&self) -> usize {
            self.inner.count()
        }

        /// Wait until `count` parties have entered, at most `timeout` seconds (default: the
        /// barrier's own timeout); `LockTimeoutError` then, or at once when the barrier is
        /// full. Cancelling the awaiting task withdraws (our key is deleted).
        #[pyo3(signature = (*, timeout=None))]
        fn enter<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
            let (b, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
            spawn_py(py, async move {
                match t {
                    Some(t) => b.enter_within(Some(t)).await?,
                    None => b.enter().await?,
                }
                Ok(())
            })
        }

        /// Wait until every party has left, at most `timeout` seconds (default: the
        /// barrier's own timeout); `LockTimeoutError` then (we are out all the same).
        #[pyo3(signature = (*, timeout=None))]
        fn leave<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
            let (b, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
            spawn_py(py, async move {
                match t {
                    Some(t) => b.leave_within(Some(t)).await?,
                    None => b.leave().await?,
                }
                Ok(())
            })
        }

        fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
            let py = slf.py();
            let b = slf.get().inner.clone();
            let me = slf.unbind();
            spawn_py(py, async move {
                b.enter().await?;
                Ok(me)
            })
        }

        #[pyo3(signature = (*_exc))]
        fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
            let b = self.inner.clone();
            spawn_py(py, async move {
                b.leave().await?;
                Ok(false)
            })
        }

        fn __repr__(&self) -> String {
            format!("DoubleBarrier(name={:?}, count={})", self.inner.name(), self.inner.count())
        }
    }
    /// Resolves when this party stops being in the barrier: with the reason when its
    /// session was lost while entered, with None when it left (or is not entered).
    lost;
    /// Call `callback(reason)` on the running event loop if this party's session is lost
    /// while entered (register after `enter`). Keeps nothing alive.
    on_lost;
    gc(watchers);
}
