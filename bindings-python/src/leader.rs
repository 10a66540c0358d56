//! The leader loop's and leader latch's Python face: `client.leader_loop(name, value)` ->
//! `LeaderLoop` (`await lp.run(work)` / `lp.start(work)`, `await lp.close()`, events and
//! callbacks), `client.leader_latch(name, value)` -> `LeaderLatch` (`start()`,
//! `await latch.await_leader(timeout=)`, `await latch.close()`).
//!
//! The work, `async def work(leadership, cancelled: asyncio.Event)`, runs as an asyncio
//! task on the loop that started the leader loop. When core's cancel signal fires, the
//! event is set and the task cancelled (`CancelledError` at its next `await`); the loop
//! waits for the task to end (bounded by `stop_timeout`), then resigns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_recipes::election::Leadership;
use etcd_recipes::leader::{self as core, CancelSignal};
use etcd_recipes::SessionSource;
use futures::future::BoxFuture;
use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::oneshot;

use crate::convert::seconds;
use crate::election::{PyLeaderInfo, PyLeadership};
use crate::errors::{CoreResultExt, FResult};
use crate::runtime::{python_gate, ready_py, spawn_py, InRt, Watchers};
use crate::stream::StreamCell;

/// What a leader loop (or latch) reports. `kind`: `"started_leading"` (with
/// `fencing_token`, `key`, `lease_id`), `"stopped_leading"` (with `fencing_token`, `reason`:
/// `"returned"`, `"lost"` or `"cancelled"`, and `detail`: the loss reason or the work's
/// error) or `"new_leader"` (with `leader`, None when there is none).
#[pyclass(module = "etcd_recipes._native", name = "LeaderEvent", frozen)]
pub struct PyLeaderEvent {
    ev: core::LeaderEvent,
}

#[pymethods]
impl PyLeaderEvent {
    /// `"started_leading"`, `"stopped_leading"` or `"new_leader"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.ev {
            core::LeaderEvent::StartedLeading { .. } => "started_leading",
            core::LeaderEvent::StoppedLeading { .. } => "stopped_leading",
            core::LeaderEvent::NewLeader(_) => "new_leader",
        }
    }
    /// The term's fencing token (started / stopped leading).
    #[getter]
    fn fencing_token(&self) -> Option<i64> {
        match &self.ev {
            core::LeaderEvent::StartedLeading { fencing_token, .. } | core::LeaderEvent::StoppedLeading { fencing_token, .. } => {
                Some(*fencing_token)
            }
            core::LeaderEvent::NewLeader(_) => None,
        }
    }
    /// Our leader key (started leading).
    #[getter]
    fn key(&self) -> Option<String> {
        match &self.ev {
            core::LeaderEvent::StartedLeading { key, .. } => Some(key.clone()),
            _ => None,
        }
    }
    /// The term's lease (started leading).
    #[getter]
    fn lease_id(&self) -> Option<i64> {
        match &self.ev {
            core::LeaderEvent::StartedLeading { lease_id, .. } => Some(*lease_id),
            _ => None,
        }
    }
    /// `"returned"`, `"lost"` or `"cancelled"` (stopped leading).
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        match &self.ev {
            core::LeaderEvent::StoppedLeading { reason, .. } => Some(reason.kind()),
            _ => None,
        }
    }
    /// The loss reason, or the work's error (stopped leading).
    #[getter]
    fn detail(&self) -> Option<String> {
        match &self.ev {
            core::LeaderEvent::StoppedLeading { reason, .. } => reason.detail().map(str::to_string),
            _ => None,
        }
    }
    /// The election's new leader (new leader), None when there is none.
    #[getter]
    fn leader(&self) -> Option<PyLeaderInfo> {
        match &self.ev {
            core::LeaderEvent::NewLeader(l) => l.clone().map(PyLeaderInfo::from),
            _ => None,
        }
    }
    fn __repr__(&self) -> String {
        match &self.ev {
            core::LeaderEvent::StartedLeading { fencing_token, .. } => format!("LeaderEvent(started_leading, fencing_token={fencing_token})"),
            core::LeaderEvent::StoppedLeading { fencing_token, reason } => {
                format!("LeaderEvent(stopped_leading, fencing_token={fencing_token}, reason={:?}, detail={:?})", reason.kind(), reason.detail())
            }
            core::LeaderEvent::NewLeader(l) => format!("LeaderEvent(new_leader, leader={:?})", l.as_ref().map(|l| &l.key)),
        }
    }
}

