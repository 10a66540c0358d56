//! The config view's Python face: `cfg = await client.config(key, prefix=False)`;
//! `cfg.get(key)` is a plain synchronous local read; `async for change in cfg.changes()`.
//!
//! Reads are served from a mirror: a Python `dict` of key -> `bytes` that this module keeps
//! equal to core's copy. Core stays the source of truth (it loads, watches, re-reads after
//! compaction, reconciles); its applied batches ([`ConfigView::batches`]) are written into the
//! dict by a feeder task, each batch in one native step under the GIL, so no Python thread
//! ever sees half of a batch (half of a multi-key transaction). Every read (`get`,
//! `get_string`, `get_json`, `has`, `keys`, `len`, `snapshot`, `revision`) reads that one
//! dict and the revision stored with it, so the view a Python program sees is consistent
//! and never goes backwards. `get` itself is a C-level function bound to the dict (see
//! [`mirror_get`]): a read costs about what `dict.get` costs, with no copy of the value.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::config::{ChangeFilter, ConfigBatch, ConfigBatches, ConfigChange, ConfigOptions, ConfigView};
use etcd_recipes::Client;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use tokio::sync::watch;

use crate::convert::{json_to_py, Bytes};
use crate::errors::{invalid, to_py};
use crate::members::class_methods;
use crate::runtime::{python_gate, ready_py, rt, spawn_py, InRt};
use crate::stream::async_iterator;

/// `client.config(...)`: load, then follow.
pub fn open(py: Python<'_>, client: Client, key: String, prefix: bool, every: Duration) -> PyResult<Bound<'_, PyAny>> {
    let opts = ConfigOptions::new().reconcile_interval(every);
    spawn_py(py, async move {
        let v = if prefix { ConfigView::prefix(&client, &key, opts).await? } else { ConfigView::key(&client, &key, opts).await? };
        // Subscribed before the view is handed out: the mirror starts from this copy and
        // receives every batch applied after it (core takes both under one lock).
        let (start, batches) = v.batches();
        Ok(Opened { view: InRt::new(v), key, prefix, start, batches })
    })
}

/// A loaded view on its way to Python: the mirror is built when it gets there (under the GIL).
pub struct Opened {
    view: InRt<ConfigView>,
    key: String,
    prefix: bool,
    start: etcd_recipes::config::ConfigStart,
    batches: ConfigBatches,
}

impl<'py> IntoPyObject<'py> for Opened {
    type Target = PyConfigView;
    type Output = Bound<'py, PyConfigView>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyConfigView>> {
        let Opened { view, key, prefix, start, batches } = self;
        let values = PyDict::new(py);
        for (k, v) in &start.values {
            values.set_item(k, PyBytes::new(py, v))?;
        }
        let (applied, _) = watch::channel(start.seq);
        let mirror = Arc::new(Mirror {
            values: values.clone().unbind(),
            revision: AtomicI64::new(start.revision),
            applied,
            stopped: AtomicBool::new(false),
        });
        let own = (!prefix).then(|| PyString::new(py, &key));
        let get = mirror_get_function(py, &values, own)?;
        let obj = Bound::new(py, PyConfigView { inner: view, key, prefix, mirror: mirror.clone() })?;
        // An instance attribute: found before the class's `get` (a method, which is a
        // non-data descriptor), so `view.get` is the C function, not a PyO3 method.
        obj.as_any().setattr("get", get)?;
        rt().spawn(feed(mirror, batches));
        Ok(obj)
    }
}

/// The Python side of the mirror.
struct Mirror {
    /// key (str) -> value (bytes): what every read returns.
    values: Py<PyDict>,
    /// The etcd revision `values` reflects. Written under the GIL together with `values`.
    revision: AtomicI64,
    /// The sequence number of the last batch in `values` (`u64::MAX` once no more come):
    /// a change is handed to Python only once its batch is here.
    applied: watch::Sender<u64>,
    /// Set by `close()` (under the GIL): no batch is applied after it.
    stopped: AtomicBool,
}

