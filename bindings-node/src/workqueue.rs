//! Node face of the reliable work queue: `client.workQueue(name, { ttl, maxDeliveries,
//! timeoutMs })` -> `WorkQueue`; `put(value, { delayMs })`, `receive({ timeoutMs })` ->
//! `WorkItem` (`ack()`, `nack({ delayMs })`), dead letters.

use std::sync::Arc;

use etcd_recipes::SessionSource;
use etcd_recipes::workqueue::{DeadLetter as CoreDeadLetter, WorkItem as CoreItem, WorkQueue as CoreQueue};
use napi::bindgen_prelude::{i64n, Buffer, Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors::{self, bytes};
use crate::members::held_members;
use crate::Held;

/// Options of `client.workQueue()`.
#[napi(object)]
pub struct WorkQueueOptions {
    /// TTL in seconds of the session made for each delivery: the claim lives on it, so a
    /// consumer that dies gives its item back after at most this long (default 10). The
    /// session is closed on ack / nack.
    pub ttl: Option<f64>,
    /// Failed deliveries after which an item moves to the dead letters (default: never).
    pub max_deliveries: Option<f64>,
    /// How long `receive()` waits, in ms, before rejecting with code `LOCK_TIMEOUT`
    /// (default: as long as it takes).
    pub timeout_ms: Option<f64>,
}

/// Options of `queue.put()` and `item.nack()`.
#[napi(object)]
pub struct DelayOptions {
    /// Not delivered before this many ms have passed.
    pub delay_ms: Option<f64>,
}

/// Options of `queue.receive()`.
#[napi(object)]
pub struct ReceiveOptions {
    /// Give up after this many ms: rejects with code `LOCK_TIMEOUT` (no claim is left).
    pub timeout_ms: Option<f64>,
}

/// An item in the dead letters.
#[napi(object)]
pub struct DeadLetter {
    /// The item id (give it to `requeueDead`).
    pub id: String,
    /// The payload.
    pub value: Buffer,
    /// The payload as text (invalid UTF-8 replaced).
    pub value_string: String,
    /// How many deliveries failed.
    pub deliveries: u32,
}

impl From<CoreDeadLetter> for DeadLetter {
    fn from(d: CoreDeadLetter) -> Self {
        DeadLetter { id: d.id, value_string: String::from_utf8_lossy(&d.value).into_owned(), value: Buffer::from(d.value), deliveries: d.deliveries }
    }
}

/// A reliable work queue (at-least-once delivery): items are claimed under the consumer's
/// lease, acked or nacked, delayed, and dead-lettered after `maxDeliveries` failed deliveries.
///
/// ```js
/// const queue = client.workQueue('jobs/thumbnails', { maxDeliveries: 5 })
/// await queue.put('img-42.png')
/// const item = await queue.receive()
/// await item.ack() // code FENCED if the claim was lost meanwhile
/// ```
#[napi]
pub struct WorkQueue {
    core: Held<CoreQueue>,
}

fn delay(env: &Env, o: Option<DelayOptions>) -> napi::Result<Option<std::time::Duration>> {
    errors::millis(env, "delayMs", o.and_then(|o| o.delay_ms))
}

#[napi]
impl Client {
    /// A reliable work queue called `name`. Each delivery is claimed on a session of its
    /// own (`ttl` seconds, default 10), closed when the item is acked or nacked.
    #[napi(strict)]
    pub fn work_queue(&self, env: &Env, name: String, options: Option<WorkQueueOptions>) -> napi::Result<WorkQueue> {
        let (ttl, max, timeout_ms) = options.map_or((None, None, None), |o| (o.ttl, o.max_deliveries, o.timeout_ms));
        let max = match max {
            None => None,
            Some(m) if m.is_finite() && m.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(&m) => Some(m as u32),
            Some(m) => return Err(errors::invalid(env, format!("maxDeliveries must be a whole number from 1 to {}, got {m}", u32::MAX))),
        };
        let source = SessionSource::per_use(&self.core, errors::ttl(env, ttl)?).map_err(|e| errors::sync(env, e))?;
        let timeout = errors::millis(env, "timeoutMs", timeout_ms)?;
        let core = CoreQueue::new(source, &name)
            .and_then(|q| q.with_max_deliveries(max))
            .map_err(|e| errors::sync(env, e))?;
        Ok(WorkQueue { core: Held::new(core.with_timeout(timeout)) })
    }
}

#[napi]
impl WorkQueue {
    /// The queue name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Failed deliveries after which an item moves to the dead letters (`null`: never).
    #[napi(getter)]
    pub fn max_deliveries(&self) -> Option<u32> {
        self.core.max_deliveries()
    }

    /// Add an item (a string or bytes); with `delayMs` it is not delivered before then.
    /// Resolves to its id.
    #[napi(strict, ts_return_type = "Promise<string>")]
    pub fn put<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>, options: Option<DelayOptions>) -> napi::Result<PromiseRaw<'env, String>> {
        let (q, v, d) = ((*self.core).clone(), bytes(value), delay(env, options)?);
        errors::promise(env, async move { q.put(v, d).await })
    }

    /// Wait for a visible item and claim it. Rejects with code `LOCK_TIMEOUT` after
    /// `timeoutMs` (default: the queue's), `CLOSED` if the client closes meanwhile.
    #[napi(strict, ts_return_type = "Promise<WorkItem>")]
    pub fn receive<'env>(&self, env: &'env Env, options: Option<ReceiveOptions>) -> napi::Result<PromiseRaw<'env, WorkItem>> {
        let q = (*self.core).clone();
        let timeout = errors::millis(env, "timeoutMs", options.and_then(|o| o.timeout_ms))?;
        errors::promise(env, async move {
            let item = match timeout {
                Some(t) => q.receive_within(Some(t)).await?,
                None => q.receive().await?,
            };
            Ok(WorkItem::new(item))
        })
    }

    /// Claim a visible item if there is one now; otherwise reject with code `LOCK_TIMEOUT`.
    #[napi(ts_return_type = "Promise<WorkItem>")]
    pub fn try_receive<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, WorkItem>> {
        let q = (*self.core).clone();
        errors::promise(env, async move { Ok(WorkItem::new(q.try_receive().await?)) })
    }

    /// How many items are visible now (not claimed, not delayed).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn length<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, u32>> {
        let q = (*self.core).clone();
        errors::promise(env, async move { Ok(q.length().await?.min(u32::MAX as usize) as u32) })
    }

    /// The dead letters, in id order.
    #[napi(ts_return_type = "Promise<DeadLetter[]>")]
    pub fn dead_letters<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<DeadLetter>>> {
        let q = (*self.core).clone();
        errors::promise(env, async move { Ok(q.dead_letters().await?.into_iter().map(DeadLetter::from).collect()) })
    }

    /// Move dead letter `id` back into the queue (delivery count reset). Resolves to false
    /// if there is no such dead letter.
    #[napi(strict, ts_return_type = "Promise<boolean>")]
    pub fn requeue_dead<'env>(&self, env: &'env Env, id: String) -> napi::Result<PromiseRaw<'env, bool>> {
        let q = (*self.core).clone();
        errors::promise(env, async move { q.requeue_dead(&id).await })
    }

    /// Requeue every dead letter; resolves to how many were moved.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn requeue_all_dead<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, u32>> {
        let q = (*self.core).clone();
        errors::promise(env, async move { Ok(q.requeue_all_dead().await?.min(u32::MAX as usize) as u32) })
    }
}

