//! The one tokio runtime of the process, and the bridge from Rust futures to asyncio.
//!
//! Every awaitable this package returns is made by [`spawn_py`]: the Rust future runs
//! on the shared runtime; an asyncio future on the caller's loop receives the result,
//! through that loop's completion queue (see "The way back" below).
//! Cancelling the asyncio future aborts the tokio task, which drops the Rust future
//! (so core's drop-cleanup runs: a cancelled lock waiter deletes its key).
//!
//! Interpreter exit: an `atexit` hook (see `lib.rs`) closes every client of the process
//! (core's `shutdown`), then a gate ([`python_gate`]) before CPython starts finalizing.
//! Results are converted on the loop's own thread; background threads that do attach (the
//! logging bridge, the fallback wake of loops without `add_reader`) only do so while
//! holding the gate open, so no Rust thread ever touches a finalizing interpreter (the
//! classic shutdown segfault of Rust-backed Python packages).

use std::future::Future;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};

use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use pyo3::intern;
use pyo3::IntoPyObjectExt;
use pyo3::sync::PyOnceLock;
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
    let pid = pid();
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

/// This process's id. Cached: `getpid` is a system call, and every call into the package
/// asks (a forked child must not use its parent's runtime or sockets). A `pthread_atfork`
/// handler forgets it in a forked child.
fn pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    #[cfg(unix)]
    {
        extern "C" fn forget_in_child() {
            PID.store(0, Ordering::Relaxed);
        }
        extern "C" {
            fn pthread_atfork(
                prepare: Option<extern "C" fn()>,
                parent: Option<extern "C" fn()>,
                child: Option<extern "C" fn()>,
            ) -> std::ffi::c_int;
        }
        static HANDLER: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function that only stores to an atomic.
        HANDLER.call_once(|| unsafe {
            pthread_atfork(None, None, Some(forget_in_child));
        });
    }
    match PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
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

// The way back: a completion queue per event loop.
//
// A finished Rust future does not attach to Python on the runtime thread. It pushes a
// closure (resolve this asyncio future with this Rust result) onto the queue of the loop
// that awaits it and, only when the queue was empty, wakes that loop by writing a byte to
// a socket the loop watches (`loop.add_reader`). The loop's thread then converts and
// resolves everything queued, attached as it is anyway. So runtime threads never wait for
// the GIL (nor fight the loop's thread for it), no blocking-pool hop is needed, and under
// load one wake-up serves many completions.

/// Work for an event loop's thread, made on a runtime thread without Python: resolve an
/// asyncio future, schedule a watcher's callback.
type OnLoop = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// How a loop learns that its queue has work.
enum Waker {
    /// The write end of a socket pair whose read end the loop watches ([`Reader`]).
    #[cfg(unix)]
    Fd(std::os::unix::net::UnixStream),
    /// For loops without `add_reader` (Windows' proactor loop): `call_soon_threadsafe`
    /// from a blocking-pool thread, attached through the gate; a queue per call.
    Threadsafe(Arc<Py<PyAny>>),
}

/// The runtime side of a loop's completion queue.
struct Queue {
    /// `None` once the loop is closed or gone: what is pushed then is dropped at once (a
    /// lock guard for a closed loop releases its lock), and the socket is closed.
    open: Mutex<Option<(Vec<OnLoop>, Waker)>>,
}

impl Queue {
    fn new(waker: Waker) -> Arc<Self> {
        Arc::new(Queue { open: Mutex::new(Some((Vec::new(), waker))) })
    }

