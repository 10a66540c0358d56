//! `Client`: one connection to etcd, with keyword-only connect options, KV helpers,
//! and the factories of every recipe.

use etcd_recipes::election::{self, Election};
use etcd_recipes::lock::Lock;
use etcd_recipes::registry;
use etcd_recipes::{Client, ClientOptions, Error, Session, SessionSource, TlsConfig};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::convert::{self, seconds, Bytes, Ttl, Value};
use crate::errors::{invalid, CoreResultExt, FResult};
use crate::members::class_methods;
use crate::runtime::{spawn_py, InRt};
use crate::session::PySession;

/// A connection to etcd shared by every recipe. Make one with `await Client.connect(...)`.
#[pyclass(module = "etcd_recipes._native", name = "Client", frozen)]
pub struct PyClient {
    inner: InRt<Client>,
}

fn endpoints_arg(ob: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(s.to_cow()?.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect());
    }
    let err = || PyTypeError::new_err("endpoints must be a str (\"host:port\") or a list of str");
    if ob.is_instance_of::<PyBytes>() {
        return Err(err());
    }
    ob.try_iter().map_err(|_| err())?.map(|e| e?.extract::<String>().map_err(|_| err())).collect()
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

/// Where a recipe gets its sessions: `session`, or a fresh one of `ttl` per use.
fn source(client: &Client, ttl: Ttl, session: Option<PyRef<'_, PySession>>) -> etcd_recipes::Result<SessionSource> {
    match session {
        Some(s) => Ok(SessionSource::Shared((*s.inner).clone())),
        None => SessionSource::per_use(client, ttl.0),
    }
}

