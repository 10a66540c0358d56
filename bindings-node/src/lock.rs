//! Node face of the distributed lock: `client.lock(name, { ttl })`, `lock.acquire()`,
//! `LockGuard` (fencing token, guarded writes, lost signal, `Symbol.asyncDispose`).

use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::{FencedOp, Fence};
use futures::future::BoxFuture;
use napi::bindgen_prelude::{Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::client::{value_bytes, drop_in_runtime, ttl_arg, Child, Client, Scope};
use crate::errors;
use crate::session::{call, spawn, Callback, Session};

/// Options of `client.lock()` and `client.election()`.
#[napi(object)]
pub struct RecipeOptions {
    /// TTL in seconds of the session created for each acquisition/campaign (default 10).
    /// To share one session instead, use `session.lock()` / `session.election()`.
    pub ttl: Option<f64>,
}

/// Options of `lock.acquire()`.
#[napi(object)]
pub struct AcquireOptions {
    /// Give up after this many ms (rejects with code `LOCK_TIMEOUT`). Waits forever when absent.
    pub timeout_ms: Option<f64>,
}

/// One write of a guarded transaction: `{ type: 'put', key, value }` or `{ type: 'delete', key }`.
#[napi(object)]
pub struct TxnOp {
    /// `'put'` or `'delete'`.
    #[napi(ts_type = "'put' | 'delete'")]
    pub r#type: String,
    /// The key (namespaced like every recipe key).
    pub key: String,
    /// The value to put (a string or bytes).
    pub value: Option<Either<String, Uint8Array>>,
}

pub(crate) fn fenced_ops(env: &Env, ops: Vec<TxnOp>) -> napi::Result<Vec<FencedOp>> {
    ops.into_iter()
        .map(|op| match (op.r#type.as_str(), op.value) {
            ("put", Some(v)) => Ok(FencedOp::put(op.key, value_bytes(v))),
            ("put", None) => Err(errors::invalid(env, format!("txn put of {:?} has no value", op.key))),
            ("delete", None) => Ok(FencedOp::delete(op.key)),
            ("delete", Some(_)) => Err(errors::invalid(env, format!("txn delete of {:?} must not have a value", op.key))),
            (t, _) => Err(errors::invalid(env, format!("txn op type must be 'put' or 'delete', got {t:?}"))),
        })
        .collect()
}

/// A session given by the user, or the TTL of one to create per acquisition.
#[derive(Clone)]
pub(crate) enum SessionSource {
    Shared(etcd_recipes::Session),
    PerUse(i64),
}

impl SessionSource {
    pub(crate) fn from_options(env: &Env, o: Option<RecipeOptions>) -> napi::Result<SessionSource> {
        Ok(SessionSource::PerUse(ttl_arg(env, o.and_then(|o| o.ttl))?))
    }

    /// The session to use, and whether we own it (close it when done).
    pub(crate) async fn get(&self, client: &etcd_recipes::Client) -> etcd_recipes::Result<(etcd_recipes::Session, bool)> {
        match self {
            SessionSource::Shared(s) => Ok((s.clone(), false)),
            SessionSource::PerUse(ttl) => Ok((etcd_recipes::Session::new(client, *ttl).await?, true)),
        }
    }
}

pub(crate) fn check_name(env: &Env, what: &str, name: &str) -> napi::Result<()> {
    if name.is_empty() {
        return Err(errors::invalid(env, format!("{what} must not be empty")));
    }
    Ok(())
}

/// A named distributed lock (same keys as etcd's Go `concurrency.Mutex` and `etcdctl lock`).
///
/// ```js
/// const lock = client.lock('jobs/report', { ttl: 10 })
/// await using guard = await lock.acquire({ timeoutMs: 5000 })
/// await guard.put('jobs/report/owner', 'me') // only while the lock is ours
/// ```
#[napi]
pub struct Lock {
    scope: Arc<Scope>,
    name: String,
    source: SessionSource,
}

#[napi]
impl Client {
    /// A lock named `name`. Each acquisition runs on its own session of `ttl` seconds
    /// (default 10), or on `session` when given.
    #[napi]
    pub fn lock(&self, env: &Env, name: String, options: Option<RecipeOptions>) -> napi::Result<Lock> {
        check_name(env, "lock name", &name)?;
        Ok(Lock { scope: self.scope.clone(), name, source: SessionSource::from_options(env, options)? })
    }
}

#[napi]
impl Session {
    /// A lock named `name` whose acquisitions run on this session (its lease).
    #[napi]
    pub fn lock(&self, env: &Env, name: String) -> napi::Result<Lock> {
        check_name(env, "lock name", &name)?;
        Ok(Lock { scope: self.scope.clone(), name, source: SessionSource::Shared(self.inner.core().clone()) })
    }
}

enum Mode {
    Wait,
    Try,
    Timeout(Duration),
}

#[napi]
impl Lock {
    /// The lock name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Wait for the lock (FIFO) and resolve to its guard. With `timeoutMs`, rejects with code
    /// `LOCK_TIMEOUT` when not acquired in time (our waiting key is removed).
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn acquire<'env>(&self, env: &'env Env, options: Option<AcquireOptions>) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let mode = match options.and_then(|o| o.timeout_ms) {
            Some(ms) => Mode::Timeout(errors::millis(env, "timeoutMs", ms)?),
            None => Mode::Wait,
        };
        self.run(env, mode)
    }

    /// Take the lock only if it is free right now; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<LockGuard>")]
    pub fn try_acquire<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        self.run(env, Mode::Try)
    }

    fn run<'env>(&self, env: &'env Env, mode: Mode) -> napi::Result<PromiseRaw<'env, LockGuard>> {
        let (scope, name, source) = (self.scope.clone(), self.name.clone(), self.source.clone());
        errors::promise(env, async move {
            scope.check()?;
            let (session, owned) = source.get(&scope.core).await?;
            let attempt = async {
                let lock = etcd_recipes::lock::Lock::new(&session, &name)?;
                let closed = scope.closed();
                tokio::select! {
                    r = async {
                        match mode {
                            Mode::Wait => lock.acquire().await,
                            Mode::Try => lock.try_acquire().await,
                            Mode::Timeout(t) => lock.acquire_timeout(t).await,
                        }
                    } => r,
                    _ = closed => Err(etcd_recipes::Error::Closed("client")),
                }
            };
            match attempt.await {
                Ok(guard) => Ok(LockGuard::new(scope, guard, owned.then_some(session))),
                Err(e) => {
                    if owned {
                        let _ = session.close().await;
                    }
                    Err(e)
                }
            }
        })
    }
}