/// `async for event in lp.events()`: every event from now on, until the loop ends.
#[pyclass(module = "etcd_recipes._native", name = "LeaderEvents", frozen)]
pub struct PyLeaderEvents(StreamCell<core::LeaderEvent>);

impl PyLeaderEvents {
    fn new(events: core::LeaderEvents) -> Self {
        PyLeaderEvents(StreamCell::new(events))
    }
}

#[pymethods]
impl PyLeaderEvents {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.0.next_py(py, |ev| Ok(PyLeaderEvent { ev }))
    }
    /// Stop iterating.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.0.aclose_py(py)
    }
}

/// The asyncio task of one term and its event, once started on the loop.
type TermHandles = Arc<Mutex<Option<(Py<PyAny>, Py<PyAny>)>>>;
type Done = Arc<Mutex<Option<oneshot::Sender<Result<(), String>>>>>;

/// Runs on the event loop: create the event, start `work(leadership, event)` as a task.
#[pyclass(frozen)]
struct TermStarter {
    work: Arc<Py<PyAny>>,
    leadership: Mutex<Option<Arc<Leadership>>>,
    done: Done,
    handles: TermHandles,
}

fn send(done: &Done, r: Result<(), String>) {
    if let Some(tx) = done.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = tx.send(r);
    }
}

fn describe(py: Python<'_>, e: &Bound<'_, PyAny>) -> String {
    let ty = e.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    let _ = py;
    match e.str() {
        Ok(s) if !s.to_string_lossy().is_empty() => format!("{ty}: {}", s.to_string_lossy()),
        _ => ty,
    }
}

#[pymethods]
impl TermStarter {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(l) = self.leadership.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let asyncio = py.import("asyncio")?;
        let started = (|| -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
            let event = asyncio.getattr("Event")?.call0()?;
            let leadership = Py::new(py, PyLeadership::from_core(l))?;
            let coro = self.work.bind(py).call1((leadership, &event))?;
            let task = asyncio.call_method1("ensure_future", (coro,))?;
            Ok((task, event))
        })();
        match started {
            Ok((task, event)) => {
                task.call_method1("add_done_callback", (TermDone { done: self.done.clone() },))?;
                *self.handles.lock().unwrap_or_else(|p| p.into_inner()) = Some((task.unbind(), event.unbind()));
            }
            Err(e) => send(&self.done, Err(describe(py, e.value(py).as_any()))),
        }
        Ok(())
    }
}

/// The task's done-callback: how the work ended (a cancelled task ended normally).
#[pyclass(frozen)]
struct TermDone {
    done: Done,
}

#[pymethods]
impl TermDone {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = if task.call_method0("cancelled")?.is_truthy()? {
            Ok(())
        } else {
            match task.call_method0("exception")? {
                e if e.is_none() => Ok(()),
                e => Err(describe(py, &e)),
            }
        };
        send(&self.done, r);
        Ok(())
    }
}

/// Runs on the event loop when the signal fires: set the event, cancel the task.
///
/// The cancel is itself scheduled (`call_soon`), behind the task's first step, which the
/// starter scheduled before this ran: a term that ends at once (the client closed right
/// after it started) still runs its work up to the first `await`, where `CancelledError`
/// arrives, so its `try`/`finally` runs. Cancelled before its first step, the coroutine
/// would never run at all: the work's `finally` did not run (`test_leader.py::
/// test_client_close_stops_the_loop`: 3 failures in 30 runs with two busy CPU hogs before,
/// 0 in 70 after).
#[pyclass(frozen)]
struct TermCanceller {
    handles: TermHandles,
}