    /// Queue `f` for the loop; wake the loop only if the queue was empty (a drain takes
    /// everything queued by the time it runs).
    fn push(self: &Arc<Self>, f: OnLoop) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some((items, waker)) = open.as_mut() else {
            drop(open);
            drop(f); // pyo3 releases the Python objects in it at its next attach
            return;
        };
        let was_empty = items.is_empty();
        items.push(f);
        if !was_empty {
            return;
        }
        match waker {
            #[cfg(unix)]
            Waker::Fd(tx) => {
                use std::io::Write;
                // Under the lock, so never after `close`. WouldBlock: unread wake bytes are
                // there already.
                let _ = (&*tx).write(&[1]);
            }
            Waker::Threadsafe(event_loop) => {
                let (queue, event_loop) = (self.clone(), event_loop.clone());
                drop(open);
                // Attaching may wait for the GIL: do it off the async workers.
                drop(tokio::task::spawn_blocking(move || {
                    python_gate(|py| {
                        if let Ok(drain) = Bound::new(py, Drain(queue)) {
                            // RuntimeError when the loop is closed: nobody is waiting any more.
                            let _ = event_loop.bind(py).call_method1(intern!(py, "call_soon_threadsafe"), (drain,));
                        }
                        drop(event_loop);
                    });
                }));
            }
        }
    }

    /// On the loop's thread: run everything queued so far, in order.
    fn drain(&self, py: Python<'_>) {
        let batch = match self.open.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some((items, _)) => std::mem::take(items),
            None => return,
        };
        for f in batch {
            f(py);
        }
    }

    /// The loop is closed or gone (attached): drop what is queued and what comes later,
    /// close the socket.
    fn close(&self) {
        let left = self.open.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(left);
    }
}

/// What a [`Waker::Threadsafe`] wake schedules on the loop.
#[pyclass(frozen)]
struct Drain(Arc<Queue>);

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.0.drain(py);
    }
}

/// The loop's reader callback, owner of the socket's read end. Only the loop's selector
/// holds it: closing the loop closes the selector, which drops it, which closes the queue
/// and the socket.
#[cfg(unix)]
#[pyclass(frozen)]
struct Reader {
    queue: Arc<Queue>,
    rx: std::os::unix::net::UnixStream,
}

#[cfg(unix)]
#[pymethods]
impl Reader {
    /// First consume the wake bytes, then take the queue. In that order, a push that comes
    /// after the bytes were read either finds the queue not empty (this drain takes it) or
    /// empty (it writes a byte: the next drain takes it).
    fn __call__(&self, py: Python<'_>) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        loop {
            match (&self.rx).read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => break, // drained (a short read or WouldBlock)
            }
        }
        self.queue.drain(py);
    }
}

#[cfg(unix)]
impl Drop for Reader {
    fn drop(&mut self) {
        self.queue.close(); // the write end too: a closed loop leaves no file open
    }
}

/// A loop's completion queue, kept on the loop object (attribute [`LOOP_ATTR`], or in
/// [`LOOP_QUEUES`] for loops without a `__dict__`). Per process: a forked child never
/// writes to its parent's socket, it makes its own.
#[pyclass(frozen)]
struct Completions {
    pid: u32,
    /// `None`: this loop has no `add_reader`, every call gets a queue of its own.
    queue: Option<Arc<Queue>>,
    /// The socket's read end, to stop watching it in a forked child.
    #[cfg(unix)]
    fd: i32,
}

/// The attribute of an event loop that holds its [`Completions`].
const LOOP_ATTR: &str = "_etcd_recipes_completions";

/// `weakref.WeakKeyDictionary` loop -> [`Completions`], for loops without a `__dict__`.
static LOOP_QUEUES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn loop_queues(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(LOOP_QUEUES
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("weakref")?.getattr("WeakKeyDictionary")?.call0()?.unbind()))?
        .bind(py))
}

fn has_dict(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr(intern!(obj.py(), "__dict__")).unwrap_or(false)
}

thread_local! {
    /// The loop last found running in this thread, its completion queue, and the process.
    static CURRENT: std::cell::RefCell<Option<(Py<PyAny>, Arc<Queue>, u32)>> = const { std::cell::RefCell::new(None) };
}

