//! Node face of the service registry: `client.register({...})` -> `Registration`, and
//! discovery `client.discover(service)` -> `ServiceView` (sync reads, `for await`).

use std::sync::Arc;

use etcd_recipes::registry::{Instance as CoreInstance, InstanceEvent as CoreEvent, RegisterOptions, RegistrationState};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use napi::bindgen_prelude::{i64n, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::client::{drop_in_runtime, ttl_arg, Child, Client, Scope};
use crate::errors;
use crate::iter::StreamCell;
use crate::session::{call, spawn, Callback};

/// One instance of a service.
#[napi(object)]
pub struct Instance {
    /// Instance id, unique within the service.
    pub id: String,
    /// Address, e.g. `host:port`.
    pub addr: String,
    /// Metadata (any JSON value; `null` when absent).
    pub metadata: serde_json::Value,
}

fn instance(i: CoreInstance) -> Instance {
    Instance { id: i.id, addr: i.addr, metadata: i.metadata }
}

/// What to register (the key is `<namespace><service>/<id>`, the value Go `naming/endpoints` JSON).
#[napi(object)]
pub struct RegisterInput {
    /// Service name, e.g. `"billing"`.
    pub service: String,
    /// Instance id, unique within the service.
    pub id: String,
    /// Address clients connect to, e.g. `"10.0.0.5:8080"`.
    pub addr: String,
    /// Any JSON value.
    pub metadata: Option<serde_json::Value>,
    /// Lease TTL in seconds (default 10).
    pub ttl: Option<f64>,
}

/// Where a registration stands.
#[napi(object, object_from_js = false)]
pub struct RegistrationStatus {
    /// `'registered'`, `'recovering'` (re-granting a lease and re-putting the key) or `'closed'`.
    #[napi(ts_type = "'registered' | 'recovering' | 'closed'")]
    pub state: String,
    /// The lease while registered.
    pub lease_id: Option<i64n>,
    /// Why it is recovering.
    pub reason: Option<String>,
}

fn status(s: RegistrationState) -> RegistrationStatus {
    match s {
        RegistrationState::Registered { lease_id } => {
            RegistrationStatus { state: "registered".into(), lease_id: Some(i64n(lease_id)), reason: None }
        }
        RegistrationState::Recovering { reason } => {
            RegistrationStatus { state: "recovering".into(), lease_id: None, reason: Some(reason) }
        }
        RegistrationState::Closed => RegistrationStatus { state: "closed".into(), lease_id: None, reason: None },
    }
}

/// A change in a service's instance set.
#[napi(object, object_from_js = false)]
pub struct InstanceEvent {
    /// `'up'` (new), `'updated'` (address or metadata changed) or `'down'` (left).
    #[napi(ts_type = "'up' | 'updated' | 'down'")]
    pub r#type: String,
    /// The instance id.
    pub id: String,
    /// The instance (absent for `'down'`).
    pub instance: Option<Instance>,
    /// The etcd revision of the change.
    pub revision: i64,
}

fn event((e, revision): (CoreEvent, i64)) -> InstanceEvent {
    match e {
        CoreEvent::Up(i) => InstanceEvent { r#type: "up".into(), id: i.id.clone(), instance: Some(instance(i)), revision },
        CoreEvent::Updated(i) => {
            InstanceEvent { r#type: "updated".into(), id: i.id.clone(), instance: Some(instance(i)), revision }
        }
        CoreEvent::Down { id } => InstanceEvent { r#type: "down".into(), id, instance: None, revision },
    }
}

pub(crate) struct RegInner {
    core: Option<etcd_recipes::registry::Registration>,
}

impl RegInner {
    fn core(&self) -> &etcd_recipes::registry::Registration {
        self.core.as_ref().expect("set until drop")
    }
}

impl Drop for RegInner {
    fn drop(&mut self) {
        drop_in_runtime(self.core.take());
    }
}

impl Child for RegInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.core().close().await;
        })
    }
}

