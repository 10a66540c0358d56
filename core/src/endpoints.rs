//! Endpoint health: which etcd members a [`Client`](crate::Client) sends to.
//!
//! etcd-client balances requests over one channel per endpoint, and a member that
//! hangs (SIGSTOP, a disk stall, a frozen VM) keeps accepting TCP connections, so the
//! balancer keeps handing it requests that wait for their whole deadline. Here every
//! member gets a channel of its own and a health state:
//!
//! - a prober asks each member for its status every [`HealthCheck::interval`]; a member
//!   that does not answer within [`HealthCheck::timeout`] is taken out of rotation, and
//!   put back as soon as it answers again;
//! - a request that finds a member dead (connection refused) or hung takes it out at once;
//! - requests go round-robin over the members in rotation (over all of them when none is,
//!   so that a cluster that lost its leader for a moment is still tried);
//! - work in flight on a member that is taken out learns it at once ([`Members::wait_down`]):
//!   reads and idempotent writes move to another member, other writes report an
//!   unknown outcome instead of waiting for their deadline; watches and lease keep-alives
//!   re-open on a healthy member.
//!
//! The same approach as etcd's Go client (a health-checked endpoint list whose retry
//! interceptor retries only what is safe to repeat), with quarantine of hung members.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::connection::Connection;

/// How members are probed (see [`ClientOptions::with_health_check`](crate::ClientOptions::with_health_check)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between two probes of one member (default 250 ms).
    pub interval: Duration,
    /// A member that does not answer a probe within this is taken out of rotation
    /// (default 750 ms). A hung member is therefore out within `interval + timeout`.
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck { interval: Duration::from_millis(250), timeout: Duration::from_millis(750) }
    }
}

/// How one member looks to a client now (see [`Client::endpoint_health`](crate::Client::endpoint_health)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint, as the client uses it (`http://host:port` or `https://host:port`).
    pub endpoint: String,
    /// Requests, watches and keep-alives are sent to it.
    pub in_rotation: bool,
    /// Its last health probe was answered by a member that knows a raft leader.
    pub serving: bool,
}

/// One member: its own channel, and whether it is in rotation.
struct Member {
    endpoint: String,
    /// `None` until the member could be connected (authentication needs a round trip).
    client: RwLock<Option<Arc<etcd_client::Client>>>,
    healthy: AtomicBool,
    /// The last probe's verdict: answered and knows a raft leader (for the connection state).
    serving: AtomicBool,
    /// Bumped every time a probe finds the member hung or dead; work on it waits for a change.
    down: watch::Sender<u64>,
    /// Its raft member id, from its last answered probe (0: not known yet).
    id: AtomicU64,
}

/// The members of one client, with their health.
pub(crate) struct Members {
    members: Vec<Member>,
    next: AtomicUsize,
    /// The raft leader the probes last reported (0: not known yet).
    leader: AtomicU64,
    /// Bumped when the probes see a new leader: writes in flight may have been dropped.
    leader_changed: watch::Sender<u64>,
    connect_options: etcd_client::ConnectOptions,
    probers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The client's connection state, derived from the probes and the sessions.
    connection: Connection,
}

/// The member a piece of work was sent to.
#[derive(Clone)]
pub(crate) struct Picked {
    pub index: usize,
    pub client: Conn,
}

/// A member's connection, handed to each request. An `etcd_client::Client` holds eight
/// service clients, each with two channels, and cloning and dropping one for every
/// request cost 1.4 us of allocations and reference counts (about 5% of the client's
/// CPU when registering 2,000 instances); this clones only the service client a
/// request uses. The methods have the signatures of `etcd_client::Client`'s.
#[derive(Clone)]
pub(crate) struct Conn(Arc<etcd_client::Client>);

