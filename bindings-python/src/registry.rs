//! The registry's Python face: `client.register(service, id, addr, metadata=, ttl=)`
//! (await it, or `async with` it: deregisters on exit); discovery with
//! `view = await client.discover(service)`, `view.instances()`, `async for instances in view`.

use std::sync::{Arc, Mutex};

use etcd_recipes::registry::{self, Instance, InstanceEvent, RegisterOptions, Registration, RegistrationState, ServiceView};
use etcd_recipes::{Client, ErrorKind};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{json_to_py, py_to_json};
use crate::errors::{FResult, Failure};
use crate::runtime::{ready_py, rt, spawn_py, InRt};
use crate::stream::{stop, StreamCell};

/// One instance of a service.
#[pyclass(module = "etcd_recipes._native", name = "Instance", frozen, eq)]
#[derive(PartialEq, Clone)]
pub struct PyInstance {
    inner: Instance,
}

#[pymethods]
impl PyInstance {
    /// Instance id (unique within the service).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// Address, `host:port`.
    #[getter]
    fn addr(&self) -> &str {
        &self.inner.addr
    }
    /// Metadata (JSON-decoded; None if absent).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.metadata)
    }
    fn __repr__(&self) -> String {
        format!("Instance(id={:?}, addr={:?}, metadata={})", self.inner.id, self.inner.addr, self.inner.metadata)
    }
}

fn instances(v: Vec<Instance>) -> Vec<PyInstance> {
    v.into_iter().map(|inner| PyInstance { inner }).collect()
}

/// A registration, its client, and its place on the revoke-at-exit list: at interpreter
/// exit its current lease is revoked (the instance disappears at once, not one TTL later).
pub struct RegCell {
    reg: InRt<Registration>,
    client: Client,
    _exit: crate::exit::ExitHook,
}

impl RegCell {
    fn new(client: Client, reg: Registration) -> Arc<Self> {
        Arc::new_cyclic(|me: &std::sync::Weak<RegCell>| {
            let (me, c) = (me.clone(), client.clone());
            let hook = crate::exit::track(move || me.upgrade().map(|r| (c.clone(), r.reg.lease_id())));
            RegCell { reg: InRt::new(reg), client, _exit: hook }
        })
    }
}

impl std::ops::Deref for RegCell {
    type Target = Registration;
    fn deref(&self) -> &Registration {
        &self.reg
    }
}

impl Drop for RegCell {
    fn drop(&mut self) {
        // The drop-time cleanup of `Registration` runs in the background; if the
        // interpreter exits right after, revoke the lease then.
        if self.reg.state() != RegistrationState::Closed {
            crate::exit::recently_ended((self.client.clone(), self.reg.lease_id()));
        }
    }
}

/// A registered instance, kept alive (and re-registered after a lease loss) until closed.
#[pyclass(module = "etcd_recipes._native", name = "Registration", frozen)]
pub struct PyRegistration {
    inner: Arc<RegCell>,
}

#[pymethods]
impl PyRegistration {
    /// The full etcd key of this instance.
    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }
    /// The instance as registered (with its current metadata).
    #[getter]
    fn instance(&self) -> PyInstance {
        PyInstance { inner: self.inner.instance() }
    }
    /// The current lease id.
    #[getter]
    fn lease_id(&self) -> i64 {
        self.inner.lease_id()
    }
    /// "registered", "recovering" or "closed".
    #[getter]
    fn state(&self) -> &'static str {
        match self.inner.state() {
            RegistrationState::Registered { .. } => "registered",
            RegistrationState::Recovering { .. } => "recovering",
            RegistrationState::Closed => "closed",
        }
    }
    /// How many times it re-registered itself after losing its lease.
    #[getter]
    fn reregistrations(&self) -> u64 {
        self.inner.reregistrations()
    }
    /// Replace the metadata (same lease).
    fn update_metadata<'py>(&self, py: Python<'py>, metadata: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let md = py_to_json(metadata)?;
        let r = self.inner.clone();
        spawn_py(py, async move { Ok(r.update_metadata(md).await?) })
    }
    /// Deregister: delete the key and revoke the lease. Idempotent.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let r = self.inner.clone();
        spawn_py(py, async move { Ok(r.close().await?) })
    }
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready_py(slf.py(), slf.into_any())
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }
    fn __repr__(&self) -> String {
        format!("Registration(key={:?}, state={:?})", self.key(), self.state())
    }
}

/// `client.register(...)`: await it for a `Registration`, or `async with` it.
#[pyclass(module = "etcd_recipes._native", name = "Registering", frozen)]
pub struct PyRegistering {
    client: Client,
    opts: RegisterOptions,
    entered: Mutex<Option<Arc<RegCell>>>,
}

impl PyRegistering {
    pub fn new(client: Client, service: String, id: String, addr: String, metadata: Option<&Bound<'_, PyAny>>, ttl: i64) -> PyResult<Self> {
        let md = match metadata {
            Some(m) => py_to_json(m)?,
            None => serde_json::Value::Null,
        };
        Ok(PyRegistering { client, opts: RegisterOptions::new(service, id, addr).metadata(md).ttl(ttl), entered: Mutex::new(None) })
    }

    fn start<'py>(&self, py: Python<'py>, keep: Option<Py<PyRegistering>>) -> PyResult<Bound<'py, PyAny>> {
        let (client, opts) = (self.client.clone(), self.opts.clone());
        spawn_py(py, async move {
            let r = RegCell::new(client.clone(), Registration::register(&client, opts).await?);
            if let Some(me) = keep {
                *me.get().entered.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
            }
            Ok(PyRegistration { inner: r })
        })
    }
}