#[napi]
impl Client {
    /// Register a service instance and keep it registered: if its lease is lost (etcd
    /// restart, long partition) it re-grants a lease and re-puts its key by itself.
    #[napi(ts_return_type = "Promise<Registration>")]
    pub fn register<'env>(&self, env: &'env Env, input: RegisterInput) -> napi::Result<PromiseRaw<'env, Registration>> {
        let ttl = ttl_arg(env, input.ttl)?;
        let opts = RegisterOptions::new(input.service, input.id, input.addr)
            .metadata(input.metadata.unwrap_or(serde_json::Value::Null))
            .ttl(ttl);
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            let core = etcd_recipes::registry::Registration::register(&scope.core, opts).await?;
            let inner = Arc::new(RegInner { core: Some(core) });
            let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
            scope.adopt(weak);
            Ok(Registration { inner })
        })
    }

    /// The instances of `service` right now (one read; see `discover` for a live view).
    #[napi(ts_return_type = "Promise<Instance[]>")]
    pub fn list_instances<'env>(&self, env: &'env Env, service: String) -> napi::Result<PromiseRaw<'env, Vec<Instance>>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            let (list, _) = etcd_recipes::registry::list_instances(&scope.core, &service).await?;
            Ok(list.into_iter().map(instance).collect())
        })
    }

    /// A live view of `service`'s instances: a consistent snapshot, then every change.
    #[napi(ts_return_type = "Promise<ServiceView>")]
    pub fn discover<'env>(&self, env: &'env Env, service: String) -> napi::Result<PromiseRaw<'env, ServiceView>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            let core = etcd_recipes::registry::ServiceView::start(&scope.core, &service).await?;
            let inner = Arc::new(ViewInner { core: core.clone() });
            let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
            scope.adopt(weak);
            Ok(ServiceView { scope, inner, service })
        })
    }
}

/// A registered instance, kept registered until `close()` (or `await using`).
#[napi]
pub struct Registration {
    inner: Arc<RegInner>,
}

#[napi]
impl Registration {
    /// The full etcd key, `<namespace><service>/<id>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.inner.core().key().to_string()
    }

    /// The registered instance.
    #[napi(getter)]
    pub fn instance(&self) -> Instance {
        instance(self.inner.core().instance())
    }

    /// The current lease.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.inner.core().lease_id())
    }

    /// Where the registration stands.
    #[napi(getter)]
    pub fn state(&self) -> RegistrationStatus {
        status(self.inner.core().state())
    }

    /// How many times it re-registered itself after losing its lease.
    #[napi(getter)]
    pub fn reregistrations(&self) -> i64 {
        self.inner.core().reregistrations() as i64
    }

    /// Call `callback(status)` on every state change (e.g. `recovering` then `registered`
    /// after a re-registration). Does not keep the process alive.
    #[napi(ts_args_type = "callback: (status: RegistrationStatus) => void")]
    pub fn on_state_change(&self, callback: Callback<RegistrationStatus>) {
        let mut rx = self.inner.core().watch_state();
        spawn(async move {
            rx.borrow_and_update();
            while rx.changed().await.is_ok() {
                let s = rx.borrow_and_update().clone();
                let closed = s == RegistrationState::Closed;
                call(&callback, status(s));
                if closed {
                    break;
                }
            }
        });
    }

    /// Replace the metadata (same lease, same key).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn update_metadata<'env>(&self, env: &'env Env, metadata: serde_json::Value) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { inner.core().update_metadata(metadata).await })
    }

    /// Deregister: delete the key and revoke the lease. Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { inner.core().close().await })
    }

    /// `await using reg = await client.register(...)`: deregisters.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }
}

pub(crate) struct ViewInner {
    core: etcd_recipes::registry::ServiceView,
}

impl Drop for ViewInner {
    fn drop(&mut self) {
        self.core.close();
    }
}

impl Child for ViewInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        self.core.close();
        Box::pin(async {})
    }
}

/// The live instance set of one service. Reads are local (no network).
///
/// ```js
/// const view = await client.discover('billing')
/// view.pickRoundRobin()?.addr
/// for await (const instances of view) console.log(instances.length)
/// ```
#[napi]
pub struct ServiceView {
    scope: Arc<Scope>,
    inner: Arc<ViewInner>,
    service: String,
}

#[napi]
impl ServiceView {
    /// The service name.
    #[napi(getter)]
    pub fn service(&self) -> String {
        self.service.clone()
    }

    /// The instances now, sorted by id (local, synchronous).
    #[napi]
    pub fn instances(&self) -> Vec<Instance> {
        self.inner.core.instances().into_iter().map(instance).collect()
    }

