//! The one tokio runtime of the process, and the bridge from Rust futures to asyncio.
//!
//! Every awaitable this package returns is made by [`spawn_py`]: the Rust future runs
//! on the shared runtime; an asyncio future on the caller's loop receives the result.
//! Cancelling the asyncio future aborts the tokio task, which drops the Rust future
//! (so core's drop-cleanup runs: a cancelled lock waiter deletes its key).
//!
//! Interpreter exit: an `atexit` hook (see `lib.rs`) closes every client of the process
//! (core's `shutdown`), then a gate ([`python_gate`]) before CPython starts finalizing. Background threads (future completions, the logging bridge) only
//! attach to Python while holding the gate open, so no Rust thread ever touches a
//! finalizing interpreter (the classic shutdown segfault of Rust-backed Python packages).

use std::future::Future;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};

use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use pyo3::IntoPyObjectExt;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// The runtime of this process, and the process it was built in.
struct ProcessRuntime {
    pid: u32,
    rt: &'static Runtime,
}

static RUNTIME: AtomicPtr<ProcessRuntime> = AtomicPtr::new(std::ptr::null_mut());
static BUILDING: Mutex<()> = Mutex::new(());

/// The shared runtime of this process (built at module init).
///
/// A process forked after that (Celery's prefork pool, gunicorn `--preload`,
/// `multiprocessing` with `fork`) inherits the runtime object but not its threads, so
/// nothing spawned on it would ever run: the child's first call builds a runtime of its
/// own. The parent's is leaked in the child (dropping it would wait for threads that do
/// not exist there); clients inherited from the parent are closed in the child (core
/// refuses them with `ClosedError`), so the child makes its own.
pub fn rt() -> &'static Runtime {
    let pid = std::process::id();
    let current = RUNTIME.load(Ordering::Acquire);
    // SAFETY: a published ProcessRuntime is leaked, never freed.
    if let Some(p) = unsafe { current.as_ref() } {
        if p.pid == pid {
            return p.rt;
        }
    }
    let _g = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: as above.
    if let Some(p) = unsafe { RUNTIME.load(Ordering::Acquire).as_ref() } {
        if p.pid == pid {
            return p.rt;
        }
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(workers)
        .thread_name("etcd-recipes")
        .build()
        .expect("etcd_recipes: cannot start the tokio runtime");
    let rt: &'static Runtime = Box::leak(Box::new(runtime));
    RUNTIME.store(Box::into_raw(Box::new(ProcessRuntime { pid, rt })), Ordering::Release);
    rt
}

/// Build the runtime at module init, before anything spawns.
pub fn init_runtime() {
    let _ = rt();
}

/// `true` while background threads may attach to the interpreter.
static PY_OPEN: RwLock<bool> = RwLock::new(true);

/// Run `f` attached to the interpreter, unless interpreter exit has begun (then `None`).
pub fn python_gate<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    let open = PY_OPEN.read().unwrap_or_else(|p| p.into_inner());
    if !*open {
        return None;
    }
    // Holding the read lock while attached: the exit hook waits for us (it detaches first).
    Python::try_attach(f)
}

/// Close the gate. Waits (detached) for threads currently attached.
pub fn close_gate(py: Python<'_>) {
    py.detach(|| {
        *PY_OPEN.write().unwrap_or_else(|p| p.into_inner()) = false;
    });
}

/// Drop `T` inside the runtime's context, so core's spawned drop-cleanups (delete a lock
/// key, revoke a lease) find a runtime even when Python's GC drops us on the main thread.
pub struct InRt<T>(Option<T>);

impl<T> InRt<T> {
    pub fn new(t: T) -> Self {
        InRt(Some(t))
    }
}

impl<T> std::ops::Deref for InRt<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("InRt is only emptied in drop")
    }
}

impl<T> Drop for InRt<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _g = rt().enter();
            drop(t);
        }
    }
}

static RESOLVE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();

/// Called on the event loop thread: set the result unless the future is already done
/// (cancelled by its awaiter).
#[pyfunction]
fn _resolve(fut: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        fut.call_method1("set_result", (value,))?;
    } else {
        fut.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// Aborts the tokio task when the asyncio future is cancelled.
#[pyclass(frozen)]
struct CancelOnDone {
    abort: AbortHandle,
}

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.abort.abort();
        }
        Ok(())
    }
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The asyncio loop running in this thread (`RuntimeError` outside a coroutine).
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let get_loop = GET_RUNNING_LOOP.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?;
    get_loop.bind(py).call0().map_err(|_| {
        PyRuntimeError::new_err("etcd_recipes: this call must be made from a coroutine running on an asyncio event loop")
    })
}

