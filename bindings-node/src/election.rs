//! Node face of leader election: `client.election(name)`, `election.campaign(value)` ->
//! `Leadership`, `election.leader()`, and `for await (const leader of election.observe())`.

use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::election::LeaderInfo as CoreLeader;
use etcd_recipes::{Fence, FencedOp};
use futures::future::BoxFuture;
use futures::StreamExt;
use napi::bindgen_prelude::{i64n, Buffer, Either, Null, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::client::{drop_in_runtime, value_bytes, Child, Client, Scope};
use crate::errors;
use crate::iter::StreamCell;
use crate::lock::{check_name, fenced_ops, fenced_txn, RecipeOptions, SessionSource, TxnOp};
use crate::session::{call, spawn, Callback, Session};

/// Who leads an election.
#[napi(object, object_from_js = false)]
pub struct LeaderInfo {
    /// The leader's full etcd key, `<namespace><name>/<lease hex>`.
    pub key: String,
    /// The leader's proposal, decoded as UTF-8 (lossy).
    pub value: String,
    /// The leader's proposal as bytes.
    pub value_bytes: Buffer,
    /// Create revision of the leader key: the leadership's fencing token.
    pub revision: i64,
    /// The lease the leader key is attached to.
    pub lease_id: i64n,
}

fn leader(l: CoreLeader) -> LeaderInfo {
    LeaderInfo {
        key: l.key,
        value: String::from_utf8_lossy(&l.value).into_owned(),
        value_bytes: Buffer::from(l.value),
        revision: l.revision,
        lease_id: i64n(l.lease_id),
    }
}

/// Options of `election.campaign()`.
#[napi(object)]
pub struct CampaignOptions {
    /// Give up after this many ms (rejects with code `TIMEOUT`; our candidate key is removed).
    pub timeout_ms: Option<f64>,
}

/// One step of an async iterator over leaders (`value` is `null` when there is no leader).
#[napi(object, object_from_js = false)]
pub struct LeaderStep {
    pub done: bool,
    #[napi(ts_type = "LeaderInfo | null")]
    pub value: Option<Either<LeaderInfo, Null>>,
}

/// An election (same keys as etcd's Go `concurrency.Election` and `etcdctl elect`).
///
/// ```js
/// const election = client.election('scheduler')
/// const leadership = await election.campaign('node-1')
/// leadership.onLost((why) => process.exit(1))
/// for await (const leader of election.observe()) console.log(leader?.value)
/// ```
#[napi]
pub struct Election {
    scope: Arc<Scope>,
    name: String,
    source: SessionSource,
}

#[napi]
impl Client {
    /// The election named `name`. Each campaign runs on its own session of `ttl` seconds
    /// (default 10); use `session.election()` to share a session.
    #[napi]
    pub fn election(&self, env: &Env, name: String, options: Option<RecipeOptions>) -> napi::Result<Election> {
        check_name(env, "election name", &name)?;
        Ok(Election { scope: self.scope.clone(), name, source: SessionSource::from_options(env, options)? })
    }
}

#[napi]
impl Session {
    /// The election named `name`, campaigning with this session (its lease).
    #[napi]
    pub fn election(&self, env: &Env, name: String) -> napi::Result<Election> {
        check_name(env, "election name", &name)?;
        Ok(Election { scope: self.scope.clone(), name, source: SessionSource::Shared(self.inner.core().clone()) })
    }
}

#[napi]
impl Election {
    /// The election name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Become a candidate with `value` (a string or bytes) and wait until elected.
    #[napi(ts_return_type = "Promise<Leadership>")]
    pub fn campaign<'env>(
        &self,
        env: &'env Env,
        value: Either<String, Uint8Array>,
        options: Option<CampaignOptions>,
    ) -> napi::Result<PromiseRaw<'env, Leadership>> {
        let timeout: Option<Duration> = match options.and_then(|o| o.timeout_ms) {
            Some(ms) => Some(errors::millis(env, "timeoutMs", ms)?),
            None => None,
        };
        let value = value_bytes(value);
        let (scope, name, source) = (self.scope.clone(), self.name.clone(), self.source.clone());
        errors::promise(env, async move {
            scope.check()?;
            let (session, owned) = source.get(&scope.core).await?;
            let attempt = async {
                let election = etcd_recipes::election::Election::new(&session, &name)?;
                let closed = scope.closed();
                let campaign = async {
                    match timeout {
                        None => election.campaign(value).await,
                        Some(t) => tokio::time::timeout(t, election.campaign(value))
                            .await
                            .map_err(|_| etcd_recipes::Error::Timeout { what: format!("campaign in election {name:?}"), after: t })?,
                    }
                };
                tokio::select! {
                    r = campaign => r,
                    _ = closed => Err(etcd_recipes::Error::Closed("client")),
                }
            };
            match attempt.await {
                Ok(l) => Ok(Leadership::new(scope, l, owned.then_some(session))),
                Err(e) => {
                    if owned {
                        let _ = session.close().await;
                    }
                    Err(e)
                }
            }
        })
    }

    /// The current leader, or `null` when there is none (no session needed).
    #[napi(ts_return_type = "Promise<LeaderInfo | null>")]
    pub fn leader<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<LeaderInfo>>> {
        let (scope, name) = (self.scope.clone(), self.name.clone());
        errors::promise(env, async move {
            scope.check()?;
            Ok(etcd_recipes::election::current_leader(&scope.core, &name).await?.map(leader))
        })
    }

    /// An async iterator: the current leader (or `null`), then every change. Survives
    /// compaction and reconnects; `break` stops the watch.
    #[napi]
    pub fn observe(&self, env: &Env) -> napi::Result<LeaderObserver> {
        let obs = etcd_recipes::election::observe(&self.scope.core, &self.name).map_err(|e| errors::sync(env, e))?;
        Ok(LeaderObserver { cell: StreamCell::new(self.scope.clone(), obs.boxed()) })
    }
}

