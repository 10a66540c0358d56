//! `Session`: one lease kept alive by core; lost/closed signalled as a Promise or a callback.

use std::sync::Arc;

use etcd_recipes::SessionState;
use futures::future::BoxFuture;
use napi::bindgen_prelude::{i64n, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use tokio::sync::watch;

use crate::client::{drop_in_runtime, Child, Scope, RUNTIME};
use crate::errors;

/// A JS callback called from the runtime without keeping Node's event loop alive.
pub(crate) type Callback<T> = ThreadsafeFunction<T, (), T, Status, false, true>;

/// Call `cb` with `value` (fire and forget).
pub(crate) fn call<T: 'static + Send + napi::bindgen_prelude::ToNapiValue>(cb: &Callback<T>, value: T) {
    let _ = cb.call(value, ThreadsafeFunctionCallMode::NonBlocking);
}

/// Spawn `fut` on the shared runtime.
pub(crate) fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(fut: F) {
    match RUNTIME.get() {
        Some(h) => {
            h.spawn(fut);
        }
        None => {
            napi::bindgen_prelude::spawn(fut);
        }
    }
}

/// Resolves with the reason once the session state is no longer `Alive`.
pub(crate) async fn wait_not_alive(mut rx: watch::Receiver<SessionState>) -> String {
    match rx.wait_for(|s| *s != SessionState::Alive).await {
        Ok(s) => match &*s {
            SessionState::Lost(r) => r.clone(),
            _ => "session closed".to_string(),
        },
        Err(_) => "session dropped".to_string(),
    }
}

pub(crate) struct SessionInner {
    pub(crate) core: Option<etcd_recipes::Session>,
}

impl SessionInner {
    pub(crate) fn core(&self) -> &etcd_recipes::Session {
        self.core.as_ref().expect("set until drop")
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        drop_in_runtime(self.core.take());
    }
}

impl Child for SessionInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.core().close().await;
        })
    }
}

/// One lease kept alive in the background (renewed every TTL/6, at most every 500 ms) until closed or lost.
///
/// It declares itself lost as soon as renewal can no longer be confirmed before the lease
/// would expire: `await session.lost()` or `session.onLost(cb)` to stop working in time.
#[napi]
pub struct Session {
    pub(crate) scope: Arc<Scope>,
    pub(crate) inner: Arc<SessionInner>,
}

impl Session {
    pub(crate) fn new(scope: Arc<Scope>, core: etcd_recipes::Session) -> Session {
        let inner = Arc::new(SessionInner { core: Some(core) });
        let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
        scope.adopt(weak);
        Session { scope, inner }
    }
}

#[napi]
impl Session {
    /// The lease id as a bigint.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.inner.core().lease_id())
    }

    /// The lease id in lowercase hex (as in lock and election keys, and `etcdctl lease list`).
    #[napi(getter)]
    pub fn lease_id_hex(&self) -> String {
        format!("{:x}", self.inner.core().lease_id())
    }

    /// The TTL etcd granted, in seconds.
    #[napi(getter)]
    pub fn ttl(&self) -> i64 {
        self.inner.core().ttl()
    }

    /// True while renewals are confirmed.
    #[napi(getter)]
    pub fn is_alive(&self) -> bool {
        self.inner.core().is_alive()
    }

    /// `"alive"`, `"lost"` or `"closed"`.
    #[napi(getter, ts_return_type = "'alive' | 'lost' | 'closed'")]
    pub fn state(&self) -> &'static str {
        match self.inner.core().state() {
            SessionState::Alive => "alive",
            SessionState::Lost(_) => "lost",
            SessionState::Closed => "closed",
        }
    }

    /// Resolves with the reason when the session stops being alive (lost, or closed).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, String>> {
        let rx = self.inner.core().watch_state();
        errors::promise(env, async move { Ok(wait_not_alive(rx).await) })
    }

    /// Call `callback(reason)` once when the session stops being alive. Unlike an awaited
    /// `lost()`, a registered callback does not keep the process alive.
    #[napi(ts_args_type = "callback: (reason: string) => void")]
    pub fn on_lost(&self, callback: Callback<String>) {
        let rx = self.inner.core().watch_state();
        spawn(async move {
            let reason = wait_not_alive(rx).await;
            call(&callback, reason);
        });
    }

    /// `await using session = await client.session()`: closes the session.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }

    /// Stop renewing and revoke the lease (every key attached to it is deleted). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { inner.core().close().await })
    }
}
