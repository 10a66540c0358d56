//! Node face of the leader loop and the leader latch: `client.leaderLoop(name, value)` ->
//! `LeaderLoop` (`run(work)` / `start(work)`, `close()`, events), and
//! `client.leaderLatch(name, value)` -> `LeaderLatch` (`start()`, `awaitLeader()`,
//! `close()`). `index.js` turns `work(leadership, signal)` into the native term callback,
//! with a real `AbortController` per term.

use std::sync::Arc;
use std::time::Duration;

use etcd_recipes::leader as core;
use etcd_recipes::SessionSource;
use futures::StreamExt;
use napi::bindgen_prelude::{i64n, Either, Promise, PromiseRaw, Uint8Array};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;

use crate::client::Client;
use crate::election::{leader, leadership, LeaderInfo, Leadership};
use crate::errors::{self, bytes};
use crate::iter::{stream_class, Cell};
use crate::lock::WaitOptions;
use crate::session::Session;
use crate::{Callback, Held};

/// Options of `client.leaderLoop()` / `session.leaderLoop()`.
#[napi(object)]
pub struct LeaderLoopOptions {
    /// TTL in seconds of the session made for each term (default 10); ignored by
    /// `session.leaderLoop()`, whose terms all run on that session.
    pub ttl: Option<f64>,
    /// Campaign again after a term ends (default `true`); `false`: one term, then the loop ends.
    pub requeue: Option<bool>,
    /// How long a cancelled work may take to settle, in ms, before the loop stops waiting for
    /// it and resigns (default 5000).
    pub stop_timeout_ms: Option<f64>,
}

/// Options of `client.leaderLatch()`.
#[napi(object)]
pub struct LeaderLatchOptions {
    /// TTL in seconds of the session made for each term (default 10).
    pub ttl: Option<f64>,
}

/// What a leader loop (or latch) reports: `kind` is `'startedLeading'` (with `fencingToken`,
/// `key`, `leaseId`), `'stoppedLeading'` (with `fencingToken`, `reason`: `'returned'`,
/// `'lost'` or `'cancelled'`, and `detail`: the loss reason or the work's error) or
/// `'newLeader'` (with `leader`, `null` when there is none).
#[napi(object, object_from_js = false)]
pub struct LeaderEvent {
    #[napi(ts_type = "'startedLeading' | 'stoppedLeading' | 'newLeader'")]
    pub kind: String,
    pub fencing_token: Option<i64>,
    pub key: Option<String>,
    pub lease_id: Option<i64n>,
    #[napi(ts_type = "'returned' | 'lost' | 'cancelled'")]
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub leader: Option<LeaderInfo>,
}

fn event(e: core::LeaderEvent) -> LeaderEvent {
    let mut out =
        LeaderEvent { kind: String::new(), fencing_token: None, key: None, lease_id: None, reason: None, detail: None, leader: None };
    match e {
        core::LeaderEvent::StartedLeading { fencing_token, key, lease_id } => {
            out.kind = "startedLeading".into();
            out.fencing_token = Some(fencing_token);
            out.key = Some(key);
            out.lease_id = Some(i64n(lease_id));
        }
        core::LeaderEvent::StoppedLeading { fencing_token, reason } => {
            out.kind = "stoppedLeading".into();
            out.fencing_token = Some(fencing_token);
            out.detail = reason.detail().map(str::to_string);
            out.reason = Some(reason.kind().into());
        }
        core::LeaderEvent::NewLeader(l) => {
            out.kind = "newLeader".into();
            out.leader = l.map(leader);
        }
    }
    out
}

stream_class!(
    LeaderEvents,
    LeaderEvent,
    "Promise<IteratorResult<LeaderEvent, undefined>>",
    "`for await (const event of lp.events())`: every event from now on, until the loop ends."
);

fn events(e: core::LeaderEvents) -> LeaderEvents {
    LeaderEvents(Cell::new(e.map(|e| Ok(event(e)))))
}

/// Why a term's signal fired: `reason` is `'returned'`, `'lost'` or `'cancelled'`.
#[napi(object, object_from_js = false)]
pub struct TermEnd {
    #[napi(ts_type = "'returned' | 'lost' | 'cancelled'")]
    pub reason: String,
    pub detail: Option<String>,
}