class_methods! {
    impl PyClient {
        /// Connect and wait until etcd answers (at most `connect_timeout` seconds).
        #[staticmethod]
        #[pyo3(signature = (endpoints, *, connect_timeout=5.0, request_timeout=10.0, user=None, password=None,
                            ca_cert=None, cert=None, key=None, tls_domain=None, namespace=""))]
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
            tls_domain: Option<String>,
            namespace: &str,
        ) -> PyResult<Bound<'py, PyAny>> {
            let mut opts = ClientOptions::new(endpoints_arg(endpoints)?)
                .with_connect_timeout(seconds(py, "connect_timeout", connect_timeout, false)?)
                .with_request_timeout(seconds(py, "request_timeout", request_timeout, false)?)
                .with_namespace(namespace);
            match (user, password) {
                (Some(u), p) => opts = opts.with_user(u, p.unwrap_or_default()),
                (None, Some(_)) => return Err(invalid(py, "password given without user")),
                (None, None) => {}
            }
            let tls = TlsConfig {
                ca_pem: pem_arg("ca_cert", ca_cert)?,
                client_cert_pem: pem_arg("cert", cert)?,
                client_key_pem: pem_arg("key", key)?,
                domain: tls_domain,
            };
            if tls.ca_pem.is_some() || tls.client_cert_pem.is_some() || tls.client_key_pem.is_some() || tls.domain.is_some() {
                opts = opts.with_tls(tls);
            }
            crate::logging::refresh_level(py);
            spawn_py(py, async move { FResult::Ok(PyClient { inner: InRt::new(Client::connect(opts).await?) }) })
        }

        /// The endpoints given to `connect`.
        #[getter]
        fn endpoints(&self) -> Vec<String> {
            self.inner.options().endpoints().to_vec()
        }

        /// The prefix put in front of every key this client's recipes touch.
        #[getter]
        fn namespace(&self) -> &str {
            self.inner.namespace()
        }

        /// True once `close()` was called.
        #[getter]
        fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }

        /// Where the connection to etcd stands: "CONNECTED", "SUSPENDED" (no member serves;
        /// sessions hold their leases until their deadlines), "RECONNECTED" or "LOST" (a
        /// session expired for lack of a confirmed renewal).
        #[getter]
        fn connection_state(&self) -> &'static str {
            crate::connection::name(self.inner.connection_state())
        }

        /// `async for state in client.connection_states()`: the current state, then every
        /// change, until the client is closed.
        fn connection_states(&self) -> crate::connection::PyConnectionStates {
            let _g = crate::runtime::rt().enter();
            crate::connection::PyConnectionStates::new(self.inner.connection_states())
        }

        /// How each endpoint looks now (in rotation or not; serving or not), in order.
        fn endpoint_health(&self) -> Vec<crate::connection::PyEndpointHealth> {
            self.inner.endpoint_health().into_iter().map(Into::into).collect()
        }

        /// This client's coordination health now, for a readiness probe (no request to etcd).
        fn health(&self) -> crate::health::PyHealth {
            etcd_recipes::health::health(&self.inner).into()
        }

        /// Put `value` (bytes or str) at `key`; returns the revision of the write.
        fn put<'py>(&self, py: Python<'py>, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.put(&key, value.0).await?) })
        }

        /// The value at `key`, or None.
        fn get<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.get(&key).await?.map(Bytes)) })
        }

        /// The value at `key` as text, or None; `DecodeError` if it is not UTF-8.
        fn get_string<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move {
                let Some(v) = c.get(&key).await? else { return Ok(None) };
                let text = String::from_utf8(v).map_err(|e| Error::Decode { key, message: format!("not UTF-8: {e}") })?;
                Ok(Some(text))
            })
        }

        /// Delete `key`; returns the number of keys deleted (0 or 1).
        fn delete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.delete(&key).await?) })
        }

        /// The current revision of the store.
        fn revision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.revision().await?) })
        }

        /// Does this lease exist in etcd?
        fn lease_exists<'py>(&self, py: Python<'py>, lease_id: i64) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.lease_exists(lease_id).await?) })
        }

        /// Revoke a lease by id (operators and tests: its owner's session becomes lost).
        fn revoke_lease<'py>(&self, py: Python<'py>, lease_id: i64) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(c.revoke_lease(lease_id).await?) })
        }

        /// Grant a lease of `ttl` seconds and keep it alive: a `Session`.
        #[pyo3(signature = (*, ttl=Ttl(10)))]
        fn session<'py>(&self, py: Python<'py>, ttl: Ttl) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(PySession::new(Session::new(&c, ttl.0).await?)) })
        }

        /// A distributed lock called `name`. Each acquisition runs on a session of its own of
        /// `ttl` seconds (or on `session` if given); `timeout` bounds the wait (None: forever).
        #[pyo3(signature = (name, *, ttl=Ttl(10), timeout=None, session=None))]
        fn lock(
            &self,
            py: Python<'_>,
            name: &str,
            ttl: Ttl,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::lock::PyLock> {
            let t = convert::timeout(py, timeout)?;
            let lock = Lock::new(source(&self.inner, ttl, session).py_err(py)?, name).py_err(py)?;
            Ok(crate::lock::PyLock::new(lock.with_timeout(t)))
        }

        /// The election called `name`. Each campaign runs on a session of its own of `ttl`
        /// seconds (or on `session` if given); `timeout` bounds the wait (None: forever).
        #[pyo3(signature = (name, *, ttl=Ttl(10), timeout=None, session=None))]
        fn election(
            &self,
            py: Python<'_>,
            name: &str,
            ttl: Ttl,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::election::PyElection> {
            let t = convert::timeout(py, timeout)?;
            let election = Election::new(source(&self.inner, ttl, session).py_err(py)?, name).py_err(py)?;
            Ok(crate::election::PyElection::new(election.with_timeout(t)))
        }

        /// A semaphore called `name`: at most `permits` holders at once. Each acquisition
        /// runs on a session of its own of `ttl` seconds (or on `session` if given).
        #[pyo3(signature = (name, permits, *, ttl=Ttl(10), timeout=None, session=None))]
        fn semaphore(
            &self,
            py: Python<'_>,
            name: &str,
            permits: &Bound<'_, PyAny>,
            ttl: Ttl,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::semaphore::PySemaphore> {
            let (n, t) = (crate::semaphore::permits(py, permits)?, convert::timeout(py, timeout)?);
            let source = source(&self.inner, ttl, session).py_err(py)?;
            let sem = etcd_recipes::semaphore::Semaphore::new(source, name, n).py_err(py)?;
            Ok(crate::semaphore::PySemaphore::new(sem.with_timeout(t)))
        }

        /// A read-write lock called `name` (etcd Go `recipe.RWMutex` keys). Each hold runs on
        /// a session of its own of `ttl` seconds (or on `session` if given).
        #[pyo3(signature = (name, *, ttl=Ttl(10), timeout=None, session=None))]
        fn rwlock(
            &self,
            py: Python<'_>,
            name: &str,
            ttl: Ttl,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::rwlock::PyRwLock> {
            let t = convert::timeout(py, timeout)?;
            let source = source(&self.inner, ttl, session).py_err(py)?;
            let rw = etcd_recipes::rwlock::RwLock::new(source, name).py_err(py)?;
            Ok(crate::rwlock::PyRwLock::new(rw.with_timeout(t)))
        }

        /// A reliable work queue called `name`. Each delivery is claimed on a session of its own
        /// of `ttl` seconds (or on `session` if given), closed on ack / nack; after
        /// `max_deliveries` failed deliveries an item moves to the dead letters (None: never);
        /// `timeout` bounds each receive (None: forever).
        #[pyo3(signature = (name, *, ttl=Ttl(10), max_deliveries=None, timeout=None, session=None))]
        fn work_queue(
            &self,
            py: Python<'_>,
            name: &str,
            ttl: Ttl,
            max_deliveries: Option<&Bound<'_, PyAny>>,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::workqueue::PyWorkQueue> {
            let t = convert::timeout(py, timeout)?;
            let max = crate::workqueue::max_deliveries(py, max_deliveries)?;
            let source = source(&self.inner, ttl, session).py_err(py)?;
            let queue = etcd_recipes::workqueue::WorkQueue::new(source, name).py_err(py)?.with_max_deliveries(max).py_err(py)?;
            Ok(crate::workqueue::PyWorkQueue::new(queue.with_timeout(t)))
        }

        /// The barrier `name` (one key; etcd Go `recipe.Barrier`); `timeout` bounds each wait.
        #[pyo3(signature = (name, *, timeout=None))]
        fn barrier(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::barrier::PyBarrier> {
            let b = etcd_recipes::barrier::Barrier::new(&self.inner, name).py_err(py)?;
            Ok(crate::barrier::PyBarrier::new(b.with_timeout(convert::timeout(py, timeout)?)))
        }

        /// A double barrier `name` for `count` parties (etcd Go `recipe.DoubleBarrier`); this
        /// object is one party. Each entry runs on a session of its own of `ttl` seconds (or on
        /// `session` if given); `timeout` bounds each enter and leave.
        #[pyo3(signature = (name, count, *, ttl=Ttl(10), timeout=None, session=None))]
        fn double_barrier(
            &self,
            py: Python<'_>,
            name: &str,
            count: &Bound<'_, PyAny>,
            ttl: Ttl,
            timeout: Option<f64>,
            session: Option<PyRef<'_, PySession>>,
        ) -> PyResult<crate::barrier::PyDoubleBarrier> {
            let n = crate::barrier::count(py, count)?;
            let t = convert::timeout(py, timeout)?;
            let source = source(&self.inner, ttl, session).py_err(py)?;
            let b = etcd_recipes::barrier::DoubleBarrier::new(source, name, n).py_err(py)?;
            Ok(crate::barrier::PyDoubleBarrier::new(b.with_timeout(t)))
        }

        /// The FIFO queue `name` (etcd Go `recipe.Queue`); `timeout` bounds each dequeue.
        #[pyo3(signature = (name, *, timeout=None))]
        fn queue(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::queue::PyQueue> {
            let q = etcd_recipes::queue::Queue::new(&self.inner, name).py_err(py)?;
            Ok(crate::queue::PyQueue::new(q.with_timeout(convert::timeout(py, timeout)?)))
        }

        /// The priority queue `name` (etcd Go `recipe.PriorityQueue`); `timeout` bounds each dequeue.
        #[pyo3(signature = (name, *, timeout=None))]
        fn priority_queue(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::queue::PyPriorityQueue> {
            let q = etcd_recipes::queue::PriorityQueue::new(&self.inner, name).py_err(py)?;
            Ok(crate::queue::PyPriorityQueue::new(q.with_timeout(convert::timeout(py, timeout)?)))
        }

        /// The atomic counter at `key`: a decimal integer (a missing key reads as 0).
        fn counter(&self, py: Python<'_>, key: &str) -> PyResult<crate::counter::PyCounter> {
            Ok(crate::counter::PyCounter::new(etcd_recipes::counter::Counter::new(&self.inner, key).py_err(py)?))
        }

        /// The current leader of election `name` (no session needed), or None.
        fn leader<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(election::current_leader(&c, &name).await?.map(crate::election::PyLeaderInfo::from)) })
        }

        /// Observe election `name` without a session: `async for leader in client.observe_leader(name)`.
        fn observe_leader(&self, py: Python<'_>, name: &str) -> PyResult<crate::election::PyLeaderObserver> {
            let _g = crate::runtime::rt().enter();
            Ok(crate::election::PyLeaderObserver::new(election::observe(&self.inner, name).py_err(py)?))
        }

        /// Register an instance of `service` (kept alive, self-healing). Await it for a
        /// `Registration`, or `async with client.register(...) as registration:` to
        /// deregister on exit.
        /// `readiness`: "ready", "not_ready" or "draining"; `self_heal=False`: a lost lease
        /// or a deleted key ends the registration ("lost") instead of re-registering.
        #[pyo3(signature = (service, id, addr, *, metadata=None, ttl=Ttl(10), readiness="ready", self_heal=true))]
        #[allow(clippy::too_many_arguments)]
        fn register(
            &self,
            py: Python<'_>,
            service: String,
            id: String,
            addr: String,
            metadata: Option<&Bound<'_, PyAny>>,
            ttl: Ttl,
            readiness: &str,
            self_heal: bool,
        ) -> PyResult<crate::registry::PyRegistering> {
            let opts = crate::registry::register_options(py, service, id, addr, metadata, readiness, self_heal)?.ttl(ttl.0);
            Ok(crate::registry::PyRegistering::new(crate::registry::RegisterOn::Client((*self.inner).clone()), opts))
        }

        /// The instances of `service` now (one read).
        fn list_instances<'py>(&self, py: Python<'py>, service: String) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(crate::registry::instances(registry::list_instances(&c, &service).await?.0)) })
        }

        /// A live view of `service`'s instances. `picker`: "round_robin", "random", "sticky"
        /// or "weighted" (weight from metadata[weight_key]); `prefer_zone`: pick from this
        /// zone (metadata[zone_key]) while it has an available instance; instances that are
        /// not ready are skipped unless `include_not_ready`; `note_error` takes an instance
        /// out for `down_period` seconds after `down_threshold` errors.
        #[pyo3(signature = (service, *, picker="round_robin", include_not_ready=false, prefer_zone=None,
                            zone_key="zone".to_string(), weight_key="weight".to_string(), down_threshold=2, down_period=30.0))]
        #[allow(clippy::too_many_arguments)]
        fn discover<'py>(
            &self,
            py: Python<'py>,
            service: String,
            picker: &str,
            include_not_ready: bool,
            prefer_zone: Option<String>,
            zone_key: String,
            weight_key: String,
            down_threshold: i64,
            down_period: f64,
        ) -> PyResult<Bound<'py, PyAny>> {
            let o = crate::registry::view_options(py, picker, include_not_ready, prefer_zone, zone_key, weight_key, down_threshold, down_period)?;
            let c = self.inner.clone();
            spawn_py(py, async move { Ok(crate::registry::PyServiceView::new(registry::ServiceView::start_with(&c, &service, o).await?, service)) })
        }

        /// A local, watched copy of `key` (or of every key under it, with `prefix=True`).
        /// `reconcile_interval`: seconds between full comparisons with etcd (None/0: off).
        #[pyo3(signature = (key, *, prefix=false, reconcile_interval=Some(30.0)))]
        fn config<'py>(&self, py: Python<'py>, key: String, prefix: bool, reconcile_interval: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
            let every = seconds(py, "reconcile_interval", reconcile_interval.unwrap_or(0.0), true)?;
            crate::config::open(py, (*self.inner).clone(), key, prefix, every)
        }

        /// A leader loop on election `name` campaigning with `value`: each term runs on a
        /// session of its own of `ttl` seconds (or on `session`). `requeue=False`: one term
        /// only. `stop_timeout`: seconds a cancelled work may take. Start with `run(work)`.
        #[pyo3(signature = (name, value, *, ttl=Ttl(10), session=None, requeue=true, stop_timeout=5.0))]
        #[allow(clippy::too_many_arguments)]
        fn leader_loop(
            &self,
            py: Python<'_>,
            name: &str,
            value: Value,
            ttl: Ttl,
            session: Option<PyRef<'_, PySession>>,
            requeue: bool,
            stop_timeout: f64,
        ) -> PyResult<crate::leader::PyLeaderLoop> {
            let source = source(&self.inner, ttl, session).py_err(py)?;
            crate::leader::new_loop(py, source, name, value.0, requeue, stop_timeout)
        }

        /// A leader latch on election `name` with `value` (sessions of `ttl` seconds per
        /// term, or `session`). Call `start()`, or `async with`.
        #[pyo3(signature = (name, value, *, ttl=Ttl(10), session=None))]
        fn leader_latch(&self, py: Python<'_>, name: &str, value: Value, ttl: Ttl, session: Option<PyRef<'_, PySession>>) -> PyResult<crate::leader::PyLeaderLatch> {
            let source = source(&self.inner, ttl, session).py_err(py)?;
            crate::leader::new_latch(py, source, name, value.0)
        }

        /// Close the client and everything made from it (sessions revoked, locks released,
        /// leaderships resigned, registrations removed, views and iterators ended), within 5 s.
        /// Idempotent.
        fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let c = self.inner.clone();
            spawn_py(py, async move {
                c.close().await;
                FResult::Ok(())
            })
        }

        fn __repr__(&self) -> String {
            let closed = if self.inner.is_closed() { ", closed" } else { "" };
            format!("Client(endpoints={:?}, namespace={:?}{closed})", self.inner.options().endpoints(), self.inner.namespace())
        }
    }
    async_with(close);
}