#[pymethods]
impl TermCanceller {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let h = self.handles.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(t, e)| (t.clone_ref(py), e.clone_ref(py)));
        if let Some((task, event)) = h {
            event.bind(py).call_method0("set")?;
            let cancel = task.bind(py).getattr("cancel")?;
            task.bind(py).call_method0("get_loop")?.call_method1("call_soon", (cancel,))?;
        }
        Ok(())
    }
}

/// Call `f()` on `event_loop` (from a runtime thread); false if Python or the loop is gone.
async fn on_loop(event_loop: Arc<Py<PyAny>>, f: impl for<'py> FnOnce(Python<'py>) -> PyResult<Py<PyAny>> + Send + 'static) -> bool {
    let r = tokio::task::spawn_blocking(move || {
        python_gate(|py| -> PyResult<()> {
            let cb = f(py)?;
            event_loop.bind(py).call_method1("call_soon_threadsafe", (cb,))?;
            Ok(())
        })
    })
    .await;
    matches!(r, Ok(Some(Ok(()))))
}

/// Core's work closure for a Python `work(leadership, cancelled)`, run on `event_loop`.
fn work_fn(
    event_loop: Py<PyAny>,
    work: Py<PyAny>,
) -> impl FnMut(Arc<Leadership>, CancelSignal) -> BoxFuture<'static, Result<(), String>> + Send + 'static {
    let (event_loop, work) = (Arc::new(event_loop), Arc::new(work));
    move |l, cancel| {
        let (event_loop, work) = (event_loop.clone(), work.clone());
        Box::pin(async move {
            let (tx, mut rx) = oneshot::channel();
            let done: Done = Arc::new(Mutex::new(Some(tx)));
            let handles: TermHandles = Arc::default();
            let starter = TermStarter { work, leadership: Mutex::new(Some(l)), done, handles: handles.clone() };
            if !on_loop(event_loop.clone(), move |py| Ok(Py::new(py, starter)?.into_any())).await {
                return Ok(()); // the interpreter or its loop is gone: nothing to run
            }
            tokio::select! {
                r = &mut rx => return r.unwrap_or(Ok(())),
                _ = cancel.cancelled() => {}
            }
            on_loop(event_loop, move |py| Ok(Py::new(py, TermCanceller { handles })?.into_any())).await;
            rx.await.unwrap_or(Ok(()))
        })
    }
}

fn running_loop(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.import("asyncio")?.call_method0("get_running_loop")?.unbind())
}