/// One term, handed to the native work callback (`index.js` makes it `work(leadership, signal)`).
#[napi]
pub struct LeaderTerm {
    leadership: Held<Arc<etcd_recipes::election::Leadership>>,
    cancel: core::CancelSignal,
}

#[napi]
impl LeaderTerm {
    /// The term's leadership.
    #[napi(getter)]
    pub fn leadership(&self) -> Leadership {
        leadership((*self.leadership).clone())
    }

    /// Resolves when the work must stop (or, after it returned, at the term's end).
    #[napi(ts_return_type = "Promise<TermEnd>")]
    pub fn cancelled<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, TermEnd>> {
        let c = self.cancel.clone();
        errors::promise(env, async move {
            let r = c.cancelled().await;
            Ok(TermEnd { reason: r.kind().into(), detail: r.detail().map(str::to_string) })
        })
    }
}

/// The native work callback: called with a term, returns a Promise settled when the work ends.
type WorkFn = ThreadsafeFunction<LeaderTerm, Promise<()>, LeaderTerm, Status, false>;

fn on_events<T, F>(events: core::LeaderEvents, callback: Callback<T>, pick: F)
where
    T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
    F: Fn(core::LeaderEvent) -> Option<T> + Send + 'static,
{
    crate::spawn(async move {
        let mut events = events;
        while let Some(e) = events.next().await {
            if let Some(v) = pick(e) {
                let _ = callback.call(v, ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    });
}

fn started(e: core::LeaderEvent) -> Option<LeaderEvent> {
    matches!(e, core::LeaderEvent::StartedLeading { .. }).then(|| event(e))
}

fn stopped(e: core::LeaderEvent) -> Option<LeaderEvent> {
    matches!(e, core::LeaderEvent::StoppedLeading { .. }).then(|| event(e))
}

fn new_leader(e: core::LeaderEvent) -> Option<Option<LeaderInfo>> {
    match e {
        core::LeaderEvent::NewLeader(l) => Some(l.map(leader)),
        _ => None,
    }
}

/// Campaign, run `work` while leader, resign, campaign again (Curator `LeaderSelector`,
/// client-go `leaderelection`).
///
/// ```js
/// const lp = client.leaderLoop('scheduler', 'node-1', { ttl: 5 })
/// lp.onStoppedLeading((e) => console.log('stopped:', e.reason, e.detail))
/// await lp.run(async (leadership, signal) => {
///   while (!signal.aborted) await leadership.put('scheduler/tick', 'node-1')
/// })
/// ```
///
/// `signal` is a real `AbortSignal`: it aborts the moment leadership is lost (session lost,
/// our key deleted), on `close()` and when the client closes. Then the loop waits for the
/// work's promise (at most `stopTimeoutMs`) and resigns. When the work settles by itself,
/// the loop resigns at once; a rejection is reported in the `stoppedLeading` event
/// (`detail`) and does not end the loop. Unless `requeue: false`, it campaigns again with
/// a fresh session.
#[napi]
pub struct LeaderLoop {
    core: Held<core::LeaderLoop>,
}

fn loop_options(env: &Env, o: &Option<LeaderLoopOptions>) -> napi::Result<(bool, Option<Duration>)> {
    let requeue = o.as_ref().and_then(|o| o.requeue).unwrap_or(true);
    let stop = errors::millis(env, "stopTimeoutMs", o.as_ref().and_then(|o| o.stop_timeout_ms))?;
    Ok((requeue, stop))
}

fn make_loop(env: &Env, source: SessionSource, name: &str, value: Vec<u8>, o: Option<LeaderLoopOptions>) -> napi::Result<LeaderLoop> {
    let (requeue, stop) = loop_options(env, &o)?;
    let mut lp = core::LeaderLoop::new(source, name, value).map_err(|e| errors::sync(env, e))?.requeue(requeue);
    if let Some(t) = stop {
        lp = lp.stop_timeout(t);
    }
    Ok(LeaderLoop { core: Held::new(lp) })
}

fn per_use(env: &Env, c: &etcd_recipes::Client, ttl: Option<f64>) -> napi::Result<SessionSource> {
    SessionSource::per_use(c, errors::ttl(env, ttl)?).map_err(|e| errors::sync(env, e))
}

#[napi]
impl Client {
    /// A leader loop on election `name`, campaigning with `value`; each term runs on a
    /// session of its own (`ttl` seconds, default 10). Start it with `run(work)` or `start(work)`.
    #[napi(strict)]
    pub fn leader_loop(&self, env: &Env, name: String, value: Either<String, Uint8Array>, options: Option<LeaderLoopOptions>) -> napi::Result<LeaderLoop> {
        let source = per_use(env, &self.core, options.as_ref().and_then(|o| o.ttl))?;
        make_loop(env, source, &name, bytes(value), options)
    }

    /// A leader latch on election `name` with `value` (sessions of `ttl` s per term). Call `start()`.
    #[napi(strict)]
    pub fn leader_latch(&self, env: &Env, name: String, value: Either<String, Uint8Array>, options: Option<LeaderLatchOptions>) -> napi::Result<LeaderLatch> {
        let source = per_use(env, &self.core, options.and_then(|o| o.ttl))?;
        let core = core::LeaderLatch::new(source, &name, bytes(value)).map_err(|e| errors::sync(env, e))?;
        Ok(LeaderLatch { core: Held::new(core) })
    }
}

#[napi]
impl Session {
    /// A leader loop whose terms all run on this session (it stays open; `ttl` is ignored).
    #[napi(strict)]
    pub fn leader_loop(&self, env: &Env, name: String, value: Either<String, Uint8Array>, options: Option<LeaderLoopOptions>) -> napi::Result<LeaderLoop> {
        make_loop(env, SessionSource::Shared((*self.core).clone()), &name, bytes(value), options)
    }

    /// A leader latch on this session.
    #[napi(strict)]
    pub fn leader_latch(&self, env: &Env, name: String, value: Either<String, Uint8Array>) -> napi::Result<LeaderLatch> {
        let core = core::LeaderLatch::new(SessionSource::Shared((*self.core).clone()), &name, bytes(value))
            .map_err(|e| errors::sync(env, e))?;
        Ok(LeaderLatch { core: Held::new(core) })
    }
}

fn start_work(env: &Env, lp: &core::LeaderLoop, work: WorkFn) -> napi::Result<()> {
    let work = Arc::new(work);
    let _entered = crate::RUNTIME.get().map(|h| h.enter());
    lp.start(move |l, cancel| {
        let work = work.clone();
        async move {
            let term = LeaderTerm { leadership: Held::new(l), cancel };
            match work.call_async(term).await {
                Ok(p) => p.await.map_err(|e| e.reason.clone()),
                Err(e) => Err(e.reason.clone()),
            }
        }
    })
    .map_err(|e| errors::sync(env, e))
}

#[napi]
impl LeaderLoop {
    /// The election name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// True while a term runs and its leadership holds.
    #[napi(getter)]
    pub fn is_leader(&self) -> bool {
        self.core.is_leader()
    }

    /// The current term's leadership, or `null`.
    #[napi(getter)]
    pub fn leadership(&self) -> Option<Leadership> {
        self.core.leadership().map(leadership)
    }

    /// True once the loop has ended.
    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.core.is_stopped()
    }

    /// Start in the background (`index.js` takes `work(leadership, signal)`). Throws
    /// `INVALID_ARGUMENT` if started already, `CLOSED` if the client is closed.
    #[napi(ts_args_type = "work: (leadership: Leadership, signal: AbortSignal) => Promise<void> | void")]
    pub fn start(&self, env: &Env, work: WorkFn) -> napi::Result<()> {
        start_work(env, &self.core, work)
    }

    /// `start(work)`, then `wait()`.
    #[napi(ts_args_type = "work: (leadership: Leadership, signal: AbortSignal) => Promise<void> | void", ts_return_type = "Promise<void>")]
    pub fn run<'env>(&self, env: &'env Env, work: WorkFn) -> napi::Result<PromiseRaw<'env, ()>> {
        start_work(env, &self.core, work)?;
        self.wait(env)
    }

    /// Resolves when the loop ends: after `close()` or its last term (`requeue: false`);
    /// rejects with code `CLOSED` when the client was closed, or with the error that ended it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let lp = (*self.core).clone();
        errors::promise(env, async move { lp.wait().await })
    }

    /// Stop: abort the work's signal (if leading), wait for it (at most `stopTimeoutMs`),
    /// resign, end the loop. Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let lp = (*self.core).clone();
        errors::promise(env, async move {
            lp.close().await;
            Ok(())
        })
    }

    /// The current (or next) term's end: its loss reason, or `null` when it ends otherwise.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let lp = (*self.core).clone();
        errors::promise(env, async move { Ok(lp.lost().await) })
    }

    /// Every event from now on (subscribe before starting to see them all).
    #[napi]
    pub fn events(&self) -> LeaderEvents {
        events(self.core.events())
    }

    /// `callback(event)` each time we become leader. Register before starting.
    #[napi(ts_args_type = "callback: (event: LeaderEvent) => void")]
    pub fn on_started_leading(&self, callback: Callback<LeaderEvent>) {
        on_events(self.core.events(), callback, started)
    }

    /// `callback(event)` each time a term ends (`event.reason`, `event.detail`).
    #[napi(ts_args_type = "callback: (event: LeaderEvent) => void")]
    pub fn on_stopped_leading(&self, callback: Callback<LeaderEvent>) {
        on_events(self.core.events(), callback, stopped)
    }

    /// `callback(leader)` each time the election's leader changes (`null`: none).
    #[napi(ts_args_type = "callback: (leader: LeaderInfo | null) => void")]
    pub fn on_new_leader(&self, callback: Callback<Option<LeaderInfo>>) {
        on_events(self.core.events(), callback, new_leader)
    }

    /// `await using lp = client.leaderLoop(...)`: closes.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }
}

