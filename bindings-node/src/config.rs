//! Node face of the config cache: `client.config(key | prefix)` -> `ConfigView` with
//! synchronous local reads (`get`, `getString`, `getJson`) and `for await` over changes.
//!
//! Reads are served from a mirror in JS (index.js): a `Map` of key -> Buffer, plus the
//! values' text, kept equal to core's copy. Core stays the source of truth (it loads,
//! watches, re-reads after compaction, reconciles); its applied batches
//! ([`core::ConfigView::batches`]) reach the mirror through a weak threadsafe function (it
//! never keeps the event loop alive), in order, one call per batch, so JS never sees half
//! of a batch (half of a multi-key transaction) between two turns of the event loop. A
//! read is then a `Map` lookup: no call into native code, no copy. The methods below that
//! index.js replaces keep their Rust bodies (reading core's copy directly) only so that
//! their types and docs are generated into native.d.ts.

use std::sync::{Arc, Mutex};

use etcd_recipes::config::{self as core, ChangeFilter, ConfigBatch, ConfigBatches, ConfigOptions, ConfigStart};
use futures::StreamExt;
use napi::bindgen_prelude::{Buffer, BufferSlice, Either, FnArgs, Function, Null, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use tokio::sync::watch;

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

// ------------------------------------------------------------------------------ the mirror

/// One batch as the JS mirror's `apply(seq, revision, reset, keys, values, texts, bad)`
/// receives it (positional arguments: no object, no generated type). Per change: the
/// key; the value (a Buffer, `null` when deleted); its text (`null` when deleted or not
/// UTF-8); and for a value that is not UTF-8, core's decode message for `getString`.
type Batch = FnArgs<(f64, i64, bool, Vec<String>, Vec<Either<Buffer, Null>>, Vec<Either<String, Null>>, Vec<Either<String, Null>>)>;

fn batch(seq: u64, revision: i64, reset: bool, changes: &[(String, Option<Arc<[u8]>>)]) -> Batch {
    let mut keys = Vec::with_capacity(changes.len());
    let mut values = Vec::with_capacity(changes.len());
    let mut texts = Vec::with_capacity(changes.len());
    let mut bad = Vec::with_capacity(changes.len());
    for (k, v) in changes {
        keys.push(k.clone());
        match v {
            None => {
                values.push(Either::B(Null));
                texts.push(Either::B(Null));
                bad.push(Either::B(Null));
            }
            Some(v) => {
                values.push(Either::A(Buffer::from(v.to_vec())));
                match std::str::from_utf8(v) {
                    Ok(s) => {
                        texts.push(Either::A(s.to_string()));
                        bad.push(Either::B(Null));
                    }
                    Err(e) => {
                        texts.push(Either::B(Null));
                        let e = etcd_recipes::Error::Decode { key: k.clone(), message: format!("not UTF-8: {e}") };
                        bad.push(Either::A(e.to_string()));
                    }
                }
            }
        }
    }
    FnArgs::from((seq as f64, revision, reset, keys, values, texts, bad))
}

fn start_batch(start: &ConfigStart) -> Batch {
    let changes: Vec<_> = start.values.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
    batch(start.seq, start.revision, true, &changes)
}

fn core_batch(b: &ConfigBatch) -> Batch {
    batch(b.seq, b.revision, b.reset, &b.changes)
}

type Feed = ThreadsafeFunction<Batch, (), Batch, Status, false, true>;

/// The native half of a view's mirror.
struct Mirror {
    /// The subscription taken when the view was made, until index.js starts the mirror.
    pending: Mutex<Option<(ConfigStart, ConfigBatches)>>,
    /// The sequence number of the last batch the JS mirror has applied (acknowledged on
    /// the JS thread right after its `apply` returned; `u64::MAX` before the mirror starts
    /// and once no more batches come: nothing to wait for).
    applied: watch::Sender<u64>,
}

impl Mirror {
    fn end(&self) {
        self.applied.send_replace(u64::MAX);
    }
}

/// Hand each batch to JS, in order (one threadsafe function, non-blocking calls: queued in
/// order); the acknowledgement comes back on the JS thread once `apply` has returned.
async fn feed(mirror: Arc<Mirror>, mut batches: ConfigBatches, apply: Feed) {
    while let Some(b) = batches.next().await {
        let (seq, m) = (b.seq, mirror.clone());
        let status = apply.call_with_return_value(core_batch(&b), ThreadsafeFunctionCallMode::NonBlocking, move |_, _| {
            m.applied.send_if_modified(|a| {
                let newer = *a < seq;
                if newer {
                    *a = seq;
                }
                newer
            });
            Ok(())
        });
        if status != Status::Ok {
            break; // the environment is going away
        }
    }
    // The JS calls already queued still acknowledge (and `end` is final anyway).
    mirror.end();
}

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
            // Subscribed before the view is handed out: the mirror starts from this copy and
            // receives every batch applied after it (core takes both under one lock).
            let (start, batches) = core.batches();
            // Until index.js starts the mirror, changes wait for nothing (`u64::MAX`).
            let mirror = Arc::new(Mirror { applied: watch::channel(u64::MAX).0, pending: Mutex::new(Some((start, batches))) });
            Ok(ConfigView { core, key, prefix, mirror })
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
    mirror: Arc<Mirror>,
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

    /// Start the JS mirror (called once, by index.js, as the view is handed out): `apply`
    /// gets the copy now, synchronously, then each later batch through a weak threadsafe
    /// function.
    #[napi(js_name = "_mirror", skip_typescript)]
    pub fn start_mirror(&self, env: &Env, apply: Function<'_, Batch, ()>) -> napi::Result<()> {
        let Some((start, batches)) = self.mirror.pending.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(errors::invalid(env, "the mirror of this view is already started"));
        };
        let feed_fn: Feed = apply.build_threadsafe_function::<Batch>().weak::<true>().callee_handled::<false>().build()?;
        apply.call(start_batch(&start))?;
        self.mirror.applied.send_replace(start.seq);
        crate::spawn(feed(self.mirror.clone(), batches, feed_fn));
        Ok(())
    }

    /// The value of `key` (default: the view's key) as a Buffer, or `defaultValue` (`null`)
    /// when the key is absent. No copy per read: the Buffer is the view's own, shared by
    /// every `get` of this value until the value changes; treat it as read-only (copy it,
    /// `Buffer.from(v)`, to modify it). Changing it changes what later `get`s return for
    /// the key, never what `getString`, `getJson`, `snapshot`, the changes or etcd hold.
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
        let items = self.core.after_applied(self.mirror.applied.subscribe(), self.core.changes_matching(filter));
        Ok(ConfigChanges(Cell::new(items.map(|r| r.map(change)))))
    }

    /// `for await (const change of view)`: `changes()`.
    #[napi(well_known_symbol = "asyncIterator")]
    pub fn iterate(&self) -> ConfigChanges {
        let items = self.core.after_applied(self.mirror.applied.subscribe(), self.core.changes());
        ConfigChanges(Cell::new(items.map(|r| r.map(change))))
    }

    /// Stop watching. Idempotent; iterators end. Reads keep the last values.
    #[napi]
    pub fn close(&self) {
        self.mirror.end();
        self.core.close();
    }

    /// `await using view = await client.config(...)`: closes the view.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.mirror.end();
        self.core.close();
        errors::promise(env, async { Ok(()) })
    }
}
