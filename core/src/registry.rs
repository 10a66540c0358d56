//! Service registry and discovery, in the key layout and value format of etcd's Go
//! `naming/endpoints` package (and the older `clientv3/naming` resolver), so that Go
//! gRPC clients using etcd's resolver discover services registered here, and the
//! other way round.
//!
//! - key: `<namespace><service>/<instance id>`
//! - value: `{"Op":0,"Addr":"host:port","Metadata":<any JSON or null>}`
//!
//! A [`Registration`] keeps its instance key alive under a lease and heals itself: if
//! the lease is lost (revoked, expired during a partition, etcd wiped) it grants a new
//! one and puts the key again; if the key is deleted from outside it puts it again.
//! Self-healing can be turned off ([`RegisterOptions::self_heal`]): the registration then
//! ends as [`RegistrationState::Lost`]. Registered on a [`Session`] you own
//! ([`Registration::register_on`], `session.register(..)`), it lives and dies with that
//! session (advertise a service only while it leads, for instance) and never grants a
//! lease of its own.
//!
//! To see a delete from outside, a registration watches its key on the client's one
//! shared watch stream; the second and later registrations of one service in one client
//! share one watch of the service's deletes instead of a watch each (see
//! [`crate::watchmux`]), so registering thousands of instances from one process costs
//! etcd one watch, not thousands.
//!
//! An instance tells discovery whether it takes traffic with its [`Readiness`]
//! (`ready`, `not_ready`, `draining`), kept inside the metadata object under the key
//! `"readiness"` (absent when ready), so the value stays what Go's `naming/endpoints`
//! and the gRPC resolver read. Metadata and readiness change in place: one put on the
//! same key and lease.
//!
//! A [`ServiceView`] is a live, local copy of a service's instances (a snapshot at
//! revision `R`, then a watch from `R + 1`) with a stream of changes and pickers (see
//! [`crate::picker`]): round robin, random, sticky, weighted, a preferred zone, a filter,
//! and a down-instance policy fed by [`ServiceView::note_error`]. Instances that are not
//! ready are not picked unless the view includes them. [`ServiceView::grpc_channel`] is
//! a tonic channel balanced over the view's instances, following it.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::registry::{RegisterOptions, Registration, ServiceView};
//! let reg = Registration::register(&client, RegisterOptions::new("api", "api-1", "10.0.0.1:8080")).await?;
//! let view = ServiceView::start(&client, "api").await?;
//! if let Some(inst) = view.pick_round_robin() {
//!     println!("calling {} at {}", inst.id, inst.addr);
//! }
//! reg.close().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Event, EventType, KeyValue, PutOptions};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::{check_key, Client};
use crate::mirror::{load, spawn_mirror, subscription_stream, warn_if_backwards, Range, Sink, CHANNEL_CAPACITY};
use crate::error::{Error, Result};
pub use crate::picker::{DownInstancePolicy, InstanceFilter, Picker, Readiness, ViewOptions};
use crate::picker::{wire_metadata, Chooser};
use crate::session::Session;
use crate::watchmux::KeyChange;

/// Default registration lease TTL, in seconds.
pub const DEFAULT_TTL_SECS: i64 = 10;

/// One instance of a service, as discovered.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The instance id (the last segment of its key).
    pub id: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// Free-form metadata; `Null` when absent. Includes the `"readiness"` key when the
    /// instance is not ready.
    pub metadata: serde_json::Value,
}

impl Instance {
    /// The readiness written in the metadata (absent: ready).
    pub fn readiness(&self) -> Readiness {
        Readiness::of(&self.metadata)
    }
}

/// What to register: build with [`RegisterOptions::new`].
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    pub service: String,
    pub id: String,
    pub addr: String,
    pub metadata: serde_json::Value,
    /// Lease TTL in seconds (default 10): how long the instance stays listed after the
    /// process dies without closing. Not used on a given session.
    pub ttl_secs: i64,
    /// The readiness to register with (default ready).
    pub readiness: Readiness,
    /// Put the key back when it is deleted from outside and, on a lease of its own,
    /// re-grant the lease when it is lost (default `true`). Off: the registration ends as
    /// [`RegistrationState::Lost`].
    pub self_heal: bool,
}

impl RegisterOptions {
    /// Register instance `id` of `service`, reachable at `addr` (`host:port`).
    pub fn new(service: impl Into<String>, id: impl Into<String>, addr: impl Into<String>) -> Self {
        RegisterOptions {
            service: service.into(),
            id: id.into(),
            addr: addr.into(),
            metadata: serde_json::Value::Null,
            ttl_secs: DEFAULT_TTL_SECS,
            readiness: Readiness::Ready,
            self_heal: true,
        }
    }

