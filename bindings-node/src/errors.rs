//! Error mapping: every core error becomes a JS `Error` (a `TypeError` for bad arguments)
//! whose `code` is the stable [`ErrorKind::code`] (e.g. `"SESSION_LOST"`) and whose message
//! carries the etcd cause chain.

use std::future::Future;

use etcd_recipes::{Error as CoreError, ErrorKind};
use napi::bindgen_prelude::{JsError, JsTypeError, PromiseRaw, ToNapiValue};
use napi::Env;

/// The message of a core error with its whole `caused by` chain.
pub fn message(e: &CoreError) -> String {
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

/// Build the JS error object for a core error (on the JS thread).
pub fn to_js(env: &Env, e: &CoreError) -> napi::Error {
    js_error(env, e.kind(), message(e))
}

/// A JS error with `code` = `kind.code()`; a `TypeError` for [`ErrorKind::InvalidArgument`].
pub fn js_error(env: &Env, kind: ErrorKind, msg: String) -> napi::Error {
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

/// A synchronous error for a core error (e.g. a decode failure in a local read).
pub fn sync(env: &Env, e: CoreError) -> napi::Error {
    to_js(env, &e)
}

/// Run `fut` on the shared runtime and return a Promise that resolves with its value, or
/// rejects with a coded JS error built on the JS thread.
pub fn promise<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = etcd_recipes::Result<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r| match r {
        Ok(v) => Ok(v),
        Err(e) => Err(to_js(env, &e)),
    })
}

/// Check that a JS number is a whole number of seconds in `1..=max`.
pub fn whole(env: &Env, what: &str, v: f64, min: f64, max: f64) -> napi::Result<i64> {
    if !v.is_finite() || v.fract() != 0.0 {
        return Err(invalid(env, format!("{what} must be a whole number, got {v}")));
    }
    if v < min || v > max {
        return Err(invalid(env, format!("{what} must be between {min} and {max}, got {v}")));
    }
    Ok(v as i64)
}

/// Milliseconds (a JS number) as a `Duration`; `what` names it in the error.
pub fn millis(env: &Env, what: &str, v: f64) -> napi::Result<std::time::Duration> {
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(env, format!("{what} must be a non-negative number of milliseconds, got {v}")));
    }
    Ok(std::time::Duration::from_micros((v * 1000.0) as u64))
}
