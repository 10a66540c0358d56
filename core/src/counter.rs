//! [`Counter`]: an atomic counter on one key holding a decimal integer.
//!
//! # Protocol
//!
//! The counter `key` is one etcd key (namespaced by the client) whose value is a decimal
//! `i64` in ASCII (`"42"`, `"-7"`; surrounding whitespace is tolerated when reading), so
//! `etcdctl get`, Go services and shell scripts read and write it too. A missing key
//! reads as 0.
//!
//! Every change is a compare-and-swap on the key's mod revision:
//! `If ModRevision(key) == seen Then Put(key, new) Else Get(key)`. When another writer
//! got there first, the `Else` branch hands back the fresh value and the change is
//! computed again from it (no extra round trip).
//!
//! # Outcomes
//!
//! A CAS whose answer never came (a member hung, the connection broke, a leader change
//! while it was in flight) is **not** retried: [`Counter::add`] fails with
//! [`Error::UnknownOutcome`] rather than risk applying the delta twice. Read the
//! counter before adding again. Every other failure means the change was not applied.
//! A value that is not a decimal integer fails with [`Error::Decode`] naming the key;
//! an add that would overflow `i64` fails with [`Error::InvalidArgument`].
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::counter::Counter;
//! let hits = Counter::new(&client, "stats/hits")?;
//! let now = hits.add(1).await?;
//! assert!(hits.compare_and_set(now, 0).await? || hits.get().await? != now);
//! # Ok(()) }
//! ```

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tracing::debug;

use crate::client::{check_key, Client};
use crate::error::{Error, Result};

/// An atomic counter on one key. Cheap to clone. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Counter {
    client: Client,
    key: String,
    full: String,
}

/// The value and mod revision last seen (0 and 0 for a missing key).
#[derive(Clone, Copy, Debug)]
struct Seen {
    value: i64,
    mod_rev: i64,
}

impl Counter {
    /// The counter at `key` (namespaced by the client). [`Error::InvalidArgument`] for an
    /// empty key, one over 4096 bytes or one with NUL.
    pub fn new(client: &Client, key: &str) -> Result<Counter> {
        check_key("counter key", key)?;
        Ok(Counter { client: client.clone(), key: key.to_string(), full: client.full_key(key) })
    }

    /// The key, as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn parse(&self, raw: &[u8]) -> Result<i64> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::Decode { key: self.key.clone(), message: "the counter value is not UTF-8 text".into() })?;
        text.trim().parse::<i64>().map_err(|_| Error::Decode {
            key: self.key.clone(),
            message: format!("the counter value {:?} is not a decimal integer", shorten(text)),
        })
    }

    fn seen(&self, kv: Option<&etcd_client::KeyValue>) -> Result<Seen> {
        match kv {
            None => Ok(Seen { value: 0, mod_rev: 0 }),
            Some(kv) => Ok(Seen { value: self.parse(kv.value())?, mod_rev: kv.mod_revision() }),
        }
    }

    async fn read(&self) -> Result<Seen> {
        let resp = self.client.range(self.full.as_str(), None).await?;
        self.seen(resp.kvs().first())
    }

    /// The current value (0 when the key does not exist).
    pub async fn get(&self) -> Result<i64> {
        self.client.ensure_open()?;
        Ok(self.read().await?.value)
    }

    /// Replace `seen` by `new` if the key is unchanged since. `Ok(None)`: done;
    /// `Ok(Some(fresh))`: someone else wrote first, here is what is there now.
    async fn cas(&self, seen: Seen, new: i64) -> Result<Option<Seen>> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(self.full.clone(), CompareOp::Equal, seen.mod_rev)])
            .and_then(vec![TxnOp::put(self.full.clone(), new.to_string(), None)])
            .or_else(vec![TxnOp::get(self.full.clone(), None)]);
        // Not idempotent: sent twice, the second could apply on top of the first. A lost
        // answer is UnknownOutcome, never a silent retry.
        let resp = self
            .client
            .write(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(None);
        }
        let kv = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
            _ => return Err(Error::Etcd(etcd_client::Error::InvalidArgs("unexpected txn response".into()))),
        };
        Ok(Some(self.seen(kv.as_ref())?))
    }

    /// Add `delta` (negative to subtract) and return the new value. Retries on conflict
    /// with other writers; [`Error::UnknownOutcome`] when the write's answer was lost (it
    /// may have been applied: read before adding again).
    pub async fn add(&self, delta: i64) -> Result<i64> {
        self.client.ensure_open()?;
        let mut seen = self.read().await?;
        let mut conflicts = 0u32;
        loop {
            let new = seen.value.checked_add(delta).ok_or_else(|| {
                Error::invalid(format!("counter {:?}: {} + {delta} overflows a 64-bit integer", self.key, seen.value))
            })?;
            match self.cas(seen, new).await? {
                None => {
                    if conflicts > 0 {
                        debug!(key = %self.key, conflicts, "counter add applied after conflicts");
                    }
                    return Ok(new);
                }
                Some(fresh) => {
                    conflicts += 1;
                    seen = fresh;
                }
            }
        }
    }

    /// Set the value to `new` only if it is `expected` now (a missing key counts as 0).
    /// True if it was set.
    pub async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        self.client.ensure_open()?;
        let mut seen = self.read().await?;
        loop {
            if seen.value != expected {
                return Ok(false);
            }
            match self.cas(seen, new).await? {
                None => return Ok(true),
                // Written meanwhile: maybe to the same number (e.g. "7" -> "07"); look again.
                Some(fresh) => seen = fresh,
            }
        }
    }

    /// Set the value, whatever it was. Returns the revision of the write.
    pub async fn set(&self, value: i64) -> Result<i64> {
        self.client.ensure_open()?;
        self.client.put(&self.key, value.to_string()).await
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 40 {
        return s.to_string();
    }
    let mut end = 40;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