impl Mirror {
    /// Apply `batches`, in order, in one step: the GIL is held from the first write to the
    /// last (nothing here runs Python code or can let go of it: `str` keys and `bytes`
    /// values are neither hashed nor compared nor freed by Python code, and none of them
    /// is tracked by the garbage collector, so no allocation starts a collection).
    fn apply(&self, py: Python<'_>, batches: &[Arc<ConfigBatch>]) -> PyResult<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let d = self.values.bind(py);
        let mut last = *self.applied.borrow();
        for b in batches {
            if b.seq <= last && !b.reset {
                continue; // already in (cannot happen: core hands each batch once)
            }
            if b.reset {
                d.clear();
            }
            for (k, v) in &b.changes {
                match v {
                    Some(v) => d.set_item(k, PyBytes::new(py, v))?,
                    None => {
                        if d.contains(k)? {
                            d.del_item(k)?;
                        }
                    }
                }
            }
            self.revision.store(b.revision, Ordering::Release);
            last = b.seq;
        }
        self.applied.send_replace(last);
        Ok(())
    }

    /// No more batches: let go of every change waiting for one.
    fn end(&self) {
        self.applied.send_replace(u64::MAX);
    }
}

/// The feeder: core's batches into the dict, in order. Several batches that are ready at
/// once go in one step. Attaching may wait for the GIL, so it happens off the async
/// workers and with no core lock held (a Python thread holding the GIL may be calling into
/// core); after interpreter exit has begun ([`python_gate`]) nothing is applied any more.
async fn feed(mirror: Arc<Mirror>, mut batches: ConfigBatches) {
    while let Some(first) = batches.next().await {
        let mut ready = vec![first];
        while ready.len() < 1024 {
            match batches.try_next() {
                Some(b) => ready.push(b),
                None => break,
            }
        }
        let m = mirror.clone();
        let done = tokio::task::spawn_blocking(move || python_gate(|py| m.apply(py, &ready).is_ok())).await;
        if !matches!(done, Ok(Some(true))) {
            break;
        }
    }
    mirror.end();
}

// ------------------------------------------------------------------- get, the C function

/// `view.get(key=None, default=None)` as a C function with the vectorcall convention
/// (`METH_FASTCALL | METH_KEYWORDS`): its `self` is the tuple `(values, own key or None)`.
/// The usual call, `get(key)` or `get(key, default)` with a `str` key, is one dict lookup:
/// no argument parsing, no conversion, no copy (the `bytes` object in the mirror is
/// returned: `bytes` are immutable). Every other form goes to [`get_slow`]. A Python-level
/// wrapper or a PyO3 method costs about twice a `dict.get`; this costs about one.
///
/// `METH_FASTCALL` is in the stable ABI from 3.10, and CPython has had it, with this very
/// signature and flag value, since 3.7: the abi3 (3.9) wheel may use it.
unsafe extern "C" fn mirror_get(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if kwnames.is_null() && (nargs == 1 || nargs == 2) {
        let key = *args;
        if ffi::PyUnicode_CheckExact(key) != 0 {
            let values = ffi::PyTuple_GetItem(slf, 0); // borrowed
            if values.is_null() {
                return std::ptr::null_mut();
            }
            let v = ffi::PyDict_GetItemWithError(values, key); // borrowed
            if !v.is_null() {
                ffi::Py_IncRef(v);
                return v;
            }
            if !ffi::PyErr_Occurred().is_null() {
                return std::ptr::null_mut();
            }
            let d = if nargs == 2 { *args.add(1) } else { ffi::Py_None() };
            ffi::Py_IncRef(d);
            return d;
        }
    }
    // Nothing may unwind into CPython.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: CPython calls us attached, with `args` holding `nargs` positional
        // arguments followed by one per name in `kwnames`.
        let py = unsafe { Python::assume_attached() };
        let r = unsafe { get_slow(py, slf, args, nargs, kwnames) };
        match r {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    })) {
        Ok(p) => p,
        Err(_) => {
            PyRuntimeError::new_err("etcd_recipes: internal error in ConfigView.get").restore(unsafe { Python::assume_attached() });
            std::ptr::null_mut()
        }
    }
}

