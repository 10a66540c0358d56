//! Node face of the config cache: `client.config(key | prefix)` -> `ConfigView` with
//! synchronous local reads (`get`, `getString`, `getJson`) and `for await` over changes.

use etcd_recipes::config::{self as core, ConfigOptions};
use futures::StreamExt;
use napi::bindgen_prelude::{Buffer, BufferSlice, Either, Null, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors;
use crate::iter::{stream_class, Cell};

/// Options of `client.config()`.
#[napi(object)]
pub struct ConfigViewOptions {
    /// Watch every key under the given name (a prefix) instead of one key (default false).
    pub prefix: Option<bool>,
    /// How often to compare the local copy with etcd and repair drift, in ms
    /// (default 30000; 0 turns it off).
    pub reconcile_interval_ms: Option<f64>,
}

/// One change seen by a config view.
#[napi(object, object_from_js = false)]
pub struct ConfigChange {
    /// The key (namespace-relative).
    pub key: String,
    /// The value before the change (`null`: the key did not exist).
    #[napi(ts_type = "Buffer | null")]
    pub old: Either<Buffer, Null>,
    /// The value after the change (`null`: the key was deleted).
    #[napi(ts_type = "Buffer | null")]
    pub new: Either<Buffer, Null>,
    /// The etcd revision of the change.
    pub revision: i64,
    /// True when the key was deleted (`new` is `null`).
    pub deleted: bool,
}

fn change(c: core::ConfigChange) -> ConfigChange {
    let buffer = |v: Option<Vec<u8>>| v.map_or(Either::B(Null), |v| Either::A(Buffer::from(v)));
    let deleted = c.new.is_none();
    ConfigChange { key: c.key, old: buffer(c.old), new: buffer(c.new), revision: c.revision, deleted }
}

stream_class!(
    ConfigChanges,
    ConfigChange,
    "Promise<IteratorResult<ConfigChange, undefined>>",
    "`for await (const change of view.changes())`: every change from now on."
);

#[napi]
impl Client {
    /// A live local copy of one key (or, with `{ prefix: true }`, of every key under it).
    /// Resolves once loaded; reads are then synchronous and never touch the network.
    #[napi(strict, ts_return_type = "Promise<ConfigView>")]
    pub fn config<'env>(&self, env: &'env Env, key: String, options: Option<ConfigViewOptions>) -> napi::Result<PromiseRaw<'env, ConfigView>> {
        let (prefix, every) = options.map_or((None, None), |o| (o.prefix, o.reconcile_interval_ms));
        let mut opts = ConfigOptions::new();
        if let Some(t) = errors::millis(env, "reconcileIntervalMs", every)? {
            opts = opts.reconcile_interval(t);
        }
        let (c, prefix) = (self.core.clone(), prefix.unwrap_or(false));
        errors::promise(env, async move {
            let core = match prefix {
                true => core::ConfigView::prefix(&c, &key, opts).await?,
                false => core::ConfigView::key(&c, &key, opts).await?,
            };
            Ok(ConfigView { core, key, prefix })
        })
    }
}

/// A watched, local copy of configuration in etcd. Reads are synchronous and local; the
/// copy converges after compaction, reconnects and restarts.
///
/// ```js
/// const flags = await client.config('app/flags/', { prefix: true })
/// if (flags.getJson('app/flags/new-ui')?.enabled) { ... }
/// for await (const change of flags.changes()) console.log(change.key)
/// ```
#[napi]
pub struct ConfigView {
    core: core::ConfigView,
    key: String,
    prefix: bool,
}

#[napi]
impl ConfigView {
    /// The key (or prefix) this view watches.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.key.clone()
    }

    /// True for a prefix view.
    #[napi(getter)]
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// The value of `key` (default: the view's key) as a Buffer (a copy), or `null`.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn get<'env>(&self, env: &'env Env, key: Option<String>) -> napi::Result<Option<BufferSlice<'env>>> {
        self.core.get(key.as_deref().unwrap_or(&self.key)).map(|v| BufferSlice::copy_from(env, &v[..])).transpose()
    }

    /// The value as a UTF-8 string, or `null`. Throws code `DECODE` if it is not UTF-8.
    #[napi]
    pub fn get_string(&self, env: &Env, key: Option<String>) -> napi::Result<Option<String>> {
        self.core.get_string(key.as_deref().unwrap_or(&self.key)).map_err(|e| errors::sync(env, e))
    }

    /// The value parsed as JSON, or `null` when absent. Throws code `DECODE` if not JSON.
    #[napi(ts_return_type = "any")]
    pub fn get_json(&self, env: &Env, key: Option<String>) -> napi::Result<Option<serde_json::Value>> {
        self.core.get_json_value(key.as_deref().unwrap_or(&self.key)).map_err(|e| errors::sync(env, e))
    }

    /// True when `key` has a value.
    #[napi]
    pub fn has(&self, key: String) -> bool {
        self.core.has(&key)
    }

    /// Every key present, sorted.
    #[napi]
    pub fn keys(&self) -> Vec<String> {
        self.core.keys()
    }

    /// Every key and value.
    #[napi(ts_return_type = "Record<string, Buffer>")]
    pub fn snapshot(&self) -> std::collections::HashMap<String, Buffer> {
        self.core.snapshot().into_iter().map(|(k, v)| (k, Buffer::from(&v[..]))).collect()
    }

    /// The etcd revision the copy reflects (never moves backwards).
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.core.revision()
    }

    /// Every change from now on (subscribed when called); `break` unsubscribes.
    #[napi]
    pub fn changes(&self) -> ConfigChanges {
        ConfigChanges(Cell::new(self.core.changes().map(|r| r.map(change))))
    }

    /// `for await (const change of view)`: `changes()`.
    #[napi(well_known_symbol = "asyncIterator")]
    pub fn iterate(&self) -> ConfigChanges {
        self.changes()
    }

    /// Stop watching. Idempotent; iterators end. Reads keep the last values.
    #[napi]
    pub fn close(&self) {
        self.core.close();
    }

    /// `await using view = await client.config(...)`: closes the view.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.core.close();
        errors::promise(env, async { Ok(()) })
    }
}
