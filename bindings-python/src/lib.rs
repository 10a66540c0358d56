//! `etcd_recipes._native`: the Python face of the `etcd-recipes` core.
//!
//! The binding only converts arguments, results and errors; every recipe and every
//! lifetime lives in core. One tokio runtime per process (created here at import), every
//! awaitable is a real asyncio future bridged by [`runtime::spawn_py`].

mod barrier;
mod client;
mod config;
mod connection;
mod convert;
mod counter;
mod election;
mod errors;
mod fenced;
mod health;
mod leader;
mod lock;
mod logging;
mod members;
mod runtime;
mod queue;
mod registry;
mod rwlock;
mod semaphore;
mod session;
mod stream;
mod testing;
mod workqueue;

use std::time::Duration;

use pyo3::prelude::*;

/// How long process exit may spend revoking what the process still owns.
const EXIT_BUDGET: Duration = Duration::from_secs(2);

/// Close every client of the process: sessions revoked, locks and leaderships ended,
/// registrations removed, views stopped (bounded; the rest expires with its TTL).
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    py.detach(|| etcd_recipes::shutdown_blocking(runtime::rt().handle(), EXIT_BUDGET));
}

/// Interpreter exit (atexit, or SIGTERM before the process dies): shut down, stop test
/// clusters, and close the gate to Python for background threads.
#[pyfunction]
fn _at_exit(py: Python<'_>) {
    _shutdown(py);
    testing::stop_all();
    runtime::close_gate(py);
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    runtime::init_runtime();
    logging::install(py);
    errors::register(m)?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<testing::PyEtcdCluster>()?;
    m.add_class::<testing::PyTestCerts>()?;
    m.add_class::<lock::PyLock>()?;
    m.add_class::<lock::PyLockGuard>()?;
    m.add_class::<semaphore::PySemaphore>()?;
    m.add_class::<rwlock::PyRwLock>()?;
    m.add_class::<election::PyElection>()?;
    m.add_class::<election::PyCampaign>()?;
    m.add_class::<election::PyLeadership>()?;
    m.add_class::<election::PyLeaderInfo>()?;
    m.add_class::<election::PyLeaderObserver>()?;
    m.add_class::<leader::PyLeaderLoop>()?;
    m.add_class::<leader::PyLeaderLatch>()?;
    m.add_class::<leader::PyLeaderEvent>()?;
    m.add_class::<leader::PyLeaderEvents>()?;
    m.add_class::<registry::PyInstance>()?;
    m.add_class::<registry::PyRegistration>()?;
    m.add_class::<registry::PyRegistering>()?;
    m.add_class::<registry::PyServiceView>()?;
    m.add_class::<registry::PyInstanceSets>()?;
    m.add_class::<registry::PyInstanceEvent>()?;
    m.add_class::<registry::PyInstanceEvents>()?;
    m.add_class::<config::PyConfigView>()?;
    m.add_class::<config::PyConfigChange>()?;
    m.add_class::<config::PyConfigChanges>()?;
    m.add_class::<connection::PyConnectionStates>()?;
    m.add_class::<connection::PyEndpointHealth>()?;
    m.add_class::<workqueue::PyWorkQueue>()?;
    m.add_class::<workqueue::PyWorkItem>()?;
    m.add_class::<workqueue::PyDeadLetter>()?;
    m.add_class::<counter::PyCounter>()?;
    m.add_class::<barrier::PyBarrier>()?;
    m.add_class::<barrier::PyDoubleBarrier>()?;
    m.add_class::<queue::PyQueue>()?;
    m.add_class::<queue::PyPriorityQueue>()?;
    m.add_class::<queue::PyQueueItem>()?;
    m.add_class::<health::PyHealth>()?;
    m.add_class::<health::PySessionHealth>()?;
    m.add_class::<health::PyViewHealth>()?;
    m.add_class::<health::PyComponentHealth>()?;
    m.add_class::<health::PyMetricFamily>()?;
    m.add_class::<health::PyMetricSample>()?;
    m.add_function(wrap_pyfunction!(health::metrics_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(health::metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(testing::etcd_binary_path, m)?)?;
    m.add_function(wrap_pyfunction!(testing::etcd_binary_version, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    let at_exit = wrap_pyfunction!(_at_exit, m)?;
    py.import("atexit")?.call_method1("register", (&at_exit,))?;
    m.add_function(at_exit)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
