//! Node.js binding of `etcd-recipes` (npm package `etcd-recipes`).
//!
//! The binding only converts arguments, results and errors; every recipe lives in core.
//! One multi-threaded tokio runtime is created at module init and handed to napi, so every
//! `async` method (and everything core spawns) runs on it.

#![deny(clippy::unwrap_used)]

use napi_derive::napi;

mod client;
mod config;
mod errors;
mod iter;
mod election;
mod lock;
mod registry;
mod session;
mod testing;

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
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("etcd-recipes")
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let _ = client::RUNTIME.set(rt.handle().clone());
            napi::bindgen_prelude::create_custom_tokio_runtime(rt)
        }
        // napi falls back to its own default runtime, which works the same.
        Err(e) => eprintln!("etcd-recipes: could not build the tokio runtime ({e}); using napi's default"),
    }
}

/// The version of the native module (same as the npm package).
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