/// `get` with keywords, no key (the view's own key), a `str` subclass, or a bad argument:
/// the same answers and errors as the method of the class.
unsafe fn get_slow<'py>(
    py: Python<'py>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let this = Bound::from_borrowed_ptr(py, slf).cast_into::<PyTuple>()?;
    let values = this.get_item(0)?.cast_into::<PyDict>()?;
    let own = this.get_item(1)?;
    let arg = |i: ffi::Py_ssize_t| Bound::from_borrowed_ptr(py, *args.add(i as usize));
    if nargs > 2 {
        return Err(PyTypeError::new_err(format!("get() takes at most 2 arguments ({nargs} given)")));
    }
    let mut key = (nargs >= 1).then(|| arg(0));
    let mut default = (nargs >= 2).then(|| arg(1));
    if !kwnames.is_null() {
        let names = Bound::from_borrowed_ptr(py, kwnames).cast_into::<PyTuple>()?;
        for (i, name) in names.iter().enumerate() {
            let value = arg(nargs + i as ffi::Py_ssize_t);
            let slot = match name.extract::<String>()?.as_str() {
                "key" => &mut key,
                "default" => &mut default,
                other => return Err(PyTypeError::new_err(format!("get() got an unexpected keyword argument '{other}'"))),
            };
            if slot.is_some() {
                return Err(PyTypeError::new_err(format!("get() got multiple values for argument '{}'", name)));
            }
            *slot = Some(value);
        }
    }
    let key = match key.filter(|k| !k.is_none()) {
        Some(k) => {
            let Ok(s) = k.cast::<PyString>() else {
                let what = k.get_type().name()?;
                return Err(PyTypeError::new_err(format!("argument 'key': '{what}' object is not a str")));
            };
            PyString::new(py, &s.to_cow()?)
        }
        None if !own.is_none() => own.cast_into::<PyString>()?,
        None => return Err(invalid(py, "a prefix view needs the key to read")),
    };
    Ok(match values.get_item(key)? {
        Some(v) => v,
        None => default.unwrap_or_else(|| py.None().into_bound(py)),
    })
}

/// The `PyMethodDef` of [`mirror_get`] (static: CPython keeps a pointer to it).
struct GetDef(ffi::PyMethodDef);
// SAFETY: read-only after construction; CPython only reads it.
unsafe impl Sync for GetDef {}

type FastWithKeywords =
    unsafe extern "C" fn(*mut ffi::PyObject, *const *mut ffi::PyObject, ffi::Py_ssize_t, *mut ffi::PyObject) -> *mut ffi::PyObject;

static GET_DEF: GetDef = GetDef(ffi::PyMethodDef {
    ml_name: c"get".as_ptr(),
    // SAFETY: a function pointer of the same size; CPython calls it with the signature the
    // flags below select.
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionWithKeywords: unsafe { std::mem::transmute::<FastWithKeywords, ffi::PyCFunctionWithKeywords>(mirror_get) },
    },
    ml_flags: METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"get(key=None, default=None)\n--\n\nThe cached bytes of `key` (namespace-relative; default: the view's own key), or\n`default` (None) when the key is absent.".as_ptr(),
});

/// `METH_FASTCALL` (not exposed by PyO3 for abi3 below 3.10; see [`mirror_get`]).
const METH_FASTCALL: c_int = 0x0080;

/// The `get` of one view: [`mirror_get`] bound to `(values, own key or None)`.
fn mirror_get_function<'py>(py: Python<'py>, values: &Bound<'py, PyDict>, own: Option<Bound<'py, PyString>>) -> PyResult<Bound<'py, PyAny>> {
    let own = own.map_or_else(|| py.None().into_bound(py), Bound::into_any);
    let this = PyTuple::new(py, [values.clone().into_any(), own])?;
    // SAFETY: GET_DEF is static; `this` is a valid object (the function takes its own reference).
    unsafe {
        let f = ffi::PyCFunction_NewEx(&GET_DEF.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef, this.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, f)
    }
}

// ------------------------------------------------------------------------- the view class

/// A local copy of one key or a prefix, kept in sync by a watch. Reads are synchronous.
#[pyclass(module = "etcd_recipes._native", name = "ConfigView", frozen, dict)]
pub struct PyConfigView {
    inner: InRt<ConfigView>,
    key: String,
    prefix: bool,
    mirror: Arc<Mirror>,
}

impl PyConfigView {
    fn key_or_own<'a>(&'a self, py: Python<'_>, key: Option<&'a str>) -> PyResult<&'a str> {
        match key {
            Some(k) => Ok(k),
            None if !self.prefix => Ok(&self.key),
            None => Err(invalid(py, "a prefix view needs the key to read")),
        }
    }

    /// The mirror's bytes of `key`, if present.
    fn value<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.mirror.values.bind(py).get_item(key)? {
            Some(v) => Ok(Some(v.cast_into::<PyBytes>()?)),
            None => Ok(None),
        }
    }

    fn stop(&self) {
        // Under the GIL (every caller is a method): the mirror stays as it is from here on.
        self.mirror.stopped.store(true, Ordering::Release);
        self.mirror.end();
        self.inner.close();
    }

    /// Leaving `async with`: `close()`, as an awaitable.
    fn close_awaitable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stop();
        ready_py(py, py.None().into_bound(py))
    }
}

