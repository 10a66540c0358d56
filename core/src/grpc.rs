//! A tonic [`Channel`] balanced over the instances of a [`ServiceView`], following it:
//! an instance that joins (or becomes ready) is added, one that leaves (or drains, or
//! stops passing the view's filter) is removed, an address change replaces the endpoint.
//! Requests are spread by tower's balancer (power of two choices over the endpoints'
//! load). Instances marked down by [`ServiceView::note_error`] stay in the channel: the
//! balancer sees failing connections itself.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::registry::ServiceView;
//! let view = ServiceView::start(&client, "billing").await?;
//! let balanced = view.grpc_channel()?;
//! // e.g. BillingClient::new(balanced.channel())
//! println!("balancing over {:?}", balanced.endpoints());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use tokio::sync::watch;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn, Instrument};

use crate::error::{Error, Result};
use crate::registry::{Instance, ServiceView};

/// How many endpoint changes may wait for the balancer.
const CHANGES_CAPACITY: usize = 1024;

/// Turns an instance into the endpoint to connect to.
pub type EndpointFn = Box<dyn Fn(&Instance) -> std::result::Result<Endpoint, String> + Send + Sync>;

/// A balanced channel that follows a view; see the module docs.
///
/// The channel keeps working with its last endpoints after the view is closed.
#[derive(Clone, Debug)]
pub struct BalancedChannel {
    channel: Channel,
    endpoints: watch::Receiver<Vec<(String, String)>>,
}

impl BalancedChannel {
    /// The channel: give it to any tonic client (`MyServiceClient::new(ch.channel())`).
    /// Cheap to clone; every clone is balanced the same way.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The instances the channel balances over now, as `(id, addr)` in id order. Every
    /// change listed here was handed to the balancer before it shows, so a request made
    /// after reading it goes to one of these.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.endpoints.borrow().clone()
    }

    /// Wait until `f` holds for the endpoints (e.g. the channel dropped a draining
    /// instance). [`Error::Closed`] if the view closes first.
    pub async fn wait_for(&self, f: impl Fn(&[(String, String)]) -> bool) -> Result<Vec<(String, String)>> {
        let mut rx = self.endpoints.clone();
        let got = match rx.wait_for(|e| f(e)).await {
            Ok(e) => Ok(e.clone()),
            Err(_) => Err(Error::Closed("service view")),
        };
        got
    }
}

impl ServiceView {
    /// A channel balanced over the view's ready instances that pass its filter, each
    /// reached at `http://<addr>`. See [`ServiceView::grpc_channel_with`] for TLS or
    /// endpoint settings. Must be called within a tokio runtime ([`Error::InvalidArgument`]
    /// otherwise).
    pub fn grpc_channel(&self) -> Result<BalancedChannel> {
        self.grpc_channel_with(|i| {
            Endpoint::from_shared(format!("http://{}", i.addr)).map_err(|e| format!("address {:?}: {e}", i.addr))
        })
    }

    /// [`ServiceView::grpc_channel`] with the endpoint of each instance made by `endpoint`
    /// (scheme, TLS, timeouts...). An instance whose endpoint cannot be made is left out,
    /// with a warning.
    pub fn grpc_channel_with(
        &self,
        endpoint: impl Fn(&Instance) -> std::result::Result<Endpoint, String> + Send + Sync + 'static,
    ) -> Result<BalancedChannel> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid("grpc_channel must be called within a tokio runtime"))?;
        let _entered = handle.enter();
        let (channel, tx) = Channel::balance_channel::<String>(CHANGES_CAPACITY);
        let (fed, endpoints) = watch::channel(Vec::new());
        let endpoint: EndpointFn = Box::new(endpoint);
        let mut sets = self.updates();
        let view = self.clone();
        let span = tracing::info_span!("etcd_recipes.grpc_channel");
        handle.spawn(
            async move {
                // id -> addr of what the balancer has.
                let mut current: BTreeMap<String, String> = BTreeMap::new();
                loop {
                    let set = tokio::select! {
                        s = sets.next() => s,
                        _ = tx.closed() => None, // every clone of the channel dropped
                    };
                    let Some(set) = set else { break };
                    let opts = view.options();
                    let want: BTreeMap<String, &Instance> =
                        set.iter().filter(|i| opts.admits(i)).map(|i| (i.id.clone(), i)).collect();
                    let mut changes = Vec::new();
                    for (id, addr) in current.iter() {
                        if want.get(id).is_none_or(|i| i.addr != *addr) {
                            changes.push(Change::Remove(id.clone()));
                        }
                    }
                    let mut next = BTreeMap::new();
                    for (id, inst) in want {
                        if current.get(&id) == Some(&inst.addr) {
                            next.insert(id, inst.addr.clone());
                            continue;
                        }
                        match endpoint(inst) {
                            Ok(ep) => {
                                changes.push(Change::Insert(id.clone(), ep));
                                next.insert(id, inst.addr.clone());
                            }
                            Err(e) => warn!(id = %id, error = %e, "instance left out of the channel"),
                        }
                    }
                    for c in changes {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    current = next;
                    debug!(endpoints = current.len(), "balanced channel updated");
                    fed.send_replace(current.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
                }
            }
            .instrument(span),
        );
        Ok(BalancedChannel { channel, endpoints })
    }
}
