//! The registry's Python face: `client.register(service, id, addr, metadata=, ttl=,
//! readiness=, self_heal=)` or `session.register(...)` (await it, or `async with` it:
//! deregisters on exit); discovery with `view = await client.discover(service, picker=, ...)`,
//! `view.pick()`, `view.note_error(instance)`, `async for instances in view`.

use std::future::Future;
use std::sync::Arc;

use etcd_recipes::registry::{
    DownInstancePolicy, Instance, InstanceEvent, Picker, Readiness, RegisterOptions, Registration, RegistrationState,
    ServiceView, ViewOptions,
};
use etcd_recipes::{Client, Session};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::{json_to_py, py_to_json, seconds};
use crate::errors::{invalid, CoreResultExt};
use crate::members::{class_methods, Entered};
use crate::runtime::{ready_py, rt, spawn_py, InRt, Watchers};
use crate::stream::async_iterator;

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
    /// Metadata (JSON-decoded; None if absent), with the "readiness" key when not ready.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.metadata)
    }
    /// "ready", "not_ready" or "draining" (from the metadata; absent means ready).
    #[getter]
    fn readiness(&self) -> &'static str {
        self.inner.readiness().as_str()
    }
    fn __repr__(&self) -> String {
        format!("Instance(id={:?}, addr={:?}, metadata={})", self.inner.id, self.inner.addr, self.inner.metadata)
    }
}

pub fn instances(v: Vec<Instance>) -> Vec<PyInstance> {
    v.into_iter().map(|inner| PyInstance { inner }).collect()
}

fn state_name(s: &RegistrationState) -> &'static str {
    s.as_str()
}

/// What `client.register` / `session.register` take, checked at the call.
pub fn register_options(
    py: Python<'_>,
    service: String,
    id: String,
    addr: String,
    metadata: Option<&Bound<'_, PyAny>>,
    readiness: &str,
    self_heal: bool,
) -> PyResult<RegisterOptions> {
    let md = metadata.map(py_to_json).transpose()?.unwrap_or_default();
    let r = Readiness::parse(readiness).py_err(py)?;
    Ok(RegisterOptions::new(service, id, addr).metadata(md).readiness(r).self_heal(self_heal))
}

/// `client.discover`'s keyword arguments, as core's view options.
#[allow(clippy::too_many_arguments)]
pub fn view_options(
    py: Python<'_>,
    picker: &str,
    include_not_ready: bool,
    prefer_zone: Option<String>,
    zone_key: String,
    weight_key: String,
    down_threshold: i64,
    down_period: f64,
) -> PyResult<ViewOptions> {
    let threshold = u32::try_from(down_threshold)
        .map_err(|_| invalid(py, format!("down_threshold must be between 0 and {}, got {down_threshold}", u32::MAX)))?;
    let policy = DownInstancePolicy::new(seconds(py, "down_period", down_period, false)?, threshold).py_err(py)?;
    let mut o = ViewOptions::new()
        .picker(Picker::parse(picker).py_err(py)?)
        .include_not_ready(include_not_ready)
        .zone_key(zone_key)
        .weight_key(weight_key)
        .down_policy(policy);
    if let Some(z) = prefer_zone {
        o = o.prefer_zone(z);
    }
    Ok(o)
}

type Reg = Arc<InRt<Registration>>;

/// A registered instance, kept alive (and re-registered after a lease loss) until closed.
#[pyclass(module = "etcd_recipes._native", name = "Registration", frozen)]
pub struct PyRegistration {
    inner: Reg,
    watchers: Watchers,
}

impl PyRegistration {
    fn new(inner: Reg) -> Self {
        PyRegistration { inner, watchers: Watchers::default() }
    }
}

