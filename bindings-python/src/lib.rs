//! `etcd_recipes._native`: the Python face of the `etcd-recipes` core.
//!
//! The binding only converts arguments, results and errors; every recipe lives in core.
//! One tokio runtime per process (created here at import), every awaitable is a real
//! asyncio future bridged by [`runtime::spawn_py`].

mod client;
mod config;
mod convert;
mod election;
mod errors;
mod exit;
mod lock;
mod logging;
mod runtime;
mod registry;
mod session;
mod stream;
mod testing;

use pyo3::prelude::*;

/// Interpreter exit: revoke the leases we still own (bounded), stop test clusters,
/// close the gate to Python for background threads.
#[pyfunction]
fn _at_exit(py: Python<'_>) {
    py.detach(exit::revoke_all);
    testing::stop_all();
    runtime::_shutdown(py);
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
    m.add_class::<election::PyElection>()?;
    m.add_class::<election::PyCampaign>()?;
    m.add_class::<election::PyLeadership>()?;
    m.add_class::<election::PyLeaderInfo>()?;
    m.add_class::<election::PyLeaderObserver>()?;
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
    m.add_function(wrap_pyfunction!(testing::etcd_binary_path, m)?)?;
    m.add_function(wrap_pyfunction!(testing::etcd_binary_version, m)?)?;
    let at_exit = wrap_pyfunction!(_at_exit, m)?;
    py.import("atexit")?.call_method1("register", (&at_exit,))?;
    m.add_function(at_exit)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