    /// Register with this readiness (e.g. `NotReady` until warmed up).
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Turn self-healing on (the default) or off.
    pub fn self_heal(mut self, on: bool) -> Self {
        self.self_heal = on;
        self
    }

    /// Attach metadata (any JSON).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Set the lease TTL in seconds.
    pub fn ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl_secs = ttl_secs;
        self
    }
}

/// Where a [`Registration`] stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// The key is in etcd under this lease, which is kept alive.
    Registered { lease_id: i64 },
    /// The lease or the key was lost; a new lease is being granted and the key re-put.
    Recovering { reason: String },
    /// The lease or the key was lost and the registration does not heal (self-healing
    /// off, or a session it does not own): the instance is gone until registered again.
    Lost { reason: String },
    /// Closed (key deleted, lease revoked) or dropped.
    Closed,
}

impl RegistrationState {
    /// `"registered"`, `"recovering"`, `"lost"` or `"closed"`: the name every face uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            RegistrationState::Registered { .. } => "registered",
            RegistrationState::Recovering { .. } => "recovering",
            RegistrationState::Lost { .. } => "lost",
            RegistrationState::Closed => "closed",
        }
    }
}

fn check_service(service: &str) -> Result<()> {
    check_key("service name", service)?;
    if service.ends_with('/') {
        return Err(Error::invalid(format!("service name {service:?} must not end with '/'")));
    }
    Ok(())
}

/// Check what to register; returns the metadata to write (readiness included).
fn check_options(opts: &RegisterOptions) -> Result<serde_json::Value> {
    check_service(&opts.service)?;
    check_id(&opts.id)?;
    if opts.addr.trim().is_empty() {
        return Err(Error::invalid("instance address must not be empty"));
    }
    wire_metadata(&opts.metadata, opts.readiness)
}

fn check_id(id: &str) -> Result<()> {
    check_key("instance id", id)?;
    if id.contains('/') {
        return Err(Error::invalid(format!("instance id {id:?} must not contain '/'")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

/// The value as Go writes it (`naming.Update` / `endpoints.Endpoint`); field order kept.
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "Op")]
    op: u8,
    #[serde(rename = "Addr")]
    addr: &'a str,
    #[serde(rename = "Metadata")]
    metadata: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(rename = "Op", default)]
    op: u8,
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "Metadata", default)]
    metadata: serde_json::Value,
}

/// Encode an instance value exactly as Go's `naming/endpoints` does:
/// `{"Op":0,"Addr":"host:port","Metadata":...}` (`null` when there is no metadata).
pub fn encode_value(addr: &str, metadata: &serde_json::Value) -> Vec<u8> {
    // Serializing a struct of a str and a Value cannot fail.
    serde_json::to_vec(&WireOut { op: 0, addr, metadata }).unwrap_or_default()
}

/// Decode an instance value (ours, Go's, or one put by hand with etcdctl). `Op` and
/// `Metadata` may be missing; `Addr` must be a non-empty string; `Op` must be 0 (Add).
pub fn decode_value(id: &str, value: &[u8]) -> Result<Instance> {
    let w: WireIn = serde_json::from_slice(value)
        .map_err(|e| Error::Decode { key: id.to_string(), message: format!("not an endpoint JSON value: {e}") })?;
    if w.op != 0 {
        return Err(Error::Decode { key: id.to_string(), message: format!("Op is {}, not 0 (Add)", w.op) });
    }
    if w.addr.is_empty() {
        return Err(Error::Decode { key: id.to_string(), message: "Addr is empty".into() });
    }
    Ok(Instance { id: id.to_string(), addr: w.addr, metadata: w.metadata })
}

/// Parse one key-value under `prefix` (full key), skipping (with a warning) what is not an instance.
fn parse_kv(prefix: &[u8], kv: &KeyValue) -> Option<Instance> {
    let id = kv.key().strip_prefix(prefix)?;
    let id = String::from_utf8_lossy(id);
    if id.is_empty() {
        return None;
    }
    match decode_value(&id, kv.value()) {
        Ok(i) => Some(i),
        Err(e) => {
            warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping unparsable instance value");
            None
        }
    }
}

fn service_range(client: &Client, service: &str) -> Range {
    Range { key: client.full_key(&format!("{service}/")), prefix: true }
}

/// The instances of `service` at one revision (one Get), sorted by id, and that revision.
pub async fn list_instances(client: &Client, service: &str) -> Result<(Vec<Instance>, i64)> {
    client.ensure_open()?;
    check_service(service)?;
    let range = service_range(client, service);
    let (kvs, rev) = load(client, &range, None).await?;
    let mut out: Vec<Instance> = kvs.iter().filter_map(|kv| parse_kv(range.key.as_bytes(), kv)).collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, rev))
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

fn lease_not_found(e: &Error) -> bool {
    e.to_string().contains("lease not found")
}

