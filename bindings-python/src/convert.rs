//! Argument and result conversions shared by every class: bytes/str values, TTLs,
//! seconds as floats, JSON values <-> Python objects.

use std::time::Duration;

use etcd_recipes::session::{check_ttl, MAX_TTL_SECS};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{invalid, CoreResultExt};

fn type_name(ob: &Bound<'_, PyAny>) -> String {
    ob.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

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
        if !ob.is_instance_of::<PyList>() && !ob.is_instance_of::<PyTuple>() {
            if let Ok(v) = ob.extract::<Vec<u8>>() {
                return Ok(Value(v));
            }
        }
        Err(PyTypeError::new_err(format!("value must be bytes or str, not {}", type_name(&ob))))
    }
}

/// `bytes` as a result type (a `Vec<u8>` would become `list[int]`).
pub struct Bytes(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// A lease TTL in whole seconds: any Python `int`. Out of range (below 1, above etcd's
/// maximum, even beyond 64 bits) is `InvalidArgumentError`, never `OverflowError`.
#[derive(Clone, Copy)]
pub struct Ttl(pub i64);

impl<'a, 'py> FromPyObject<'a, 'py> for Ttl {
    type Error = PyErr;
    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = ob.py();
        let int = ob.cast::<PyInt>().map_err(|_| PyTypeError::new_err(format!("ttl must be an int, not {}", type_name(&ob))))?;
        match int.extract::<i64>() {
            Ok(secs) => check_ttl(secs).map(|_| Ttl(secs)).py_err(py),
            // Beyond 64 bits.
            Err(_) if int.lt(0)? => Err(invalid(py, format!("ttl must be at least 1 second, got {}", *int))),
            Err(_) => Err(invalid(py, format!("ttl {} s is above etcd's maximum of {MAX_TTL_SECS} s", *int))),
        }
    }
}

/// Seconds -> Duration: `InvalidArgumentError` for NaN, infinities, negatives and (unless
/// `zero_ok`) zero.
pub fn seconds(py: Python<'_>, what: &str, s: f64, zero_ok: bool) -> PyResult<Duration> {
    if !s.is_finite() || s < 0.0 || (s == 0.0 && !zero_ok) {
        let want = if zero_ok { "a non-negative" } else { "a positive" };
        return Err(invalid(py, format!("{what} must be {want} number of seconds, got {s}")));
    }
    Duration::try_from_secs_f64(s).map_err(|_| invalid(py, format!("{what} is too large: {s} s")))
}

/// A wait bound: `None` waits as long as it takes; 0 gives up unless it is at once.
pub fn timeout(py: Python<'_>, s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| seconds(py, "timeout", s, true)).transpose()
}

/// A JSON value as the Python object `json.loads` would give.
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(a) => PyList::new(py, a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?.into_any(),
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
        return match (ob.extract::<i64>(), ob.extract::<u64>()) {
            (Ok(i), _) => Ok(J::from(i)),
            (_, Ok(u)) => Ok(J::from(u)),
            _ => Err(PyValueError::new_err("integer is too large for JSON")),
        };
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
            let k = k.cast::<PyString>().map_err(|_| PyTypeError::new_err("JSON object keys must be str"))?;
            m.insert(k.to_cow()?.into_owned(), py_to_json(&v)?);
        }
        return Ok(J::Object(m));
    }
    if ob.is_instance_of::<PyList>() || ob.is_instance_of::<PyTuple>() {
        return ob.try_iter()?.map(|x| py_to_json(&x?)).collect::<PyResult<Vec<_>>>().map(J::Array);
    }
    Err(PyTypeError::new_err(format!(
        "cannot encode {} as JSON (use dict, list, str, int, float, bool or None)",
        type_name(ob)
    )))
}
