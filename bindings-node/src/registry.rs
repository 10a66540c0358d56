//! Node face of the service registry: `client.register({...})` / `session.register({...})`
//! -> `Registration`, and discovery `client.discover(service, { picker, ... })` ->
//! `ServiceView` (local reads and picks, `noteError`, `for await`).

use std::sync::Arc;

use etcd_recipes::registry::{self as core, DownInstancePolicy, Picker, Readiness, RegisterOptions, RegistrationState, ViewOptions};
use futures::StreamExt;
use napi::bindgen_prelude::{i64n, Either, Function, PromiseRaw};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::session::Session;
use crate::iter::{stream_class, Cell};
use crate::members::held_members;
use crate::{spawn, Callback, Held};

/// One instance of a service.
#[napi(object)]
pub struct Instance {
    /// Instance id, unique within the service.
    pub id: String,
    /// Address, e.g. `host:port`.
    pub addr: String,
    /// Metadata (any JSON value; `null` when absent), with the `readiness` key when not ready.
    pub metadata: serde_json::Value,
    /// `'ready'`, `'not_ready'` or `'draining'` (from the metadata; absent means ready).
    #[napi(ts_type = "'ready' | 'not_ready' | 'draining'")]
    pub readiness: String,
}

fn instance(i: core::Instance) -> Instance {
    let readiness = i.readiness().as_str().to_string();
    Instance { id: i.id, addr: i.addr, metadata: i.metadata, readiness }
}

/// An instance named by its id (an `Instance` will do).
#[napi(object)]
pub struct InstanceRef {
    pub id: String,
}

fn instance_id(i: Either<String, InstanceRef>) -> String {
    match i {
        Either::A(id) => id,
        Either::B(r) => r.id,
    }
}

fn instances(v: Vec<core::Instance>) -> Vec<Instance> {
    v.into_iter().map(instance).collect()
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
    /// Any JSON value (no bigint).
    pub metadata: Option<serde_json::Value>,
    /// Lease TTL in seconds (default 10).
    pub ttl: Option<f64>,
    /// `'ready'` (default), `'not_ready'` or `'draining'`: discovery picks only ready instances.
    #[napi(ts_type = "'ready' | 'not_ready' | 'draining'")]
    pub readiness: Option<String>,
    /// Re-register after a lost lease or a deleted key (default `true`); `false`: the
    /// registration ends, state `'lost'`.
    pub self_heal: Option<bool>,
}

/// What to register on a session (its lease: no TTL of its own).
#[napi(object)]
pub struct SessionRegisterInput {
    /// Service name, e.g. `"billing"`.
    pub service: String,
    /// Instance id, unique within the service.
    pub id: String,
    /// Address clients connect to, e.g. `"10.0.0.5:8080"`.
    pub addr: String,
    /// Any JSON value (no bigint).
    pub metadata: Option<serde_json::Value>,
    /// `'ready'` (default), `'not_ready'` or `'draining'`.
    #[napi(ts_type = "'ready' | 'not_ready' | 'draining'")]
    pub readiness: Option<String>,
    /// Put the key back when it is deleted from outside (default `true`).
    pub self_heal: Option<bool>,
}

fn readiness(env: &Env, r: Option<&str>) -> napi::Result<Readiness> {
    r.map(Readiness::parse).transpose().map_err(|e| errors::sync(env, e)).map(Option::unwrap_or_default)
}

#[allow(clippy::too_many_arguments)]
fn register_options(
    env: &Env,
    service: String,
    id: String,
    addr: String,
    metadata: Option<serde_json::Value>,
    r: Option<String>,
    self_heal: Option<bool>,
) -> napi::Result<RegisterOptions> {
    Ok(RegisterOptions::new(service, id, addr)
        .metadata(metadata.unwrap_or(serde_json::Value::Null))
        .readiness(readiness(env, r.as_deref())?)
        .self_heal(self_heal.unwrap_or(true)))
}