struct RegShared {
    client: Client,
    key: String,
    ttl: i64,
    /// The instance as written: its metadata includes the readiness key.
    instance: Mutex<Instance>,
    /// The session is ours (granted for this registration): closed with it, re-granted on loss.
    owns_session: bool,
    self_heal: bool,
    session: Mutex<Option<Session>>,
    lease_id: AtomicI64,
    state: watch::Sender<RegistrationState>,
    reregistrations: AtomicU64,
    closed: AtomicBool,
    /// Serialises puts of our key, so an older value never lands after a newer one.
    put_lock: tokio::sync::Mutex<()>,
    /// The task that keeps the registration in place.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RegShared {
    fn stop_task(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// Delete the key and revoke the lease. Idempotent.
    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_task();
        self.state.send_replace(RegistrationState::Closed);
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        let key = self.key.clone();
        let deleted = self
            .client
            .idempotent(|mut c| {
                let k = key.clone();
                async move { c.delete(k, None).await }
            })
            .await;
        let revoked = match session {
            Some(s) if self.owns_session => s.close().await,
            _ => Ok(()),
        };
        info!(key = %self.key, "registration closed");
        deleted?;
        revoked
    }
}

impl crate::lifecycle::Child for RegShared {
    fn close(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = RegShared::close(&self).await;
        })
    }
}

impl RegShared {
    fn session(&self) -> Option<Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn value(&self) -> Vec<u8> {
        let i = self.instance.lock().unwrap_or_else(|p| p.into_inner());
        encode_value(&i.addr, &i.metadata)
    }

