//! Node face of the service registry: `client.register({...})` -> `Registration`, and
//! discovery `client.discover(service)` -> `ServiceView` (local reads, `for await`).

use std::sync::Arc;

use etcd_recipes::registry::{self as core, RegisterOptions, RegistrationState};
use futures::StreamExt;
use napi::bindgen_prelude::{i64n, PromiseRaw};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
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
    /// Metadata (any JSON value; `null` when absent).
    pub metadata: serde_json::Value,
}

fn instance(i: core::Instance) -> Instance {
    Instance { id: i.id, addr: i.addr, metadata: i.metadata }
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
}

/// Where a registration stands: `'registered'`, `'recovering'` (re-granting a lease and
/// re-putting the key) or `'closed'`.
fn state(s: &RegistrationState) -> &'static str {
    match s {
        RegistrationState::Registered { .. } => "registered",
        RegistrationState::Recovering { .. } => "recovering",
        RegistrationState::Closed => "closed",
    }
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
        let opts = RegisterOptions::new(input.service, input.id, input.addr)
            .metadata(input.metadata.unwrap_or(serde_json::Value::Null))
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
    #[napi(ts_return_type = "Promise<ServiceView>")]
    pub fn discover<'env>(&self, env: &'env Env, service: String) -> napi::Result<PromiseRaw<'env, ServiceView>> {
        let c = self.core.clone();
        errors::promise(env, async move { Ok(ServiceView { core: core::ServiceView::start(&c, &service).await?, service }) })
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
    /// its lease was lost) or `'closed'`.
    #[napi(getter, ts_return_type = "'registered' | 'recovering' | 'closed'")]
    pub fn state(&self) -> &'static str {
        state(&self.core.state())
    }

    /// How many times it re-registered itself after losing its lease.
    #[napi(getter)]
    pub fn reregistrations(&self) -> i64 {
        self.core.reregistrations() as i64
    }

    /// Call `callback(state)` on every state change (e.g. `'recovering'` then `'registered'`
    /// after a re-registration, `'closed'` at the end). Does not keep the process alive.
    #[napi(ts_args_type = "callback: (state: 'registered' | 'recovering' | 'closed') => void")]
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

    /// Replace the metadata (same lease, same key).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn update_metadata<'env>(&self, env: &'env Env, metadata: serde_json::Value) -> napi::Result<PromiseRaw<'env, ()>> {
        let r = (*self.core).clone();
        errors::promise(env, async move { r.update_metadata(metadata).await })
    }
}

held_members! {
    impl Registration {
        end {
            close: "Deregister: delete the key and revoke the lease. Idempotent.";
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

    /// The next instance in round-robin order, or `null` when there is none.
    #[napi]
    pub fn pick_round_robin(&self) -> Option<Instance> {
        self.core.pick_round_robin().map(instance)
    }

    /// A random instance, or `null` when there is none.
    #[napi]
    pub fn pick_random(&self) -> Option<Instance> {
        self.core.pick_random().map(instance)
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