/// How a view picks (`client.discover(service, options)`).
#[napi(object)]
pub struct DiscoverOptions {
    /// `'round_robin'` (default), `'random'`, `'sticky'` (the same instance until it
    /// leaves) or `'weighted'` (weight from `metadata[weightKey]`, default 1).
    #[napi(ts_type = "'round_robin' | 'random' | 'sticky' | 'weighted'")]
    pub picker: Option<String>,
    /// Also pick instances that are not ready or draining (default `false`).
    pub include_not_ready: Option<bool>,
    /// Pick from this zone (`metadata[zoneKey]`) while it has an available instance.
    pub prefer_zone: Option<String>,
    /// The metadata key of an instance's zone (default `'zone'`).
    pub zone_key: Option<String>,
    /// The metadata key of an instance's weight (default `'weight'`).
    pub weight_key: Option<String>,
    /// Errors (`noteError`) within `downPeriodMs` that take an instance out (default 2).
    pub down_threshold: Option<f64>,
    /// How long an instance stays out, from its first error (default 30000).
    pub down_period_ms: Option<f64>,
}

fn view_options(env: &Env, o: Option<DiscoverOptions>) -> napi::Result<ViewOptions> {
    let Some(o) = o else { return Ok(ViewOptions::new()) };
    let mut v = ViewOptions::new().include_not_ready(o.include_not_ready.unwrap_or(false));
    if let Some(p) = o.picker {
        v = v.picker(Picker::parse(&p).map_err(|e| errors::sync(env, e))?);
    }
    if let Some(z) = o.prefer_zone {
        v = v.prefer_zone(z);
    }
    if let Some(k) = o.zone_key {
        v = v.zone_key(k);
    }
    if let Some(k) = o.weight_key {
        v = v.weight_key(k);
    }
    let mut policy = DownInstancePolicy::default();
    if let Some(n) = o.down_threshold {
        if !n.is_finite() || n.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&n) {
            return Err(errors::invalid(env, format!("downThreshold must be a whole number >= 0, got {n}")));
        }
        policy.threshold = n as u32;
    }
    if let Some(d) = errors::millis(env, "downPeriodMs", o.down_period_ms)? {
        policy.period = d;
    }
    Ok(v.down_policy(policy))
}

/// Where a registration stands: `'registered'`, `'recovering'` (re-granting a lease and
/// re-putting the key) or `'closed'`.
fn state(s: &RegistrationState) -> &'static str {
    s.as_str()
}

/// A change in a service's instance set.
#[napi(object, object_from_js = false)]
pub struct InstanceEvent {
    /// `'up'` (new), `'updated'` (address or metadata changed) or `'down'` (left).
    #[napi(ts_type = "'up' | 'updated' | 'down'")]
    pub kind: String,
    /// The instance id.
    pub id: String,
    /// The instance (absent for `'down'`).
    pub instance: Option<Instance>,
    /// The etcd revision of the change.
    pub revision: i64,
}

fn event((e, revision): (core::InstanceEvent, i64)) -> InstanceEvent {
    let (kind, id, inst) = match e {
        core::InstanceEvent::Up(i) => ("up", i.id.clone(), Some(instance(i))),
        core::InstanceEvent::Updated(i) => ("updated", i.id.clone(), Some(instance(i))),
        core::InstanceEvent::Down { id } => ("down", id, None),
    };
    InstanceEvent { kind: kind.into(), id, instance: inst, revision }
}

stream_class!(
    InstanceEvents,
    InstanceEvent,
    "Promise<IteratorResult<InstanceEvent, undefined>>",
    "`for await (const event of view.events())`: every change from now on."
);

stream_class!(
    InstanceSets,
    Vec<Instance>,
    "Promise<IteratorResult<Instance[], undefined>>",
    "`for await (const instances of view)`: the current set, then the set after each change."
);

