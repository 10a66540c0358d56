//! The atomic counter's Python face: `client.counter(key)` -> `Counter` with `get`, `add`,
//! `compare_and_set` and `set`.

use etcd_recipes::counter::Counter;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::errors::invalid;
use crate::runtime::spawn_py;

/// A Python int that fits a signed 64-bit integer (`InvalidArgumentError` otherwise).
fn int64(py: Python<'_>, what: &str, ob: &Bound<'_, PyAny>) -> PyResult<i64> {
    if ob.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!("{what} must be an int, not bool")));
    }
    let int = ob.cast::<PyInt>().map_err(|_| PyTypeError::new_err(format!("{what} must be an int")))?;
    int.extract::<i64>().map_err(|_| invalid(py, format!("{what} {} does not fit a 64-bit signed integer", *int)))
}

/// An atomic counter: one key holding a decimal integer, changed by compare-and-swap.
#[pyclass(module = "etcd_recipes._native", name = "Counter", frozen)]
pub struct PyCounter {
    inner: Counter,
}

impl PyCounter {
    pub fn new(inner: Counter) -> Self {
        PyCounter { inner }
    }
}

#[pymethods]
impl PyCounter {
    /// The counter's key (namespace-relative).
    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    /// The current value (0 when the key does not exist; `DecodeError` if it is not an integer).
    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        spawn_py(py, async move { Ok(c.get().await?) })
    }

    /// Add `delta` (default 1; negative subtracts) and return the new value. Conflicts are
    /// retried; `UnknownOutcomeError` when the answer was lost (read before adding again).
    #[pyo3(signature = (delta=None))]
    fn add<'py>(&self, py: Python<'py>, delta: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        let delta = delta.map(|d| int64(py, "delta", d)).transpose()?.unwrap_or(1);
        let c = self.inner.clone();
        spawn_py(py, async move { Ok(c.add(delta).await?) })
    }

    /// Set the value to `new` only if it is `expected` now (a missing key counts as 0).
    fn compare_and_set<'py>(&self, py: Python<'py>, expected: &Bound<'py, PyAny>, new: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (expected, new) = (int64(py, "expected", expected)?, int64(py, "new", new)?);
        let c = self.inner.clone();
        spawn_py(py, async move { Ok(c.compare_and_set(expected, new).await?) })
    }

    /// Set the value, whatever it was; returns the revision of the write.
    fn set<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let value = int64(py, "value", value)?;
        let c = self.inner.clone();
        spawn_py(py, async move { Ok(c.set(value).await?) })
    }

    fn __repr__(&self) -> String {
        format!("Counter(key={:?})", self.inner.key())
    }
}
