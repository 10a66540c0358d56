//! `etcd_recipes.testing.EtcdCluster`: core's throwaway real etcd, for our tests and yours.

use std::sync::{Arc, Mutex, Weak};

use etcd_recipes::testing::{etcd_binary, etcd_version, etcdctl_binary, EtcdCluster, StartOptions, TestCerts};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{CoreResultExt, Failure, FResult};
use crate::runtime::spawn_py;

type Shared = Arc<tokio::sync::Mutex<Option<EtcdCluster>>>;

/// Every cluster still running, so that interpreter exit stops them even if never closed.
static LIVE: Mutex<Vec<Weak<tokio::sync::Mutex<Option<EtcdCluster>>>>> = Mutex::new(Vec::new());

/// The process that started them (a forked child must leave its parent's clusters alone).
static OWNER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Stop every cluster this process started (called at interpreter exit).
pub fn stop_all() {
    if OWNER.get().is_some_and(|p| *p != std::process::id()) {
        return;
    }
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
    /// Client URLs of every member.
    #[pyo3(get)]
    endpoints: Vec<String>,
    etcdctl_args: Vec<String>,
    /// The generated certificates (started with `tls=True`), else None.
    #[pyo3(get)]
    certs: Option<Py<PyTestCerts>>,
    /// The root user's name (started with `auth=True`), else None.
    #[pyo3(get)]
    user: Option<String>,
    /// The root user's password (started with `auth=True`), else None.
    #[pyo3(get)]
    password: Option<String>,
}

/// Paths of the PEM files generated for a TLS test etcd (`EtcdCluster.start(tls=True)`).
/// Pass them straight to `Client.connect(ca_cert=..., cert=..., key=...)`.
#[pyclass(module = "etcd_recipes._native", name = "TestCerts", frozen, get_all)]
pub struct PyTestCerts {
    /// The CA that signed the server certificate and the good client certificates.
    ca: String,
    /// A client certificate the server accepts.
    client_cert: String,
    /// The key of `client_cert`.
    client_key: String,
    /// Another CA, which signed nothing the server or a client trusts.
    other_ca: String,
    /// A client certificate signed by `other_ca`: the server refuses it.
    other_client_cert: String,
    /// The key of `other_client_cert`.
    other_client_key: String,
    /// A client certificate signed by the right CA that expired in 2001.
    expired_client_cert: String,
    /// The key of `expired_client_cert`.
    expired_client_key: String,
    /// The server certificate (for 127.0.0.1 and localhost).
    server_cert: String,
    /// The key of `server_cert`.
    server_key: String,
    /// The directory holding every file.
    dir: String,
}

impl From<&TestCerts> for PyTestCerts {
    fn from(c: &TestCerts) -> Self {
        PyTestCerts {
            ca: path(&c.ca),
            client_cert: path(&c.client_cert),
            client_key: path(&c.client_key),
            other_ca: path(&c.other_ca),
            other_client_cert: path(&c.other_client_cert),
            other_client_key: path(&c.other_client_key),
            expired_client_cert: path(&c.expired_client_cert),
            expired_client_key: path(&c.expired_client_key),
            server_cert: path(&c.server_cert),
            server_key: path(&c.server_key),
            dir: path(&c.dir),
        }
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[pymethods]
impl PyTestCerts {
    /// Not a test class, whatever pytest thinks of its name.
    #[classattr]
    #[allow(non_upper_case_globals)]
    const __test__: bool = false;

    fn __repr__(&self) -> String {
        format!("TestCerts(dir={:?})", self.dir)
    }
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
    ///
    /// `tls=True`: clients must use mutual TLS on `https://` endpoints, with certificates
    /// generated at start (`certs`). `auth=True`: user/password authentication is on, with
    /// a root user (`user`, `password`); `add_user()` adds users with no permission.
    #[staticmethod]
    #[pyo3(signature = (members=1, *, tls=false, auth=false))]
    fn start(py: Python<'_>, members: usize, tls: bool, auth: bool) -> PyResult<Self> {
        let mut options = StartOptions::new(members);
        if tls {
            options = options.with_tls();
        }
        if auth {
            options = options.with_auth();
        }
        let c = py.detach(|| EtcdCluster::start_with(options)).py_err(py)?;
        let endpoints = c.endpoints();
        let etcdctl_args = c.etcdctl_args();
        let certs = c.certs().map(|certs| Py::new(py, PyTestCerts::from(certs))).transpose()?;
        let (user, password) = (c.user().map(str::to_string), c.password().map(str::to_string));
        let inner: Shared = Arc::new(tokio::sync::Mutex::new(Some(c)));
        OWNER.get_or_init(std::process::id);
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&inner));
        Ok(PyEtcdCluster { inner, endpoints, etcdctl_args, certs, user, password })
    }

    /// Add a user with this password and no role, so no permission on any key
    /// (needs `auth=True`; blocking).
    fn add_user(&self, py: Python<'_>, name: String, password: String) -> PyResult<()> {
        self.with(py, move |c| c.add_user(&name, &password))
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
        self.with(py, |c| Ok(path(c.dir())))
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

    /// The etcdctl command aimed at this cluster: `[etcdctl, --endpoints=...]`, with the
    /// TLS files and root user when it has them (run it with `ETCDCTL_API=3` in the environment).
    #[getter]
    fn etcdctl(&self) -> Vec<String> {
        let mut cmd = vec![path(&etcdctl_binary())];
        cmd.extend(self.etcdctl_args.iter().cloned());
        cmd
    }

    /// Path of the etcd binary used.
    #[getter]
    fn etcd_path(&self) -> String {
        path(&etcd_binary())
    }

    /// Path of the etcdctl matching the etcd binary (`etcdctl` has the arguments too).
    #[getter]
    fn etcdctl_path(&self) -> String {
        path(&etcdctl_binary())
    }

    /// Kill every member and delete the files. Idempotent.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || inner.blocking_lock().take());
    }

    /// Same as `close()` (which is synchronous in Python already).
    fn close_sync(&self, py: Python<'_>) {
        self.close(py)
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
    path(&etcd_binary())
}

/// The version of that binary, e.g. "3.4.23".
#[pyfunction]
pub fn etcd_binary_version(py: Python<'_>) -> PyResult<String> {
    etcd_version().py_err(py)
}
