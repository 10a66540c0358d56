//! `Client`: one connection to etcd, with keyword-only connect options, KV helpers,
//! and the factories of every recipe.

use std::sync::RwLock;

use etcd_recipes::{Client, ClientOptions, Error, Session, TlsConfig};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert::{seconds, Value};
use crate::errors::{CoreResultExt, FResult};
use crate::runtime::{rt, spawn_py};
use crate::session::PySession;

/// `bytes` as a result type (a `Vec<u8>` would become `list[int]`).
pub struct Bytes(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

/// A connection to etcd shared by every recipe. Make one with `await Client.connect(...)`.
#[pyclass(module = "etcd_recipes._native", name = "Client", frozen)]
pub struct PyClient {
    inner: RwLock<Option<Client>>,
    endpoints: Vec<String>,
    namespace: String,
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _g = rt().enter();
        self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl PyClient {
    /// The core client, or `ClosedError` after `close()`.
    pub fn core(&self) -> Result<Client, Error> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::Closed("client"))
    }

    pub fn core_py(&self, py: Python<'_>) -> PyResult<Client> {
        self.core().py_err(py)
    }
}

fn endpoints_arg(ob: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(s.to_cow()?.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect());
    }
    let err = || PyTypeError::new_err("endpoints must be a str (\"host:port\") or a list of str");
    if ob.is_instance_of::<PyBytes>() {
        return Err(err());
    }
    let mut out = Vec::new();
    for e in ob.try_iter().map_err(|_| err())? {
        out.push(e?.extract::<String>().map_err(|_| err())?);
    }
    Ok(out)
}

/// PEM material given as bytes (the PEM itself) or as a path (str / os.PathLike).
fn pem_arg(what: &str, ob: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<u8>>> {
    let Some(ob) = ob.filter(|o| !o.is_none()) else { return Ok(None) };
    if let Ok(b) = ob.cast::<PyBytes>() {
        return Ok(Some(b.as_bytes().to_vec()));
    }
    let path: std::path::PathBuf = ob.extract().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be PEM bytes or a path (str or os.PathLike) to a PEM file"))
    })?;
    Ok(Some(std::fs::read(&path)?))
}

