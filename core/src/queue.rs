//! [`Queue`] (FIFO) and [`PriorityQueue`], wire-compatible with etcd's Go
//! `contrib/recipes` (`recipe.NewQueue`, `recipe.NewPriorityQueue`): a Go producer and
//! our consumer (or the reverse) share a queue.
//!
//! # Protocol
//!
//! **Queue** `name`: each item is one key `<namespace><name>/<unix nanos>` (no lease),
//! created put-if-absent (`If Version(key) == 0 Then Put`; on a clash, a new timestamp).
//! The head is the key with the smallest **mod revision** under the queue's prefix (Go's
//! `WithFirstRev`; items are never modified, so that is their creation order).
//!
//! **PriorityQueue** `name`: an item of priority `p` (0..=65535, **lower number first**)
//! is the key `<namespace><name>/<p as %05d>/<seq as %016d>`, where `seq` is one more than
//! the last key of that priority (0 when there is none). The allocation is guarded by a
//! bookkeeping key `<namespace>__<name>/<p as %05d>`: `If ModRevision(__key) <= read
//! revision Then Put(__key), Put(item)`, else retry (Go's `newSequentialKV`). The head is
//! the lexically first key under `<name>/`: the lowest priority number, then FIFO.
//!
//! **Dequeue** (both): read the head (a few keys, in order) and claim the first one
//! with a guarded delete, `If ModRevision(key) == seen Then Delete(key)`: of two consumers
//! only one delete succeeds, the other tries the next key. When the queue is empty,
//! watch the prefix for a PUT from just after the read, then read again.
//!
//! # Guarantees
//!
//! - Every item is dequeued by at most one consumer; concurrent consumers together get
//!   every item.
//! - **At most once.** An item is deleted when it is handed out: a consumer that dies
//!   after its delete (or whose delete's answer is lost, [`Error::UnknownOutcome`])
//!   loses the item. For at-least-once delivery (claims under the consumer's lease,
//!   ack / nack, redelivery) use the reliable work queue instead.
//! - A timeout or [`Client::close`] ends a waiting dequeue only while it waits, never
//!   between a successful delete and its return, so giving up loses no item. Dropping a
//!   dequeue future while its delete is in flight can.
//! - Queue names are read with a trailing `/` (`<name>/`), so queue `jobs` never sees the
//!   items of queue `jobs2` (Go's consumer reads the bare prefix `jobs`, and would).

use std::time::Duration;

/// The queue prefix (`<name>/`) of a FIFO queue item key `<name>/<unix nanos>`.
/// Read-only, for the inspector.
pub(crate) fn fifo_prefix(key: &[u8]) -> Option<&[u8]> {
    let slash = key.iter().rposition(|b| *b == b'/')?;
    let last = &key[slash + 1..];
    ((16..=20).contains(&last.len()) && last.iter().all(u8::is_ascii_digit) && slash > 0).then(|| &key[..slash + 1])
}

/// The queue prefix (`<name>/`) and priority of a priority queue item key
/// `<name>/<%05d priority>/<%016d seq>`. Read-only, for the inspector.
pub(crate) fn priority_prefix(key: &[u8]) -> Option<(&[u8], u16)> {
    let slash = key.iter().rposition(|b| *b == b'/')?;
    let (head, seq) = (&key[..slash], &key[slash + 1..]);
    let slash2 = head.iter().rposition(|b| *b == b'/')?;
    let prio = &head[slash2 + 1..];
    let digits = |s: &[u8], n: usize| s.len() == n && s.iter().all(u8::is_ascii_digit);
    if !digits(seq, 16) || !digits(prio, 5) || slash2 == 0 {
        return None;
    }
    let p: u32 = std::str::from_utf8(prio).ok()?.parse().ok()?;
    Some((&key[..slash2 + 1], u16::try_from(p).ok()?))
}

use etcd_client::{Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::time::Instant;
use tracing::{debug, info_span, Instrument};

use crate::barrier::{after_watch_error, put_new, unique_nanos, wait_event, Seen};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::waitqueue::{check_name, sleep_opt};

/// How many head keys one read fetches (Go fetches one; more saves round trips when
/// consumers race for the head).
const BATCH: i64 = 8;

/// One dequeued item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    /// The full etcd key the item had.
    pub key: String,
    /// The value, as enqueued.
    pub value: Vec<u8>,
    /// The revision at which the item was enqueued.
    pub revision: i64,
}

impl QueueItem {
    /// The value as UTF-8 text ([`Error::Decode`] if it is not).
    pub fn value_string(&self) -> Result<String> {
        String::from_utf8(self.value.clone())
            .map_err(|e| Error::Decode { key: self.key.clone(), message: e.to_string() })
    }

    /// The value decoded as JSON ([`Error::Decode`] if it is not).
    pub fn value_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.value).map_err(|e| Error::Decode { key: self.key.clone(), message: e.to_string() })
    }
}

