//! One Python exception class per core [`ErrorKind`], all under `EtcdRecipesError`.
//!
//! The classes are built once at module init. Three also inherit a builtin so that
//! ordinary `except` clauses work: `InvalidArgumentError(ValueError)`,
//! `TimeoutError_(TimeoutError)`, `ConnectError(ConnectionError)`. Every class has a
//! `code` attribute equal to `ErrorKind::code()` (the Node `err.code`).

use etcd_recipes::{Error, ErrorKind};
use pyo3::exceptions::{PyConnectionError, PyException, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// Python class name, extra builtin base and docstring of each kind.
type ExtraBase = Option<fn(Python<'_>) -> Bound<'_, PyType>>;

fn class_of(kind: ErrorKind) -> (&'static str, ExtraBase, &'static str) {
    use ErrorKind as K;
    match kind {
        K::InvalidArgument => ("InvalidArgumentError", Some(|py| py.get_type::<PyValueError>()),
            "A bad argument: empty or malformed key, name, endpoint, TTL, timeout... (also a ValueError)."),
        K::Connect => ("ConnectError", Some(|py| py.get_type::<PyConnectionError>()),
            "etcd could not be reached (also a ConnectionError)."),
        K::Timeout => ("EtcdTimeoutError", Some(|py| py.get_type::<PyTimeoutError>()),
            "An etcd request did not finish within the request timeout (also a TimeoutError)."),
        K::SessionLost => ("SessionLostError", None, "The session's lease expired or was revoked: what depended on it is gone."),
        K::LockTimeout => ("LockTimeoutError", None,
            "Gave up waiting: a lock not acquired in time (or at once, for try_acquire), a campaign not won in time."),
        K::LockLost => ("LockLostError", None, "The lock was lost while held (its session ended)."),
        K::NotLeader => ("NotLeaderError", None, "This candidate is no longer the leader."),
        K::Fenced => ("FencedError", None, "A guarded write was refused: the lock or leadership behind it is no longer ours."),
        K::Compacted => ("CompactedError", None, "The requested revision has been compacted away."),
        K::PermissionDenied => ("PermissionDeniedError", None, "etcd refused the request: authentication or permission failure."),
        K::Decode => ("DecodeError", None, "A stored value could not be decoded (not UTF-8 / not JSON); the message names the key."),
        K::Closed => ("ClosedError", None, "The client, session, view or stream was already closed."),
        K::UnknownOutcome => ("UnknownOutcomeError", None,
            "A write was sent but no answer came back: it may or may not have been applied. Read before retrying."),
        _ => ("EtcdError", None, "Any other error reported by etcd or the transport."),
    }
}

struct Classes {
    base: Py<PyType>,
    kinds: Vec<(ErrorKind, Py<PyType>)>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let module = "etcd_recipes";
        let type_ = py.get_type::<PyType>();
        let ns = PyDict::new(py);
        ns.set_item("__module__", module)?;
        ns.set_item("code", "ETCD")?;
        ns.set_item("__doc__", "Base class of every error raised by etcd_recipes. `code` names the kind.")?;
        let bases = PyTuple::new(py, [py.get_type::<PyException>()])?;
        let base = type_.call1(("EtcdRecipesError", bases, ns))?.cast_into::<PyType>()?;
        let mut kinds = Vec::new();
        for kind in ErrorKind::ALL {
            let (name, extra, doc) = class_of(kind);
            let ns = PyDict::new(py);
            ns.set_item("__module__", module)?;
            ns.set_item("code", kind.code())?;
            ns.set_item("__doc__", doc)?;
            let mut b = vec![base.clone()];
            if let Some(f) = extra {
                b.push(f(py));
            }
            let bases = PyTuple::new(py, b)?;
            let cls = type_.call1((name, bases, ns))?.cast_into::<PyType>()?;
            kinds.push((kind, cls.unbind()));
        }
        Ok(Classes { base: base.unbind(), kinds })
    })
}

/// Add every class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let c = classes(py)?;
    m.add("EtcdRecipesError", c.base.bind(py))?;
    for (kind, cls) in &c.kinds {
        m.add(class_of(*kind).0, cls.bind(py))?;
    }
    Ok(())
}

/// The message: core's Display, plus every underlying cause not already in it.
fn message(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": caused by: ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

/// Convert a core error into the matching Python exception (needs the interpreter).
pub fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    let kind = e.kind();
    let msg = message(e);
    match classes(py) {
        Ok(c) => {
            let cls = c.kinds.iter().find(|(k, _)| *k == kind).map(|(_, c)| c).unwrap_or(&c.base);
            match cls.bind(py).call1((msg,)) {
                Ok(inst) => PyErr::from_value(inst),
                Err(err) => err,
            }
        }
        Err(err) => err,
    }
}

/// `InvalidArgumentError(msg)`: bad input caught at the boundary, before core sees it.
pub fn invalid(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    to_py(py, &Error::InvalidArgument(msg.into()))
}

/// An error produced off the interpreter (in a tokio task): converted to a Python
/// exception only when the result is handed to asyncio, under the interpreter gate.
#[derive(Debug)]
pub enum Failure {
    Core(Error),
    Py(PyErr),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Py(e)
    }
}

impl Failure {
    pub fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Core(e) => to_py(py, &e),
            Failure::Py(e) => e,
        }
    }
}

/// Result of a future run by `spawn_py`.
pub type FResult<T> = Result<T, Failure>;

/// `?`-friendly conversion of core results in synchronous methods (attached).
pub trait CoreResultExt<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> CoreResultExt<T> for etcd_recipes::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, &e))
    }
}
