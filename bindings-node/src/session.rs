//! `Session`: one lease kept alive by core; its loss as a Promise or a callback.

use etcd_recipes::SessionState;
use napi::bindgen_prelude::{i64n, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::{errors, notify, Callback, Held};

/// One lease kept alive in the background (renewed every TTL/6, at most every 500 ms)
/// until closed or lost.
///
/// It declares itself lost as soon as renewal can no longer be confirmed before the lease
/// would expire: `await session.lost()` or `session.onLost(cb)` to stop working in time.
#[napi]
pub struct Session {
    pub(crate) core: Held<etcd_recipes::Session>,
}

impl From<etcd_recipes::Session> for Session {
    fn from(core: etcd_recipes::Session) -> Self {
        Session { core: Held::new(core) }
    }
}

#[napi]
impl Session {
    /// The lease id as a bigint.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// The lease id in lowercase hex (as in lock and election keys, and `etcdctl lease list`).
    #[napi(getter)]
    pub fn lease_id_hex(&self) -> String {
        format!("{:x}", self.core.lease_id())
    }

    /// The TTL etcd granted, in seconds.
    #[napi(getter)]
    pub fn ttl(&self) -> i64 {
        self.core.ttl()
    }

    /// True while renewals are confirmed.
    #[napi(getter)]
    pub fn is_alive(&self) -> bool {
        self.core.is_alive()
    }

    /// `'alive'`, `'lost'` or `'closed'`.
    #[napi(getter, ts_return_type = "'alive' | 'lost' | 'closed'")]
    pub fn state(&self) -> &'static str {
        match self.core.state() {
            SessionState::Alive => "alive",
            SessionState::Lost(_) => "lost",
            SessionState::Closed => "closed",
        }
    }

    /// Resolves when the session stops being alive: with the reason when it was lost
    /// (renewals not confirmed, lease expired or revoked), with `null` when it was closed
    /// (`close()`, the client closed, process exit).
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let s = (*self.core).clone();
        errors::promise(env, async move { Ok(s.lost().await) })
    }

    /// Call `callback(reason)` if the session is lost (not when it is closed). Unlike an
    /// awaited `lost()`, a registered callback does not keep the process alive.
    #[napi(ts_args_type = "callback: (reason: string) => void")]
    pub fn on_lost(&self, callback: Callback<String>) {
        let s = (*self.core).clone();
        notify(callback, async move { s.lost().await })
    }

    /// Stop renewing and revoke the lease (every key attached to it is deleted). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let s = (*self.core).clone();
        errors::promise(env, async move { s.close().await })
    }

    /// `await using session = await client.session()`: closes the session.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }
}
