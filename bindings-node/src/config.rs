//! Node face of the config cache: `client.config(key | prefix)` -> `ConfigView` with
//! synchronous local reads (`get`, `getString`, `getJson`) and `for await` over changes.

use std::sync::Arc;

use etcd_recipes::config::{ConfigChange as CoreChange, ConfigOptions};
use futures::future::BoxFuture;
use futures::StreamExt;
use napi::bindgen_prelude::{Buffer, BufferSlice, Either, Null, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::client::{Child, Client, Scope};
use crate::errors;
use crate::iter::StreamCell;

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
}

fn change(c: CoreChange) -> ConfigChange {
    let opt = |v: Option<Vec<u8>>| match v {
        Some(v) => Either::A(Buffer::from(v)),
        None => Either::B(Null),
    };
    ConfigChange { key: c.key, old: opt(c.old), new: opt(c.new), revision: c.revision }
}

/// One step of an async iterator of config changes.
#[napi(object, object_from_js = false)]
pub struct ConfigChangeStep {
    pub done: bool,
    pub value: Option<ConfigChange>,
}

pub(crate) struct ViewInner {
    core: etcd_recipes::config::ConfigView,
}

impl Drop for ViewInner {
    fn drop(&mut self) {
        self.core.close();
    }
}

impl Child for ViewInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        self.core.close();
        Box::pin(async {})
    }
}

#[napi]
impl Client {
    /// A live local copy of one key (or, with `{ prefix: true }`, of every key under it).
    /// Resolves once loaded; reads are then synchronous and never touch the network.
    #[napi(ts_return_type = "Promise<ConfigView>")]
    pub fn config<'env>(&self, env: &'env Env, key: String, options: Option<ConfigViewOptions>) -> napi::Result<PromiseRaw<'env, ConfigView>> {
        let prefix = options.as_ref().and_then(|o| o.prefix).unwrap_or(false);
        let mut opts = ConfigOptions::new();
        if let Some(ms) = options.as_ref().and_then(|o| o.reconcile_interval_ms) {
            opts = opts.reconcile_interval(errors::millis(env, "reconcileIntervalMs", ms)?);
        }
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            let core = if prefix {
                etcd_recipes::config::ConfigView::prefix(&scope.core, &key, opts).await?
            } else {
                etcd_recipes::config::ConfigView::key(&scope.core, &key, opts).await?
            };
            let inner = Arc::new(ViewInner { core: core.clone() });
            let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
            scope.adopt(weak);
            Ok(ConfigView { scope, inner, core, key, prefix })
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
    scope: Arc<Scope>,
    inner: Arc<ViewInner>,
    core: etcd_recipes::config::ConfigView,
    key: String,
    prefix: bool,
}

impl ConfigView {
    fn pick<'a>(&'a self, key: &'a Option<String>) -> &'a str {
        key.as_deref().unwrap_or(&self.key)
    }
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
    /// Local, synchronous.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn get<'env>(&self, env: &'env Env, key: Option<String>) -> napi::Result<Option<BufferSlice<'env>>> {
        match self.core.get(self.pick(&key)) {
            Some(v) => BufferSlice::copy_from(env, &v[..]).map(Some),
            None => Ok(None),
        }
    }

    /// The value as a UTF-8 string, or `null`. Throws code `DECODE` if it is not UTF-8.
    #[napi]
    pub fn get_string(&self, env: &Env, key: Option<String>) -> napi::Result<Option<String>> {
        self.core.get_str(self.pick(&key)).map_err(|e| errors::sync(env, e))
    }

    /// The value parsed as JSON, or `null` when absent. Throws code `DECODE` if not JSON.
    #[napi(ts_return_type = "any")]
    pub fn get_json(&self, env: &Env, key: Option<String>) -> napi::Result<Option<serde_json::Value>> {
        self.core.get_json_value(self.pick(&key)).map_err(|e| errors::sync(env, e))
    }

    /// True when `key` has a value.
    #[napi]
    pub fn has(&self, key: String) -> bool {
        self.core.get(&key).is_some()
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

    /// An async iterator of changes from now on; `break` unsubscribes.
    #[napi]
    pub fn changes(&self) -> ConfigChanges {
        ConfigChanges { cell: StreamCell::new(self.scope.clone(), self.core.subscribe().boxed()) }
    }

    /// Stop watching. Idempotent; iterators end. Reads keep the last values.
    #[napi]
    pub fn close(&self) {
        self.inner.core.close();
    }

    /// `await using view = await client.config(...)`: closes the view.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.core.close();
        errors::promise(env, async { Ok(()) })
    }
}

/// `for await (const change of view.changes())`.
#[napi]
pub struct ConfigChanges {
    cell: StreamCell<CoreChange>,
}

#[napi]
impl ConfigChanges {
    #[napi(ts_return_type = "Promise<IteratorResult<ConfigChange, undefined>>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ConfigChangeStep>> {
        let next = self.cell.next();
        errors::promise(env, async move {
            Ok(match next.await? {
                None => ConfigChangeStep { done: true, value: None },
                Some(c) => ConfigChangeStep { done: false, value: Some(change(c)) },
            })
        })
    }

    /// Stop iterating (called by `break`).
    #[napi(js_name = "return", ts_return_type = "Promise<IteratorResult<ConfigChange, undefined>>")]
    pub fn finish<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ConfigChangeStep>> {
        let close = self.cell.close();
        errors::promise(env, async move {
            close.await?;
            Ok(ConfigChangeStep { done: true, value: None })
        })
    }

    #[napi(well_known_symbol = "asyncIterator", ts_return_type = "AsyncIterator<ConfigChange, undefined>")]
    pub fn iterator(&self) -> &Self {
        self
    }
}

