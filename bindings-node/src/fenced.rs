//! Guarded transactions from JS: the operations of `txn` on `LockGuard` and `Leadership`
//! (whose guarded writes come from [`held_members!`](crate::members)).

use etcd_recipes::FencedOp;
use napi::bindgen_prelude::{Either, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::errors::{self, bytes};

/// One write of a guarded transaction: `{ kind: 'put', key, value }` or `{ kind: 'delete', key }`.
#[napi(object)]
pub struct TxnOp {
    #[napi(ts_type = "'put' | 'delete'")]
    pub kind: String,
    /// The key (namespaced like every recipe key).
    pub key: String,
    /// The value to put (a string or bytes).
    pub value: Option<Either<String, Uint8Array>>,
}

pub(crate) fn ops(env: &Env, ops: Vec<TxnOp>) -> napi::Result<Vec<FencedOp>> {
    ops.into_iter()
        .map(|op| match (op.kind.as_str(), op.value) {
            ("put", Some(v)) => Ok(FencedOp::put(op.key, bytes(v))),
            ("delete", None) => Ok(FencedOp::delete(op.key)),
            ("put", None) => Err(errors::invalid(env, format!("txn put of {:?} has no value", op.key))),
            ("delete", Some(_)) => Err(errors::invalid(env, format!("txn delete of {:?} must not have a value", op.key))),
            (k, _) => Err(errors::invalid(env, format!("txn op kind must be 'put' or 'delete', got {k:?}"))),
        })
        .collect()
}
