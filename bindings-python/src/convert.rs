//! Argument and result conversions shared by every class: bytes/str values,
//! seconds as floats, JSON values <-> Python objects.

#![allow(dead_code)] // some helpers are used only by recipe bindings

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// A value given as `bytes`, `bytearray`, `memoryview` or `str` (UTF-8 encoded).
pub struct Value(pub Vec<u8>);

impl<'a, 'py> FromPyObject<'a, 'py> for Value {
    type Error = PyErr;
    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = ob.cast::<PyString>() {
            return Ok(Value(s.to_cow()?.as_bytes().to_vec()));
        }
        if let Ok(b) = ob.cast::<PyBytes>() {
            return Ok(Value(b.as_bytes().to_vec()));
        }
        if let Ok(v) = ob.extract::<Vec<u8>>() {
            if !ob.is_instance_of::<PyList>() && !ob.is_instance_of::<PyTuple>() {
                return Ok(Value(v));
            }
        }
        Err(PyTypeError::new_err(format!(
            "value must be bytes or str, not {}",
            ob.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
        )))
    }
}

/// Seconds (int or float) -> Duration; `what` names the argument in errors.
pub fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if !s.is_finite() || s <= 0.0 {
        return Err(PyValueError::new_err(format!("{what} must be a positive number of seconds, got {s}")));
    }
    Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("{what} is too large: {s}")))
}

/// Like [`seconds`], but `None` stays `None`.
pub fn opt_seconds(what: &str, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| seconds(what, s)).transpose()
}

/// A JSON value as the Python object `json.loads` would give.
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(a) => {
            let items = a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        J::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// A Python object made of dict/list/tuple/str/int/float/bool/None -> JSON.
pub fn py_to_json(ob: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    use serde_json::Value as J;
    if ob.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = ob.cast::<PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if ob.is_instance_of::<PyInt>() {
        if let Ok(i) = ob.extract::<i64>() {
            return Ok(J::from(i));
        }
        if let Ok(u) = ob.extract::<u64>() {
            return Ok(J::from(u));
        }
        return Err(PyValueError::new_err("integer is too large for JSON"));
    }
    if let Ok(f) = ob.cast::<PyFloat>() {
        let v = f.value();
        return serde_json::Number::from_f64(v)
            .map(J::Number)
            .ok_or_else(|| PyValueError::new_err(format!("{v} cannot be represented in JSON")));
    }
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(J::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = ob.cast::<PyDict>() {
        let mut m = serde_json::Map::new();
        for (k, v) in d.iter() {
            let k = k
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("JSON object keys must be str"))?
                .to_cow()?
                .into_owned();
            m.insert(k, py_to_json(&v)?);
        }
        return Ok(J::Object(m));
    }
    if ob.is_instance_of::<PyList>() || ob.is_instance_of::<PyTuple>() {
        let mut a = Vec::new();
        for x in ob.try_iter()? {
            a.push(py_to_json(&x?)?);
        }
        return Ok(J::Array(a));
    }
    Err(PyTypeError::new_err(format!(
        "cannot encode {} as JSON (use dict, list, str, int, float, bool or None)",
        ob.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
    )))
}

/// Python bytes from a slice.
pub fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}