    /// Put our key with this lease; returns the revision.
    async fn put(&self, lease: i64) -> Result<i64> {
        let _g = self.put_lock.lock().await;
        let value = self.value();
        let key = self.key.clone();
        let resp = self
            .client
            // The same registration put again: retried like a read.
            .idempotent(|mut c| {
                let (k, v) = (key.clone(), value.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The registration is gone and does not heal: say so, and give back a lease of our own.
    async fn end_lost(&self, reason: String) {
        warn!(key = %self.key, %reason, "registration lost; not healing");
        self.state.send_replace(RegistrationState::Lost { reason });
        if self.owns_session {
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(s) = session {
                let _ = s.close().await;
            }
        }
    }

    /// Grant a new lease and put the key again, until it works. Returns the put revision.
    async fn recover(&self, reason: String) -> i64 {
        warn!(key = %self.key, %reason, "registration lost; re-registering");
        self.state.send_replace(RegistrationState::Recovering { reason });
        let old = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut backoff = Duration::from_millis(50);
        let mut fresh: Option<Session> = None;
        loop {
            if fresh.as_ref().is_none_or(|s| !s.is_alive()) {
                let t = self.client.request_timeout().min(Duration::from_secs(self.ttl.max(2) as u64));
                match tokio::time::timeout(t, Session::new(&self.client, self.ttl)).await {
                    Ok(Ok(s)) => fresh = Some(s),
                    Ok(Err(e)) => debug!(error = %e, "lease grant failed; retrying"),
                    Err(_) => debug!("lease grant timed out; retrying"),
                }
            }
            if let Some(s) = fresh.as_ref().filter(|s| s.is_alive()) {
                match self.put(s.lease_id()).await {
                    Ok(rev) => {
                        let lease = s.lease_id();
                        self.lease_id.store(lease, Ordering::Release);
                        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = fresh.take();
                        let n = self.reregistrations.fetch_add(1, Ordering::AcqRel) + 1;
                        crate::metrics::registration_healed(&self.client, &self.key);
                        self.state.send_replace(RegistrationState::Registered { lease_id: lease });
                        info!(key = %self.key, lease = format_args!("{lease:x}"), reregistrations = n, "re-registered");
                        if let Some(old) = old {
                            // Best effort: the old lease may still exist if we gave up on it early.
                            let mut lc = self.client.etcd().lease_client();
                            let id = old.lease_id();
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(Duration::from_secs(2), lc.revoke(id)).await;
                            });
                        }
                        return rev;
                    }
                    Err(e) => debug!(error = %e, "re-put failed; retrying"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// Keep the registration in place: react to a lost lease and to our key being deleted.
///
/// `first_watch` watches the key from just after the first put; a later watch starts
/// after the put of a re-registration, or after a read that found the key in place.
async fn guard(
    sh: Arc<RegShared>,
    _tracked: crate::metrics::Tracked,
    mut interest: crate::watchmux::Interest,
    first_watch: crate::watchmux::KeyWatch,
) {
    let mut watch_from = None;
    let mut first_watch = Some(first_watch);
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(session) = sh.session() else { return };
        if !session.is_alive() {
            first_watch = None;
            // A session closed by its owner (the client closed, process shutdown) ends
            // the registration; only a lost one is healed.
            let ending = sh.closed.load(Ordering::Acquire) || crate::lifecycle::is_shutting_down();
            match session.lost().await {
                Some(reason) if !ending && sh.owns_session && sh.self_heal => {
                    watch_from = Some(sh.recover(reason).await + 1);
                    continue;
                }
                Some(reason) if !ending => {
                    sh.end_lost(reason).await;
                    return;
                }
                None if !ending && !sh.owns_session => {
                    // The owner closed the session it lent us: the registration ends with it.
                    sh.closed.store(true, Ordering::Release);
                    sh.session.lock().unwrap_or_else(|p| p.into_inner()).take();
                    sh.state.send_replace(RegistrationState::Closed);
                    info!(key = %sh.key, "registration closed with its session");
                    return;
                }
                _ => return,
            }
        }
        // (Re)start the watch of our own key, on the client's shared watch stream: a
        // registration costs no stream of its own (and, beside other registrations of its
        // service, no watch of its own). Without a known revision, check the key first.
        let mut stream = match first_watch.take() {
            Some(w) => w,
            None => {
                let from = match watch_from.take() {
                    Some(r) => r,
                    None => {
                        let got = sh.client.range(sh.key.as_str(), None).await;
                        match got {
                            Ok(resp) => {
                                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                                let ours = resp.kvs().first().is_some_and(|kv| kv.lease() == session.lease_id());
                                if ours {
                                    rev + 1
                                } else if !sh.self_heal {
                                    sh.end_lost("key deleted from outside".into()).await;
                                    return;
                                } else {
                                    warn!(key = %sh.key, "registration key missing; putting it again");
                                    match sh.put(session.lease_id()).await {
                                        Ok(r) => r + 1,
                                        Err(e) if lease_not_found(&e) => {
                                            session.mark_lost("lease not found in etcd");
                                            continue;
                                        }
                                        Err(e) => {
                                            debug!(error = %e, "re-put failed");
                                            tokio::time::sleep(backoff).await;
                                            backoff = (backoff * 2).min(Duration::from_secs(1));
                                            continue;
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                debug!(error = %e, "checking registration key failed");
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff) => {}
                                    _ = session.lost() => {}
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                                continue;
                            }
                        }
                    }
                };
                interest.watch(from)
            }
        };
        loop {
            tokio::select! {
                _ = session.lost() => break, // the outer loop recovers
                msg = stream.message() => match msg {
                    Some(KeyChange::Cancelled { reason }) => {
                        debug!(%reason, "own-key watch cancelled");
                        break;
                    }
                    Some(KeyChange::Deleted { .. }) => {
                        backoff = Duration::from_millis(50);
                        let ending = sh.closed.load(Ordering::Acquire) || crate::lifecycle::is_shutting_down() || !session.is_alive();
                        if !ending && !sh.self_heal {
                            sh.end_lost("key deleted from outside".into()).await;
                            return;
                        }
                        if !ending {
                            warn!(key = %sh.key, "registration key deleted from outside; putting it again");
                            match sh.put(session.lease_id()).await {
                                Ok(_) => {}
                                Err(e) if lease_not_found(&e) => {
                                    session.mark_lost("lease revoked or expired in etcd");
                                    break;
                                }
                                Err(e) => {
                                    debug!(error = %e, "re-put failed");
                                    break;
                                }
                            }
                        }
                    }
                    None => break,
                }
            }
        }
    }
}

/// One registered instance, kept in etcd until closed or dropped.
///
/// Not `Clone`: it owns its lease and a background task. Dropping it stops the task and,
/// if a tokio runtime is running, deletes the key and revokes the lease in the background.
pub struct Registration {
    shared: Arc<RegShared>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("key", &self.shared.key).field("state", &self.state()).finish()
    }
}

impl Registration {
    /// Register an instance: grant a lease, put the key, keep both alive.
    ///
    /// [`Error::InvalidArgument`] for an empty service or id, a service name ending in `/`,
    /// an id containing `/`, an empty address or a TTL below 1 s.
    pub async fn register(client: &Client, opts: RegisterOptions) -> Result<Registration> {
        let metadata = check_options(&opts)?;
        client.ensure_open()?;
        let session = Session::new(client, opts.ttl_secs).await?;
        Self::start(client, session, true, opts, metadata).await
    }

    /// Register an instance on `session`, a session you own and may share with locks,
    /// elections and other registrations: the key is put with its lease, and the
    /// registration lives as long as the session. When the session is lost, the
    /// registration is [`RegistrationState::Lost`] (it never grants a lease of its own);
    /// when you close the session, the registration is closed. Closing the registration
    /// deletes its key and leaves the session open. `opts.ttl_secs` is not used.
    ///
    /// The same errors as [`Registration::register`], and [`Error::SessionLost`] when the
    /// session is not alive.
    pub async fn register_on(session: &Session, opts: RegisterOptions) -> Result<Registration> {
        let metadata = check_options(&opts)?;
        session.client().ensure_open()?;
        session.ensure_alive()?;
        Self::start(session.client(), session.clone(), false, opts, metadata).await
    }

    async fn start(client: &Client, session: Session, owns: bool, opts: RegisterOptions, metadata: serde_json::Value) -> Result<Registration> {
        let key = client.full_key(&format!("{}/{}", opts.service, opts.id));
        let service_prefix = client.full_key(&format!("{}/", opts.service));
        let lease = session.lease_id();
        let (state, _) = watch::channel(RegistrationState::Registered { lease_id: lease });
        let shared = Arc::new(RegShared {
            client: client.clone(),
            key,
            ttl: if owns { opts.ttl_secs } else { session.ttl() },
            instance: Mutex::new(Instance { id: opts.id, addr: opts.addr, metadata }),
            owns_session: owns,
            self_heal: opts.self_heal,
            session: Mutex::new(Some(session.clone())),
            lease_id: AtomicI64::new(lease),
            state,
            reregistrations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            put_lock: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        });
        // Before the put: every delete of the key after the put reaches the guard.
        let mut interest = client.watch_interest(service_prefix, shared.key.clone());
        let rev = match shared.put(lease).await {
            Ok(r) => r,
            Err(e) if owns => {
                let _ = session.close().await;
                return Err(e);
            }
            Err(e) if lease_not_found(&e) => {
                session.mark_lost("lease revoked or expired in etcd");
                return Err(session.ensure_alive().err().unwrap_or(e));
            }
            Err(e) => return Err(e),
        };
        info!(key = %shared.key, lease = format_args!("{lease:x}"), "registered");
        let span = info_span!("etcd_recipes.registration", key = %shared.key);
        let tracked = crate::metrics::track_registration(client, &shared.key, shared.state.subscribe());
        // Reported now, so that the service's group (when it is new) starts right after
        // this put, before the puts of the registrations that come after.
        let watch = interest.watch(rev + 1);
        let task = tokio::spawn(guard(shared.clone(), tracked, interest, watch).instrument(span));
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let child: std::sync::Weak<dyn crate::lifecycle::Child> = Arc::downgrade(&shared) as _;
        client.scope().adopt(child);
        Ok(Registration { shared })
    }

    /// The full etcd key (namespace included).
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The instance as registered (with the latest metadata).
    pub fn instance(&self) -> Instance {
        self.shared.instance.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current lease (it changes when the registration heals itself).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease_id.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.shared.state.subscribe()
    }

    /// How many times the registration healed itself with a new lease.
    pub fn reregistrations(&self) -> u64 {
        self.shared.reregistrations.load(Ordering::Acquire)
    }

    /// The readiness as registered.
    pub fn readiness(&self) -> Readiness {
        self.shared.instance.lock().unwrap_or_else(|p| p.into_inner()).readiness()
    }

    /// Replace the metadata in place: one put on the same key and lease (the key's
    /// create revision stays; watchers see an update, not a leave and a join). The
    /// readiness is kept. While recovering, the new metadata is stored and written by the
    /// re-registration. [`Error::Closed`] after close, [`Error::SessionLost`] once lost,
    /// [`Error::InvalidArgument`] for a `"weight"` that is not a number >= 0.
    pub async fn update_metadata(&self, metadata: serde_json::Value) -> Result<()> {
        self.rewrite(|i| {
            i.metadata = wire_metadata(&metadata, i.readiness())?;
            Ok(())
        })
        .await
    }

    /// Change the readiness in place (same key, same lease), e.g. `Draining` before a
    /// graceful stop: discovery stops picking the instance while it finishes its work.
    /// Errors as [`Registration::update_metadata`]; `InvalidArgument` when the metadata
    /// is neither a JSON object nor null (the readiness is kept inside it).
    pub async fn set_readiness(&self, readiness: Readiness) -> Result<()> {
        self.rewrite(|i| {
            i.metadata = wire_metadata(&i.metadata, readiness)?;
            Ok(())
        })
        .await
    }

    async fn rewrite(&self, change: impl FnOnce(&mut Instance) -> Result<()>) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("registration"));
        }
        {
            let mut cur = self.shared.instance.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = cur.clone();
            change(&mut next)?;
            *cur = next;
        }
        let lease_id = match self.state() {
            RegistrationState::Registered { lease_id } => lease_id,
            RegistrationState::Recovering { .. } => return Ok(()),
            RegistrationState::Lost { reason } => return Err(Error::SessionLost { lease_id: self.lease_id(), reason }),
            RegistrationState::Closed => return Err(Error::Closed("registration")),
        };
        match self.shared.put(lease_id).await {
            Ok(_) => Ok(()),
            Err(e) if lease_not_found(&e) => {
                // The guard task notices and re-registers (or ends the registration).
                if let Some(s) = self.shared.session() {
                    s.mark_lost("lease revoked or expired in etcd");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Delete the key and revoke the lease (a lease of its own: a session given to
    /// [`Registration::register_on`] stays open). Idempotent.
    pub async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.stop_task();
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.state.send_replace(RegistrationState::Closed);
        let session = self.shared.session.lock().unwrap_or_else(|p| p.into_inner()).take().filter(|_| self.shared.owns_session);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut kv = self.shared.client.etcd();
            let key = self.shared.key.clone();
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), kv.delete(key, None)).await;
                if let Some(s) = session {
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.close()).await;
                }
            });
        }
        // Without a runtime, dropping the session stops its keep-alive; the lease expires.
    }
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// A change in a service's instance set.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceEvent {
    /// A new instance.
    Up(Instance),
    /// An instance's address or metadata changed.
    Updated(Instance),
    /// An instance left (deleted, expired, or its value became unparsable).
    Down { id: String },
}

#[derive(Default)]
struct ViewState {
    by_id: BTreeMap<String, Instance>,
    list: Arc<Vec<Instance>>,
}

impl ViewState {
    fn rebuild(&mut self) {
        self.list = Arc::new(self.by_id.values().cloned().collect());
    }
}

struct ViewInner {
    prefix: Vec<u8>,
    state: RwLock<ViewState>,
    revision: AtomicI64,
    chooser: Chooser,
    tx: Mutex<Option<broadcast::Sender<(InstanceEvent, i64)>>>,
    /// Bumped on every change; `true` once closed.
    version: watch::Sender<(u64, bool)>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ViewInner {
    fn publish(&self, events: Vec<(InstanceEvent, i64)>) {
        if events.is_empty() {
            return;
        }
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = tx.as_ref() {
                for e in events {
                    let _ = tx.send(e);
                }
            }
        }
        self.version.send_modify(|(v, _)| *v += 1);
    }

    fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.version.send_modify(|(_, closed)| *closed = true);
    }
}

impl Drop for ViewInner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl crate::lifecycle::Child for ViewInner {
    fn close(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        self.stop();
        Box::pin(async {})
    }
}

impl Sink for ViewInner {
    fn reset(&self, kvs: &[KeyValue], revision: i64) {
        warn_if_backwards(self.revision(), revision);
        let fresh: BTreeMap<String, Instance> =
            kvs.iter().filter_map(|kv| parse_kv(&self.prefix, kv)).map(|i| (i.id.clone(), i)).collect();
        let mut events = Vec::new();
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (id, old) in st.by_id.iter() {
                match fresh.get(id) {
                    None => events.push((InstanceEvent::Down { id: id.clone() }, revision)),
                    Some(new) if new != old => events.push((InstanceEvent::Updated(new.clone()), revision)),
                    Some(_) => {}
                }
            }
            for (id, new) in fresh.iter() {
                if !st.by_id.contains_key(id) {
                    events.push((InstanceEvent::Up(new.clone()), revision));
                }
            }
            st.by_id = fresh;
            st.rebuild();
            self.revision.store(revision, Ordering::Release);
        }
        if !events.is_empty() {
            info!(revision, changes = events.len(), "re-read found changes");
        }
        self.publish(events);
    }

    fn apply(&self, evs: &[Event]) {
        let current = self.revision();
        let mut events = Vec::new();
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let mut top = current;
            for ev in evs {
                let Some(kv) = ev.kv() else { continue };
                let rev = kv.mod_revision();
                if rev <= current {
                    continue;
                }
                top = top.max(rev);
                let Some(id) = kv.key().strip_prefix(&self.prefix[..]) else { continue };
                let id = String::from_utf8_lossy(id).into_owned();
                let parsed = match ev.event_type() {
                    EventType::Put => parse_kv(&self.prefix, kv),
                    EventType::Delete => None,
                };
                match (parsed, st.by_id.contains_key(&id)) {
                    (Some(new), true) => {
                        if st.by_id.get(&id) != Some(&new) {
                            st.by_id.insert(id, new.clone());
                            events.push((InstanceEvent::Updated(new), rev));
                        }
                    }
                    (Some(new), false) => {
                        st.by_id.insert(id, new.clone());
                        events.push((InstanceEvent::Up(new), rev));
                    }
                    (None, true) => {
                        st.by_id.remove(&id);
                        events.push((InstanceEvent::Down { id }, rev));
                    }
                    (None, false) => {}
                }
            }
            if !events.is_empty() {
                st.rebuild();
            }
            self.revision.store(top, Ordering::Release);
        }
        self.publish(events);
    }

    fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    fn matches(&self, kvs: &[KeyValue]) -> bool {
        let fresh: BTreeMap<String, Instance> =
            kvs.iter().filter_map(|kv| parse_kv(&self.prefix, kv)).map(|i| (i.id.clone(), i)).collect();
        self.state.read().unwrap_or_else(|p| p.into_inner()).by_id == fresh
    }
}

/// Reconcile interval of service views.
const VIEW_RECONCILE: Duration = Duration::from_secs(30);

/// A live, local copy of a service's instances.
///
/// Loaded at one revision, then kept up to date by a watch from the next revision; it
/// never reports an instance that was deleted before its snapshot. Clones share the copy;
/// the watch task stops on [`ServiceView::close`] or when the last clone is dropped.
#[derive(Clone)]
pub struct ServiceView {
    inner: Arc<ViewInner>,
}

impl std::fmt::Debug for ServiceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceView")
            .field("service_prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .field("revision", &self.revision())
            .field("instances", &self.inner.state.read().map(|s| s.list.len()).unwrap_or(0))
            .finish()
    }
}

impl ServiceView {
    /// Load `service`'s instances and follow their changes. Returns once loaded.
    /// Picks go round robin over the ready instances ([`ViewOptions::new`]).
    pub async fn start(client: &Client, service: &str) -> Result<ServiceView> {
        Self::start_with(client, service, ViewOptions::new()).await
    }

