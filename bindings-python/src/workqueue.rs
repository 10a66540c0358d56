//! The work queue's Python face: `client.work_queue(name, ttl=, max_deliveries=, timeout=,
//! session=)` -> `WorkQueue`; `await queue.put(value, delay=)`, `await queue.receive()` ->
//! `WorkItem` (`ack()`, `nack(delay=)`), dead letters.

use std::sync::Arc;

use etcd_recipes::workqueue::{DeadLetter, WorkItem, WorkQueue};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::convert::{self, json_to_py, Bytes, Value};
use crate::errors::{invalid, CoreResultExt};
use crate::members::class_methods;
use crate::runtime::{spawn_py, InRt, Watchers};

/// `max_deliveries=`: None, or an int of at least 1 (`InvalidArgumentError` otherwise).
pub fn max_deliveries(py: Python<'_>, ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u32>> {
    let Some(ob) = ob.filter(|o| !o.is_none()) else { return Ok(None) };
    let int = ob.cast::<PyInt>().map_err(|_| PyTypeError::new_err("max_deliveries must be an int or None"))?;
    match int.extract::<i64>() {
        Ok(n) if (1..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        _ => Err(invalid(py, format!("max_deliveries must be between 1 and {}, got {}", u32::MAX, *int))),
    }
}

/// A reliable work queue (at-least-once): items are claimed under the consumer's lease,
/// acked or nacked, delayed, and dead-lettered after `max_deliveries` failed deliveries.
#[pyclass(module = "etcd_recipes._native", name = "WorkQueue", frozen)]
pub struct PyWorkQueue {
    inner: WorkQueue,
}

impl PyWorkQueue {
    pub fn new(inner: WorkQueue) -> Self {
        PyWorkQueue { inner }
    }
}

#[pymethods]
impl PyWorkQueue {
    /// The queue name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Failed deliveries after which an item moves to the dead letters (None: never).
    #[getter]
    fn max_deliveries(&self) -> Option<u32> {
        self.inner.max_deliveries()
    }

    /// Add an item (bytes or str); with `delay` (seconds) it is not delivered before then.
    /// Returns its id.
    #[pyo3(signature = (value, *, delay=None))]
    fn put<'py>(&self, py: Python<'py>, value: Value, delay: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let delay = delay.map(|d| convert::seconds(py, "delay", d, true)).transpose()?;
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.put(value.0, delay).await?) })
    }

    /// Wait for a visible item and claim it, at most `timeout` seconds (default: the
    /// queue's own timeout); `LockTimeoutError` when it runs out. Cancelling the awaiting
    /// task leaves no claim.
    #[pyo3(signature = (*, timeout=None))]
    fn receive<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (q, t) = (self.inner.clone(), convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let item = match t {
                Some(t) => q.receive_within(Some(t)).await?,
                None => q.receive().await?,
            };
            Ok(PyWorkItem::new(item))
        })
    }

    /// Claim a visible item if there is one now; `LockTimeoutError` otherwise.
    fn try_receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(PyWorkItem::new(q.try_receive().await?)) })
    }

    /// How many items are visible now (not claimed, not delayed).
    fn length<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.length().await?) })
    }

    /// The dead letters, in id order.
    fn dead_letters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.dead_letters().await?.into_iter().map(PyDeadLetter::from).collect::<Vec<_>>()) })
    }

    /// Move dead letter `id` back into the queue (delivery count reset). False if there
    /// is no such dead letter.
    fn requeue_dead<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.requeue_dead(&id).await?) })
    }

    /// Requeue every dead letter; returns how many were moved.
    fn requeue_all_dead<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.requeue_all_dead().await?) })
    }

    fn __repr__(&self) -> String {
        format!("WorkQueue(name={:?}, max_deliveries={:?})", self.inner.name(), self.inner.max_deliveries())
    }
}

/// A claimed item: `ack()` when done, `nack(delay=)` to give it back. Garbage-collected
/// without either, its claim is released (a failed delivery).
#[pyclass(module = "etcd_recipes._native", name = "WorkItem", frozen)]
pub struct PyWorkItem {
    inner: Arc<InRt<WorkItem>>,
    watchers: Watchers,
}

