//! Node face of the barriers: `client.barrier(name, { timeoutMs })` -> `Barrier` (`hold`,
//! `release`, `isHeld`, `wait`); `client.doubleBarrier(name, count, { ttl, timeoutMs })` ->
//! `DoubleBarrier` (`enter`, `leave`, `lost`, `onLost`).

use std::sync::Arc;

use etcd_recipes::barrier::{Barrier as CoreBarrier, DoubleBarrier as CoreDouble};
use etcd_recipes::SessionSource;
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::members::held_members;
use crate::Held;

/// Options of `client.barrier()`.
#[napi(object)]
pub struct BarrierOptions {
    /// How long `wait()` waits, in ms, before rejecting with code `LOCK_TIMEOUT`
    /// (default: as long as it takes).
    pub timeout_ms: Option<f64>,
}

/// Options of `client.doubleBarrier()`.
#[napi(object)]
pub struct DoubleBarrierOptions {
    /// TTL in seconds of the session made for each entry (default 10): our waiter key lives
    /// on it. Closed on leave.
    pub ttl: Option<f64>,
    /// How long `enter()` / `leave()` wait, in ms, before rejecting with code `LOCK_TIMEOUT`
    /// (default: as long as it takes).
    pub timeout_ms: Option<f64>,
}

/// Options of a single wait.
#[napi(object)]
pub struct WaitOptions {
    /// Give up after this many ms: rejects with code `LOCK_TIMEOUT`.
    pub timeout_ms: Option<f64>,
}

fn wait_ms(env: &Env, o: Option<WaitOptions>) -> napi::Result<Option<std::time::Duration>> {
    errors::millis(env, "timeoutMs", o.and_then(|o| o.timeout_ms))
}

#[napi]
impl Client {
    /// The barrier `name`: one key (etcd Go `recipe.Barrier`).
    #[napi(strict)]
    pub fn barrier(&self, env: &Env, name: String, options: Option<BarrierOptions>) -> napi::Result<Barrier> {
        let timeout = errors::millis(env, "timeoutMs", options.and_then(|o| o.timeout_ms))?;
        let core = CoreBarrier::new(&self.core, &name).map_err(|e| errors::sync(env, e))?;
        Ok(Barrier { core: core.with_timeout(timeout) })
    }

    /// A double barrier `name` for `count` parties (etcd Go `recipe.DoubleBarrier`); this
    /// object is one party. Each entry runs on a session of its own (`ttl`, default 10 s).
    #[napi(strict)]
    pub fn double_barrier(&self, env: &Env, name: String, count: f64, options: Option<DoubleBarrierOptions>) -> napi::Result<DoubleBarrier> {
        if !(count.is_finite() && count.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(&count)) {
            return Err(errors::invalid(env, format!("count must be a whole number from 1 to {}, got {count}", u32::MAX)));
        }
        let (ttl, timeout_ms) = options.map_or((None, None), |o| (o.ttl, o.timeout_ms));
        let source = SessionSource::per_use(&self.core, errors::ttl(env, ttl)?).map_err(|e| errors::sync(env, e))?;
        let timeout = errors::millis(env, "timeoutMs", timeout_ms)?;
        let core = CoreDouble::new(source, &name, count as usize).map_err(|e| errors::sync(env, e))?;
        Ok(DoubleBarrier { core: Held::new(Arc::new(core.with_timeout(timeout))) })
    }
}

/// One key that blocks `wait()` while it exists.
///
/// ```js
/// const gate = client.barrier('deploy/gate')
/// await gate.hold()    // workers block in wait()
/// await gate.release() // ...and all go at once
/// ```
#[napi]
pub struct Barrier {
    core: CoreBarrier,
}

#[napi]
impl Barrier {
    /// The barrier name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// The full etcd key.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// Create the barrier key so that waiters block. Resolves to true if this call created
    /// it, false if it was held already.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn hold<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, bool>> {
        let b = self.core.clone();
        errors::promise(env, async move { b.hold().await })
    }

    /// Delete the barrier key: every waiter returns. Resolves to true if it was held.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn release<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, bool>> {
        let b = self.core.clone();
        errors::promise(env, async move { b.release().await })
    }

    /// Is the barrier key there now?
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn is_held<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, bool>> {
        let b = self.core.clone();
        errors::promise(env, async move { b.is_held().await })
    }

    /// Resolves when the barrier is not held (at once if it is not). Rejects with code
    /// `LOCK_TIMEOUT` after `timeoutMs` (default: the barrier's), `CLOSED` on client close.
    #[napi(strict, ts_return_type = "Promise<void>")]
    pub fn wait<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (b, t) = (self.core.clone(), wait_ms(env, options)?);
        errors::promise(env, async move {
            match t {
                Some(t) => b.wait_within(Some(t)).await,
                None => b.wait().await,
            }
        })
    }
}

/// `count` parties enter together and leave together.
///
/// ```js
/// const round = client.doubleBarrier('batch/42', 3)
/// await round.enter() // all 3 start together
/// await round.leave() // and finish together
/// ```
#[napi]
pub struct DoubleBarrier {
    core: Held<Arc<CoreDouble>>,
}

#[napi]
impl DoubleBarrier {
    /// The barrier name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// How many parties the barrier waits for.
    #[napi(getter)]
    pub fn count(&self) -> u32 {
        self.core.count() as u32
    }

    /// Resolves once `count` parties have entered. Rejects with code `LOCK_TIMEOUT` after
    /// `timeoutMs` (default: the barrier's) or at once when the barrier is full,
    /// `SESSION_LOST` if our session is lost meanwhile, `CLOSED` on client close.
    #[napi(strict, ts_return_type = "Promise<void>")]
    pub fn enter<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (b, t) = ((*self.core).clone(), wait_ms(env, options)?);
        errors::promise(env, async move {
            match t {
                Some(t) => b.enter_within(Some(t)).await,
                None => b.enter().await,
            }
        })
    }

    /// Resolves once every party has left. Rejects with code `LOCK_TIMEOUT` after
    /// `timeoutMs` (we are out all the same).
    #[napi(strict, ts_return_type = "Promise<void>")]
    pub fn leave<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (b, t) = ((*self.core).clone(), wait_ms(env, options)?);
        errors::promise(env, async move {
            match t {
                Some(t) => b.leave_within(Some(t)).await,
                None => b.leave().await,
            }
        })
    }
}

held_members! {
    impl DoubleBarrier {
        loss {
            lost: "Resolves when this party stops being in the barrier: with the reason when its"
                  "session was lost while entered, with `null` when it left (or is not entered).";
            on_lost: "Call `callback(reason)` if this party's session is lost while entered (register"
                     "after `enter`). Does not keep the process alive.";
        }
    }
}
