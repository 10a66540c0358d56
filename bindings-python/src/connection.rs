//! The connection state's Python face: `client.connection_state` ("CONNECTED",
//! "SUSPENDED", "RECONNECTED" or "LOST") and `async for state in client.connection_states()`
//! (the current state, then every change, until the client closes). Core derives the
//! state; see `core/src/connection.rs` for when each holds and what the recipes do.

use etcd_recipes::{ConnectionState, EndpointHealth};
use pyo3::prelude::*;

use crate::stream::async_iterator;

/// The state's name, as Python sees it.
pub fn name(state: ConnectionState) -> &'static str {
    state.as_str()
}

async_iterator! {
    /// `async for state in client.connection_states()`: the current state, then every change.
    PyConnectionStates("ConnectionStates", ConnectionState) => |state| Ok(name(state))
}

/// How one endpoint looks to the client now (`client.endpoint_health()`).
#[pyclass(module = "etcd_recipes._native", name = "EndpointHealth", frozen, get_all)]
pub struct PyEndpointHealth {
    /// The endpoint as the client uses it (`http://host:port`).
    pub endpoint: String,
    /// Requests, watches and keep-alives are sent to it.
    pub in_rotation: bool,
    /// Its last health probe found a member that answers and knows a raft leader.
    pub serving: bool,
}

#[pymethods]
impl PyEndpointHealth {
    fn __repr__(&self) -> String {
        format!("EndpointHealth(endpoint={:?}, in_rotation={}, serving={})", self.endpoint, self.in_rotation, self.serving)
    }
}

impl From<EndpointHealth> for PyEndpointHealth {
    fn from(h: EndpointHealth) -> Self {
        PyEndpointHealth { endpoint: h.endpoint, in_rotation: h.in_rotation, serving: h.serving }
    }
}
