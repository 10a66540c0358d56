//! `etcd_recipes._native`: the Python face of the `etcd-recipes` core.
//!
//! The binding only converts arguments, results and errors; every recipe lives in core.
//! One tokio runtime per process (created here at import), every awaitable is a real
//! asyncio future bridged by [`runtime::spawn_py`].

mod client;
mod convert;
mod errors;
mod logging;
mod runtime;
mod session;
mod testing;

use pyo3::prelude::*;

/// Interpreter exit: close the gate to Python for background threads, stop test clusters.
#[pyfunction]
fn _at_exit(py: Python<'_>) {
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
    m.add_function(wrap_pyfunction!(testing::etcd_binary_path, m)?)?;
    m.add_function(wrap_pyfunction!(testing::etcd_binary_version, m)?)?;
    let at_exit = wrap_pyfunction!(_at_exit, m)?;
    py.import("atexit")?.call_method1("register", (&at_exit,))?;
    m.add_function(at_exit)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