/// The running loop of this thread and its completion queue (`RuntimeError` outside a
/// coroutine). `asyncio.get_running_loop` costs a system call on CPython 3.11 (its own fork
/// check), so the loop found last is remembered per thread and taken again while its
/// `_thread_id` (set by `run_forever` for as long as it runs) is this thread: one loop at a
/// time runs in a thread, so that is the running loop. Loops without `_thread_id` (uvloop)
/// ask asyncio each time.
fn current_loop(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Arc<Queue>)> {
    let pid = pid();
    let cached = CURRENT.with(|c| c.borrow().as_ref().filter(|(_, _, p)| *p == pid).map(|(l, q, _)| (l.clone_ref(py), q.clone())));
    if let Some((event_loop, queue)) = cached {
        let event_loop = event_loop.into_bound(py);
        // SAFETY: no preconditions.
        let me = unsafe { pyo3::ffi::PyThread_get_thread_ident() } as u64;
        if let Ok(Some(tid)) = event_loop.getattr_opt(intern!(py, "_thread_id")) {
            if tid.extract::<u64>().is_ok_and(|t| t == me) {
                return Ok((event_loop, queue));
            }
        }
    }
    let event_loop = running_loop(py)?;
    let queue = loop_queue(py, &event_loop)?;
    if event_loop.hasattr(intern!(py, "_thread_id")).unwrap_or(false) {
        let old = CURRENT.with(|c| c.replace(Some((event_loop.clone().unbind(), queue.clone(), pid))));
        drop(old); // attached
    }
    Ok((event_loop, queue))
}

/// The completion queue for a future of `event_loop` (the running loop of this thread).
fn loop_queue(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Queue>> {
    let pid = pid();
    let found = match event_loop.getattr_opt(intern!(py, LOOP_ATTR))? {
        Some(c) => Some(c),
        None if has_dict(event_loop) => None,
        None => loop_queues(py)?.call_method1(intern!(py, "get"), (event_loop,)).ok().filter(|c| !c.is_none()),
    };
    if let Some(c) = found.and_then(|c| c.cast_into::<Completions>().ok()) {
        let c = c.get();
        if c.pid == pid {
            return Ok(match &c.queue {
                Some(q) => q.clone(),
                None => Queue::new(Waker::Threadsafe(Arc::new(event_loop.clone().unbind()))),
            });
        }
        // Inherited from the parent process: stop watching the parent's socket.
        #[cfg(unix)]
        if c.queue.is_some() {
            let _ = event_loop.call_method1(intern!(py, "remove_reader"), (c.fd,));
        }
    }
    #[cfg(unix)]
    if let Some(q) = watched_socket(py, event_loop, pid)? {
        return Ok(q);
    }
    Ok(Queue::new(Waker::Threadsafe(Arc::new(event_loop.clone().unbind()))))
}

/// Keep `c` as `event_loop`'s completions; false if the loop can hold it nowhere.
#[cfg(unix)]
fn keep(py: Python<'_>, event_loop: &Bound<'_, PyAny>, c: Completions) -> PyResult<bool> {
    let c = Bound::new(py, c)?;
    if has_dict(event_loop) && event_loop.setattr(intern!(py, LOOP_ATTR), &c).is_ok() {
        return Ok(true);
    }
    Ok(loop_queues(py)?.set_item(event_loop, &c).is_ok())
}

/// A socket pair watched by `event_loop`, remembered on it; None when the loop has no
/// `add_reader` (remembered too) or cannot remember anything.
#[cfg(unix)]
fn watched_socket(py: Python<'_>, event_loop: &Bound<'_, PyAny>, pid: u32) -> PyResult<Option<Arc<Queue>>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let Ok((rx, tx)) = UnixStream::pair().and_then(|(rx, tx)| {
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok((rx, tx))
    }) else {
        return Ok(None);
    };
    let fd = rx.as_raw_fd();
    let queue = Queue::new(Waker::Fd(tx));
    let reader = Bound::new(py, Reader { queue: queue.clone(), rx })?;
    if event_loop.call_method1(intern!(py, "add_reader"), (fd, &reader)).is_err() {
        keep(py, event_loop, Completions { pid, queue: None, fd: -1 })?;
        return Ok(None);
    }
    if !keep(py, event_loop, Completions { pid, queue: Some(queue.clone()), fd })? {
        let _ = event_loop.call_method1(intern!(py, "remove_reader"), (fd,));
        return Ok(None);
    }
    Ok(Some(queue))
}

