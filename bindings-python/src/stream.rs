//! The machinery behind every async iterator of the package (leader observer, instance
//! sets and events, config changes): a core `Stream` behind an async mutex, plus a
//! close signal so that `aclose()` (or dropping the iterator after `break`) ends a
//! pending `__anext__` at once instead of waiting for the next item. Each such class is
//! declared with [`async_iterator!`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use tokio::sync::{watch, Mutex};

use crate::errors::{FResult, Failure};
use crate::runtime::{rt, spawn_py};

type Boxed<I> = Pin<Box<dyn Stream<Item = I> + Send>>;

/// Shared by the Python iterator object and its pending `__anext__` futures.
pub struct StreamCell<I> {
    stream: Arc<Mutex<Option<Boxed<I>>>>,
    closed: watch::Sender<bool>,
}

pub fn stop() -> Failure {
    Failure::Py(PyStopAsyncIteration::new_err(()))
}

impl<I: Send + 'static> StreamCell<I> {
    pub fn new(s: impl Stream<Item = I> + Send + 'static) -> Self {
        StreamCell { stream: Arc::new(Mutex::new(Some(Box::pin(s)))), closed: watch::channel(false).0 }
    }

    /// `__anext__`: the next item mapped by `map`, or `StopAsyncIteration` at the end
    /// or after `close()`.
    pub fn next_py<'py, T, F>(&self, py: Python<'py>, map: F) -> PyResult<Bound<'py, PyAny>>
    where
        F: FnOnce(I) -> FResult<T> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let stream = self.stream.clone();
        let mut closed = self.closed.subscribe();
        spawn_py(py, async move {
            let next = async {
                let mut g = stream.lock().await;
                let s = g.as_mut()?;
                match s.next().await {
                    Some(item) => Some(item),
                    None => {
                        g.take();
                        None
                    }
                }
            };
            tokio::select! {
                item = next => match item {
                    Some(item) => map(item),
                    None => Err(stop()),
                },
                _ = closed.wait_for(|c| *c) => Err(stop()),
            }
        })
    }

    /// End the iteration: pending and later `__anext__` raise `StopAsyncIteration`.
    pub fn close(&self) {
        self.closed.send_replace(true);
        let stream = self.stream.clone();
        let _g = rt().enter();
        // The pending `next` (if any) lets go of the lock as soon as it sees the signal.
        rt().spawn(async move {
            stream.lock().await.take();
        });
    }

    /// `aclose()`: close, as an awaitable.
    pub fn aclose_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.close();
        spawn_py(py, async move { FResult::Ok(()) })
    }
}

impl<I> Drop for StreamCell<I> {
    fn drop(&mut self) {
        self.closed.send_replace(true);
        if let Ok(mut g) = self.stream.try_lock() {
            let _e = rt().enter();
            g.take();
        }
    }
}

/// An async iterator class (`async for x in ...`) over a core stream of `$item`s, each made
/// a Python value by `$map`: the Rust struct `$class`, named `$name` in Python. PyO3 wants the
/// protocol methods in each class's own `#[pymethods]` block, hence a macro.
macro_rules! async_iterator {
    ($(#[$doc:meta])* $class:ident($name:literal, $item:ty) => $map:expr) => {
        $(#[$doc])*
        #[pyo3::pyclass(module = "etcd_recipes._native", name = $name, frozen)]
        pub struct $class($crate::stream::StreamCell<$item>);

        impl $class {
            pub fn new(items: impl futures::Stream<Item = $item> + Send + 'static) -> Self {
                $class($crate::stream::StreamCell::new(items))
            }
        }

        #[pyo3::pymethods]
        impl $class {
            fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
                slf
            }
            fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.0.next_py(py, $map)
            }
            /// Stop iterating: a pending and every later `__anext__` raise `StopAsyncIteration`.
            fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.0.aclose_py(py)
            }
        }
    };
}
pub(crate) use async_iterator;
