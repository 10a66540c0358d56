//! The connection state of a [`Client`](crate::Client): one stream per client of
//! `CONNECTED` / `SUSPENDED` / `RECONNECTED` / `LOST`, as Curator's connection-state
//! listener gives for ZooKeeper.
//!
//! The state is derived from what the client already runs; it sends nothing of its own:
//!
//! - the **member probes** ([`crate::endpoints`]): every member is asked for its status
//!   every 250 ms (see [`ClientOptions::with_health_check`](crate::ClientOptions::with_health_check)).
//!   A member *serves* when it answers within the probe timeout and knows a raft leader;
//! - the **session keep-alives** ([`crate::session`]): a session whose renewal could not be
//!   confirmed within its TTL is lost.
//!
//! | state | when | what the recipes do meanwhile |
//! |---|---|---|
//! | `CONNECTED` | the client connected (its first state) | everything works |
//! | `SUSPENDED` | no member serves: every probe failed, timed out, or found no leader | sessions keep their leases until their deadline (a lock or a leadership is still held; act with its fencing token only); keep-alives, watches and requests retry on every member; views serve their last copy (a stale read, never a wrong revision); registrations wait |
//! | `LOST` | a session of this client expired for lack of a confirmed renewal (at most its TTL after `SUSPENDED`) | the locks, leaderships, semaphore permits and registrations on that session are lost and their loss signals fire; a leader loop stops its work; a per-use lock wait fails |
//! | `RECONNECTED` | a member serves again after `SUSPENDED` or `LOST` | views re-read and re-watch (their copy is current again); registrations that heal re-register on a new lease; leader loops campaign again; new sessions can be made |
//!
//! A client with several endpoints stays `CONNECTED` while any member serves: a member
//! that hangs or dies is only taken out of rotation. `SUSPENDED` can be brief (a second
//! or two while a cluster elects a new leader). `LOST` is sent once per loss; sessions
//! lost for another reason (revoked by someone else, closed) do not change the state.
//! The stream ends when the client is closed.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// Where a client's connection to etcd stands (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Connected: the first state of a client.
    Connected,
    /// No member serves; sessions hold their leases until their deadlines.
    Suspended,
    /// A member serves again after `Suspended` or `Lost`.
    Reconnected,
    /// A session of this client expired while its renewals could not be confirmed.
    Lost,
}

impl ConnectionState {
    /// The state's name: `"CONNECTED"`, `"SUSPENDED"`, `"RECONNECTED"` or `"LOST"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Suspended => "SUSPENDED",
            ConnectionState::Reconnected => "RECONNECTED",
            ConnectionState::Lost => "LOST",
        }
    }

    /// True in `Connected` and `Reconnected`: a member serves.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected | ConnectionState::Reconnected)
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one client, updated by its probes and sessions.
pub(crate) struct Connection {
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ConnectionState>,
}

impl Connection {
    pub(crate) fn new() -> Connection {
        Connection { state: watch::channel(ConnectionState::Connected).0, events: broadcast::channel(64).0 }
    }

    pub(crate) fn get(&self) -> ConnectionState {
        *self.state.borrow()
    }

    fn move_to(&self, to: ConnectionState, from: impl Fn(ConnectionState) -> bool) {
        let moved = self.state.send_if_modified(|s| {
            if from(*s) {
                *s = to;
                true
            } else {
                false
            }
        });
        if moved {
            match to {
                ConnectionState::Suspended => warn!("connection to etcd suspended: no member serves"),
                ConnectionState::Lost => warn!("connection to etcd lost: a session expired"),
                _ => info!(state = to.as_str(), "connection to etcd restored"),
            }
            let _ = self.events.send(to);
        }
    }

    /// The probes' verdict: does any member serve?
    pub(crate) fn serving(&self, any: bool) {
        if any {
            self.move_to(ConnectionState::Reconnected, |s| !s.is_connected());
        } else {
            self.move_to(ConnectionState::Suspended, |s| s.is_connected());
        }
    }

    /// A session expired because no renewal was confirmed within its TTL.
    pub(crate) fn session_expired(&self) {
        self.move_to(ConnectionState::Lost, |s| s != ConnectionState::Lost);
    }

    pub(crate) fn subscribe(&self) -> (ConnectionState, broadcast::Receiver<ConnectionState>) {
        // Subscribe first: a change after the read is then also in the receiver.
        let rx = self.events.subscribe();
        (self.get(), rx)
    }
}

/// [`Client::connection_states`](crate::Client::connection_states): the current state,
/// then every change, until the client is closed.
pub struct ConnectionStates {
    inner: Pin<Box<dyn Stream<Item = ConnectionState> + Send>>,
}

impl std::fmt::Debug for ConnectionStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionStates")
    }
}

impl ConnectionStates {
    pub(crate) fn new(
        current: ConnectionState,
        rx: broadcast::Receiver<ConnectionState>,
        closed: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> ConnectionStates {
        let changes = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(s) => return Some((s, rx)),
                    Err(broadcast::error::RecvError::Closed) => return None,
                    // Fell more than 64 changes behind: skip to the newest ones.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                }
            }
        });
        let all = futures::StreamExt::chain(futures::stream::iter([current]), changes);
        ConnectionStates { inner: Box::pin(futures::StreamExt::take_until(all, Box::pin(closed))) }
    }

    /// The next state, or `None` once the client is closed.
    pub async fn next(&mut self) -> Option<ConnectionState> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for ConnectionStates {
    type Item = ConnectionState;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