/// Resolve `fut` with `result` on its loop's thread, unless it is done already (its
/// awaiter cancelled it).
fn resolve<T>(py: Python<'_>, fut: Py<PyAny>, result: crate::errors::FResult<T>)
where
    T: for<'a> IntoPyObject<'a>,
{
    let fut = fut.into_bound(py);
    match fut.call_method0(intern!(py, "done")).and_then(|d| d.is_truthy()) {
        Ok(false) => {}
        _ => return,
    }
    let converted = match result {
        Ok(v) => v.into_py_any(py),
        Err(f) => Err(f.into_py(py)),
    };
    // Cannot fail: the future is not done, and this is its loop's thread.
    let _ = match converted {
        Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
    };
}

/// Aborts the tokio task when the asyncio future is cancelled.
#[pyclass(frozen)]
struct CancelOnDone {
    abort: AbortHandle,
}

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0(intern!(fut.py(), "cancelled"))?.is_truthy()? {
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
    let (event_loop, queue) = current_loop(py)?;
    let py_fut = event_loop.call_method0(intern!(py, "create_future"))?;
    let fut_ref = py_fut.clone().unbind();
    // Boxed at once: the task moves as a pointer, not as the kilobytes of a core future.
    let fut = Box::pin(fut);
    let task = rt().spawn(async move {
        let result = fut.await;
        queue.push(Box::new(move |py| resolve(py, fut_ref, result)));
    });
    py_fut.call_method1(intern!(py, "add_done_callback"), (CancelOnDone { abort: task.abort_handle() },))?;
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
    /// Call `callback(item)` on the loop (through its completion queue, then `call_soon`)
    /// for each item of `items`, in order, until the stream ends or the object goes.
    pub fn watch<S, T>(&self, py: Python<'_>, callback: Py<PyAny>, items: S) -> PyResult<()>
    where
        S: Stream<Item = T> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let (event_loop, queue) = current_loop(py)?;
        let event_loop = Arc::new(event_loop.unbind());
        let slot: Slot = Arc::new(Mutex::new(Some(callback)));
        let cb = slot.clone();
        let task = rt().spawn(async move {
            let mut items = std::pin::pin!(items);
            while let Some(item) = items.next().await {
                let (event_loop, cb) = (event_loop.clone(), cb.clone());
                queue.push(Box::new(move |py| {
                    // Attached first, then the slot: the collector locks it attached too.
                    let cb = cb.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.clone_ref(py));
                    if let (Some(cb), Ok(v)) = (cb, item.into_py_any(py)) {
                        // A callback of its own on the loop: its errors go to the loop's handler.
                        let _ = event_loop.bind(py).call_method1(intern!(py, "call_soon"), (cb, v));
                    }
                }));
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
    let (event_loop, _) = current_loop(py)?;
    let fut = event_loop.call_method0(intern!(py, "create_future"))?;
    fut.call_method1(intern!(py, "set_result"), (value,))?;
    Ok(fut)
}

/// An asyncio future on the running loop already resolved with `result` (a value or an
/// exception), for a result at hand: no trip through tokio nor a wake-up of the loop.
pub fn resolved_py<'py, T>(py: Python<'py>, result: crate::errors::FResult<T>) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a>,
{
    let (event_loop, _) = current_loop(py)?;
    let fut = event_loop.call_method0(intern!(py, "create_future"))?;
    resolve(py, fut.clone().unbind(), result);
    Ok(fut)
}
