//! `etcd_recipes.testing.EtcdCluster`: core's throwaway real etcd, for our tests and yours.

use std::sync::{Arc, Mutex, Weak};

use etcd_recipes::testing::{etcd_binary, etcd_version, etcdctl_binary, EtcdCluster};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{CoreResultExt, Failure, FResult};
use crate::runtime::spawn_py;

type Shared = Arc<tokio::sync::Mutex<Option<EtcdCluster>>>;

/// Every cluster still running, so that interpreter exit stops them even if never closed.
static LIVE: Mutex<Vec<Weak<tokio::sync::Mutex<Option<EtcdCluster>>>>> = Mutex::new(Vec::new());

/// Stop every cluster this process started (called at interpreter exit).
pub fn stop_all() {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    for w in live {
        if let Some(c) = w.upgrade() {
            if let Ok(mut g) = c.try_lock() {
                g.take();
            }
        }
    }
}

/// A real etcd (1 or 3 members) on free loopback ports in a temporary directory.
/// `EtcdCluster.start()`; `with` / `close()` stops it and deletes its files.
#[pyclass(module = "etcd_recipes._native", name = "EtcdCluster", frozen)]
pub struct PyEtcdCluster {
    inner: Shared,
    endpoints: Vec<String>,
}

impl PyEtcdCluster {
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut EtcdCluster) -> etcd_recipes::Result<R> + Send) -> PyResult<R>
    where
        R: Send,
    {
        let inner = self.inner.clone();
        py.detach(move || {
            let mut g = inner.blocking_lock();
            match g.as_mut() {
                Some(c) => f(c),
                None => Err(etcd_recipes::Error::Closed("test etcd cluster")),
            }
        })
        .py_err(py)
    }
}

#[pymethods]
impl PyEtcdCluster {
    /// Start `members` members and wait until healthy (blocking; a few hundred ms).
    /// The binary is `$ETCD_BIN`, else `etcd` on PATH.
    #[staticmethod]
    #[pyo3(signature = (members=1))]
    fn start(py: Python<'_>, members: usize) -> PyResult<Self> {
        let c = py.detach(|| EtcdCluster::start(members)).py_err(py)?;
        let endpoints = c.endpoints();
        let inner: Shared = Arc::new(tokio::sync::Mutex::new(Some(c)));
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&inner));
        Ok(PyEtcdCluster { inner, endpoints })
    }

    /// Client URLs of every member.
    #[getter]
    fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// Client URL of member `i`.
    fn endpoint(&self, i: usize) -> PyResult<String> {
        self.endpoints
            .get(i)
            .cloned()
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err(format!("no member {i}")))
    }

    fn __len__(&self) -> usize {
        self.endpoints.len()
    }

    /// Process id of member `i`, if running.
    fn pid(&self, py: Python<'_>, i: usize) -> PyResult<Option<u32>> {
        self.with(py, |c| Ok(c.pid(i)))
    }

    /// SIGSTOP member `i` (it keeps its sockets but answers nothing).
    fn pause(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.pause(i))
    }

    /// SIGCONT member `i`.
    fn resume(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.resume(i))
    }

    /// SIGKILL member `i`.
    fn kill(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.kill(i))
    }

    /// Stop member `i` gracefully.
    fn stop_member(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.stop(i))
    }

    /// Start member `i` again and wait until healthy.
    fn start_member(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.start_member(i))
    }

    /// Stop and start member `i`, keeping its data.
    fn restart(&self, py: Python<'_>, i: usize) -> PyResult<()> {
        self.with(py, |c| c.restart(i))
    }

    /// Stop everything, delete all data, start a brand-new cluster on the same ports.
    fn restart_wiped(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.restart_wiped())
    }

    /// Stop every member (the files stay until `close()`).
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.stop_all())
    }

    /// The last `n` lines of member `i`'s log.
    #[pyo3(signature = (i=0, n=30))]
    fn log_tail(&self, py: Python<'_>, i: usize, n: usize) -> PyResult<String> {
        self.with(py, |c| Ok(c.log_tail(i, n)))
    }

    /// The temporary directory holding data and logs.
    #[getter]
    fn dir(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |c| Ok(c.dir().display().to_string()))
    }

    /// Compact the store at its current revision (physically); returns that revision.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        spawn_py(py, async move {
            let g = inner.lock().await;
            let c = g.as_ref().ok_or(Failure::Core(etcd_recipes::Error::Closed("test etcd cluster")))?;
            FResult::Ok(c.compact().await?)
        })
    }

    /// The etcdctl command aimed at this cluster: `[etcdctl, --endpoints=...]`
    /// (run it with `ETCDCTL_API=3` in the environment).
    #[getter]
    fn etcdctl(&self) -> Vec<String> {
        vec![etcdctl_binary().display().to_string(), format!("--endpoints={}", self.endpoints.join(","))]
    }

    /// Kill every member and delete the files. Idempotent.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || inner.blocking_lock().take());
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!("EtcdCluster(endpoints={:?})", self.endpoints)
    }
}

/// Path of the etcd binary the harness runs.
#[pyfunction]
pub fn etcd_binary_path() -> String {
    etcd_binary().display().to_string()
}

/// The version of that binary, e.g. "3.4.23".
#[pyfunction]
pub fn etcd_binary_version(py: Python<'_>) -> PyResult<String> {
    etcd_version().py_err(py)
}