/// Campaigns in the background once started and holds leadership until closed; campaigns
/// again after a loss (Curator `LeaderLatch`).
///
/// ```js
/// const latch = client.leaderLatch('scheduler', 'node-1', { ttl: 5 })
/// latch.start()
/// const leadership = await latch.awaitLeader({ timeoutMs: 10_000 })
/// ```
#[napi]
pub struct LeaderLatch {
    core: Held<core::LeaderLatch>,
}

#[napi]
impl LeaderLatch {
    /// The election name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Start campaigning. Throws `INVALID_ARGUMENT` if started already, `CLOSED` if the client is closed.
    #[napi]
    pub fn start(&self, env: &Env) -> napi::Result<()> {
        let _entered = crate::RUNTIME.get().map(|h| h.enter());
        self.core.start().map_err(|e| errors::sync(env, e))
    }

    /// True while we lead.
    #[napi(getter)]
    pub fn is_leader(&self) -> bool {
        self.core.is_leader()
    }

    /// The current leadership, or `null`.
    #[napi(getter)]
    pub fn leadership(&self) -> Option<Leadership> {
        self.core.leadership().map(leadership)
    }

    /// True once closed (or its client closed).
    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Resolves with the leadership as soon as we lead (at once if we do); rejects with
    /// code `LOCK_TIMEOUT` after `timeoutMs`, `CLOSED` if the latch or client closes first.
    #[napi(strict, ts_return_type = "Promise<Leadership>")]
    pub fn await_leader<'env>(&self, env: &'env Env, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, Leadership>> {
        let (latch, t) = ((*self.core).clone(), crate::lock::wait(env, options)?);
        errors::promise(env, async move { Ok(leadership(latch.await_leader(t).await?)) })
    }

