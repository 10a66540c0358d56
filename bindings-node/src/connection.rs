//! The connection state's Node face: `client.connectionState` ('CONNECTED', 'SUSPENDED',
//! 'RECONNECTED' or 'LOST') and `for await (const state of client.connectionStates())`
//! (the current state, then every change, until the client closes). Core derives the
//! state; see `core/src/connection.rs` for when each holds and what the recipes do.

use futures::StreamExt;
use napi_derive::napi;

use crate::client::Client;
use crate::iter::{stream_class, Cell};

stream_class!(
    ConnectionStates,
    String,
    "Promise<IteratorResult<'CONNECTED' | 'SUSPENDED' | 'RECONNECTED' | 'LOST', undefined>>",
    "`for await (const state of client.connectionStates())`: the current state, then every change."
);

/// How one endpoint looks to the client now (`client.endpointHealth()`).
#[napi(object, object_from_js = false)]
pub struct EndpointHealth {
    /// The endpoint as the client uses it (`http://host:port`).
    pub endpoint: String,
    /// Requests, watches and keep-alives are sent to it.
    pub in_rotation: bool,
    /// Its last health probe found a member that answers and knows a raft leader.
    pub serving: bool,
}

#[napi]
impl Client {
    /// Where the connection to etcd stands: 'CONNECTED', 'SUSPENDED' (no member serves;
    /// sessions hold their leases until their deadlines), 'RECONNECTED' or 'LOST' (a
    /// session expired for lack of a confirmed renewal).
    #[napi(getter, ts_return_type = "'CONNECTED' | 'SUSPENDED' | 'RECONNECTED' | 'LOST'")]
    pub fn connection_state(&self) -> &'static str {
        self.core.connection_state().as_str()
    }

    /// The current connection state, then every change, until the client is closed.
    #[napi]
    pub fn connection_states(&self) -> ConnectionStates {
        ConnectionStates(Cell::new(self.core.connection_states().map(|s| Ok(s.as_str().to_string()))))
    }

    /// How each endpoint looks now (in rotation or not; serving or not), in order.
    #[napi]
    pub fn endpoint_health(&self) -> Vec<EndpointHealth> {
        self.core
            .endpoint_health()
            .into_iter()
            .map(|h| EndpointHealth { endpoint: h.endpoint, in_rotation: h.in_rotation, serving: h.serving })
            .collect()
    }
}