/// How a queue finds its head.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// Smallest mod revision first (Go `WithFirstRev`).
    ModRevision,
    /// Lexically first key (Go `WithFirstKey`).
    Key,
}

/// The consumer side shared by both queues.
#[derive(Clone, Debug)]
struct Consumer {
    client: Client,
    /// What the queue is called in errors.
    what: String,
    /// `<ns><name>/`
    prefix: String,
    order: Order,
    timeout: Option<Duration>,
}

impl Consumer {
    /// One read of the head and claims in order. `Ok(Err(rev))`: nothing to claim as of
    /// revision `rev`.
    async fn try_once(&self) -> Result<std::result::Result<QueueItem, i64>> {
        loop {
            let target = match self.order {
                Order::ModRevision => SortTarget::Mod,
                Order::Key => SortTarget::Key,
            };
            let opts = GetOptions::new().with_prefix().with_sort(target, SortOrder::Ascend).with_limit(BATCH);
            let resp = self.client.range(self.prefix.as_str(), Some(opts)).await?;
            let header = resp.header().map(|h| h.revision()).unwrap_or(0);
            for kv in resp.kvs() {
                if claim(&self.client, kv.key(), kv.mod_revision()).await? {
                    return Ok(Ok(QueueItem {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: kv.value().to_vec(),
                        revision: kv.create_revision(),
                    }));
                }
            }
            if !resp.more() {
                return Ok(Err(header));
            }
            // Others took every key we saw, and there are more: read on.
        }
    }

    async fn try_dequeue(&self) -> Result<Option<QueueItem>> {
        self.client.ensure_open()?;
        Ok(self.try_once().await?.ok())
    }

    async fn dequeue_within(&self, timeout: Option<Duration>) -> Result<QueueItem> {
        self.client.ensure_open()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let span = info_span!("etcd_recipes.queue.dequeue", queue = %self.what);
        async {
            let mut backoff = Duration::from_millis(50);
            loop {
                // Reads and claims are not interrupted: a deadline or close that struck
                // between a claim and its return would lose the item.
                let from = match self.try_once().await? {
                    Ok(item) => return Ok(item),
                    Err(rev) => rev + 1,
                };
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(self.gave_up());
                }
                debug!(from, "queue empty; waiting for an item");
                let wait = wait_event(&self.client, &self.prefix, true, from, EventType::Put);
                let seen = tokio::select! {
                    r = wait => r,
                    _ = sleep_opt(deadline) => return Err(self.gave_up()),
                    _ = self.client.closed() => return Err(Error::Closed("client")),
                };
                match seen {
                    Ok(Seen::Event) | Ok(Seen::Compacted) => {}
                    Err(e) => after_watch_error(e, &mut backoff).await?,
                }
                self.client.ensure_open()?;
            }
        }
        .instrument(span)
        .await
    }

    async fn length(&self) -> Result<i64> {
        self.client.ensure_open()?;
        let resp = self.client.range(self.prefix.as_str(), Some(GetOptions::new().with_prefix().with_count_only())).await?;
        Ok(resp.count())
    }

    fn gave_up(&self) -> Error {
        Error::LockTimeout { name: self.what.clone(), reason: "empty (timed out)".into() }
    }
}

/// Go's `deleteRevKey`: `If ModRevision(key) == rev Then Delete(key)`. Sent once.
async fn claim(client: &Client, key: &[u8], rev: i64) -> Result<bool> {
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(key.to_vec(), CompareOp::Equal, rev)])
        .and_then(vec![TxnOp::delete(key.to_vec(), None)]);
    let resp = client
        .write(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(resp.succeeded())
}

/// A FIFO queue shared by any number of producers and consumers. Cheap to clone. See
/// the [module docs](self) for the protocol and the (at-most-once) guarantee.
///
/// ```no_run
/// # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
/// use etcd_recipes::queue::Queue;
/// let jobs = Queue::new(&client, "jobs")?;
/// jobs.enqueue("resize 42.png").await?;
/// let item = jobs.dequeue().await?; // waits for an item
/// assert_eq!(item.value_string()?, "resize 42.png");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Queue {
    name: String,
    consumer: Consumer,
}

impl Queue {
    /// The queue `name`. [`Error::InvalidArgument`] for a bad name (as a lock name).
    pub fn new(client: &Client, name: &str) -> Result<Queue> {
        check_name("queue name", name)?;
        Ok(Queue {
            name: name.to_string(),
            consumer: Consumer {
                client: client.clone(),
                what: format!("queue {name:?}"),
                prefix: client.full_key(&format!("{name}/")),
                order: Order::ModRevision,
                timeout: None,
            },
        })
    }