    /// [`ServiceView::start`] with pickers, zone preference, a filter and a down-instance
    /// policy. [`Error::InvalidArgument`] for a zero down threshold or period, or an
    /// empty zone or key name.
    pub async fn start_with(client: &Client, service: &str, options: ViewOptions) -> Result<ServiceView> {
        client.ensure_open()?;
        check_service(service)?;
        options.check()?;
        let range = service_range(client, service);
        let (kvs, rev) = load(client, &range, None).await?;
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let inner = Arc::new(ViewInner {
            prefix: range.key.as_bytes().to_vec(),
            state: RwLock::new(ViewState::default()),
            revision: AtomicI64::new(0),
            chooser: Chooser::new(options),
            tx: Mutex::new(Some(tx)),
            version: watch::channel((0, false)).0,
            task: Mutex::new(None),
        });
        inner.reset(&kvs, rev);
        let task = spawn_mirror(client.clone(), range, Arc::downgrade(&inner), rev, VIEW_RECONCILE, "service");
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let child: std::sync::Weak<dyn crate::lifecycle::Child> = Arc::downgrade(&inner) as _;
        client.scope().adopt(child);
        Ok(ServiceView { inner })
    }

    fn list(&self) -> Arc<Vec<Instance>> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner()).list.clone()
    }

    /// The instances now, sorted by id. Local: no network.
    pub fn instances(&self) -> Vec<Instance> {
        self.list().as_ref().clone()
    }

    /// The etcd revision the view reflects.
    pub fn revision(&self) -> i64 {
        self.inner.revision()
    }

    /// The options the view picks with.
    pub fn options(&self) -> &ViewOptions {
        &self.inner.chooser.options
    }

    /// The instances a pick chooses from now, in id order: ready (unless the view
    /// includes every readiness), not down, passing the view's filter. Local.
    pub fn available(&self) -> Vec<Instance> {
        self.inner.chooser.available(&self.list(), &|_| true, tokio::time::Instant::now())
    }

    /// An available instance chosen by the view's picker (from the preferred zone while
    /// it has one), or `None` when none is available.
    pub fn pick(&self) -> Option<Instance> {
        self.pick_with(self.inner.chooser.options.picker, &|_| true)
    }

    /// [`ServiceView::pick`] among the available instances that `filter` also accepts.
    pub fn pick_where(&self, filter: impl Fn(&Instance) -> bool) -> Option<Instance> {
        self.pick_with(self.inner.chooser.options.picker, &filter)
    }

    /// Pick with `picker` (not the view's) among the available instances `filter` accepts.
    pub fn pick_with(&self, picker: Picker, filter: &dyn Fn(&Instance) -> bool) -> Option<Instance> {
        self.inner.chooser.pick(picker, &self.list(), filter, tokio::time::Instant::now())
    }

    /// The next available instance in turn (by id order), or `None` if there is none.
    pub fn pick_round_robin(&self) -> Option<Instance> {
        self.pick_with(Picker::RoundRobin, &|_| true)
    }

    /// A random available instance, or `None` if there is none.
    pub fn pick_random(&self) -> Option<Instance> {
        self.pick_with(Picker::Random, &|_| true)
    }

    /// Report that a call to instance `id` failed. Once the view's
    /// [`DownInstancePolicy`] threshold of errors is reached within its period (counted
    /// from the first error), the instance is not picked until that period has passed.
    pub fn note_error(&self, id: &str) {
        let policy = self.inner.chooser.options.down_policy;
        self.inner.chooser.down.note_error_at(id, &policy, tokio::time::Instant::now());
    }

    /// True while instance `id` is skipped after [`ServiceView::note_error`].
    pub fn is_down(&self, id: &str) -> bool {
        let policy = self.inner.chooser.options.down_policy;
        self.inner.chooser.down.is_down_at(id, &policy, tokio::time::Instant::now())
    }

    /// A new subscription to every change from now on, with its revision.
    pub fn events(&self) -> InstanceEvents {
        let tx = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match tx.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        };
        InstanceEvents { inner: Box::pin(subscription_stream(rx, "service view subscriber")) }
    }

    /// Wait for the next change and return the new instance set.
    /// [`Error::Closed`] once the view is closed.
    pub async fn changed(&self) -> Result<Vec<Instance>> {
        let mut rx = self.inner.version.subscribe();
        if rx.borrow().1 {
            return Err(Error::Closed("service view"));
        }
        match rx.changed().await {
            Ok(()) if !rx.borrow().1 => Ok(self.instances()),
            _ => Err(Error::Closed("service view")),
        }
    }

    /// The instance set now, then the whole set again after every change: a `Stream`
    /// that never misses a change between two reads (changes that arrive together are
    /// coalesced into the latest set). Ends when the view is closed.
    pub fn updates(&self) -> InstanceSets {
        let view = self.clone();
        let rx = self.inner.version.subscribe();
        let stream = futures::stream::unfold((view, rx, true), |(view, mut rx, first)| async move {
            if first {
                rx.borrow_and_update();
                let set = view.instances();
                return Some((set, (view, rx, false)));
            }
            match rx.changed().await {
                Ok(()) if !rx.borrow_and_update().1 => {
                    let set = view.instances();
                    Some((set, (view, rx, false)))
                }
                _ => None,
            }
        });
        InstanceSets { inner: Box::pin(stream) }
    }

    /// Stop following changes. The last instance set stays readable; event streams end.
    pub fn close(&self) {
        self.inner.stop();
    }
}

