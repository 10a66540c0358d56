//! Node face of the semaphore: `client.semaphore(name, permits, { ttl, timeoutMs })`,
//! `session.semaphore(name, permits, { timeoutMs })`, `sem.acquire()` / `tryAcquire()` ->
//! `LockGuard` (the same guard as a lock's).

use etcd_recipes::semaphore::MAX_PERMITS;
use etcd_recipes::SessionSource;
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::lock::{per_use, wait, LockGuard, RecipeOptions, WaitOptions};
use crate::session::Session;
use crate::Held;

/// A counting semaphore: at most `permits` holders of one name at once, FIFO.
///
/// ```js
/// const sem = client.semaphore('downloads', 3, { ttl: 10 })
/// await using permit = await sem.acquire({ timeoutMs: 5000 })
/// await permit.put('downloads/last', 'me') // only while the permit is ours
/// ```
#[napi]
pub struct Semaphore {
    core: Held<etcd_recipes::semaphore::Semaphore>,
}

fn semaphore(env: &Env, source: SessionSource, name: &str, permits: f64, timeout: Option<std::time::Duration>) -> napi::Result<Semaphore> {
    if !(permits.fract() == 0.0 && (1.0..=MAX_PERMITS as f64).contains(&permits)) {
        return Err(errors::invalid(env, format!("permits must be an integer in 1..={MAX_PERMITS}, got {permits}")));
    }
    let core = etcd_recipes::semaphore::Semaphore::new(source, name, permits as u32).map_err(|e| errors::sync(env, e))?;
    Ok(Semaphore { core: Held::new(core.with_timeout(timeout)) })
}

#[napi]
impl Client {
    /// A semaphore named `name` with at most `permits` holders. Each acquisition runs on a
    /// session of its own (`ttl` seconds, default 10), closed when the permit is released.
    #[napi(strict)]
    pub fn semaphore(&self, env: &Env, name: String, permits: f64, options: Option<RecipeOptions>) -> napi::Result<Semaphore> {
        let (source, timeout) = per_use(env, &self.core, options)?;
        semaphore(env, source, &name, permits, timeout)
    }
}

#[napi]
impl Session {
    /// A semaphore whose acquisitions run on this session (one permit per session at a time).
    #[napi(strict)]
    pub fn semaphore(&self, env: &Env, name: String, permits: f64, options: Option<WaitOptions>) -> napi::Result<Semaphore> {
        semaphore(env, SessionSource::Shared((*self.core).clone()), &name, permits, wait(env, options)?)
    }
}

#[napi]
impl Semaphore {
    /// The semaphore name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// How many holders at most.
    #[napi(getter)]
    pub fn permits(&self) -> u32 {
        self.core.permits()
    }

    /// Wait for a permit (FIFO) and resolve to its guard. Rejects with code `LOCK_TIMEOUT`
    /// after `timeoutMs` (default: the semaphore's), `SESSION_LOST` if the session is lost
    /// meanwhile, `CLOSED` if the client closes, `INVALID_ARGUMENT` if the holders were
    /// made with another permit count.
    #[napi(strict, ts_return_type = "Promise<LockGuard>")]
    pub fn acquire<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let (sem, timeout) = ((*self.core).clone(), wait(env, options)?);
        errors::promise(env, async move {
            let g = match timeout {
                Some(t) => sem.acquire_timeout(t).await?,
                None => sem.acquire().await?,
            };
            Ok(LockGuard::wrap(g))
        })
    }

    /// Take a permit only if one is free right now; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn try_acquire<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let sem = (*self.core).clone();
        errors::promise(env, async move { Ok(LockGuard::wrap(sem.try_acquire().await?)) })
    }
}