    /// The current (or next) term's end: its loss reason, or `null` when it ends otherwise.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn lost<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let latch = (*self.core).clone();
        errors::promise(env, async move { Ok(latch.lost().await) })
    }

    /// Every event from now on (subscribe before `start()` to see them all).
    #[napi]
    pub fn events(&self) -> LeaderEvents {
        events(self.core.events())
    }

    /// `callback(event)` each time we become leader.
    #[napi(ts_args_type = "callback: (event: LeaderEvent) => void")]
    pub fn on_started_leading(&self, callback: Callback<LeaderEvent>) {
        on_events(self.core.events(), callback, started)
    }

    /// `callback(event)` each time our leadership ends (`event.reason`, `event.detail`).
    #[napi(ts_args_type = "callback: (event: LeaderEvent) => void")]
    pub fn on_stopped_leading(&self, callback: Callback<LeaderEvent>) {
        on_events(self.core.events(), callback, stopped)
    }

    /// `callback(leader)` each time the election's leader changes (`null`: none).
    #[napi(ts_args_type = "callback: (leader: LeaderInfo | null) => void")]
    pub fn on_new_leader(&self, callback: Callback<Option<LeaderInfo>>) {
        on_events(self.core.events(), callback, new_leader)
    }

    /// Resign (if leader) and stop campaigning. Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let latch = (*self.core).clone();
        errors::promise(env, async move {
            latch.close().await;
            Ok(())
        })
    }

    /// `await using latch = ...`: closes.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }
}