impl Conn {
    /// A full client of this member (for anything not below).
    pub(crate) fn etcd(&self) -> etcd_client::Client {
        (*self.0).clone()
    }
    pub(crate) fn watch_client(&self) -> etcd_client::WatchClient {
        self.0.watch_client()
    }
    pub(crate) fn lease_client(&self) -> etcd_client::LeaseClient {
        self.0.lease_client()
    }
    pub(crate) async fn get(&mut self, key: impl Into<Vec<u8>>, options: Option<etcd_client::GetOptions>) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        self.0.kv_client().get(key, options).await
    }
    pub(crate) async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<etcd_client::PutOptions>,
    ) -> Result<etcd_client::PutResponse, etcd_client::Error> {
        self.0.kv_client().put(key, value, options).await
    }
    pub(crate) async fn delete(
        &mut self,
        key: impl Into<Vec<u8>>,
        options: Option<etcd_client::DeleteOptions>,
    ) -> Result<etcd_client::DeleteResponse, etcd_client::Error> {
        self.0.kv_client().delete(key, options).await
    }
    pub(crate) async fn txn(&mut self, txn: etcd_client::Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.0.kv_client().txn(txn).await
    }
    pub(crate) async fn lease_grant(
        &mut self,
        ttl: i64,
        options: Option<etcd_client::LeaseGrantOptions>,
    ) -> Result<etcd_client::LeaseGrantResponse, etcd_client::Error> {
        self.0.lease_client().grant(ttl, options).await
    }
    pub(crate) async fn lease_revoke(&mut self, id: i64) -> Result<etcd_client::LeaseRevokeResponse, etcd_client::Error> {
        self.0.lease_client().revoke(id).await
    }
    pub(crate) async fn lease_time_to_live(
        &mut self,
        id: i64,
        options: Option<etcd_client::LeaseTimeToLiveOptions>,
    ) -> Result<etcd_client::LeaseTimeToLiveResponse, etcd_client::Error> {
        self.0.lease_client().time_to_live(id, options).await
    }
}

impl Members {
    /// `members`: endpoint, its client if connected, and whether it starts in rotation.
    /// At least one member must have a client.
    pub(crate) fn new(
        members: Vec<(String, Option<etcd_client::Client>, bool)>,
        connect_options: etcd_client::ConnectOptions,
    ) -> Arc<Members> {
        Arc::new(Members {
            members: members
                .into_iter()
                .map(|(endpoint, client, healthy)| Member {
                    endpoint,
                    healthy: AtomicBool::new(healthy && client.is_some()),
                    serving: AtomicBool::new(true),
                    client: RwLock::new(client.map(Arc::new)),
                    down: watch::channel(0).0,
                    id: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            leader: AtomicU64::new(0),
            leader_changed: watch::channel(0).0,
            connect_options,
            probers: std::sync::Mutex::new(Vec::new()),
            connection: Connection::new(),
        })
    }

    pub(crate) fn endpoint(&self, index: usize) -> &str {
        &self.members[index].endpoint
    }

    fn client(&self, index: usize) -> Option<Conn> {
        self.members[index].client.read().unwrap_or_else(|e| e.into_inner()).clone().map(Conn)
    }

    /// The next member in rotation (round-robin); if none is in rotation, the next one
    /// that has a connection (a cluster electing a new leader still gets tried).
    pub(crate) fn pick(&self) -> Picked {
        let n = self.members.len();
        let start = if n == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) };
        let order = (0..n).map(|i| (start + i) % n);
        let healthy = order.clone().find(|&i| self.members[i].healthy.load(Ordering::Relaxed));
        for index in healthy.into_iter().chain(order) {
            if let Some(client) = self.client(index) {
                return Picked { index, client };
            }
        }
        unreachable!("a connected client has at least one member with a connection")
    }

    /// The member the probes last reported as the raft leader, if it is in rotation.
    /// Work that a follower would forward to the leader one request at a time (lease
    /// renewals) costs the cluster about half as much sent there directly.
    pub(crate) fn pick_leader(&self) -> Option<Picked> {
        let leader = self.leader.load(Ordering::Acquire);
        if leader == 0 {
            return None;
        }
        let index = self.members.iter().position(|m| m.id.load(Ordering::Relaxed) == leader && m.healthy.load(Ordering::Relaxed))?;
        self.client(index).map(|client| Picked { index, client })
    }