class_methods! {
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
        /// The current lease id (it changes when the registration heals itself).
        #[getter]
        fn lease_id(&self) -> i64 {
            self.inner.lease_id()
        }
        /// "registered", "recovering" (re-granting its lease), "lost" (gone and not
        /// healing: self_heal off, or its session lost) or "closed".
        #[getter]
        fn state(&self) -> &'static str {
            state_name(&self.inner.state())
        }
        /// "ready", "not_ready" or "draining", as registered.
        #[getter]
        fn readiness(&self) -> &'static str {
            self.inner.readiness().as_str()
        }
        /// Change the readiness in place (same key and lease): "ready", "not_ready" or
        /// "draining". Discovery does not pick an instance that is not ready.
        fn set_readiness<'py>(&self, py: Python<'py>, readiness: &str) -> PyResult<Bound<'py, PyAny>> {
            let (r, reg) = (Readiness::parse(readiness).py_err(py)?, self.inner.clone());
            spawn_py(py, async move { Ok(reg.set_readiness(r).await?) })
        }
        /// How many times it re-registered itself after losing its lease.
        #[getter]
        fn reregistrations(&self) -> u64 {
            self.inner.reregistrations()
        }
        /// Call `callback(state)` on the running event loop at every state change from now
        /// on ("recovering", "registered", "lost", "closed"). Keeps nothing alive.
        fn on_state_change(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
            // Every change up to and including "closed" (nothing changes after it).
            let states = futures::stream::unfold(Some(self.inner.watch_state()), |rx| async move {
                let mut rx = rx?;
                rx.changed().await.ok()?;
                let s = rx.borrow_and_update().clone();
                Some((state_name(&s), (s != RegistrationState::Closed).then_some(rx)))
            });
            self.watchers.watch(py, callback, states)
        }
        /// Replace the metadata in place (same key and lease; the readiness is kept).
        fn update_metadata<'py>(&self, py: Python<'py>, metadata: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
            let (md, r) = (py_to_json(metadata)?, self.inner.clone());
            spawn_py(py, async move { Ok(r.update_metadata(md).await?) })
        }
        /// Deregister: delete the key and revoke its own lease (a session given to
        /// `session.register` stays open). Idempotent.
        fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let r = self.inner.clone();
            spawn_py(py, async move { Ok(r.close().await?) })
        }
        fn __repr__(&self) -> String {
            format!("Registration(key={:?}, state={:?})", self.key(), self.state())
        }
    }
    gc(watchers);
    async_with(close);
}

/// Where a registration gets its lease: its own, or a session's.
pub enum RegisterOn {
    Client(Client),
    Session(Session),
}

/// `client.register(...)` / `session.register(...)`: await it for a `Registration`, or `async with` it.
#[pyclass(module = "etcd_recipes._native", name = "Registering", frozen)]
pub struct PyRegistering {
    on: RegisterOn,
    opts: RegisterOptions,
    entered: Entered<Reg>,
}

impl PyRegistering {
    pub fn new(on: RegisterOn, opts: RegisterOptions) -> Self {
        PyRegistering { on, opts, entered: Entered::default() }
    }

    fn start(&self) -> impl Future<Output = etcd_recipes::Result<Reg>> + Send + 'static {
        let opts = self.opts.clone();
        let on = match &self.on {
            RegisterOn::Client(c) => RegisterOn::Client(c.clone()),
            RegisterOn::Session(s) => RegisterOn::Session(s.clone()),
        };
        async move {
            let r = match on {
                RegisterOn::Client(c) => Registration::register(&c, opts).await?,
                RegisterOn::Session(s) => Registration::register_on(&s, opts).await?,
            };
            Ok(Arc::new(InRt::new(r)))
        }
    }
}

#[pymethods]
impl PyRegistering {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let start = self.start();
        spawn_py(py, async move { Ok(PyRegistration::new(start.await?)) })?.call_method0("__await__")
    }
    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.enter(py, self.start(), PyRegistration::new)
    }
    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(&self, py: Python<'py>, _exc: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.entered.exit(py, |r| async move { r.close().await })
    }
}

/// The live instance set of a service: local reads, and `async for instances in view`.
#[pyclass(module = "etcd_recipes._native", name = "ServiceView", frozen)]
pub struct PyServiceView {
    inner: InRt<ServiceView>,
    service: String,
}

impl PyServiceView {
    pub fn new(view: ServiceView, service: String) -> Self {
        PyServiceView { inner: InRt::new(view), service }
    }

    /// Leaving `async with`: `close()`, as an awaitable.
    fn close_awaitable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.close();
        ready_py(py, py.None().into_bound(py))
    }
}