    /// Make [`Queue::dequeue`] give up after `timeout` ([`Error::LockTimeout`]).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Queue {
        self.consumer.timeout = timeout;
        self
    }

    /// The queue name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Append an item; returns its key. [`Error::UnknownOutcome`] when the answer was
    /// lost (the item may or may not be in the queue).
    pub async fn enqueue(&self, value: impl Into<Vec<u8>>) -> Result<String> {
        let client = &self.consumer.client;
        client.ensure_open()?;
        let value = value.into();
        let base = &self.consumer.prefix;
        loop {
            let key = format!("{base}{}", unique_nanos());
            if put_new(client, &key, value.clone(), 0).await?.is_some() {
                return Ok(key);
            }
        }
    }

    /// Take the oldest item, waiting for one if the queue is empty (up to the timeout
    /// set with [`Queue::with_timeout`]).
    pub async fn dequeue(&self) -> Result<QueueItem> {
        self.consumer.dequeue_within(self.consumer.timeout).await
    }

    /// Like [`Queue::dequeue`], giving up after `timeout` with [`Error::LockTimeout`];
    /// [`Error::Closed`] when the client is closed meanwhile.
    pub async fn dequeue_within(&self, timeout: Option<Duration>) -> Result<QueueItem> {
        self.consumer.dequeue_within(timeout).await
    }

    /// Take the oldest item if there is one; `None` when the queue is empty.
    pub async fn try_dequeue(&self) -> Result<Option<QueueItem>> {
        self.consumer.try_dequeue().await
    }

    /// How many items are in the queue now.
    pub async fn length(&self) -> Result<i64> {
        self.consumer.length().await
    }
}

/// A queue whose items come out by priority (lower number first), FIFO within a
/// priority. Cheap to clone. See the [module docs](self) for the protocol.
#[derive(Clone, Debug)]
pub struct PriorityQueue {
    name: String,
    consumer: Consumer,
}

impl PriorityQueue {
    /// The priority queue `name`. [`Error::InvalidArgument`] for a bad name (as a lock name).
    pub fn new(client: &Client, name: &str) -> Result<PriorityQueue> {
        check_name("priority queue name", name)?;
        Ok(PriorityQueue {
            name: name.to_string(),
            consumer: Consumer {
                client: client.clone(),
                what: format!("priority queue {name:?}"),
                prefix: client.full_key(&format!("{name}/")),
                order: Order::Key,
                timeout: None,
            },
        })
    }

    /// Make [`PriorityQueue::dequeue`] give up after `timeout` ([`Error::LockTimeout`]).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> PriorityQueue {
        self.consumer.timeout = timeout;
        self
    }

    /// The queue name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Add an item with `priority` (0 comes out first); returns its key.
    pub async fn enqueue(&self, value: impl Into<Vec<u8>>, priority: u16) -> Result<String> {
        let client = &self.consumer.client;
        client.ensure_open()?;
        let value = value.into();
        // Go: prefix = fmt.Sprintf("%s%05d", key+"/", pr); newSequentialKV(prefix, val).
        let prefix = format!("{}{priority:05}", self.consumer.prefix);
        let base_key = client.full_key(&format!("__{}/{priority:05}", self.name));
        loop {
            let newest = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend).with_limit(1);
            let last = client.range(prefix.as_str(), Some(newest)).await?;
            let header = last.header().map(|h| h.revision()).unwrap_or(0);
            let seq = match last.kvs().first() {
                None => 0,
                Some(kv) => {
                    let key = String::from_utf8_lossy(kv.key());
                    let field = key.rsplit('/').next().unwrap_or("");
                    let digits: String = field.chars().take_while(|c| c.is_ascii_digit()).collect();
                    digits.parse::<u64>().map_err(|_| {
                        Error::Decode { key: key.to_string(), message: "not a sequence number (Go would fail too)".into() }
                    })? + 1
                }
            };
            let key = format!("{prefix}/{seq:016}");
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(base_key.clone(), CompareOp::Less, header + 1)])
                .and_then(vec![TxnOp::put(base_key.clone(), Vec::<u8>::new(), None), TxnOp::put(key.clone(), value.clone(), None)]);
            let resp = client
                .write(|mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            if resp.succeeded() {
                return Ok(key);
            }
        }
    }

    /// Take the first item (lowest priority number, then oldest), waiting for one if
    /// the queue is empty (up to the timeout set with [`PriorityQueue::with_timeout`]).
    pub async fn dequeue(&self) -> Result<QueueItem> {
        self.consumer.dequeue_within(self.consumer.timeout).await
    }

    /// Like [`PriorityQueue::dequeue`], giving up after `timeout` with
    /// [`Error::LockTimeout`]; [`Error::Closed`] when the client is closed meanwhile.
    pub async fn dequeue_within(&self, timeout: Option<Duration>) -> Result<QueueItem> {
        self.consumer.dequeue_within(timeout).await
    }

    /// Take the first item if there is one; `None` when the queue is empty.
    pub async fn try_dequeue(&self) -> Result<Option<QueueItem>> {
        self.consumer.try_dequeue().await
    }

    /// How many items are in the queue now.
    pub async fn length(&self) -> Result<i64> {
        self.consumer.length().await
    }
}
