//! Node face of the read-write lock: `client.rwlock(name, { ttl, timeoutMs })`,
//! `session.rwlock(name, { timeoutMs })`, `rw.read()` / `write()` / `tryRead()` /
//! `tryWrite()` -> `LockGuard`.

use etcd_recipes::rwlock::Side;
use etcd_recipes::SessionSource;
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::lock::{per_use, wait, LockGuard, RecipeOptions, WaitOptions};
use crate::session::Session;
use crate::Held;

/// A distributed read-write lock (same keys as etcd's Go `recipe.RWMutex`): readers share
/// it, a writer holds it alone, and a waiting writer goes before readers that come later.
///
/// ```js
/// const rw = client.rwlock('catalog', { ttl: 10 })
/// { await using r = await rw.read() }
/// { await using w = await rw.write({ timeoutMs: 5000 }) }
/// ```
#[napi]
pub struct RwLock {
    core: Held<etcd_recipes::rwlock::RwLock>,
}

fn rwlock(env: &Env, source: SessionSource, name: &str, timeout: Option<std::time::Duration>) -> napi::Result<RwLock> {
    let core = etcd_recipes::rwlock::RwLock::new(source, name).map_err(|e| errors::sync(env, e))?;
    Ok(RwLock { core: Held::new(core.with_timeout(timeout)) })
}

#[napi]
impl Client {
    /// A read-write lock named `name`. Each hold runs on a session of its own (`ttl`
    /// seconds, default 10), closed when it is released.
    #[napi(strict)]
    pub fn rwlock(&self, env: &Env, name: String, options: Option<RecipeOptions>) -> napi::Result<RwLock> {
        let (source, timeout) = per_use(env, &self.core, options)?;
        rwlock(env, source, &name, timeout)
    }
}

#[napi]
impl Session {
    /// A read-write lock whose holds run on this session (which stays open).
    #[napi(strict)]
    pub fn rwlock(&self, env: &Env, name: String, options: Option<WaitOptions>) -> napi::Result<RwLock> {
        rwlock(env, SessionSource::Shared((*self.core).clone()), &name, wait(env, options)?)
    }
}

impl RwLock {
    fn hold<'env>(&self, env: &'env Env, side: Side, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let (rw, timeout) = ((*self.core).clone(), wait(env, options)?);
        errors::promise(env, async move {
            let g = match (timeout, side) {
                (Some(t), _) => rw.acquire_within(side, Some(t)).await?,
                (None, Side::Read) => rw.read().await?,
                (None, Side::Write) => rw.write().await?,
            };
            Ok(LockGuard::wrap(g))
        })
    }

    fn try_hold<'env>(&self, env: &'env Env, side: Side) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let rw = (*self.core).clone();
        errors::promise(env, async move {
            Ok(LockGuard::wrap(if side == Side::Read { rw.try_read().await? } else { rw.try_write().await? }))
        })
    }
}

#[napi]
impl RwLock {
    /// The lock name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Wait for a shared hold (behind every earlier writer). Rejects with code
    /// `LOCK_TIMEOUT` after `timeoutMs` (default: the lock's), `SESSION_LOST`, `CLOSED`.
    #[napi(strict, ts_return_type = "Promise<LockGuard>")]
    pub fn read<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        self.hold(env, Side::Read, options)
    }

    /// Wait for the exclusive hold (behind every earlier reader and writer).
    #[napi(strict, ts_return_type = "Promise<LockGuard>")]
    pub fn write<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        self.hold(env, Side::Write, options)
    }

    /// A shared hold if no earlier writer is there; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn try_read<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        self.try_hold(env, Side::Read)
    }

    /// The exclusive hold if nobody else is there; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn try_write<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        self.try_hold(env, Side::Write)
    }
}
