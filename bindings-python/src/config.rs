//! The config view's Python face: `cfg = await client.config(key, prefix=False)`;
//! `cfg.get(key)` is a plain synchronous local read; `async for change in cfg.changes()`.

use std::time::Duration;

use etcd_recipes::config::{ChangeFilter, ConfigChange, ConfigOptions, ConfigView};
use etcd_recipes::Client;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::{json_to_py, Bytes};
use crate::errors::{invalid, to_py, CoreResultExt};
use crate::members::class_methods;
use crate::runtime::{ready_py, rt, spawn_py, InRt};
use crate::stream::async_iterator;

/// `client.config(...)`: load, then follow.
pub fn open(py: Python<'_>, client: Client, key: String, prefix: bool, every: Duration) -> PyResult<Bound<'_, PyAny>> {
    let opts = ConfigOptions::new().reconcile_interval(every);
    spawn_py(py, async move {
        let v = if prefix { ConfigView::prefix(&client, &key, opts).await? } else { ConfigView::key(&client, &key, opts).await? };
        Ok(PyConfigView { inner: InRt::new(v), key, prefix })
    })
}

/// A local copy of one key or a prefix, kept in sync by a watch. Reads are synchronous.
#[pyclass(module = "etcd_recipes._native", name = "ConfigView", frozen)]
pub struct PyConfigView {
    inner: InRt<ConfigView>,
    key: String,
    prefix: bool,
}

impl PyConfigView {
    fn key_or_own<'a>(&'a self, py: Python<'_>, key: Option<&'a str>) -> PyResult<&'a str> {
        match key {
            Some(k) => Ok(k),
            None if !self.prefix => Ok(&self.key),
            None => Err(invalid(py, "a prefix view needs the key to read")),
        }
    }

    /// Leaving `async with`: `close()`, as an awaitable.
    fn close_awaitable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.close();
        ready_py(py, py.None().into_bound(py))
    }
}