    /// Another member than `not` if one is in rotation (for a retry), else any.
    pub(crate) fn pick_other(&self, not: usize) -> Picked {
        let n = self.members.len();
        let mut p = self.pick();
        for _ in 1..n {
            if p.index != not {
                break;
            }
            p = self.pick();
        }
        p
    }

    /// Take a member out of rotation because a probe found it hung or dead, and tell
    /// the work in flight on it. With a single member there is nowhere else to go.
    fn mark_down(&self, index: usize, why: &str) {
        if self.members.len() == 1 {
            return;
        }
        let m = &self.members[index];
        if m.healthy.swap(false, Ordering::AcqRel) {
            warn!(endpoint = %m.endpoint, reason = why, "etcd member out of rotation");
        }
        m.down.send_modify(|g| *g += 1);
    }

    /// Take a member out of rotation until its next good probe, because a request on it
    /// failed or took too long. Work in flight on it goes on.
    pub(crate) fn note_slow(&self, index: usize, why: &str) {
        if self.members.len() == 1 {
            return;
        }
        let m = &self.members[index];
        if m.healthy.swap(false, Ordering::AcqRel) {
            debug!(endpoint = %m.endpoint, reason = why, "etcd member out of rotation until its next probe");
        }
    }

    fn mark_up(&self, index: usize) {
        let m = &self.members[index];
        if !m.healthy.swap(true, Ordering::AcqRel) {
            debug!(endpoint = %m.endpoint, "etcd member in rotation");
        }
    }

    /// Resolves when a probe next finds `index` hung or dead. Never resolves for a single member.
    pub(crate) fn wait_down(&self, index: usize) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.members[index].down.subscribe();
        rx.mark_unchanged();
        async move {
            if rx.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
    }

