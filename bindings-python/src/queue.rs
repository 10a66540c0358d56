//! The queues' Python face: `client.queue(name, timeout=)` -> `Queue` and
//! `client.priority_queue(name, timeout=)` -> `PriorityQueue` (`enqueue`, `dequeue`,
//! `try_dequeue`, `length`), both handing out `QueueItem`s.

use etcd_recipes::queue::{PriorityQueue, Queue, QueueItem};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::convert::{json_to_py, Bytes, Value};
use crate::errors::{invalid, CoreResultExt};
use crate::runtime::spawn_py;

/// A priority from Python: an int in 0..=65535 (`InvalidArgumentError` otherwise).
fn priority(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<u16> {
    if ob.is_instance_of::<PyBool>() || !ob.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err("priority must be an int"));
    }
    match ob.extract::<i64>() {
        Ok(n) if (0..=u16::MAX as i64).contains(&n) => Ok(n as u16),
        _ => Err(invalid(py, format!("priority must be an int in 0..=65535 (0 first), got {ob}"))),
    }
}

/// A FIFO queue (etcd Go `recipe.Queue`). At most once: a dequeued item is gone from
/// etcd; use `client.work_queue` for at-least-once delivery.
#[pyclass(module = "etcd_recipes._native", name = "Queue", frozen)]
pub struct PyQueue {
    inner: Queue,
}

impl PyQueue {
    pub fn new(inner: Queue) -> Self {
        PyQueue { inner }
    }
}

#[pymethods]
impl PyQueue {
    /// The queue name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Append an item (bytes or str); returns its full etcd key.
    fn enqueue<'py>(&self, py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.enqueue(value.0).await?) })
    }

    /// Take the oldest item, waiting at most `timeout` seconds for one (default: the
    /// queue's own timeout); `LockTimeoutError` then (nothing taken).
    #[pyo3(signature = (*, timeout=None))]
    fn dequeue<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (q, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let item = match t {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            };
            Ok(PyQueueItem(item))
        })
    }

    /// Take the oldest item if there is one; None when the queue is empty.
    fn try_dequeue<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.try_dequeue().await?.map(PyQueueItem)) })
    }

    /// How many items are in the queue now.
    fn length<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.length().await?) })
    }

    fn __repr__(&self) -> String {
        format!("Queue(name={:?})", self.inner.name())
    }
}

/// A priority queue (etcd Go `recipe.PriorityQueue`): lower priority numbers first, FIFO
/// within a priority. At most once, like `Queue`.
#[pyclass(module = "etcd_recipes._native", name = "PriorityQueue", frozen)]
pub struct PyPriorityQueue {
    inner: PriorityQueue,
}

impl PyPriorityQueue {
    pub fn new(inner: PriorityQueue) -> Self {
        PyPriorityQueue { inner }
    }
}

#[pymethods]
impl PyPriorityQueue {
    /// The queue name (namespace-relative).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Add an item (bytes or str) with `priority` (0..=65535, 0 comes out first);
    /// returns its full etcd key.
    fn enqueue<'py>(&self, py: Python<'py>, value: Value, priority: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let p = self::priority(py, priority)?;
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.enqueue(value.0, p).await?) })
    }

    /// Take the first item (lowest priority number, then oldest), waiting at most
    /// `timeout` seconds for one (default: the queue's own timeout); `LockTimeoutError` then.
    #[pyo3(signature = (*, timeout=None))]
    fn dequeue<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let (q, t) = (self.inner.clone(), crate::convert::timeout(py, timeout)?);
        spawn_py(py, async move {
            let item = match t {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            };
            Ok(PyQueueItem(item))
        })
    }

    /// Take the first item if there is one; None when the queue is empty.
    fn try_dequeue<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.try_dequeue().await?.map(PyQueueItem)) })
    }

    /// How many items are in the queue now.
    fn length<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.inner.clone();
        spawn_py(py, async move { Ok(q.length().await?) })
    }

    fn __repr__(&self) -> String {
        format!("PriorityQueue(name={:?})", self.inner.name())
    }
}

/// A dequeued item: its value and where it was.
#[pyclass(module = "etcd_recipes._native", name = "QueueItem", frozen)]
pub struct PyQueueItem(QueueItem);

#[pymethods]
impl PyQueueItem {
    /// The full etcd key the item had.
    #[getter]
    fn key(&self) -> &str {
        &self.0.key
    }

    /// The value.
    #[getter]
    fn value(&self) -> Bytes {
        Bytes(self.0.value.clone())
    }

    /// The value as text (`DecodeError` if it is not UTF-8).
    #[getter]
    fn value_string(&self, py: Python<'_>) -> PyResult<String> {
        self.0.value_string().py_err(py)
    }

    /// The value decoded from JSON (`DecodeError` if it is not JSON).
    fn value_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.0.value_json::<serde_json::Value>().py_err(py)?)
    }

    /// The revision at which the item was enqueued.
    #[getter]
    fn revision(&self) -> i64 {
        self.0.revision
    }

    fn __repr__(&self) -> String {
        format!("QueueItem(key={:?}, {} bytes)", self.0.key, self.0.value.len())
    }
}