class_methods! {
    impl PyConfigView {
        /// The key or prefix this view follows.
        #[getter]
        fn key(&self) -> &str {
            &self.key
        }
        /// True for a prefix view.
        #[getter]
        fn is_prefix(&self) -> bool {
            self.prefix
        }
        /// The cached bytes of `key` (namespace-relative; default: the view's own key), or
        /// `default` (None) when the key is absent.
        #[pyo3(signature = (key=None, default=None))]
        fn get<'py>(&self, py: Python<'py>, key: Option<&str>, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
            match self.inner.get(self.key_or_own(py, key)?) {
                Some(v) => Ok(PyBytes::new(py, &v).into_any()),
                None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
            }
        }
        /// The cached value as text, or `default` (None) when absent; `DecodeError` if not UTF-8.
        #[pyo3(signature = (key=None, default=None))]
        fn get_string<'py>(&self, py: Python<'py>, key: Option<&str>, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
            match self.inner.get_string(self.key_or_own(py, key)?).py_err(py)? {
                Some(s) => Ok(s.into_pyobject(py)?.into_any()),
                None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
            }
        }
        /// The cached value decoded from JSON, or `default` (None) when the key is absent.
        /// `decode` (optional) turns the JSON value into your type: a pydantic model class
        /// (its `model_validate` is used), a dataclass or any callable; when it raises, or the
        /// value is not JSON, `DecodeError` names the key (the decoder's exception is its
        /// `__cause__`).
        #[pyo3(signature = (key=None, *, decode=None, default=None))]
        fn get_json<'py>(
            &self,
            py: Python<'py>,
            key: Option<&str>,
            decode: Option<Bound<'py, PyAny>>,
            default: Option<Bound<'py, PyAny>>,
        ) -> PyResult<Bound<'py, PyAny>> {
            let key = self.key_or_own(py, key)?;
            let Some(v) = self.inner.get_json_value(key).py_err(py)? else {
                return Ok(default.unwrap_or_else(|| py.None().into_bound(py)));
            };
            let value = json_to_py(py, &v)?;
            let Some(decode) = decode else { return Ok(value) };
            if !decode.is_callable() {
                return Err(invalid(py, "decode must be callable (a pydantic model, a dataclass, a function)"));
            }
            let call = match decode.getattr("model_validate") {
                Ok(validate) if validate.is_callable() => validate.call1((value,)),
                _ => decode.call1((value,)),
            };
            call.map_err(|cause| {
                let name = decode
                    .getattr("__qualname__")
                    .and_then(|n| n.extract::<String>())
                    .unwrap_or_else(|_| "decode".to_string());
                let first_line = cause.value(py).to_string().lines().next().unwrap_or("").to_string();
                let e = to_py(
                    py,
                    &etcd_recipes::Error::Decode { key: key.to_string(), message: format!("{name} refused it: {first_line}") },
                );
                e.set_cause(py, Some(cause));
                e
            })
        }
        /// True when `key` has a value (also `key in view`).
        fn has(&self, key: &str) -> bool {
            self.inner.has(key)
        }
        fn __contains__(&self, key: &str) -> bool {
            self.inner.has(key)
        }
        /// Every cached key, sorted.
        fn keys(&self) -> Vec<String> {
            self.inner.keys()
        }
        /// How many keys the view holds (also `len(view)`).
        #[getter]
        fn size(&self) -> usize {
            self.inner.len()
        }
        fn __len__(&self) -> usize {
            self.inner.len()
        }
        /// A copy of every cached key and value with the revision they reflect, read at once:
        /// a `dict` of key -> bytes with a `revision` attribute.
        fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let snap = self.inner.snapshot();
            let d = PyDict::new(py);
            for (k, v) in snap.values {
                d.set_item(k, PyBytes::new(py, &v))?;
            }
            py.import("etcd_recipes._config")?.getattr("ConfigSnapshot")?.call1((d, snap.revision))
        }
        /// The etcd revision the copy reflects.
        #[getter]
        fn revision(&self) -> i64 {
            self.inner.revision()
        }
        /// `async for change in cfg.changes()`: every change from now on (ends on close());
        /// `key=` for the changes of one key, `prefix=` for the keys under a prefix.
        #[pyo3(signature = (key=None, *, prefix=None))]
        fn changes(&self, py: Python<'_>, key: Option<String>, prefix: Option<String>) -> PyResult<PyConfigChanges> {
            let filter = match (key, prefix) {
                (None, None) => ChangeFilter::All,
                (Some(k), None) => ChangeFilter::Key(k),
                (None, Some(p)) => ChangeFilter::Prefix(p),
                (Some(_), Some(_)) => return Err(invalid(py, "changes(): give key= or prefix=, not both")),
            };
            let _g = rt().enter();
            Ok(PyConfigChanges::new(self.inner.changes_matching(filter)))
        }
        fn __aiter__(&self) -> PyConfigChanges {
            let _g = rt().enter();
            PyConfigChanges::new(self.inner.changes())
        }
        /// Stop watching (cached values stay readable; change iterators end).
        fn close(&self) {
            self.inner.close();
        }
        fn __repr__(&self) -> String {
            format!("ConfigView(key={:?}, prefix={}, revision={})", self.key, self.prefix, self.inner.revision())
        }
    }
    async_with(close_awaitable);
}

/// One change: `key`, `old`, `new` (None = deleted), `revision`, `deleted`.
#[pyclass(module = "etcd_recipes._native", name = "ConfigChange", frozen)]
pub struct PyConfigChange {
    c: ConfigChange,
}

#[pymethods]
impl PyConfigChange {
    /// The key that changed (namespace-relative).
    #[getter]
    fn key(&self) -> &str {
        &self.c.key
    }
    /// The value before the change, or None if the key did not exist.
    #[getter]
    fn old(&self) -> Option<Bytes> {
        self.c.old.clone().map(Bytes)
    }
    /// The value after the change, or None if the key was deleted.
    #[getter(new)]
    fn new_value(&self) -> Option<Bytes> {
        self.c.new.clone().map(Bytes)
    }
    /// The etcd revision of the change.
    #[getter]
    fn revision(&self) -> i64 {
        self.c.revision
    }
    /// True when the key was deleted.
    #[getter]
    fn deleted(&self) -> bool {
        self.c.new.is_none()
    }
    fn __repr__(&self) -> String {
        format!("ConfigChange(key={:?}, revision={}, deleted={})", self.c.key, self.c.revision, self.deleted())
    }
}

async_iterator! {
    /// `async for change in cfg.changes()`.
    PyConfigChanges("ConfigChanges", etcd_recipes::Result<ConfigChange>) => |item| Ok(PyConfigChange { c: item? })
}