#[pymethods]
impl PyClient {
    /// Connect and wait until etcd answers (at most `connect_timeout` seconds).
    #[staticmethod]
    #[pyo3(signature = (endpoints, *, connect_timeout=5.0, request_timeout=10.0, user=None, password=None,
                        ca_cert=None, cert=None, key=None, server_name=None, namespace=""))]
    #[allow(clippy::too_many_arguments)]
    fn connect<'py>(
        py: Python<'py>,
        endpoints: &Bound<'py, PyAny>,
        connect_timeout: f64,
        request_timeout: f64,
        user: Option<String>,
        password: Option<String>,
        ca_cert: Option<&Bound<'py, PyAny>>,
        cert: Option<&Bound<'py, PyAny>>,
        key: Option<&Bound<'py, PyAny>>,
        server_name: Option<String>,
        namespace: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let eps = endpoints_arg(endpoints)?;
        let mut opts = ClientOptions::new(eps.clone())
            .with_connect_timeout(seconds("connect_timeout", connect_timeout)?)
            .with_request_timeout(seconds("request_timeout", request_timeout)?)
            .with_namespace(namespace);
        match (user, password) {
            (Some(u), p) => opts = opts.with_user(u, p.unwrap_or_default()),
            (None, Some(_)) => {
                return Err(pyo3::exceptions::PyValueError::new_err("password given without user"));
            }
            (None, None) => {}
        }
        let tls = TlsConfig {
            ca_pem: pem_arg("ca_cert", ca_cert)?,
            client_cert_pem: pem_arg("cert", cert)?,
            client_key_pem: pem_arg("key", key)?,
            domain: server_name,
        };
        if tls.ca_pem.is_some() || tls.client_cert_pem.is_some() || tls.client_key_pem.is_some() || tls.domain.is_some() {
            opts = opts.with_tls(tls);
        }
        crate::logging::refresh_level(py);
        let ns = namespace.to_string();
        spawn_py(py, async move {
            let c = Client::connect(opts).await?;
            FResult::Ok(PyClient { inner: RwLock::new(Some(c)), endpoints: eps, namespace: ns })
        })
    }

    /// The endpoints given to `connect`.
    #[getter]
    fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// The prefix put in front of every key this client's recipes touch.
    #[getter]
    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// False once `close()` was called.
    #[getter]
    fn is_open(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Put `value` (bytes or str) at `key`; returns the revision of the write.
    fn put<'py>(&self, py: Python<'py>, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.put(&key, value.0).await?) })
    }

    /// The value at `key`, or None.
    fn get<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.get(&key).await?.map(Bytes)) })
    }

    /// Delete `key`; True if it existed.
    fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.delete(&key).await? > 0) })
    }

    /// The current revision of the store.
    fn revision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.revision().await?) })
    }

    /// Does this lease exist in etcd?
    fn lease_exists<'py>(&self, py: Python<'py>, lease_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.lease_exists(lease_id).await?) })
    }

    /// Revoke a lease by id (operators and tests: its owner's session becomes lost).
    fn revoke_lease<'py>(&self, py: Python<'py>, lease_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(c.revoke_lease(lease_id).await?) })
    }

    /// Grant a lease of `ttl` seconds and keep it alive: a `Session`.
    #[pyo3(signature = (*, ttl=10))]
    fn session<'py>(&self, py: Python<'py>, ttl: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core_py(py)?;
        spawn_py(py, async move { Ok(PySession::new(Session::new(&c, ttl).await?)) })
    }

    /// A distributed lock called `name`. Each acquisition runs on its own session of
    /// `ttl` seconds (or on `session` if given); `timeout` bounds the wait (None: forever).
    #[pyo3(signature = (name, *, ttl=10, timeout=None, session=None))]
    fn lock(
        &self,
        py: Python<'_>,
        name: String,
        ttl: i64,
        timeout: Option<f64>,
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<crate::lock::PyLock> {
        crate::lock::make_lock(py, self.core_py(py)?, name, ttl, timeout, session)
    }

    /// The election called `name`; each campaign runs on its own session of `ttl`
    /// seconds (or on `session` if given).
    #[pyo3(signature = (name, *, ttl=10, session=None))]
    fn election(
        &self,
        py: Python<'_>,
        name: String,
        ttl: i64,
        session: Option<PyRef<'_, PySession>>,
    ) -> PyResult<crate::election::PyElection> {
        let c = self.core_py(py)?;
        let source = crate::lock::SessionSource::from_args(c.clone(), ttl, session)?;
        crate::election::PyElection::new(py, c, source, name)
    }

    /// The current leader of election `name` (no session needed), or None.
    fn leader<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        crate::election::leader_py(py, self.core_py(py)?, name)
    }

    /// Observe election `name` without a session: `async for leader in client.observe_leader(name)`.
    fn observe_leader(&self, py: Python<'_>, name: &str) -> PyResult<crate::election::PyLeaderObserver> {
        crate::election::observe_py(py, &self.core_py(py)?, name)
    }

    /// Register an instance of `service` (kept alive, self-healing). Await it for a
    /// `Registration`, or `async with client.register(...) as registration:` to
    /// deregister on exit.
    #[pyo3(signature = (service, id, addr, *, metadata=None, ttl=10))]
    fn register(
        &self,
        py: Python<'_>,
        service: String,
        id: String,
        addr: String,
        metadata: Option<&Bound<'_, PyAny>>,
        ttl: i64,
    ) -> PyResult<crate::registry::PyRegistering> {
        crate::registry::PyRegistering::new(self.core_py(py)?, service, id, addr, metadata, ttl)
    }

    /// The instances of `service` now (one read).
    fn list_instances<'py>(&self, py: Python<'py>, service: String) -> PyResult<Bound<'py, PyAny>> {
        crate::registry::list_py(py, self.core_py(py)?, service)
    }

    /// A live view of `service`'s instances.
    fn discover<'py>(&self, py: Python<'py>, service: String) -> PyResult<Bound<'py, PyAny>> {
        crate::registry::discover_py(py, self.core_py(py)?, service)
    }

    /// A local, watched copy of `key` (or of every key under it, with `prefix=True`).
    /// `reconcile_interval`: seconds between full comparisons with etcd (None/0: off).
    #[pyo3(signature = (key, *, prefix=false, reconcile_interval=Some(30.0)))]
    fn config<'py>(&self, py: Python<'py>, key: String, prefix: bool, reconcile_interval: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        crate::config::config_py(py, self.core_py(py)?, key, prefix, reconcile_interval)
    }

    /// Drop this handle's connection. Sessions, locks and views made from it keep
    /// their own reference and are closed by their own `close()` / `async with`.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let old = {
            let _g = rt().enter();
            self.inner.write().unwrap_or_else(|p| p.into_inner()).take()
        };
        spawn_py(py, async move {
            drop(old);
            FResult::Ok(())
        })
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::runtime::ready_py(slf.py(), slf.into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, pyo3::types::PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(endpoints={:?}, namespace={:?}{})",
            self.endpoints,
            self.namespace,
            if self.is_open() { "" } else { ", closed" }
        )
    }
}
