//! Node face of the queues: `client.queue(name, { timeoutMs })` -> `Queue` and
//! `client.priorityQueue(name, { timeoutMs })` -> `PriorityQueue` (`enqueue`, `dequeue`,
//! `tryDequeue`, `length`), handing out `QueueItem`s.

use etcd_recipes::queue::{PriorityQueue as CorePq, Queue as CoreQueue, QueueItem as CoreItem};
use napi::bindgen_prelude::{Buffer, Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors::{self, bytes};

/// Options of `client.queue()` and `client.priorityQueue()`.
#[napi(object)]
pub struct QueueOptions {
    /// How long `dequeue()` waits for an item, in ms, before rejecting with code
    /// `LOCK_TIMEOUT` (default: as long as it takes).
    pub timeout_ms: Option<f64>,
}

/// Options of `dequeue()`.
#[napi(object)]
pub struct DequeueOptions {
    /// Give up after this many ms: rejects with code `LOCK_TIMEOUT` (nothing is taken).
    pub timeout_ms: Option<f64>,
}

fn queue_timeout(env: &Env, o: Option<QueueOptions>) -> napi::Result<Option<std::time::Duration>> {
    errors::millis(env, "timeoutMs", o.and_then(|o| o.timeout_ms))
}

fn dequeue_timeout(env: &Env, o: Option<DequeueOptions>) -> napi::Result<Option<std::time::Duration>> {
    errors::millis(env, "timeoutMs", o.and_then(|o| o.timeout_ms))
}

#[napi]
impl Client {
    /// The FIFO queue `name` (etcd Go `recipe.Queue`). At most once: use `workQueue` for
    /// at-least-once delivery.
    #[napi(strict)]
    pub fn queue(&self, env: &Env, name: String, options: Option<QueueOptions>) -> napi::Result<Queue> {
        let t = queue_timeout(env, options)?;
        let core = CoreQueue::new(&self.core, &name).map_err(|e| errors::sync(env, e))?;
        Ok(Queue { core: core.with_timeout(t) })
    }

    /// The priority queue `name` (etcd Go `recipe.PriorityQueue`): lower priority numbers
    /// first, FIFO within a priority.
    #[napi(strict)]
    pub fn priority_queue(&self, env: &Env, name: String, options: Option<QueueOptions>) -> napi::Result<PriorityQueue> {
        let t = queue_timeout(env, options)?;
        let core = CorePq::new(&self.core, &name).map_err(|e| errors::sync(env, e))?;
        Ok(PriorityQueue { core: core.with_timeout(t) })
    }
}

/// A FIFO queue shared by any number of producers and consumers.
///
/// ```js
/// const jobs = client.queue('jobs')
/// await jobs.enqueue('resize 42.png')
/// const item = await jobs.dequeue() // waits for an item
/// ```
#[napi]
pub struct Queue {
    core: CoreQueue,
}

#[napi]
impl Queue {
    /// The queue name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Append an item (a string or bytes); resolves to its full etcd key.
    #[napi(strict, ts_return_type = "Promise<string>")]
    pub fn enqueue<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, String>> {
        let (q, v) = (self.core.clone(), bytes(value));
        errors::promise(env, async move { q.enqueue(v).await })
    }

    /// Take the oldest item, waiting for one. Rejects with code `LOCK_TIMEOUT` after
    /// `timeoutMs` (default: the queue's), `CLOSED` if the client closes meanwhile.
    #[napi(strict, ts_return_type = "Promise<QueueItem>")]
    pub fn dequeue<'env>(&self, env: &'env Env, options: Option<DequeueOptions>) -> napi::Result<PromiseRaw<'env, QueueItem>> {
        let (q, t) = (self.core.clone(), dequeue_timeout(env, options)?);
        errors::promise(env, async move {
            let item = match t {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            };
            Ok(QueueItem(item))
        })
    }

    /// Take the oldest item if there is one; resolves to `null` when the queue is empty.
    #[napi(ts_return_type = "Promise<QueueItem | null>")]
    pub fn try_dequeue<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<QueueItem>>> {
        let q = self.core.clone();
        errors::promise(env, async move { Ok(q.try_dequeue().await?.map(QueueItem)) })
    }

    /// How many items are in the queue now.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn length<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let q = self.core.clone();
        errors::promise(env, async move { q.length().await })
    }
}

/// A queue whose items come out by priority (lower number first), FIFO within a priority.
#[napi]
pub struct PriorityQueue {
    core: CorePq,
}

#[napi]
impl PriorityQueue {
    /// The queue name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Add an item (a string or bytes) with `priority` (0..65535, 0 comes out first);
    /// resolves to its full etcd key.
    #[napi(strict, ts_return_type = "Promise<string>")]
    pub fn enqueue<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>, priority: f64) -> napi::Result<PromiseRaw<'env, String>> {
        if !(priority.is_finite() && priority.fract() == 0.0 && (0.0..=u16::MAX as f64).contains(&priority)) {
            return Err(errors::invalid(env, format!("priority must be a whole number from 0 to 65535 (0 first), got {priority}")));
        }
        let (q, v) = (self.core.clone(), bytes(value));
        errors::promise(env, async move { q.enqueue(v, priority as u16).await })
    }

    /// Take the first item (lowest priority number, then oldest), waiting for one. Rejects
    /// with code `LOCK_TIMEOUT` after `timeoutMs` (default: the queue's), `CLOSED` on close.
    #[napi(strict, ts_return_type = "Promise<QueueItem>")]
    pub fn dequeue<'env>(&self, env: &'env Env, options: Option<DequeueOptions>) -> napi::Result<PromiseRaw<'env, QueueItem>> {
        let (q, t) = (self.core.clone(), dequeue_timeout(env, options)?);
        errors::promise(env, async move {
            let item = match t {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            };
            Ok(QueueItem(item))
        })
    }

    /// Take the first item if there is one; resolves to `null` when the queue is empty.
    #[napi(ts_return_type = "Promise<QueueItem | null>")]
    pub fn try_dequeue<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<QueueItem>>> {
        let q = self.core.clone();
        errors::promise(env, async move { Ok(q.try_dequeue().await?.map(QueueItem)) })
    }

    /// How many items are in the queue now.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn length<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let q = self.core.clone();
        errors::promise(env, async move { q.length().await })
    }
}

/// A dequeued item: its value and where it was.
#[napi]
pub struct QueueItem(CoreItem);

#[napi]
impl QueueItem {
    /// The full etcd key the item had.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.0.key.clone()
    }

    /// The value.
    #[napi(getter)]
    pub fn value(&self) -> Buffer {
        Buffer::from(self.0.value.clone())
    }

    /// The value as text; throws with code `DECODE` if it is not UTF-8.
    #[napi(getter)]
    pub fn value_string(&self, env: &Env) -> napi::Result<String> {
        self.0.value_string().map_err(|e| errors::sync(env, e))
    }

    /// The value decoded from JSON; throws with code `DECODE` if it is not JSON.
    #[napi]
    pub fn value_json(&self, env: &Env) -> napi::Result<serde_json::Value> {
        self.0.value_json().map_err(|e| errors::sync(env, e))
    }

    /// The revision at which the item was enqueued.
    #[napi(getter)]
    pub fn revision(&self) -> i64 {
        self.0.revision
    }
}
