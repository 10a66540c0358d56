//! Guarded writes, shared by `LockGuard` and `Leadership` (see `fenced` in
//! [`class_methods!`](crate::members)): each goes through the holder's core `Fence`, so it
//! fails with `FencedError` once the lock or the leadership is not ours.

use etcd_recipes::{Fence, FencedOp};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::Value;
use crate::runtime::spawn_py;

/// Guarded-transaction operations from Python: `("put", key, value)` / `("delete", key)`.
fn ops(ops: &Bound<'_, PyAny>) -> PyResult<Vec<FencedOp>> {
    let bad = || PyTypeError::new_err("ops must be a list of (\"put\", key, value) or (\"delete\", key) tuples");
    let mut out = Vec::new();
    for op in ops.try_iter().map_err(|_| bad())? {
        let op = op?;
        let t = op.cast::<PyTuple>().map_err(|_| bad())?;
        let verb: String = t.get_item(0).map_err(|_| bad())?.extract().map_err(|_| bad())?;
        match (verb.as_str(), t.len()) {
            ("put", 3) => out.push(FencedOp::put(t.get_item(1)?.extract::<String>()?, t.get_item(2)?.extract::<Value>()?.0)),
            ("delete", 2) => out.push(FencedOp::delete(t.get_item(1)?.extract::<String>()?)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

pub fn put<'py>(py: Python<'py>, fence: &Fence, key: String, value: Value) -> PyResult<Bound<'py, PyAny>> {
    let fence = fence.clone();
    spawn_py(py, async move { Ok(fence.put(&key, value.0).await?) })
}

pub fn delete<'py>(py: Python<'py>, fence: &Fence, key: String) -> PyResult<Bound<'py, PyAny>> {
    let fence = fence.clone();
    spawn_py(py, async move { Ok(fence.delete(&key).await?) })
}

pub fn txn<'py>(py: Python<'py>, fence: &Fence, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let (fence, ops) = (fence.clone(), self::ops(ops)?);
    spawn_py(py, async move { Ok(fence.txn(ops).await?) })
}