class_methods! {
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
        /// The instances a pick chooses from now: ready (unless the view includes every
        /// readiness), not down after note_error, in id order (local).
        fn available(&self) -> Vec<PyInstance> {
            instances(self.inner.available())
        }
        /// An available instance chosen by the view's picker (from the preferred zone
        /// while it has one), or None. `filter(instance) -> bool` narrows this pick; an
        /// exception it raises is raised here.
        #[pyo3(signature = (filter=None))]
        fn pick(&self, filter: Option<Bound<'_, PyAny>>) -> PyResult<Option<PyInstance>> {
            let Some(f) = filter else { return Ok(self.inner.pick().map(|inner| PyInstance { inner })) };
            let failed: std::cell::RefCell<Option<PyErr>> = std::cell::RefCell::new(None);
            let picked = self.inner.pick_where(|i| {
                if failed.borrow().is_some() {
                    return false;
                }
                match f.call1((PyInstance { inner: i.clone() },)).and_then(|r| r.is_truthy()) {
                    Ok(keep) => keep,
                    Err(e) => {
                        *failed.borrow_mut() = Some(e);
                        false
                    }
                }
            });
            match failed.into_inner() {
                Some(e) => Err(e),
                None => Ok(picked.map(|inner| PyInstance { inner })),
            }
        }
        /// The next available instance in round-robin order, or None if there is none.
        fn pick_round_robin(&self) -> Option<PyInstance> {
            self.inner.pick_round_robin().map(|inner| PyInstance { inner })
        }
        /// A random available instance, or None.
        fn pick_random(&self) -> Option<PyInstance> {
            self.inner.pick_random().map(|inner| PyInstance { inner })
        }
        /// Report a failed call to `instance` (an Instance or its id): after the view's
        /// down_threshold errors within down_period seconds (from the first), it is not
        /// picked until down_period has passed.
        fn note_error(&self, instance: &Bound<'_, PyAny>) -> PyResult<()> {
            self.inner.note_error(&instance_id(instance)?);
            Ok(())
        }
        /// True while `instance` (an Instance or its id) is skipped after note_error.
        fn is_down(&self, instance: &Bound<'_, PyAny>) -> PyResult<bool> {
            Ok(self.inner.is_down(&instance_id(instance)?))
        }
        /// Wait for the next change; returns the new set.
        fn changed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let v = self.inner.clone();
            spawn_py(py, async move { Ok(instances(v.changed().await?)) })
        }
        /// `async for event in view.events()`: InstanceEvent objects (up / updated / down).
        fn events(&self) -> PyInstanceEvents {
            let _g = rt().enter();
            PyInstanceEvents::new(self.inner.events())
        }
        /// `async for instances in view.updates()`: the current set first, then the whole set
        /// after each change (none is missed between reads); ends on close().
        fn updates(&self) -> PyInstanceSets {
            let _g = rt().enter();
            PyInstanceSets::new(self.inner.updates())
        }
        /// Same as `updates()`.
        fn __aiter__(&self) -> PyInstanceSets {
            self.updates()
        }
        /// Stop watching (local reads keep the last set; iterations end).
        fn close(&self) {
            self.inner.close();
        }
        fn __len__(&self) -> usize {
            self.inner.instances().len()
        }
        fn __repr__(&self) -> String {
            format!("ServiceView(service={:?}, instances={})", self.service, self.__len__())
        }
    }
    async_with(close_awaitable);
}

/// An `Instance`'s id, or the id given as a str.
fn instance_id(ob: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(i) = ob.cast::<PyInstance>() {
        return Ok(i.get().inner.id.clone());
    }
    ob.extract::<String>()
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err("instance must be an Instance or an instance id (str)"))
}

async_iterator! {
    /// `async for instances in view`: the current set, then the set after each change.
    PyInstanceSets("InstanceSets", Vec<Instance>) => |set| Ok(instances(set))
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

async_iterator! {
    /// `async for event in view.events()`.
    PyInstanceEvents("InstanceEvents", etcd_recipes::Result<(InstanceEvent, i64)>) => |item| {
        let (ev, revision) = item?;
        let (kind, id, instance) = match ev {
            InstanceEvent::Up(i) => ("up", i.id.clone(), Some(PyInstance { inner: i })),
            InstanceEvent::Updated(i) => ("updated", i.id.clone(), Some(PyInstance { inner: i })),
            InstanceEvent::Down { id } => ("down", id, None),
        };
        Ok(PyInstanceEvent { kind, id, instance, revision })
    }
}