    /// Resolves when the probes next see a new raft leader (a request forwarded to the old
    /// one may never be answered). Never resolves for a single member.
    pub(crate) fn wait_leader_change(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.leader_changed.subscribe();
        rx.mark_unchanged();
        async move {
            if rx.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
    }

    fn saw_leader(&self, leader: u64) {
        if leader == 0 {
            return;
        }
        let before = self.leader.swap(leader, Ordering::AcqRel);
        if before != 0 && before != leader {
            info!(old = format_args!("{before:x}"), new = format_args!("{leader:x}"), "etcd leader changed");
            self.leader_changed.send_modify(|g| *g += 1);
        }
    }

    /// How each member looks now, in the order of the endpoints.
    pub(crate) fn health(&self) -> Vec<EndpointHealth> {
        self.members
            .iter()
            .map(|m| EndpointHealth {
                endpoint: m.endpoint.clone(),
                in_rotation: m.healthy.load(Ordering::Acquire),
                serving: m.serving.load(Ordering::Acquire),
            })
            .collect()
    }

    /// The client's connection state (see [`crate::connection`]).
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Record a probe's verdict on whether `index` serves, and update the connection state.
    fn set_serving(&self, index: usize, serving: bool) {
        self.members[index].serving.store(serving, Ordering::Release);
        self.connection.serving(self.members.iter().any(|m| m.serving.load(Ordering::Acquire)));
    }

    /// Start one prober per member. With a single member the probes only feed the
    /// connection state (there is no other member to rotate to).
    pub(crate) fn start_probers(self: &Arc<Self>, check: HealthCheck) {
        let mut tasks = self.probers.lock().unwrap_or_else(|e| e.into_inner());
        for index in 0..self.members.len() {
            tasks.push(tokio::spawn(probe(Arc::downgrade(self), index, check)));
        }
    }
}

impl Members {
    pub(crate) fn stop_probers(&self) {
        for t in self.probers.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for t in self.probers.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

async fn probe(weak: Weak<Members>, index: usize, check: HealthCheck) {
    let mut was_down = false;
    loop {
        tokio::time::sleep(check.interval).await;
        let Some(members) = weak.upgrade() else { return };
        let client = members.client(index);
        let (endpoint, options) = (members.endpoint(index).to_string(), members.connect_options.clone());
        drop(members);
        let answer = tokio::time::timeout(check.timeout, async {
            let mut c = match client {
                Some(c) => c.etcd(),
                None => etcd_client::Client::connect([endpoint.as_str()], Some(options)).await?,
            };
            match c.status().await {
                Ok(st) => {
                    let id = st.header().map(|h| h.member_id()).unwrap_or(0);
                    Ok((c, st.leader(), id, st.leader() != 0))
                }
                // Authenticated but not allowed to ask: the member answered.
                Err(etcd_client::Error::GRpcStatus(s))
                    if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) =>
                {
                    Ok((c, 0, 0, true))
                }
                Err(e) => Err(e),
            }
        })
        .await;
        let Some(members) = weak.upgrade() else { return };
        match answer {
            Ok(Ok((c, leader, id, serving))) => {
                members.members[index].client.write().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| Arc::new(c));
                if id != 0 {
                    members.members[index].id.store(id, Ordering::Relaxed);
                }
                members.saw_leader(leader);
                members.set_serving(index, serving);
                if was_down {
                    info!(endpoint = %endpoint, "etcd member answers again; back in rotation");
                }
                was_down = false;
                members.mark_up(index);
            }
            Ok(Err(e)) => {
                debug!(endpoint = %endpoint, error = %e, "health probe failed");
                was_down = true;
                members.set_serving(index, false);
                members.mark_down(index, "health probe failed");
            }
            Err(_) => {
                was_down = true;
                members.set_serving(index, false);
                members.mark_down(index, "no answer to a health probe");
            }
        }
    }
}

/// A watch on one member. It ends with an error as soon as a probe finds that member
/// hung, so that the owner re-reads and watches again on a member in rotation.
pub(crate) struct MemberWatch {
    stream: etcd_client::WatchStream,
    down: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    members: Arc<Members>,
    index: usize,
}

impl MemberWatch {
    /// Open a watch on a member in rotation (bounded by `timeout`: a hung member may
    /// never answer the request).
    pub(crate) async fn open(
        members: &Arc<Members>,
        key: impl Into<Vec<u8>>,
        options: etcd_client::WatchOptions,
        timeout: Duration,
    ) -> Result<MemberWatch, etcd_client::Error> {
        let picked = members.pick();
        let mut down = Box::pin(members.wait_down(picked.index));
        let mut wc = picked.client.watch_client();
        let endpoint = members.endpoint(picked.index).to_string();
        let opened = tokio::select! {
            r = tokio::time::timeout(timeout, wc.watch(key, Some(options))) => r,
            _ = &mut down => return Err(hung(&endpoint)),
        };
        match opened {
            Ok(Ok(stream)) => Ok(MemberWatch { stream, down, members: members.clone(), index: picked.index }),
            Ok(Err(e)) => {
                members.note_slow(picked.index, "watch could not be opened");
                Err(e)
            }
            Err(_) => {
                members.note_slow(picked.index, "watch not opened in time");
                Err(etcd_client::Error::WatchError(format!("{endpoint}: watch not created within {timeout:?}")))
            }
        }
    }

    /// The next response, `Ok(None)` when the stream ends, an error when it breaks or
    /// its member stops answering.
    pub(crate) async fn message(&mut self) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
        let r = tokio::select! {
            r = self.stream.message() => r,
            _ = &mut self.down => return Err(hung(self.members.endpoint(self.index))),
        };
        if r.is_err() {
            self.members.note_slow(self.index, "watch stream broke");
        }
        r
    }
}

fn hung(endpoint: &str) -> etcd_client::Error {
    etcd_client::Error::WatchError(format!("{endpoint} stopped answering; watching on another member"))
}