#[napi]
impl Client {
    /// Register a service instance and keep it registered: if its lease is lost (etcd
    /// restart, long partition) it re-grants a lease and re-puts its key by itself.
    #[napi(ts_return_type = "Promise<Registration>")]
    pub fn register<'env>(&self, env: &'env Env, input: RegisterInput) -> napi::Result<PromiseRaw<'env, Registration>> {
        let opts = register_options(env, input.service, input.id, input.addr, input.metadata, input.readiness, input.self_heal)?
            .ttl(errors::ttl(env, input.ttl)?);
        let c = self.core.clone();
        errors::promise(env, async move {
            let r = core::Registration::register(&c, opts).await?;
            Ok(Registration { core: Held::new(Arc::new(r)) })
        })
    }

    /// The instances of `service` right now (one read; see `discover` for a live view).
    #[napi(ts_return_type = "Promise<Instance[]>")]
    pub fn list_instances<'env>(&self, env: &'env Env, service: String) -> napi::Result<PromiseRaw<'env, Vec<Instance>>> {
        let c = self.core.clone();
        errors::promise(env, async move { Ok(instances(core::list_instances(&c, &service).await?.0)) })
    }

    /// A live view of `service`'s instances: a consistent snapshot, then every change.
    /// Picks skip instances that are not ready (unless `includeNotReady`) and those taken
    /// out by `noteError`.
    #[napi(ts_return_type = "Promise<ServiceView>")]
    pub fn discover<'env>(&self, env: &'env Env, service: String, options: Option<DiscoverOptions>) -> napi::Result<PromiseRaw<'env, ServiceView>> {
        let o = view_options(env, options)?;
        let c = self.core.clone();
        errors::promise(env, async move { Ok(ServiceView { core: core::ServiceView::start_with(&c, &service, o).await?, service }) })
    }
}

#[napi]
impl Session {
    /// Register an instance on this session's lease: it lives as long as the session
    /// (`'lost'` when the session is lost; it never grants a lease of its own), and
    /// `close()` leaves the session open.
    #[napi(ts_return_type = "Promise<Registration>")]
    pub fn register<'env>(&self, env: &'env Env, input: SessionRegisterInput) -> napi::Result<PromiseRaw<'env, Registration>> {
        let opts = register_options(env, input.service, input.id, input.addr, input.metadata, input.readiness, input.self_heal)?;
        let s = (*self.core).clone();
        errors::promise(env, async move {
            let r = core::Registration::register_on(&s, opts).await?;
            Ok(Registration { core: Held::new(Arc::new(r)) })
        })
    }
}

/// A registered instance, kept registered until `close()` (or `await using`).
#[napi]
pub struct Registration {
    core: Held<Arc<core::Registration>>,
}

#[napi]
impl Registration {
    /// The full etcd key, `<namespace><service>/<id>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// The registered instance.
    #[napi(getter)]
    pub fn instance(&self) -> Instance {
        instance(self.core.instance())
    }

    /// The current lease (it changes when the registration heals itself).
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// `'registered'`, `'recovering'` (re-granting a lease and re-putting the key, after
    /// its lease was lost), `'lost'` (gone and not healing: `selfHeal: false`, or its
    /// session lost) or `'closed'`.
    #[napi(getter, ts_return_type = "'registered' | 'recovering' | 'lost' | 'closed'")]
    pub fn state(&self) -> &'static str {
        state(&self.core.state())
    }

    /// `'ready'`, `'not_ready'` or `'draining'`, as registered.
    #[napi(getter, ts_return_type = "'ready' | 'not_ready' | 'draining'")]
    pub fn readiness(&self) -> &'static str {
        self.core.readiness().as_str()
    }

    /// Change the readiness in place (same key and lease). Discovery does not pick an
    /// instance that is not ready.
    #[napi(ts_args_type = "readiness: 'ready' | 'not_ready' | 'draining'", ts_return_type = "Promise<void>")]
    pub fn set_readiness<'env>(&self, env: &'env Env, readiness: String) -> napi::Result<PromiseRaw<'env, ()>> {
        let r = Readiness::parse(&readiness).map_err(|e| errors::sync(env, e))?;
        let reg = (*self.core).clone();
        errors::promise(env, async move { reg.set_readiness(r).await })
    }

    /// How many times it re-registered itself after losing its lease.
    #[napi(getter)]
    pub fn reregistrations(&self) -> i64 {
        self.core.reregistrations() as i64
    }

    /// Call `callback(state)` on every state change (e.g. `'recovering'` then `'registered'`
    /// after a re-registration, `'closed'` at the end). Does not keep the process alive.
    #[napi(ts_args_type = "callback: (state: 'registered' | 'recovering' | 'lost' | 'closed') => void")]
    pub fn on_state_change(&self, callback: Callback<&'static str>) {
        let mut rx = self.core.watch_state();
        rx.borrow_and_update();
        spawn(async move {
            while rx.changed().await.is_ok() {
                let s = state(&rx.borrow_and_update());
                let _ = callback.call(s, ThreadsafeFunctionCallMode::NonBlocking);
                if s == "closed" {
                    break;
                }
            }
        });
    }

    /// Replace the metadata in place (same lease, same key; the readiness is kept).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn update_metadata<'env>(&self, env: &'env Env, metadata: serde_json::Value) -> napi::Result<PromiseRaw<'env, ()>> {
        let r = (*self.core).clone();
        errors::promise(env, async move { r.update_metadata(metadata).await })
    }
}

