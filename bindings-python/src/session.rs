//! `Session`: one lease kept alive; the unit of liveness of locks and elections.

use etcd_recipes::{Session, SessionState};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::FResult;
use crate::runtime::{spawn_py, InRt};

/// One lease, kept alive in the background until closed, dropped or lost.
/// Make one with `await client.session(ttl=10)`; `async with` closes it.
#[pyclass(module = "etcd_recipes._native", name = "Session", frozen)]
pub struct PySession {
    pub inner: InRt<Session>,
    _exit: crate::exit::ExitHook,
}

impl PySession {
    pub fn new(s: Session) -> Self {
        let hook = crate::exit::track_session(&s);
        PySession { inner: InRt::new(s), _exit: hook }
    }
}

#[pymethods]
impl PySession {
    /// The lease id.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.inner.lease_id()
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

    /// Resolves, with the reason, when the session stops being alive (lost or closed).
    fn lost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        spawn_py(py, async move { FResult::Ok(s.lost().await) })
    }

    /// Stop renewing and revoke the lease (every key attached to it is deleted). Idempotent.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        spawn_py(py, async move { Ok(s.close().await?) })
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::runtime::ready_py(slf.py(), slf.into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!("Session(lease_id={:#x}, ttl={}, state={:?})", self.inner.lease_id(), self.inner.ttl(), self.state())
    }
}
