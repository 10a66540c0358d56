//! Node face of the distributed lock: `client.lock(name, { ttl, timeoutMs })`,
//! `session.lock(name)`, `lock.acquire()` -> `LockGuard`; the options that lock and
//! election share.

use std::sync::Arc;

use etcd_recipes::SessionSource;
use napi::bindgen_prelude::{i64n, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::members::held_members;
use crate::session::Session;
use crate::Held;

/// Options of `client.lock()` and `client.election()`.
#[napi(object)]
pub struct RecipeOptions {
    /// TTL in seconds of the session made for each acquisition / campaign and closed when
    /// the lock is released, the leadership resigned or the wait gives up (default 10).
    /// To share one session instead, use `session.lock()` / `session.election()`.
    pub ttl: Option<f64>,
    /// How long `acquire()` / `campaign()` wait, in ms, before rejecting with code
    /// `LOCK_TIMEOUT` (default: as long as it takes).
    pub timeout_ms: Option<f64>,
}

/// Options of `session.lock()`, `session.election()`, `lock.acquire()` and `election.campaign()`.
#[napi(object)]
pub struct WaitOptions {
    /// Give up after this many ms: rejects with code `LOCK_TIMEOUT` (our waiting key is removed).
    pub timeout_ms: Option<f64>,
}

/// A session of `ttl` seconds per use, and the default wait bound.
pub(crate) fn per_use(env: &Env, c: &etcd_recipes::Client, o: Option<RecipeOptions>) -> napi::Result<(SessionSource, Option<std::time::Duration>)> {
    let (ttl, timeout) = o.map_or((None, None), |o| (o.ttl, o.timeout_ms));
    let source = SessionSource::per_use(c, errors::ttl(env, ttl)?).map_err(|e| errors::sync(env, e))?;
    Ok((source, errors::millis(env, "timeoutMs", timeout)?))
}

pub(crate) fn wait(env: &Env, o: Option<WaitOptions>) -> napi::Result<Option<std::time::Duration>> {
    errors::millis(env, "timeoutMs", o.and_then(|o| o.timeout_ms))
}

/// A named distributed lock (same keys as etcd's Go `concurrency.Mutex` and `etcdctl lock`).
///
/// ```js
/// const lock = client.lock('jobs/report', { ttl: 10 })
/// await using guard = await lock.acquire({ timeoutMs: 5000 })
/// await guard.put('jobs/report-owner', 'me') // only while the lock is ours
/// ```
#[napi]
pub struct Lock {
    core: Held<etcd_recipes::lock::Lock>,
}

fn lock(env: &Env, source: SessionSource, name: &str, timeout: Option<std::time::Duration>) -> napi::Result<Lock> {
    let core = etcd_recipes::lock::Lock::new(source, name).map_err(|e| errors::sync(env, e))?;
    Ok(Lock { core: Held::new(core.with_timeout(timeout)) })
}

#[napi]
impl Client {
    /// A lock named `name`. Each acquisition runs on a session of its own (`ttl` seconds,
    /// default 10), closed when the lock is released.
    #[napi(strict)]
    pub fn lock(&self, env: &Env, name: String, options: Option<RecipeOptions>) -> napi::Result<Lock> {
        let (source, timeout) = per_use(env, &self.core, options)?;
        lock(env, source, &name, timeout)
    }
}

#[napi]
impl Session {
    /// A lock named `name` whose acquisitions run on this session (which stays open).
    #[napi(strict)]
    pub fn lock(&self, env: &Env, name: String, options: Option<WaitOptions>) -> napi::Result<Lock> {
        lock(env, SessionSource::Shared((*self.core).clone()), &name, wait(env, options)?)
    }
}

#[napi]
impl Lock {
    /// The lock name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Wait for the lock (FIFO) and resolve to its guard. Rejects with code `LOCK_TIMEOUT`
    /// after `timeoutMs` (default: the lock's), `SESSION_LOST` if the session is lost
    /// meanwhile, `CLOSED` if the client closes.
    #[napi(strict, ts_return_type = "Promise<LockGuard>")]
    pub fn acquire<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let (lock, timeout) = ((*self.core).clone(), wait(env, options)?);
        errors::promise(env, async move {
            let guard = match timeout {
                Some(t) => lock.acquire_timeout(t).await?,
                None => lock.acquire().await?,
            };
            Ok(LockGuard { core: Held::new(Arc::new(guard)) })
        })
    }

    /// Take the lock only if it is free right now; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn try_acquire<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let lock = (*self.core).clone();
        errors::promise(env, async move { Ok(LockGuard { core: Held::new(Arc::new(lock.try_acquire().await?)) }) })
    }
}

/// Proof that the lock is ours: its key, its fencing token, and writes guarded by it.
/// Release it with `release()` or `await using`.
#[napi]
pub struct LockGuard {
    core: Held<Arc<etcd_recipes::lock::LockGuard>>,
}

impl LockGuard {
    /// The face of a core guard: a lock's, a semaphore permit or a read-write lock hold.
    pub(crate) fn wrap(g: etcd_recipes::lock::LockGuard) -> LockGuard {
        LockGuard { core: Held::new(Arc::new(g)) }
    }
}

#[napi]
impl LockGuard {
    /// The full etcd key that holds the lock, `<namespace><name>/<lease hex>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// The lock name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// The lease behind the lock.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// The fencing token: the create revision of the lock key. It strictly increases from
    /// one holder to the next; pass it to systems that must reject a stale holder.
    #[napi(getter)]
    pub fn fencing_token(&self) -> i64 {
        self.core.fencing_token()
    }

    /// True while not released and the session is alive.
    #[napi(getter)]
    pub fn is_held(&self) -> bool {
        self.core.is_held()
    }
}

held_members! {
    impl LockGuard {
        fenced {
            put: "Put `value` at `key` only if the lock is still ours (else rejects with code `FENCED`);"
                 "resolves to the revision of the write.";
            delete: "Delete `key` only if the lock is still ours (else code `FENCED`).";
            txn: "Apply all `ops` atomically only if the lock is still ours (else code `FENCED`).";
        }
        loss {
            lost: "Resolves when the lock stops being ours: with the reason when it was lost (its"
                  "session lost), with `null` when it ended normally (released, client closed).";
            on_lost: "Call `callback(reason)` if the lock is lost (not on release). Does not keep the process alive.";
        }
        end {
            release: "Release the lock (delete its key; close the session made for it). Idempotent.";
            async_dispose: "`await using guard = await lock.acquire()`: releases the lock.";
        }
    }
}