/// A claimed item: `ack()` when done, `nack()` to give it back. Garbage-collected without
/// either, its claim is released (a failed delivery).
#[napi]
pub struct WorkItem {
    core: Held<Arc<CoreItem>>,
}

impl WorkItem {
    fn new(item: CoreItem) -> Self {
        WorkItem { core: Held::new(Arc::new(item)) }
    }
}

#[napi]
impl WorkItem {
    /// The item id (unique in its queue, ordered by creation time).
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.core.id().to_string()
    }

    /// The queue name.
    #[napi(getter)]
    pub fn queue(&self) -> String {
        self.core.queue().to_string()
    }

    /// The full etcd key of the item, `<namespace><name>/items/<id>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// The payload.
    #[napi(getter)]
    pub fn value(&self) -> Buffer {
        Buffer::from(self.core.value())
    }

    /// The payload as text; throws with code `DECODE` if it is not UTF-8.
    #[napi(getter)]
    pub fn value_string(&self, env: &Env) -> napi::Result<String> {
        self.core.value_string().map_err(|e| errors::sync(env, e))
    }

    /// The payload decoded from JSON; throws with code `DECODE` if it is not JSON.
    #[napi]
    pub fn value_json(&self, env: &Env) -> napi::Result<serde_json::Value> {
        self.core.value_json().map_err(|e| errors::sync(env, e))
    }

    /// Which delivery this is (the attempt number: 1 the first time).
    #[napi(getter)]
    pub fn deliveries(&self) -> u32 {
        self.core.deliveries()
    }

    /// The create revision of our claim: strictly increases from delivery to delivery.
    #[napi(getter)]
    pub fn fencing_token(&self) -> i64 {
        self.core.fencing_token()
    }

    /// The lease the claim lives on.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// True while not acked or nacked and the session is alive.
    #[napi(getter)]
    pub fn is_held(&self) -> bool {
        self.core.is_held()
    }

    /// Done: delete the item and our claim, only while the claim is ours (else rejects
    /// with code `FENCED`: the item is delivered again).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ack<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let i = (*self.core).clone();
        errors::promise(env, async move { i.ack().await })
    }

    /// Give the item back for redelivery (not before `delayMs`, if given); on its last
    /// allowed delivery it moves to the dead letters instead.
    #[napi(strict, ts_return_type = "Promise<void>")]
    pub fn nack<'env>(&self, env: &'env Env, options: Option<DelayOptions>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (i, d) = ((*self.core).clone(), delay(env, options)?);
        errors::promise(env, async move { i.nack(d).await })
    }
}

held_members! {
    impl WorkItem {
        loss {
            lost: "Resolves when the claim stops being ours: with the reason when it was lost (its"
                  "session lost), with `null` when it ended normally (acked, nacked, client closed).";
            on_lost: "Call `callback(reason)` if the claim is lost (not on ack / nack). Does not keep the"
                     "process alive.";
        }
    }
}