fn decode_error(py: Python<'_>, key: &str, message: String) -> PyErr {
    to_py(py, &etcd_recipes::Error::Decode { key: key.to_string(), message })
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
        /// `default` (None) when the key is absent. (Each view's `get` is an instance
        /// attribute, a C function over the same mirror; this method is what the class has.)
        #[pyo3(signature = (key=None, default=None))]
        fn get<'py>(&self, py: Python<'py>, key: Option<&str>, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
            match self.value(py, self.key_or_own(py, key)?)? {
                Some(v) => Ok(v.into_any()),
                None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
            }
        }
        /// The cached value as text, or `default` (None) when absent; `DecodeError` if not UTF-8.
        #[pyo3(signature = (key=None, default=None))]
        fn get_string<'py>(&self, py: Python<'py>, key: Option<&str>, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
            let key = self.key_or_own(py, key)?;
            match self.value(py, key)? {
                Some(v) => match std::str::from_utf8(v.as_bytes()) {
                    Ok(s) => Ok(PyString::new(py, s).into_any()),
                    Err(e) => Err(decode_error(py, key, format!("not UTF-8: {e}"))),
                },
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
            let Some(bytes) = self.value(py, key)? else {
                return Ok(default.unwrap_or_else(|| py.None().into_bound(py)));
            };
            let v: serde_json::Value =
                serde_json::from_slice(bytes.as_bytes()).map_err(|e| decode_error(py, key, format!("invalid JSON: {e}")))?;
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
                let e = decode_error(py, key, format!("{name} refused it: {first_line}"));
                e.set_cause(py, Some(cause));
                e
            })
        }
        /// True when `key` has a value (also `key in view`).
        fn has(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
            self.mirror.values.bind(py).contains(key)
        }
        fn __contains__(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
            self.mirror.values.bind(py).contains(key)
        }
        /// Every cached key, sorted.
        fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
            let mut keys: Vec<String> = self.mirror.values.bind(py).keys().iter().map(|k| k.extract::<String>()).collect::<PyResult<_>>()?;
            keys.sort();
            Ok(keys)
        }
        /// How many keys the view holds (also `len(view)`).
        #[getter]
        fn size(&self, py: Python<'_>) -> usize {
            self.mirror.values.bind(py).len()
        }
        fn __len__(&self, py: Python<'_>) -> usize {
            self.mirror.values.bind(py).len()
        }
        /// A copy of every cached key and value with the revision they reflect, read at once:
        /// a `dict` of key -> bytes with a `revision` attribute.
        fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            // Copied and read in one native step (no Python code runs in between, so no
            // batch can land between the values and the revision); sorted, as core's is.
            let revision = self.mirror.revision.load(Ordering::Acquire);
            let mut items: Vec<(String, Bound<'py, PyAny>)> = self
                .mirror
                .values
                .bind(py)
                .iter()
                .map(|(k, v)| Ok((k.extract::<String>()?, v)))
                .collect::<PyResult<_>>()?;
            items.sort_by(|a, b| a.0.cmp(&b.0));
            let d = PyDict::new(py);
            for (k, v) in items {
                d.set_item(k, v)?;
            }
            py.import("etcd_recipes._config")?.getattr("ConfigSnapshot")?.call1((d, revision))
        }
        /// The etcd revision the copy reflects.
        #[getter]
        fn revision(&self) -> i64 {
            self.mirror.revision.load(Ordering::Acquire)
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
            Ok(PyConfigChanges::new(self.inner.after_applied(self.mirror.applied.subscribe(), self.inner.changes_matching(filter))))
        }
        fn __aiter__(&self) -> PyConfigChanges {
            let _g = rt().enter();
            PyConfigChanges::new(self.inner.after_applied(self.mirror.applied.subscribe(), self.inner.changes()))
        }
        /// Stop watching (cached values stay readable; change iterators end).
        fn close(&self) {
            self.stop();
        }
        fn __repr__(&self) -> String {
            format!("ConfigView(key={:?}, prefix={}, revision={})", self.key, self.prefix, self.mirror.revision.load(Ordering::Acquire))
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
