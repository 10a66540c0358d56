//! Node face of the atomic counter: `client.counter(key)` -> `Counter` with `get`, `add`,
//! `compareAndSet` and `set`. Values are JS numbers (exact up to 2^53).

use etcd_recipes::counter::Counter as CoreCounter;
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::Held;

/// A whole JS number that is exactly representable (|n| <= 2^53 - 1).
fn int(env: &Env, what: &str, v: f64) -> napi::Result<i64> {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= SAFE {
        Ok(v as i64)
    } else {
        Err(errors::invalid(env, format!("{what} must be a safe integer, got {v}")))
    }
}

/// An atomic counter: one key holding a decimal integer, changed by compare-and-swap.
///
/// ```js
/// const hits = client.counter('stats/hits')
/// const now = await hits.add(1)
/// ```
#[napi]
pub struct Counter {
    core: Held<CoreCounter>,
}

#[napi]
impl Client {
    /// The atomic counter at `key`: a decimal integer (a missing key reads as 0).
    #[napi(strict)]
    pub fn counter(&self, env: &Env, key: String) -> napi::Result<Counter> {
        let core = CoreCounter::new(&self.core, &key).map_err(|e| errors::sync(env, e))?;
        Ok(Counter { core: Held::new(core) })
    }
}

#[napi]
impl Counter {
    /// The counter's key (namespace-relative).
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// The current value (0 when the key does not exist; code `DECODE` if it is not an integer).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn get<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let c = (*self.core).clone();
        errors::promise(env, async move { c.get().await })
    }

    /// Add `delta` (default 1; negative subtracts) and resolve to the new value. Conflicts
    /// are retried; code `UNKNOWN_OUTCOME` when the answer was lost (read before adding again).
    #[napi(strict, ts_return_type = "Promise<number>")]
    pub fn add<'env>(&self, env: &'env Env, delta: Option<f64>) -> napi::Result<PromiseRaw<'env, i64>> {
        let delta = int(env, "delta", delta.unwrap_or(1.0))?;
        let c = (*self.core).clone();
        errors::promise(env, async move { c.add(delta).await })
    }

    /// Set the value to `newValue` only if it is `expected` now (a missing key counts as 0).
    #[napi(strict, ts_return_type = "Promise<boolean>")]
    pub fn compare_and_set<'env>(&self, env: &'env Env, expected: f64, new_value: f64) -> napi::Result<PromiseRaw<'env, bool>> {
        let (expected, new_value) = (int(env, "expected", expected)?, int(env, "newValue", new_value)?);
        let c = (*self.core).clone();
        errors::promise(env, async move { c.compare_and_set(expected, new_value).await })
    }

    /// Set the value, whatever it was; resolves to the revision of the write.
    #[napi(strict, ts_return_type = "Promise<number>")]
    pub fn set<'env>(&self, env: &'env Env, value: f64) -> napi::Result<PromiseRaw<'env, i64>> {
        let value = int(env, "value", value)?;
        let c = (*self.core).clone();
        errors::promise(env, async move { c.set(value).await })
    }
}
