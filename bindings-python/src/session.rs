//! `Session`: one lease kept alive; the unit of liveness of locks and elections.

use etcd_recipes::{Session, SessionState};
use pyo3::prelude::*;

use crate::errors::CoreResultExt;
use crate::members::class_methods;
use crate::runtime::{spawn_py, InRt, Watchers};

/// One lease, kept alive in the background until closed, dropped or lost.
/// Make one with `await client.session(ttl=10)`; `async with` closes it.
#[pyclass(module = "etcd_recipes._native", name = "Session", frozen)]
pub struct PySession {
    pub inner: InRt<Session>,
    watchers: Watchers,
}

impl PySession {
    pub fn new(s: Session) -> Self {
        PySession { inner: InRt::new(s), watchers: Watchers::default() }
    }
}

class_methods! {
    impl PySession {
        /// The lease id.
        #[getter]
        fn lease_id(&self) -> i64 {
            self.inner.lease_id()
        }

        /// The lease id in lowercase hex, as in lock and election keys and `etcdctl lease list`.
        #[getter]
        fn lease_id_hex(&self) -> String {
            format!("{:x}", self.inner.lease_id())
        }

        /// The TTL etcd granted, in seconds.
        #[getter]
        fn ttl(&self) -> i64 {
            self.inner.ttl()
        }

        /// True while renewals are confirmed in time.
        #[getter]
        fn is_alive(&self) -> bool {
            self.inner.is_alive()
        }

        /// "alive", "lost" or "closed".
        #[getter]
        fn state(&self) -> &'static str {
            match self.inner.state() {
                SessionState::Alive => "alive",
                SessionState::Lost(_) => "lost",
                SessionState::Closed => "closed",
            }
        }

        /// A lock called `name` whose acquisitions run on this session (its lease);
        /// `timeout` bounds each wait (None: forever).
        #[pyo3(signature = (name, *, timeout=None))]
        fn lock(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::lock::PyLock> {
            let t = crate::convert::timeout(py, timeout)?;
            Ok(crate::lock::PyLock::new(self.inner.lock(name).py_err(py)?.with_timeout(t)))
        }

        /// The election called `name`, campaigning with this session (its lease);
        /// `timeout` bounds each campaign (None: forever).
        #[pyo3(signature = (name, *, timeout=None))]
        fn election(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::election::PyElection> {
            let t = crate::convert::timeout(py, timeout)?;
            Ok(crate::election::PyElection::new(self.inner.election(name).py_err(py)?.with_timeout(t)))
        }

        /// Register an instance of `service` on this session's lease: it lives as long as
        /// the session ("lost" when the session is lost, never re-granting a lease of its
        /// own) and closing it leaves the session open. Await it, or `async with`.
        #[pyo3(signature = (service, id, addr, *, metadata=None, readiness="ready", self_heal=true))]
        #[allow(clippy::too_many_arguments)]
        fn register(
            &self,
            py: Python<'_>,
            service: String,
            id: String,
            addr: String,
            metadata: Option<&Bound<'_, PyAny>>,
            readiness: &str,
            self_heal: bool,
        ) -> PyResult<crate::registry::PyRegistering> {
            let opts = crate::registry::register_options(py, service, id, addr, metadata, readiness, self_heal)?;
            Ok(crate::registry::PyRegistering::new(crate::registry::RegisterOn::Session((*self.inner).clone()), opts))
        }

        /// A leader loop on election `name` whose terms all run on this session.
        #[pyo3(signature = (name, value, *, requeue=true, stop_timeout=5.0))]
        fn leader_loop(&self, py: Python<'_>, name: &str, value: crate::convert::Value, requeue: bool, stop_timeout: f64) -> PyResult<crate::leader::PyLeaderLoop> {
            let source = etcd_recipes::SessionSource::Shared((*self.inner).clone());
            crate::leader::new_loop(py, source, name, value.0, requeue, stop_timeout)
        }

        /// A leader latch on election `name` campaigning on this session.
        fn leader_latch(&self, py: Python<'_>, name: &str, value: crate::convert::Value) -> PyResult<crate::leader::PyLeaderLatch> {
            crate::leader::new_latch(py, etcd_recipes::SessionSource::Shared((*self.inner).clone()), name, value.0)
        }

        /// A semaphore called `name` (at most `permits` holders) whose acquisitions run on
        /// this session; one permit per session at a time.
        #[pyo3(signature = (name, permits, *, timeout=None))]
        fn semaphore(&self, py: Python<'_>, name: &str, permits: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<crate::semaphore::PySemaphore> {
            let (n, t) = (crate::semaphore::permits(py, permits)?, crate::convert::timeout(py, timeout)?);
            Ok(crate::semaphore::PySemaphore::new(self.inner.semaphore(name, n).py_err(py)?.with_timeout(t)))
        }

        /// A read-write lock called `name` whose holds run on this session.
        #[pyo3(signature = (name, *, timeout=None))]
        fn rwlock(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<crate::rwlock::PyRwLock> {
            let t = crate::convert::timeout(py, timeout)?;
            Ok(crate::rwlock::PyRwLock::new(self.inner.rwlock(name).py_err(py)?.with_timeout(t)))
        }

        /// Stop renewing and revoke the lease (every key attached to it is deleted). Idempotent.
        fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let s = self.inner.clone();
            spawn_py(py, async move { Ok(s.close().await?) })
        }

        fn __repr__(&self) -> String {
            format!("Session(lease_id={:#x}, ttl={}, state={:?})", self.inner.lease_id(), self.inner.ttl(), self.state())
        }
    }
    /// Resolves when the session stops being alive: with the reason when it was lost
    /// (renewals not confirmed, lease expired or revoked), with None when it was closed.
    lost;
    /// Call `callback(reason)` on the running event loop if the session is lost (not
    /// when it is closed). Keeps nothing alive.
    on_lost;
    gc(watchers);
    async_with(close);
}