pub(crate) struct GuardInner {
    guard: Option<etcd_recipes::lock::LockGuard>,
    /// The session created for this acquisition (closed on release).
    session: Option<etcd_recipes::Session>,
}

impl GuardInner {
    fn guard(&self) -> &etcd_recipes::lock::LockGuard {
        self.guard.as_ref().expect("set until drop")
    }
    async fn release(&self) -> etcd_recipes::Result<()> {
        let r = self.guard().release().await;
        if let Some(s) = &self.session {
            s.close().await?;
        }
        r
    }
}

impl Drop for GuardInner {
    fn drop(&mut self) {
        drop_in_runtime((self.guard.take(), self.session.take()));
    }
}

impl Child for GuardInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.release().await;
        })
    }
}

/// Proof that the lock is ours: its key, its fencing token, and writes guarded by it.
/// Release it with `release()` or `await using`.
#[napi]
pub struct LockGuard {
    inner: Arc<GuardInner>,
    fence: Fence,
}

impl LockGuard {
    fn new(scope: Arc<Scope>, guard: etcd_recipes::lock::LockGuard, session: Option<etcd_recipes::Session>) -> LockGuard {
        let fence = guard.fence().clone();
        let inner = Arc::new(GuardInner { guard: Some(guard), session });
        let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
        scope.adopt(weak);
        LockGuard { inner, fence }
    }
}

/// Guarded writes shared by `LockGuard` and `Leadership`.
pub(crate) fn fenced_txn<'env>(env: &'env Env, fence: &Fence, ops: Vec<FencedOp>) -> napi::Result<PromiseRaw<'env, i64>> {
    let fence = fence.clone();
    errors::promise(env, async move { fence.txn(ops).await })
}

#[napi]
impl LockGuard {
    /// The full etcd key that holds the lock, `<namespace><name>/<lease hex>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.inner.guard().key().to_string()
    }

    /// The fencing token: the create revision of the lock key. It strictly increases from
    /// one holder to the next; pass it to systems that must reject a stale holder.
    #[napi(getter)]
    pub fn fencing_token(&self) -> i64 {
        self.inner.guard().fencing_token()
    }

    /// True while not released and the session is alive.
    #[napi(getter)]
    pub fn is_held(&self) -> bool {
        self.inner.guard().is_held()
    }

    /// Put `value` at `key` only if the lock is still ours (else rejects with code `FENCED`);
    /// resolves to the revision of the write.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn put<'env>(&self, env: &'env Env, key: String, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, i64>> {
        fenced_txn(env, &self.fence, vec![FencedOp::put(key, value_bytes(value))])
    }

    /// Delete `key` only if the lock is still ours (else code `FENCED`).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, i64>> {
        fenced_txn(env, &self.fence, vec![FencedOp::delete(key)])
    }

    /// Apply all `ops` atomically only if the lock is still ours (else code `FENCED`).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn txn<'env>(&self, env: &'env Env, ops: Vec<TxnOp>) -> napi::Result<PromiseRaw<'env, i64>> {
        let ops = fenced_ops(env, ops)?;
        fenced_txn(env, &self.fence, ops)
    }

    /// Resolves with the reason when the lock stops being ours (session lost, or released).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, String>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { Ok(inner.guard().lost().await) })
    }

    /// Call `callback(reason)` once when the lock stops being ours. Does not keep the process alive.
    #[napi(ts_args_type = "callback: (reason: string) => void")]
    pub fn on_lost(&self, callback: Callback<String>) {
        let inner = self.inner.clone();
        spawn(async move {
            let reason = inner.guard().lost().await;
            call(&callback, reason);
        });
    }

    /// Release the lock (delete its key; close the session made for it). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { inner.release().await })
    }

    /// `await using guard = await lock.acquire()`: releases the lock.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.release(env)
    }
}
