//! [`Fence`]: writes that only happen while a lock or leadership is still ours.
//!
//! A fence is the key that proves ownership (a lock key or a leader key) and its
//! create revision, the **fencing token**. A guarded transaction carries
//! `CreateRevision(key) == token` in its `If`: once the key is gone (released,
//! expired, taken over), the write is refused by etcd itself, whatever this
//! process believes.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};

/// One write inside a guarded transaction. Keys are namespaced like every recipe key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FencedOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl FencedOp {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        FencedOp::Put { key: key.into(), value: value.into() }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        FencedOp::Delete { key: key.into() }
    }
}

/// Ownership proof: a key (full, namespaced) and its create revision.
#[derive(Clone, Debug)]
pub struct Fence {
    client: Client,
    key: String,
    token: i64,
}

impl Fence {
    #[allow(dead_code)] // used by the lock and election
    pub(crate) fn new(client: Client, full_key: String, token: i64) -> Fence {
        Fence { client, key: full_key, token }
    }

    /// The full etcd key that proves ownership.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: the create revision of the key. Strictly increases from one
    /// owner to the next, so downstream systems can reject writes from a stale owner.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The comparison to put in the `If` of your own `etcd_client::Txn`.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.token)
    }

    /// Apply `ops` atomically if and only if ownership still holds; returns the
    /// revision of the write.
    ///
    /// What a failure says about the write:
    /// - **not applied**: [`Error::Fenced`] (ownership was lost), `InvalidArgument`,
    ///   `PermissionDenied`, `Closed`, and `Connect`/`Timeout` (the request never reached
    ///   a member that could apply it);
    /// - **may have been applied**: [`Error::UnknownOutcome`] (sent, but the member hung
    ///   or the connection broke before the answer). Read before writing again.
    pub async fn txn(&self, ops: Vec<FencedOp>) -> Result<i64> {
        let mut then = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                FencedOp::Put { key, value } => {
                    check_key("key", &key)?;
                    then.push(TxnOp::put(self.client.full_key(&key), value, None));
                }
                FencedOp::Delete { key } => {
                    check_key("key", &key)?;
                    then.push(TxnOp::delete(self.client.full_key(&key), None));
                }
            }
        }
        let txn = Txn::new().when(vec![self.compare()]).and_then(then);
        let resp = self
            .client
            .write(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(Error::Fenced(format!(
                "{} no longer has create revision {}: ownership was lost, the write was not applied",
                self.key, self.token
            )));
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// A guarded put; see [`Fence::txn`].
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        self.txn(vec![FencedOp::put(key, value)]).await
    }

    /// A guarded delete; see [`Fence::txn`].
    pub async fn delete(&self, key: &str) -> Result<i64> {
        self.txn(vec![FencedOp::delete(key)]).await
    }
}
