//! Node face of the config cache: `client.config(key | prefix)` -> `ConfigView` with
//! synchronous local reads (`get`, `getString`, `getJson`) and `for await` over changes.

use etcd_recipes::config::{self as core, ChangeFilter, ConfigOptions};
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

/// Which changes `view.changes()` yields: one key's, or those of the keys under a prefix
/// (default: every change).
#[napi(object)]
pub struct ChangesOptions {
    /// Only the changes of this key (namespace-relative).
    pub key: Option<String>,
    /// Only the changes of the keys that start with this prefix.
    pub prefix: Option<String>,
}

/// `view.snapshot()`: every key and value, and the revision they reflect, read at once.
#[napi(object, object_from_js = false)]
pub struct ConfigSnapshot {
    /// The etcd revision the values reflect.
    pub revision: i64,
    /// Every key (namespace-relative) and its value.
    #[napi(ts_type = "Record<string, Buffer>")]
    pub values: std::collections::HashMap<String, Buffer>,
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

    /// The value of `key` (default: the view's key) as a Buffer (a copy), or
    /// `defaultValue` (`null`) when the key is absent.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn get<'env>(
        &self,
        env: &'env Env,
        key: Option<String>,
        default_value: Option<Buffer>,
    ) -> napi::Result<Option<Either<BufferSlice<'env>, Buffer>>> {
        match self.core.get(key.as_deref().unwrap_or(&self.key)) {
            Some(v) => Ok(Some(Either::A(BufferSlice::copy_from(env, &v[..])?))),
            None => Ok(default_value.map(Either::B)),
        }
    }

    /// The value as a UTF-8 string, or `defaultValue` (`null`) when the key is absent.
    /// Throws code `DECODE` if it is not UTF-8.
    #[napi]
    pub fn get_string(&self, env: &Env, key: Option<String>, default_value: Option<String>) -> napi::Result<Option<String>> {
        let v = self.core.get_string(key.as_deref().unwrap_or(&self.key)).map_err(|e| errors::sync(env, e))?;
        Ok(v.or(default_value))
    }

    /// The value parsed as JSON, or `options.default` (`null`) when absent. Throws code
    /// `DECODE` naming the key if it is not JSON, or if `options.validate` throws.
    ///
    /// `options.validate` turns the parsed JSON into your type and throws when it is not
    /// valid (a zod `schema.parse`, a class's static `from`, any function); its throw
    /// becomes code `DECODE` naming the key, with the thrown error as `cause`. (Applied in
    /// index.js: the validator is a JS function.)
    #[napi(
        ts_generic_types = "T = any",
        ts_args_type = "key?: string | null, options?: { validate?: (value: any) => T; default?: T }",
        ts_return_type = "T | null"
    )]
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

    /// How many keys the view holds.
    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.core.len() as u32
    }

    /// Every key and value, with the revision they reflect (read at once).
    #[napi]
    pub fn snapshot(&self) -> ConfigSnapshot {
        let snap = self.core.snapshot();
        ConfigSnapshot {
            revision: snap.revision,
            values: snap.values.into_iter().map(|(k, v)| (k, Buffer::from(&v[..]))).collect(),
        }
    }

    /// The etcd revision the copy reflects (never moves backwards).
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.core.revision()
    }

    /// Every change from now on (subscribed when called); `{ key }` for one key's changes,
    /// `{ prefix }` for those of the keys under a prefix. `break` unsubscribes.
    #[napi]
    pub fn changes(&self, env: &Env, options: Option<ChangesOptions>) -> napi::Result<ConfigChanges> {
        let filter = match options.map(|o| (o.key, o.prefix)) {
            None | Some((None, None)) => ChangeFilter::All,
            Some((Some(k), None)) => ChangeFilter::Key(k),
            Some((None, Some(p))) => ChangeFilter::Prefix(p),
            Some((Some(_), Some(_))) => return Err(errors::invalid(env, "changes(): give key or prefix, not both")),
        };
        Ok(ConfigChanges(Cell::new(self.core.changes_matching(filter).map(|r| r.map(change)))))
    }

    /// `for await (const change of view)`: `changes()`.
    #[napi(well_known_symbol = "asyncIterator")]
    pub fn iterate(&self) -> ConfigChanges {
        ConfigChanges(Cell::new(self.core.changes().map(|r| r.map(change))))
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
