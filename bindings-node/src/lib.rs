//! Node.js binding of `etcd-recipes` (npm package `etcd-recipes`).
//!
//! Each method clones a core handle, calls one core function and converts what goes in
//! and out; every lifetime (per-use sessions, timeouts, `client.close()`, process exit)
//! is core's. One multi-threaded tokio runtime is created at module init and handed to
//! napi, so every `async` method (and everything core spawns) runs on it.

#![deny(clippy::unwrap_used)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

mod barrier;
mod client;
mod config;
mod connection;
mod counter;
mod election;
mod errors;
mod fenced;
mod health;
mod iter;
mod leader;
mod lock;
mod members;
mod queue;
mod registry;
mod rwlock;
mod semaphore;
mod session;
mod testing;
mod workqueue;

/// The runtime handed to napi at init.
static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Set up the shared runtime and, if `ETCD_RECIPES_LOG` is set (e.g. `debug`,
/// `etcd_recipes=trace`), core tracing output to stderr.
#[napi_derive::module_init]
fn init() {
    if let Ok(filter) = std::env::var("ETCD_RECIPES_LOG") {
        if !filter.is_empty() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("etcd-recipes").enable_all().build() {
        Ok(rt) => {
            let _ = RUNTIME.set(rt.handle().clone());
            napi::bindgen_prelude::create_custom_tokio_runtime(rt)
        }
        Err(e) => eprintln!("etcd-recipes: could not build the tokio runtime ({e})"),
    }
}

/// The version of the native module (same as the npm package).
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Close every client and revoke every lease this process still owns, within 2 s (core's
/// `shutdown`). The package calls it at exit (the `exit` event, SIGTERM, SIGINT); quiet
/// and idempotent.
#[napi]
pub fn shutdown_sync() {
    if let Some(h) = RUNTIME.get() {
        etcd_recipes::shutdown_blocking(h, Duration::from_secs(2));
    }
}

/// A core handle owned by a JS object. The garbage collector drops it on the JS thread;
/// dropping it inside the runtime lets core's `Drop` spawn its clean-up (delete a key,
/// revoke a lease) instead of leaving it to the lease TTL.
pub(crate) struct Held<T>(Option<T>);

impl<T> Held<T> {
    pub(crate) fn new(v: T) -> Self {
        Held(Some(v))
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("set until drop")
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        let value = self.0.take();
        let _entered = RUNTIME.get().map(|h| h.enter());
        drop(value);
    }
}

/// A JS callback called from the runtime; weak: it never keeps Node's event loop alive.
pub(crate) type Callback<T> = ThreadsafeFunction<T, (), T, Status, false, true>;

/// Call `callback` with what `signal` resolves to, if anything (e.g. a loss reason).
pub(crate) fn notify<T, F>(callback: Callback<T>, signal: F)
where
    T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
    F: Future<Output = Option<T>> + Send + 'static,
{
    spawn(async move {
        if let Some(v) = signal.await {
            let _ = callback.call(v, ThreadsafeFunctionCallMode::NonBlocking);
        }
    });
}

/// Spawn `fut` on the shared runtime.
pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(fut: F) {
    match RUNTIME.get() {
        Some(h) => drop(h.spawn(fut)),
        None => drop(napi::bindgen_prelude::spawn(fut)),
    }
}