impl PyWorkItem {
    fn new(item: WorkItem) -> Self {
        PyWorkItem { inner: Arc::new(InRt::new(item)), watchers: Watchers::default() }
    }
}

class_methods! {
    impl PyWorkItem {
        /// The item id (unique in its queue, ordered by creation time).
        #[getter]
        fn id(&self) -> &str {
            self.inner.id()
        }

        /// The queue name.
        #[getter]
        fn queue(&self) -> &str {
            self.inner.queue()
        }

        /// The full etcd key of the item (`<namespace><name>/items/<id>`).
        #[getter]
        fn key(&self) -> &str {
            self.inner.key()
        }

        /// The payload.
        #[getter]
        fn value(&self) -> Bytes {
            Bytes(self.inner.value().to_vec())
        }

        /// The payload as text (`DecodeError` if it is not UTF-8).
        #[getter]
        fn value_string(&self, py: Python<'_>) -> PyResult<String> {
            self.inner.value_string().py_err(py)
        }

        /// The payload decoded from JSON (`DecodeError` if it is not JSON).
        fn value_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            json_to_py(py, &self.inner.value_json::<serde_json::Value>().py_err(py)?)
        }

        /// Which delivery this is (the attempt number: 1 the first time).
        #[getter]
        fn deliveries(&self) -> u32 {
            self.inner.deliveries()
        }

        /// The create revision of our claim: strictly increases from delivery to delivery.
        #[getter]
        fn fencing_token(&self) -> i64 {
            self.inner.fencing_token()
        }

        /// The lease the claim lives on.
        #[getter]
        fn lease_id(&self) -> i64 {
            self.inner.lease_id()
        }

        /// Not acked or nacked, and the session alive.
        #[getter]
        fn is_held(&self) -> bool {
            self.inner.is_held()
        }

        /// Done: delete the item and our claim, only while the claim is ours (`FencedError`
        /// otherwise: the item is delivered again).
        fn ack<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let i = self.inner.clone();
            spawn_py(py, async move { Ok(i.ack().await?) })
        }

        /// Give the item back for redelivery (not before `delay` seconds, if given); on its
        /// last allowed delivery it moves to the dead letters instead.
        #[pyo3(signature = (*, delay=None))]
        fn nack<'py>(&self, py: Python<'py>, delay: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
            let delay = delay.map(|d| convert::seconds(py, "delay", d, true)).transpose()?;
            let i = self.inner.clone();
            spawn_py(py, async move { Ok(i.nack(delay).await?) })
        }

        fn __repr__(&self) -> String {
            format!("WorkItem(id={:?}, deliveries={}, held={})", self.inner.id(), self.inner.deliveries(), self.inner.is_held())
        }
    }
    /// Resolves when the claim stops being ours: with the reason when it was lost (its
    /// session was lost), with None when it ended normally (acked, nacked, client closed).
    lost;
    /// Call `callback(reason)` on the running event loop if the claim is lost. Keeps
    /// nothing alive.
    on_lost;
    gc(watchers);
}

/// An item in the dead letters.
#[pyclass(module = "etcd_recipes._native", name = "DeadLetter", frozen)]
pub struct PyDeadLetter {
    inner: DeadLetter,
}

impl From<DeadLetter> for PyDeadLetter {
    fn from(inner: DeadLetter) -> Self {
        PyDeadLetter { inner }
    }
}

#[pymethods]
impl PyDeadLetter {
    /// The item id (give it to `requeue_dead`).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The payload.
    #[getter]
    fn value(&self) -> Bytes {
        Bytes(self.inner.value.clone())
    }

    /// The payload as text (`DecodeError` if it is not UTF-8).
    #[getter]
    fn value_string(&self, py: Python<'_>) -> PyResult<String> {
        String::from_utf8(self.inner.value.clone()).map_err(|e| {
            crate::errors::to_py(py, &etcd_recipes::Error::Decode { key: self.inner.id.clone(), message: format!("not UTF-8: {e}") })
        })
    }

    /// How many deliveries failed.
    #[getter]
    fn deliveries(&self) -> u32 {
        self.inner.deliveries
    }

    fn __repr__(&self) -> String {
        format!("DeadLetter(id={:?}, deliveries={})", self.inner.id, self.inner.deliveries)
    }
}
