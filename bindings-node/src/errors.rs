//! Conversions at the boundary: every core error becomes a JS `Error` (a `TypeError` for
//! bad arguments) whose `code` is the stable [`ErrorKind::code`] (e.g. `"SESSION_LOST"`)
//! and whose message carries the etcd cause chain; JS numbers become TTLs, durations
//! and lease ids.

use std::future::Future;
use std::time::Duration;

use etcd_recipes::{Error as CoreError, ErrorKind};
use napi::bindgen_prelude::{BigInt, Either, JsError, JsTypeError, PromiseRaw, ToNapiValue, Uint8Array};
use napi::Env;

/// A value to store, given as a string (stored as UTF-8) or bytes.
pub(crate) fn bytes(v: Either<String, Uint8Array>) -> Vec<u8> {
    match v {
        Either::A(s) => s.into_bytes(),
        Either::B(b) => b.to_vec(),
    }
}

/// The message of a core error with its whole `caused by` chain.
fn message(e: &CoreError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// A JS error with `code` = `kind.code()`; a `TypeError` for [`ErrorKind::InvalidArgument`].
fn js_error(env: &Env, kind: ErrorKind, msg: String) -> napi::Error {
    let err = napi::Error::<String>::new(kind.code().to_string(), msg);
    let value = if kind == ErrorKind::InvalidArgument {
        JsTypeError::from(err).into_unknown(*env)
    } else {
        JsError::from(err).into_unknown(*env)
    };
    napi::Error::from(value)
}

/// A synchronous `TypeError` (code `INVALID_ARGUMENT`) for a bad argument.
pub fn invalid(env: &Env, msg: impl Into<String>) -> napi::Error {
    js_error(env, ErrorKind::InvalidArgument, msg.into())
}

/// A synchronous JS error for a core error (bad input, a decode failure in a local read).
pub fn sync(env: &Env, e: CoreError) -> napi::Error {
    js_error(env, e.kind(), message(&e))
}

/// Run `fut` on the shared runtime and return a Promise that resolves with its value, or
/// rejects with a coded JS error built on the JS thread. A pending promise keeps Node's
/// event loop alive, as a pending socket read does.
pub fn promise<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = etcd_recipes::Result<T>> + Send + 'static,
{
    // Boxed at once: napi moves the future several times on the JS thread before tokio
    // polls it, and a core future is kilobytes; a box moves as a pointer.
    let fut = Box::pin(fut);
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| r.map_err(|e| sync(env, e)))
}

/// A TTL in whole seconds (default 10), checked by core.
pub fn ttl(env: &Env, ttl: Option<f64>) -> napi::Result<i64> {
    let Some(t) = ttl else { return Ok(etcd_recipes::session::DEFAULT_TTL_SECS) };
    if !t.is_finite() || t.fract() != 0.0 {
        return Err(invalid(env, format!("ttl must be a whole number of seconds, got {t}")));
    }
    let t = t as i64; // saturating: out-of-range values stay out of range
    etcd_recipes::session::check_ttl(t).map_err(|e| sync(env, e))?;
    Ok(t)
}

/// Milliseconds (a JS number, option `what`) as a `Duration`.
pub fn millis(env: &Env, what: &str, ms: Option<f64>) -> napi::Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_micros((v * 1000.0) as u64))),
        Some(v) => Err(invalid(env, format!("{what} must be a non-negative number of milliseconds, got {v}"))),
    }
}

/// A lease id given as a bigint, or a decimal or 0x-hex string.
pub fn lease_id(env: &Env, v: Either<String, BigInt>) -> napi::Result<i64> {
    match v {
        Either::A(s) => match s.strip_prefix("0x") {
            Some(h) => i64::from_str_radix(h, 16).ok(),
            None => s.parse::<i64>().ok(),
        }
        .ok_or_else(|| invalid(env, format!("lease id {s:?} is not a decimal or 0x-hex integer"))),
        Either::B(b) => match b.get_i64() {
            (v, true) => Ok(v),
            _ => Err(invalid(env, "lease id does not fit in 64 bits")),
        },
    }
}