/// `for await (const leader of election.observe())`: leaders as they change.
#[napi]
pub struct LeaderObserver {
    cell: StreamCell<Option<CoreLeader>>,
}

#[napi]
impl LeaderObserver {
    /// The next leader (`value: null` when there is none); `done` after `return()` or client close.
    #[napi(ts_return_type = "Promise<IteratorResult<LeaderInfo | null, undefined>>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LeaderStep>> {
        let next = self.cell.next();
        errors::promise(env, async move {
            Ok(match next.await? {
                None => LeaderStep { done: true, value: None },
                Some(Some(l)) => LeaderStep { done: false, value: Some(Either::A(leader(l))) },
                Some(None) => LeaderStep { done: false, value: Some(Either::B(Null)) },
            })
        })
    }

    /// Stop observing (cancels the watch). Called by `break` in `for await`.
    #[napi(js_name = "return", ts_return_type = "Promise<IteratorResult<LeaderInfo | null, undefined>>")]
    pub fn finish<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, LeaderStep>> {
        let close = self.cell.close();
        errors::promise(env, async move {
            close.await?;
            Ok(LeaderStep { done: true, value: None })
        })
    }

    #[napi(well_known_symbol = "asyncIterator", ts_return_type = "AsyncIterator<LeaderInfo | null, undefined>")]
    pub fn iterator(&self) -> &Self {
        self
    }
}

pub(crate) struct LeadershipInner {
    core: Option<etcd_recipes::election::Leadership>,
    session: Option<etcd_recipes::Session>,
}

impl LeadershipInner {
    fn core(&self) -> &etcd_recipes::election::Leadership {
        self.core.as_ref().expect("set until drop")
    }
    async fn resign(&self) -> etcd_recipes::Result<()> {
        let r = self.core().resign().await;
        if let Some(s) = &self.session {
            s.close().await?;
        }
        r
    }
}

impl Drop for LeadershipInner {
    fn drop(&mut self) {
        drop_in_runtime((self.core.take(), self.session.take()));
    }
}

impl Child for LeadershipInner {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.resign().await;
        })
    }
}

/// Being the leader: the leader key, guarded writes, `proclaim`, `resign`, and the lost
/// signal. Resign with `resign()` or `await using`.
#[napi]
pub struct Leadership {
    inner: Arc<LeadershipInner>,
    fence: Fence,
}

impl Leadership {
    fn new(scope: Arc<Scope>, core: etcd_recipes::election::Leadership, session: Option<etcd_recipes::Session>) -> Leadership {
        let fence = core.fence().clone();
        let inner = Arc::new(LeadershipInner { core: Some(core), session });
        let weak: std::sync::Weak<dyn Child> = Arc::downgrade(&inner) as _;
        scope.adopt(weak);
        Leadership { inner, fence }
    }
}

#[napi]
impl Leadership {
    /// The leader key, `<namespace><name>/<lease hex>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.inner.core().key().to_string()
    }

    /// Create revision of the leader key: the fencing token of this leadership.
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.inner.core().revision()
    }

    /// The current proclaimed value (UTF-8, lossy).
    #[napi(getter)]
    pub fn value(&self) -> String {
        String::from_utf8_lossy(&self.inner.core().value()).into_owned()
    }

    /// True while the session is alive, the leader key exists and we did not resign.
    #[napi(getter)]
    pub fn is_leader(&self) -> bool {
        self.inner.core().is_leader()
    }

    /// Change the leader value (rejects with code `NOT_LEADER` once leadership is lost).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn proclaim<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (inner, v) = (self.inner.clone(), value_bytes(value));
        errors::promise(env, async move { inner.core().proclaim(v).await })
    }

    /// Put `value` at `key` only while we lead (else code `FENCED`).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn put<'env>(&self, env: &'env Env, key: String, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, i64>> {
        fenced_txn(env, &self.fence, vec![FencedOp::put(key, value_bytes(value))])
    }

    /// Apply all `ops` atomically only while we lead (else code `FENCED`).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn txn<'env>(&self, env: &'env Env, ops: Vec<TxnOp>) -> napi::Result<PromiseRaw<'env, i64>> {
        let ops = fenced_ops(env, ops)?;
        fenced_txn(env, &self.fence, ops)
    }

    /// Resolves with the reason when leadership ends (session lost, key gone, or resigned).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, String>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { Ok(inner.core().lost().await) })
    }

    /// Call `callback(reason)` once when leadership ends. Does not keep the process alive.
    #[napi(ts_args_type = "callback: (reason: string) => void")]
    pub fn on_lost(&self, callback: Callback<String>) {
        let inner = self.inner.clone();
        spawn(async move {
            let reason = inner.core().lost().await;
            call(&callback, reason);
        });
    }

    /// Step down (delete the leader key; close the session made for the campaign). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resign<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move { inner.resign().await })
    }

    /// `await using leadership = await election.campaign(...)`: resigns.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.resign(env)
    }
}
