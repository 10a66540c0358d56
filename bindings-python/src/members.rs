//! What several classes share. PyO3 takes a single `#[pymethods]` block per class, so a
//! class with shared members writes its block with [`class_methods!`]: its own methods,
//! then the shared members it has, each written once here. And [`Entered`]: what
//! `async with` remembers from `__aenter__` to `__aexit__`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::errors::FResult;
use crate::runtime::spawn_py;

/// `#[pymethods] impl Class { own methods }`, followed by any of these, in this order:
/// - `lost;` and `on_lost;`, each under its doc comment: `lost()` resolves when `self.inner`
///   ends (with the reason of a loss, None at a normal end); `on_lost(callback)` calls
///   `callback(reason)` on a loss, through `self.watchers`;
/// - `fenced("while ...")`: `put`, `delete` and `txn` through `self.inner.fence()`;
/// - `gc(watchers)`: `__traverse__` and `__clear__` over the callbacks in `self.watchers`;
/// - `async_with(end)`: `async with obj as x` gives `obj`; leaving the block awaits `self.end()`.
macro_rules! class_methods {
    (
        impl $class:ident { $($own:tt)* }
        $( $(#[$lost:meta])+ lost; $(#[$on_lost:meta])+ on_lost; )?
        $( fenced($while:literal); )?
        $( gc($watchers:ident); )?
        $( async_with($end:ident); )?
    ) => {
        #[pyo3::pymethods]
        impl $class {
            $($own)*
            $(
                $(#[$lost])+
                fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                    let held = self.inner.clone();
                    $crate::runtime::spawn_py(py, async move { $crate::errors::FResult::Ok(held.lost().await) })
                }
                $(#[$on_lost])+
                fn on_lost(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
                    let held = self.inner.clone();
                    self.watchers.on_lost(py, callback, async move { held.lost().await })
                }
            )?
            $(
                #[doc = concat!("Put `value` at `key` only while ", $while, " (`FencedError` otherwise).")]
                fn put<'py>(&self, py: Python<'py>, key: String, value: $crate::convert::Value) -> PyResult<Bound<'py, PyAny>> {
                    $crate::fenced::put(py, self.inner.fence(), key, value)
                }
                #[doc = concat!("Delete `key` only while ", $while, ".")]
                fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
                    $crate::fenced::delete(py, self.inner.fence(), key)
                }
                #[doc = concat!("Apply `[(\"put\", k, v), (\"delete\", k), ...]` atomically, only while ", $while, ".")]
                fn txn<'py>(&self, py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
                    $crate::fenced::txn(py, self.inner.fence(), ops)
                }
            )?
            $(
                fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
                    self.$watchers.traverse(&visit)
                }
                fn __clear__(&self) {
                    self.$watchers.clear()
                }
            )?
            $(
                fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                    $crate::runtime::ready_py(slf.py(), slf.into_any())
                }
                #[pyo3(signature = (*_exc))]
                fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, pyo3::types::PyTuple>) -> PyResult<Bound<'py, PyAny>> {
                    self.$end(py)
                }
            )?
        }
    };
}
pub(crate) use class_methods;

/// What `async with` entered (a lock guard, a leadership, a registration), kept per asyncio
/// task, since one `Lock` may be entered by several tasks at once: leaving the block ends
/// what this task entered.
pub struct Entered<T>(Arc<Mutex<Vec<(usize, T)>>>);

impl<T> Default for Entered<T> {
    fn default() -> Self {
        Entered(Arc::default())
    }
}

fn current_task(py: Python<'_>) -> PyResult<usize> {
    Ok(py.import("asyncio")?.call_method0("current_task")?.as_ptr() as usize)
}

impl<T: Clone + Send + 'static> Entered<T> {
    /// `__aenter__`: await `start`, remember what it made for this task, give `face(it)`.
    pub fn enter<'py, F, P>(&self, py: Python<'py>, start: F, face: impl FnOnce(T) -> P + Send + 'static) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = etcd_recipes::Result<T>> + Send + 'static,
        P: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let (task, entered) = (current_task(py)?, self.0.clone());
        spawn_py(py, async move {
            let made = start.await?;
            entered.lock().unwrap_or_else(|p| p.into_inner()).push((task, made.clone()));
            Ok(face(made))
        })
    }

    /// `__aexit__`: end what this task entered last (if anything) with `end`.
    pub fn exit<'py, F>(&self, py: Python<'py>, end: impl FnOnce(T) -> F) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = etcd_recipes::Result<()>> + Send + 'static,
    {
        let task = current_task(py)?;
        let ending = {
            let mut e = self.0.lock().unwrap_or_else(|p| p.into_inner());
            e.iter().rposition(|(t, _)| *t == task).map(|i| end(e.remove(i).1))
        };
        spawn_py(py, async move {
            if let Some(ending) = ending {
                ending.await?;
            }
            FResult::Ok(())
        })
    }
}