/// Call `callback(x)` for each event that `pick` maps to `Some(x)`.
fn watch_events<T, F>(watchers: &Watchers, py: Python<'_>, events: core::LeaderEvents, callback: Py<PyAny>, pick: F) -> PyResult<()>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Fn(core::LeaderEvent) -> Option<T> + Send + 'static,
{
    watchers.watch(py, callback, events.filter_map(move |e| futures::future::ready(pick(e))))
}

fn started(ev: core::LeaderEvent) -> Option<PyLeaderEvent> {
    matches!(ev, core::LeaderEvent::StartedLeading { .. }).then_some(PyLeaderEvent { ev })
}

fn stopped(ev: core::LeaderEvent) -> Option<PyLeaderEvent> {
    matches!(ev, core::LeaderEvent::StoppedLeading { .. }).then_some(PyLeaderEvent { ev })
}

fn new_leader(ev: core::LeaderEvent) -> Option<Option<PyLeaderInfo>> {
    match ev {
        core::LeaderEvent::NewLeader(l) => Some(l.map(PyLeaderInfo::from)),
        _ => None,
    }
}

/// Campaign, run `work` while leader, resign, campaign again (Curator `LeaderSelector`,
/// client-go `leaderelection`). `work(leadership, cancelled)` runs as an asyncio task: when
/// leadership is lost (session lost, our key deleted), on `close()`, when the client
/// closes or `run()` is cancelled, `cancelled` is set and the task cancelled; the loop
/// waits for it (at most `stop_timeout` s) and resigns. When the work returns (or raises:
/// logged, and reported in the `stopped_leading` event) the loop resigns at once, then,
/// unless `requeue=False`, campaigns again with a fresh session.
#[pyclass(module = "etcd_recipes._native", name = "LeaderLoop", frozen)]
pub struct PyLeaderLoop {
    inner: InRt<core::LeaderLoop>,
    watchers: Watchers,
}

/// `client.leader_loop(...)` / `session.leader_loop(...)`.
pub fn new_loop(py: Python<'_>, source: SessionSource, name: &str, value: Vec<u8>, requeue: bool, stop_timeout: f64) -> PyResult<PyLeaderLoop> {
    let t: Duration = seconds(py, "stop_timeout", stop_timeout, true)?;
    let lp = core::LeaderLoop::new(source, name, value).py_err(py)?.requeue(requeue).stop_timeout(t);
    Ok(PyLeaderLoop { inner: InRt::new(lp), watchers: Watchers::default() })
}

/// `client.leader_latch(...)` / `session.leader_latch(...)`.
pub fn new_latch(py: Python<'_>, source: SessionSource, name: &str, value: Vec<u8>) -> PyResult<PyLeaderLatch> {
    let l = core::LeaderLatch::new(source, name, value).py_err(py)?;
    Ok(PyLeaderLatch { inner: InRt::new(l), watchers: Watchers::default() })
}

impl PyLeaderLoop {
    fn start_work(&self, py: Python<'_>, work: Py<PyAny>) -> PyResult<()> {
        if !work.bind(py).is_callable() {
            return Err(pyo3::exceptions::PyTypeError::new_err("work must be an async function (leadership, cancelled) -> None"));
        }
        let f = work_fn(running_loop(py)?, work);
        let _g = crate::runtime::rt().enter();
        self.inner.start(f).py_err(py)
    }
}

#[pymethods]
impl PyLeaderLoop {
    /// The election name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }
    /// True while a term runs and its leadership holds.
    #[getter]
    fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }
    /// The current term's leadership, or None.
    #[getter]
    fn leadership(&self) -> Option<PyLeadership> {
        self.inner.leadership().map(PyLeadership::from_core)
    }
    /// True once the loop has ended.
    #[getter]
    fn is_closed(&self) -> bool {
        self.inner.is_stopped()
    }
    /// Start in the background with `work` (`InvalidArgumentError` if started already).
    fn start(&self, py: Python<'_>, work: Py<PyAny>) -> PyResult<()> {
        self.start_work(py, work)
    }
    /// Start with `work` and wait until the loop ends (see `wait()`); cancelling this
    /// awaitable closes the loop.
    fn run<'py>(&self, py: Python<'py>, work: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.start_work(py, work)?;
        let lp = (*self.inner).clone();
        spawn_py(py, async move {
            struct CloseOnDrop(Option<core::LeaderLoop>);
            impl Drop for CloseOnDrop {
                fn drop(&mut self) {
                    if let Some(lp) = self.0.take() {
                        tokio::spawn(async move { lp.close().await });
                    }
                }
            }
            let mut guard = CloseOnDrop(Some(lp.clone()));
            let r = lp.wait().await;
            guard.0 = None;
            FResult::Ok(r?)
        })
    }
    /// Wait until the loop ends: after `close()` or its last term (`requeue=False`);
    /// `ClosedError` when the client was closed.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lp = (*self.inner).clone();
        spawn_py(py, async move { FResult::Ok(lp.wait().await?) })
    }
    /// Stop: cancel the work (if leading), wait for it (at most `stop_timeout`), resign.
    /// Idempotent.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lp = (*self.inner).clone();
        spawn_py(py, async move {
            lp.close().await;
            FResult::Ok(())
        })
    }
    /// The current (or next) term's end: its loss reason, or None when it ends otherwise.
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lp = (*self.inner).clone();
        spawn_py(py, async move { FResult::Ok(lp.lost().await) })
    }
    /// Every event from now on (subscribe before starting to see them all).
    fn events(&self) -> PyLeaderEvents {
        PyLeaderEvents::new(self.inner.events())
    }
    /// `callback(event)` each time we become leader (register before starting).
    fn on_started_leading(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, started)
    }
    /// `callback(event)` each time a term ends (`event.reason`, `event.detail`).
    fn on_stopped_leading(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, stopped)
    }
    /// `callback(leader)` each time the election's leader changes (None: no leader).
    fn on_new_leader(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, new_leader)
    }
    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.watchers.traverse(&visit)
    }
    fn __clear__(&self) {
        self.watchers.clear()
    }
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready_py(slf.py(), slf.into_any())
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }
    fn __repr__(&self) -> String {
        format!("LeaderLoop(name={:?}, is_leader={})", self.inner.name(), self.inner.is_leader())
    }
}