    /// The etcd revision the view reflects.
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.inner.core.revision()
    }

    /// The next instance in round-robin order, or `null` when there is none.
    #[napi]
    pub fn pick_round_robin(&self) -> Option<Instance> {
        self.inner.core.pick_round_robin().map(instance)
    }

    /// A random instance, or `null` when there is none.
    #[napi]
    pub fn pick_random(&self) -> Option<Instance> {
        self.inner.core.pick_random().map(instance)
    }

    /// Wait for the next change and resolve to the new instance set.
    #[napi(ts_return_type = "Promise<Instance[]>")]
    pub fn changed<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<Instance>>> {
        let (view, closed) = (self.inner.core.clone(), self.scope.closed());
        errors::promise(env, async move {
            tokio::select! {
                r = view.changed() => Ok(r?.into_iter().map(instance).collect()),
                _ = closed => Err(etcd_recipes::Error::Closed("client")),
            }
        })
    }

    /// An async iterator of events (`up`, `updated`, `down`) from now on.
    #[napi]
    pub fn events(&self) -> InstanceEvents {
        InstanceEvents { cell: StreamCell::new(self.scope.clone(), self.inner.core.events().boxed()) }
    }

    /// `for await (const instances of view)`: the current set, then the set after each change.
    #[napi(well_known_symbol = "asyncIterator", ts_return_type = "AsyncIterator<Instance[], undefined>")]
    pub fn iterator(&self) -> InstanceSets {
        // Subscribe now, so that no change between two `next()` calls is missed.
        let view = self.inner.core.clone();
        let events = view.events();
        let first = futures::stream::once(std::future::ready(Ok(view.instances())));
        let rest = futures::stream::unfold((view, events), |(v, mut ev)| async move {
            match ev.next().await {
                None => None,
                Some(Err(e)) => Some((Err(e), (v, ev))),
                Some(Ok(_)) => {
                    // One set per batch of events that are already here.
                    while let Some(Some(Ok(_))) = ev.next().now_or_never() {}
                    let set = v.instances();
                    Some((Ok(set), (v, ev)))
                }
            }
        });
        InstanceSets { cell: StreamCell::new(self.scope.clone(), first.chain(rest).boxed()) }
    }

    /// Stop watching. Idempotent; iterators end.
    #[napi]
    pub fn close(&self) {
        self.inner.core.close();
    }

    /// `await using view = await client.discover(...)`: closes the view.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.inner.core.close();
        errors::promise(env, async { Ok(()) })
    }
}

/// One step of an async iterator of instance sets.
#[napi(object, object_from_js = false)]
pub struct InstancesStep {
    pub done: bool,
    pub value: Option<Vec<Instance>>,
}

/// One step of an async iterator of instance events.
#[napi(object, object_from_js = false)]
pub struct InstanceEventStep {
    pub done: bool,
    pub value: Option<InstanceEvent>,
}

/// `for await (const instances of view)`.
#[napi]
pub struct InstanceSets {
    cell: StreamCell<Vec<CoreInstance>>,
}

#[napi]
impl InstanceSets {
    #[napi(ts_return_type = "Promise<IteratorResult<Instance[], undefined>>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, InstancesStep>> {
        let next = self.cell.next();
        errors::promise(env, async move {
            Ok(match next.await? {
                None => InstancesStep { done: true, value: None },
                Some(v) => InstancesStep { done: false, value: Some(v.into_iter().map(instance).collect()) },
            })
        })
    }

    /// Stop iterating (called by `break`).
    #[napi(js_name = "return", ts_return_type = "Promise<IteratorResult<Instance[], undefined>>")]
    pub fn finish<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, InstancesStep>> {
        let close = self.cell.close();
        errors::promise(env, async move {
            close.await?;
            Ok(InstancesStep { done: true, value: None })
        })
    }

    #[napi(well_known_symbol = "asyncIterator", ts_return_type = "AsyncIterator<Instance[], undefined>")]
    pub fn iterator(&self) -> &Self {
        self
    }
}

/// `for await (const event of view.events())`.
#[napi]
pub struct InstanceEvents {
    cell: StreamCell<(CoreEvent, i64)>,
}

#[napi]
impl InstanceEvents {
    #[napi(ts_return_type = "Promise<IteratorResult<InstanceEvent, undefined>>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, InstanceEventStep>> {
        let next = self.cell.next();
        errors::promise(env, async move {
            Ok(match next.await? {
                None => InstanceEventStep { done: true, value: None },
                Some(e) => InstanceEventStep { done: false, value: Some(event(e)) },
            })
        })
    }

    /// Stop iterating (called by `break`).
    #[napi(js_name = "return", ts_return_type = "Promise<IteratorResult<InstanceEvent, undefined>>")]
    pub fn finish<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, InstanceEventStep>> {
        let close = self.cell.close();
        errors::promise(env, async move {
            close.await?;
            Ok(InstanceEventStep { done: true, value: None })
        })
    }

    #[napi(well_known_symbol = "asyncIterator", ts_return_type = "AsyncIterator<InstanceEvent, undefined>")]
    pub fn iterator(&self) -> &Self {
        self
    }
}