/// The instance sets of a [`ServiceView`]: the current one first, then one after each
/// change. See [`ServiceView::updates`].
pub struct InstanceSets {
    inner: Pin<Box<dyn Stream<Item = Vec<Instance>> + Send>>,
}

impl std::fmt::Debug for InstanceSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceSets")
    }
}

impl InstanceSets {
    /// The next instance set, or `None` once the view is closed.
    pub async fn next(&mut self) -> Option<Vec<Instance>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for InstanceSets {
    type Item = Vec<Instance>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The changes seen by a [`ServiceView`], with their revisions: a `Stream`.
///
/// A subscriber that falls more than 4096 events behind gets one `Err` (kind `Etcd`,
/// "lagged behind") and continues with newer events. Ends (`None`) when the view closes.
pub struct InstanceEvents {
    inner: BoxedEvents,
}

type BoxedEvents = Pin<Box<dyn Stream<Item = Result<(InstanceEvent, i64)>> + Send>>;

impl std::fmt::Debug for InstanceEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceEvents")
    }
}

impl InstanceEvents {
    /// The next event and its revision, or `None` once the view is closed.
    pub async fn next(&mut self) -> Option<Result<(InstanceEvent, i64)>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for InstanceEvents {
    type Item = Result<(InstanceEvent, i64)>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_go() {
        let v = encode_value("1.2.3.4:80", &serde_json::Value::Null);
        assert_eq!(std::str::from_utf8(&v).unwrap(), r#"{"Op":0,"Addr":"1.2.3.4:80","Metadata":null}"#);
        let v = encode_value("h:1", &serde_json::json!({"zone": "a"}));
        assert_eq!(std::str::from_utf8(&v).unwrap(), r#"{"Op":0,"Addr":"h:1","Metadata":{"zone":"a"}}"#);
        let i = decode_value("x", br#"{"Addr":"h:2"}"#).unwrap();
        assert_eq!(i, Instance { id: "x".into(), addr: "h:2".into(), metadata: serde_json::Value::Null });
        for bad in [&b"nope"[..], br#"{"Op":1,"Addr":"h:1"}"#, br#"{"Op":0,"Addr":""}"#, br#"{"Op":0}"#] {
            assert_eq!(decode_value("x", bad).unwrap_err().kind(), crate::ErrorKind::Decode);
        }
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "svc/"] {
            assert_eq!(check_service(bad).unwrap_err().kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
        }
        for bad in ["", "a/b", "/", "a\0b"] {
            assert_eq!(check_id(bad).unwrap_err().kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(check_service("a/b").is_ok());
        assert!(check_id("i-1").is_ok());
    }
}