/// Campaigns in the background once started and holds leadership until closed; campaigns
/// again after a loss (Curator `LeaderLatch`). `async with latch:` starts it and closes it.
#[pyclass(module = "etcd_recipes._native", name = "LeaderLatch", frozen)]
pub struct PyLeaderLatch {
    inner: InRt<core::LeaderLatch>,
    watchers: Watchers,
}

#[pymethods]
impl PyLeaderLatch {
    /// The election name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }
    /// Start campaigning (`InvalidArgumentError` if started already).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let _g = crate::runtime::rt().enter();
        self.inner.start().py_err(py)
    }
    /// True while we lead.
    #[getter]
    fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }
    /// The current leadership, or None.
    #[getter]
    fn leadership(&self) -> Option<PyLeadership> {
        self.inner.leadership().map(PyLeadership::from_core)
    }
    /// True once closed (or its client closed).
    #[getter]
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    /// The leadership as soon as we lead (at once if we do); `LockTimeoutError` after
    /// `timeout` seconds (None: wait as long as it takes); `ClosedError` if the latch or
    /// the client closes first.
    #[pyo3(signature = (*, timeout=None))]
    fn await_leader<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let t = crate::convert::timeout(py, timeout)?;
        let l = (*self.inner).clone();
        spawn_py(py, async move { FResult::Ok(PyLeadership::from_core(l.await_leader(t).await?)) })
    }
    /// The current (or next) term's end: its loss reason, or None when it ends otherwise.
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let l = (*self.inner).clone();
        spawn_py(py, async move { FResult::Ok(l.lost().await) })
    }
    /// Every event from now on (subscribe before `start()` to see them all).
    fn events(&self) -> PyLeaderEvents {
        PyLeaderEvents::new(self.inner.events())
    }
    /// `callback(event)` each time we become leader.
    fn on_started_leading(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, started)
    }
    /// `callback(event)` each time our leadership ends (`event.reason`, `event.detail`).
    fn on_stopped_leading(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, stopped)
    }
    /// `callback(leader)` each time the election's leader changes (None: no leader).
    fn on_new_leader(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        watch_events(&self.watchers, py, self.inner.events(), callback, new_leader)
    }
    /// Resign (if leader) and stop campaigning. Idempotent.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let l = (*self.inner).clone();
        spawn_py(py, async move {
            l.close().await;
            FResult::Ok(())
        })
    }
    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.watchers.traverse(&visit)
    }
    fn __clear__(&self) {
        self.watchers.clear()
    }
    /// `async with latch:` starts it (if not started) and closes it at the end.
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        {
            let me = slf.get();
            let _g = crate::runtime::rt().enter();
            if let Err(e) = me.inner.start() {
                if e.kind() != etcd_recipes::ErrorKind::InvalidArgument {
                    return Err(e).py_err(py);
                }
            }
        }
        ready_py(py, slf.into_any())
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }
    fn __repr__(&self) -> String {
        format!("LeaderLatch(name={:?}, is_leader={})", self.inner.name(), self.inner.is_leader())
    }
}