#[pymethods]
impl PyRegistering {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start(py, None)?.call_method0("__await__")
    }
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let keep = slf.clone().unbind();
        slf.get().start(slf.py(), Some(keep))
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let r = self.entered.lock().unwrap_or_else(|p| p.into_inner()).take();
        spawn_py(py, async move {
            if let Some(r) = r {
                r.close().await?;
            }
            FResult::Ok(())
        })
    }
}

pub fn list_py<'py>(py: Python<'py>, client: Client, service: String) -> PyResult<Bound<'py, PyAny>> {
    spawn_py(py, async move { Ok(instances(registry::list_instances(&client, &service).await?.0)) })
}

pub fn discover_py<'py>(py: Python<'py>, client: Client, service: String) -> PyResult<Bound<'py, PyAny>> {
    spawn_py(py, async move {
        let v = ServiceView::start(&client, &service).await?;
        Ok(PyServiceView { inner: Arc::new(InRt::new(v)), service })
    })
}

/// The live instance set of a service: local reads, and `async for instances in view`.
#[pyclass(module = "etcd_recipes._native", name = "ServiceView", frozen)]
pub struct PyServiceView {
    inner: Arc<InRt<ServiceView>>,
    service: String,
}

#[pymethods]
impl PyServiceView {
    /// The service name.
    #[getter]
    fn service(&self) -> &str {
        &self.service
    }
    /// The current instances, sorted by id (local, no network).
    fn instances(&self) -> Vec<PyInstance> {
        instances(self.inner.instances())
    }
    /// The etcd revision the set reflects.
    #[getter]
    fn revision(&self) -> i64 {
        self.inner.revision()
    }
    /// The next instance in round-robin order, or None if there is none.
    fn pick_round_robin(&self) -> Option<PyInstance> {
        self.inner.pick_round_robin().map(|inner| PyInstance { inner })
    }
    /// A random instance, or None.
    fn pick_random(&self) -> Option<PyInstance> {
        self.inner.pick_random().map(|inner| PyInstance { inner })
    }
    /// Wait for the next change; returns the new set.
    fn changed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.inner.clone();
        spawn_py(py, async move { Ok(instances(v.changed().await?)) })
    }
    /// `async for event in view.events()`: InstanceEvent objects (up / updated / down).
    fn events(&self) -> PyInstanceEvents {
        let _g = rt().enter();
        PyInstanceEvents { cell: StreamCell::new(self.inner.events()) }
    }
    /// `async for instances in view`: the new set after each change (ends on close()).
    fn __aiter__(&self) -> PyInstanceSets {
        PyInstanceSets { view: self.inner.clone(), closed: tokio::sync::watch::channel(false).0 }
    }
    /// Stop watching (local reads keep the last set; iterations end).
    fn close(&self) {
        let _g = rt().enter();
        self.inner.close();
    }
    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ready_py(slf.py(), slf.into_any())
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.close();
        spawn_py(py, async move { FResult::Ok(()) })
    }
    fn __len__(&self) -> usize {
        self.inner.instances().len()
    }
    fn __repr__(&self) -> String {
        format!("ServiceView(service={:?}, instances={})", self.service, self.__len__())
    }
}

/// Iterator over instance sets (`async for instances in view`).
#[pyclass(module = "etcd_recipes._native", name = "InstanceSets", frozen)]
pub struct PyInstanceSets {
    view: Arc<InRt<ServiceView>>,
    closed: tokio::sync::watch::Sender<bool>,
}

#[pymethods]
impl PyInstanceSets {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.view.clone();
        let mut closed = self.closed.subscribe();
        spawn_py(py, async move {
            tokio::select! {
                r = v.changed() => match r {
                    Ok(set) => Ok(instances(set)),
                    Err(e) if e.kind() == ErrorKind::Closed => Err(stop()),
                    Err(e) => Err(Failure::Core(e)),
                },
                _ = closed.wait_for(|c| *c) => Err(stop()),
            }
        })
    }
    /// Stop iterating: a pending and every later `__anext__` raise `StopAsyncIteration`.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.closed.send_replace(true);
        spawn_py(py, async move { FResult::Ok(()) })
    }
}

/// One change of a service's instance set.
#[pyclass(module = "etcd_recipes._native", name = "InstanceEvent", frozen)]
pub struct PyInstanceEvent {
    /// "up", "updated" or "down".
    #[pyo3(get)]
    kind: &'static str,
    /// The instance id.
    #[pyo3(get)]
    id: String,
    /// The instance (None for "down").
    #[pyo3(get)]
    instance: Option<PyInstance>,
    /// The etcd revision of the change.
    #[pyo3(get)]
    revision: i64,
}

#[pymethods]
impl PyInstanceEvent {
    fn __repr__(&self) -> String {
        format!("InstanceEvent(kind={:?}, id={:?}, revision={})", self.kind, self.id, self.revision)
    }
}

/// `async for event in view.events()`.
#[pyclass(module = "etcd_recipes._native", name = "InstanceEvents", frozen)]
pub struct PyInstanceEvents {
    cell: StreamCell<etcd_recipes::Result<(InstanceEvent, i64)>>,
}

#[pymethods]
impl PyInstanceEvents {
    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cell.next_py(py, |item| {
            let (ev, revision) = item?;
            let (kind, id, instance) = match ev {
                InstanceEvent::Up(i) => ("up", i.id.clone(), Some(PyInstance { inner: i })),
                InstanceEvent::Updated(i) => ("updated", i.id.clone(), Some(PyInstance { inner: i })),
                InstanceEvent::Down { id } => ("down", id, None),
            };
            Ok(PyInstanceEvent { kind, id, instance, revision })
        })
    }
    /// Stop iterating: a pending and every later `__anext__` raise `StopAsyncIteration`.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cell.aclose_py(py)
    }
}