/// Run `fut` on the shared runtime; return an asyncio future (on the running loop) for it.
pub fn spawn_py<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = crate::errors::FResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let py_fut = event_loop.call_method0("create_future")?;
    let resolve = RESOLVE
        .get_or_try_init(py, || Ok::<_, PyErr>(wrap_pyfunction!(_resolve, py)?.cast_into::<PyCFunction>()?.unbind()))?
        .clone_ref(py);
    let loop_ref = event_loop.unbind();
    let fut_ref = py_fut.clone().unbind();
    let task = rt().spawn(async move {
        let result = fut.await;
        // Attaching may wait for the GIL: do it off the async workers.
        drop(tokio::task::spawn_blocking(move || {
            python_gate(|py| {
                let converted = match result {
                    Ok(v) => v.into_py_any(py),
                    Err(f) => Err(f.into_py(py)),
                };
                let (ok, value) = match converted {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // RuntimeError when the loop is closed: nobody is waiting any more.
                let _ = loop_ref.bind(py).call_method1("call_soon_threadsafe", (resolve.bind(py), fut_ref.bind(py), ok, value));
                drop(fut_ref);
                drop(loop_ref);
            });
        }));
    });
    py_fut.call_method1("add_done_callback", (CancelOnDone { abort: task.abort_handle() },))?;
    Ok(py_fut)
}

/// A callback, in a slot that Python's garbage collector can see and empty.
type Slot = Arc<Mutex<Option<Py<PyAny>>>>;

/// The callbacks watching one Python object (`on_lost`, `on_state_change`). Each runs on
/// the event loop that was running when it was registered. They keep nothing alive: they
/// stop when the object is dropped, and the object reports them to the garbage collector,
/// so a callback that refers back to its object is collected with it.
#[derive(Default)]
pub struct Watchers(Mutex<Vec<(AbortHandle, Slot)>>);

impl Watchers {
    /// Call `callback(item)` (`loop.call_soon_threadsafe`) for each item of `items`, in
    /// order, until the stream ends or the object goes.
    pub fn watch<S, T>(&self, py: Python<'_>, callback: Py<PyAny>, items: S) -> PyResult<()>
    where
        S: Stream<Item = T> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let event_loop = Arc::new(running_loop(py)?.unbind());
        let slot: Slot = Arc::new(Mutex::new(Some(callback)));
        let cb = slot.clone();
        let task = rt().spawn(async move {
            let mut items = std::pin::pin!(items);
            while let Some(item) = items.next().await {
                let (event_loop, cb) = (event_loop.clone(), cb.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    python_gate(|py| {
                        // Attached first, then the slot: the collector locks it attached too.
                        let cb = cb.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.clone_ref(py));
                        if let (Some(cb), Ok(v)) = (cb, item.into_py_any(py)) {
                            // RuntimeError once the loop is closed: nobody left to tell.
                            let _ = event_loop.bind(py).call_method1("call_soon_threadsafe", (cb, v));
                        }
                    })
                })
                .await;
            }
        });
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(h, _)| !h.is_finished());
        v.push((task.abort_handle(), slot));
        Ok(())
    }

    /// `on_lost(cb)`: `cb(reason)` once `lost` resolves with a reason (a loss, not a normal end).
    pub fn on_lost<F>(&self, py: Python<'_>, callback: Py<PyAny>, lost: F) -> PyResult<()>
    where
        F: Future<Output = Option<String>> + Send + 'static,
    {
        self.watch(py, callback, futures::stream::once(lost).filter_map(futures::future::ready))
    }

    /// `__traverse__`: the callbacks held.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(v) = self.0.try_lock() {
            for (_, slot) in v.iter() {
                if let Some(cb) = slot.try_lock().ok().as_deref().and_then(Option::as_ref) {
                    visit.call(cb)?;
                }
            }
        }
        Ok(())
    }

    /// `__clear__`: stop watching and let go of the callbacks.
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let callbacks: Vec<_> = all
            .into_iter()
            .map(|(h, slot)| {
                h.abort();
                slot.lock().unwrap_or_else(|p| p.into_inner()).take()
            })
            .collect();
        drop(callbacks); // outside the locks: dropping may run Python code
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for (h, _) in self.0.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            h.abort();
        }
    }
}

/// An asyncio future on the running loop that is already resolved with `value`
/// (for `__aenter__` returning self: no trip through tokio).
pub fn ready_py<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let fut = running_loop(py)?.call_method0("create_future")?;
    fut.call_method1("set_result", (value,))?;
    Ok(fut)
}