held_members! {
    impl Registration {
        end {
            close: "Deregister: delete the key and revoke its own lease (a session given to `session.register` stays open). Idempotent.";
            async_dispose: "`await using reg = await client.register(...)`: deregisters.";
        }
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
    core: core::ServiceView,
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
        instances(self.core.instances())
    }

    /// The etcd revision the view reflects.
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.core.revision()
    }

    /// The instances a pick chooses from now: ready (unless the view includes every
    /// readiness), not taken out by `noteError`, in id order (local, synchronous).
    #[napi]
    pub fn available(&self) -> Vec<Instance> {
        instances(self.core.available())
    }

    /// An available instance chosen by the view's picker (from the preferred zone while it
    /// has one), or `null`. `filter(instance)` narrows this pick; what it throws is thrown here.
    #[napi]
    pub fn pick(&self, filter: Option<Function<'_, Instance, bool>>) -> napi::Result<Option<Instance>> {
        let Some(f) = filter else { return Ok(self.core.pick().map(instance)) };
        let failed: std::cell::RefCell<Option<napi::Error>> = std::cell::RefCell::new(None);
        let picked = self.core.pick_where(|i| {
            if failed.borrow().is_some() {
                return false;
            }
            match f.call(instance(i.clone())) {
                Ok(keep) => keep,
                Err(e) => {
                    *failed.borrow_mut() = Some(e);
                    false
                }
            }
        });
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(picked.map(instance)),
        }
    }

    /// The next available instance in round-robin order, or `null` when there is none.
    #[napi]
    pub fn pick_round_robin(&self) -> Option<Instance> {
        self.core.pick_round_robin().map(instance)
    }

    /// A random available instance, or `null` when there is none.
    #[napi]
    pub fn pick_random(&self) -> Option<Instance> {
        self.core.pick_random().map(instance)
    }

    /// Report a failed call to `instance` (an `Instance` or its id): after the view's
    /// `downThreshold` errors within `downPeriodMs` (from the first), it is not picked
    /// until `downPeriodMs` has passed.
    #[napi]
    pub fn note_error(&self, instance: Either<String, InstanceRef>) {
        self.core.note_error(&instance_id(instance));
    }

    /// True while `instance` (an `Instance` or its id) is skipped after `noteError`.
    #[napi]
    pub fn is_down(&self, instance: Either<String, InstanceRef>) -> bool {
        self.core.is_down(&instance_id(instance))
    }

    /// Wait for the next change and resolve to the new instance set (code `CLOSED` once
    /// the view or its client is closed).
    #[napi(ts_return_type = "Promise<Instance[]>")]
    pub fn changed<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<Instance>>> {
        let v = self.core.clone();
        errors::promise(env, async move { Ok(instances(v.changed().await?)) })
    }

    /// Every change from now on: `{ kind, id, instance, revision }`.
    #[napi]
    pub fn events(&self) -> InstanceEvents {
        InstanceEvents(Cell::new(self.core.events().map(|r| r.map(event))))
    }

    /// The current instance set, then the whole set after each change.
    #[napi]
    pub fn updates(&self) -> InstanceSets {
        InstanceSets(Cell::new(self.core.updates().map(|v| Ok(instances(v)))))
    }

    /// `for await (const instances of view)`: `updates()`.
    #[napi(well_known_symbol = "asyncIterator")]
    pub fn iterate(&self) -> InstanceSets {
        self.updates()
    }

    /// Stop watching. Idempotent; iterators end; reads keep the last set.
    #[napi]
    pub fn close(&self) {
        self.core.close();
    }

    /// `await using view = await client.discover(...)`: closes the view.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.core.close();
        errors::promise(env, async { Ok(()) })
    }
}
