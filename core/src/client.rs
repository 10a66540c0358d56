//! [`Client`]: one connection to etcd shared by every recipe, and its [`ClientOptions`].

use std::sync::Arc;
use std::time::Duration;

use crate::endpoints::{HealthCheck, MemberWatch, Members};

use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions};
use tracing::{debug, info, instrument};

use crate::error::{Error, Result};
use crate::lifecycle::{Phase, Scope};

/// Keys and names longer than this are refused (etcd's default request limit is 1.5 MiB;
/// a key this long is always a mistake).
pub const MAX_KEY_LEN: usize = 4096;

/// TLS material for `https://` endpoints, as PEM bytes.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// CA certificate(s) that signed the server certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for mutual TLS.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Server name to verify, when it differs from the endpoint host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("client_cert_pem", &self.client_cert_pem.as_ref().map(|_| "<pem>"))
            .field("client_key_pem", &self.client_key_pem.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// How to connect. Build with [`ClientOptions::new`] and the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// let opts = etcd_recipes::ClientOptions::new(["127.0.0.1:2379"])
///     .with_connect_timeout(Duration::from_secs(2))
///     .with_namespace("myapp/");
/// assert_eq!(opts.namespace(), "myapp/");
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive: (Duration, Duration),
    health: HealthCheck,
    user: Option<(String, String)>,
    tls: Option<TlsConfig>,
    namespace: String,
}

impl ClientOptions {
    /// Options for these endpoints (`host:port`, `http://host:port` or `https://host:port`).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive: (Duration::from_secs(2), Duration::from_secs(2)),
            health: HealthCheck::default(),
            user: None,
            tls: None,
            namespace: String::new(),
        }
    }

    /// How long `connect` waits for the first answer from etcd (default 5 s).
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Deadline of each unary request (default 10 s). Waits (lock, campaign) are not requests
    /// and are bounded by their own timeouts.
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// HTTP/2 keep-alive: a ping every `interval`, and a connection that has not answered
    /// one within `timeout` is dropped (default 2 s and 2 s). Pings are what find a dead or
    /// frozen member, so that watches and lease keep-alives move to a healthy one.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = (interval, timeout);
        self
    }

    /// How members are probed when the client has several endpoints: a probe every
    /// `interval`, and a member that does not answer within `timeout` is taken out of
    /// rotation until it answers again (defaults 250 ms and 750 ms).
    pub fn with_health_check(mut self, interval: Duration, timeout: Duration) -> Self {
        self.health = HealthCheck { interval, timeout };
        self
    }

    /// Authenticate as this etcd user.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Use TLS (needed for `https://` endpoints signed by a private CA, and for client certs).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A prefix put in front of every key any recipe of this client reads or writes.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid("endpoints: the list is empty; give at least one host:port"));
        }
        for e in &self.endpoints {
            validate_endpoint(e)?;
            if e.starts_with("https://") && self.tls.is_none() {
                // rustls with no CA would only trust nothing; say so rather than fail obscurely.
                return Err(Error::invalid(format!(
                    "endpoint {e:?} is https but no TLS options (CA certificate) were given"
                )));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid("connect_timeout must be positive"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::invalid("request_timeout must be positive"));
        }
        if self.keep_alive.0.is_zero() || self.keep_alive.1.is_zero() {
            return Err(Error::invalid("keep-alive interval and timeout must be positive"));
        }
        if self.health.interval.is_zero() || self.health.timeout.is_zero() {
            return Err(Error::invalid("health check interval and timeout must be positive"));
        }
        if self.namespace.len() > MAX_KEY_LEN {
            return Err(Error::invalid("namespace is longer than 4096 bytes"));
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert_pem.is_some() != tls.client_key_pem.is_some() {
                return Err(Error::invalid("TLS client certificate and key must be given together"));
            }
        }
        Ok(())
    }

    fn to_connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            // HTTP/2 pings find a dead or frozen member quickly, so watches and
            // keep-alives move to a healthy one instead of hanging on a silent socket.
            .with_keep_alive(self.keep_alive.0, self.keep_alive.1)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((u, p)) = &self.user {
            o = o.with_user(u.clone(), p.clone());
        }
        if let Some(tls) = &self.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let (Some(c), Some(k)) = (&tls.client_cert_pem, &tls.client_key_pem) {
                t = t.identity(Identity::from_pem(c, k));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            o = o.with_tls(t);
        }
        o
    }
}

fn validate_endpoint(e: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("endpoint {e:?} is malformed: {why} (expected host:port, http://host:port or https://host:port)")));
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e);
    if rest.contains("://") {
        return bad("unsupported scheme");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return bad("empty");
    }
    if rest.contains('/') || rest.contains(char::is_whitespace) {
        return bad("unexpected path or whitespace");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some(hp) => hp,
        None => return bad("missing port"),
    };
    if host.is_empty() {
        return bad("missing host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("port is not a number in 1..=65535"),
    }
}

fn normalise_endpoint(e: &str) -> String {
    let e = e.strip_suffix('/').unwrap_or(e);
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

pub(crate) struct Inner {
    options: ClientOptions,
    members: Arc<Members>,
    scope: Arc<Scope>,
    /// The one watch stream that long-lived single-key watches share (registrations).
    watches: Arc<crate::watchmux::WatchMux>,
    /// The one lease keep-alive stream that all sessions' renewals share, in batches.
    renewer: crate::keepalive::Renewer,
    /// One watch per wait-queue prefix, shared by the client's waiters on it.
    queue_watches: crate::waitqueue::QueueWatches,
    /// The process that made the client. A forked child inherits the object but not the
    /// threads behind its connections: there it is closed (and its leases are the parent's).
    pid: u32,
}

/// One connection to etcd, cheap to clone and shared by every recipe.
///
/// With several endpoints, every member has a connection of its own and a health
/// state (see [`crate::endpoints`]): a member that stops answering is out of rotation
/// within about a second, and requests, watches and lease keep-alives move to the
/// others. Every key a recipe touches is prefixed with the client's namespace.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.options.endpoints)
            .field("namespace", &self.inner.options.namespace)
            .finish()
    }
}

/// How long a read or an idempotent write waits for one member before it is given up
/// there and sent to another.
const ATTEMPT: Duration = Duration::from_secs(2);

/// Why an attempt was given up before its answer came.
enum Stalled {
    LeaderChanged,
    NoAnswer,
}

/// Which requests may be sent again after a failure that leaves their outcome open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// A read: retried on another member after any connection trouble.
    Read,
    /// A write whose second application changes nothing (create-if-absent, delete of
    /// one's own key, revoke, re-put of the same registration): retried like a read.
    Idempotent,
    /// Any other write: retried only when it provably was not sent; otherwise its
    /// failure is [`Error::UnknownOutcome`].
    Write,
}

impl Client {
    /// Connect and wait until a member answers (at most the connect timeout).
    ///
    /// Succeeds as soon as any listed endpoint serves. Fails fast with
    /// [`Error::InvalidArgument`] for bad options, and with [`Error::Connect`] naming
    /// each endpoint's failure when none answers in time.
    #[instrument(name = "etcd_recipes.connect", skip_all, fields(endpoints = ?options.endpoints))]
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        options.validate()?;
        let eps: Vec<String> = options.endpoints.iter().map(|e| normalise_endpoint(e)).collect();
        let joined = eps.join(",");
        let timeout = options.connect_timeout;
        let connect_options = options.to_connect_options();
        // One channel per member (connecting lazily, except for authentication).
        let probe_key = format!("{}\0probe", options.namespace);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
        let mut attempts: futures::stream::FuturesUnordered<_> = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let (probe_key, tx, ep, connect_options) = (probe_key.clone(), tx.clone(), ep.clone(), connect_options.clone());
                let tls = options.tls.clone().filter(|_| ep.starts_with("https://"));
                async move {
                    // The channel connects lazily; one tiny read proves that the member
                    // answers. A member that is starting, or whose cluster is electing a
                    // leader, is asked again until the connect timeout. A definite answer
                    // (wrong password, a certificate refused) ends the attempt at once.
                    let mut backoff = Duration::from_millis(50);
                    let mut client: Option<etcd_client::Client> = None;
                    let mut tls_probed = false;
                    loop {
                        let outcome = match client.clone() {
                            Some(c) => Ok(c),
                            // With a user, connecting authenticates (a round trip).
                            None => connect_member(&ep, &connect_options).await,
                        };
                        let failure = match outcome {
                            Err(e) => e,
                            Ok(mut c) => {
                                client = Some(c.clone());
                                match c.get(probe_key.clone(), Some(GetOptions::new().with_count_only())).await {
                                    Ok(_) => return (i, Ok(c)),
                                    // Connected and authenticated, just not allowed to read there: fine.
                                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => {
                                        return (i, Ok(c))
                                    }
                                    Err(e) => e,
                                }
                            }
                        };
                        let kind = classify(&failure);
                        if kind == Failure::Answer {
                            return (i, Err(failure));
                        }
                        // A TLS connection that broke once up: maybe the server refused our
                        // certificate and the alert was lost (see `tlsprobe`). Ask once.
                        if let (Some(tls), Failure::Broken, false) = (&tls, kind, tls_probed) {
                            tls_probed = true;
                            if let Some(why) = crate::tlsprobe::refusal(&ep, tls, Duration::from_secs(1)).await {
                                let refused = std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
                                return (i, Err(etcd_client::Error::IoError(refused)));
                            }
                        }
                        debug!(endpoint = %ep, error = %describe(&failure), "member not serving yet; asking again");
                        let _ = tx.send((i, describe(&failure)));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            })
            .collect();
        let mut failures: Vec<Option<String>> = vec![None; eps.len()];
        // The first definite refusal by etcd of who we are (bad user or password).
        let mut denied: Option<etcd_client::Error> = None;
        let mut first: Option<(usize, etcd_client::Client)> = None;
        let mut refused_by_all = false;
        let deadline = tokio::time::Instant::now() + timeout;
        while first.is_none() {
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut attempts)).await {
                Ok(Some((i, Ok(c)))) => first = Some((i, c)),
                Ok(Some((i, Err(e)))) => {
                    failures[i] = Some(describe(&e));
                    if denied.is_none() && auth_refusal(&e) {
                        denied = Some(e);
                    }
                }
                // Every member gave a definite answer (a refusal) before the deadline.
                Ok(None) => {
                    refused_by_all = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // The last transient failure of the members still being asked.
        let mut transient: Vec<Option<String>> = vec![None; eps.len()];
        while let Ok((i, e)) = rx.try_recv() {
            transient[i] = Some(e);
        }
        for (f, t) in failures.iter_mut().zip(transient) {
            if f.is_none() {
                *f = t;
            }
        }
        let Some((i, c)) = first else {
            let each: Vec<String> = eps
                .iter()
                .zip(&failures)
                .map(|(ep, f)| format!("{ep}: {}", f.as_deref().unwrap_or("no answer")))
                .collect();
            let all_silent = failures.iter().all(Option::is_none);
            let message = if refused_by_all {
                format!("refused by every member ({})", each.join("; "))
            } else if all_silent {
                format!("no member answered within {timeout:?}")
            } else {
                format!("no member answered within {timeout:?} ({})", each.join("; "))
            };
            // A definite refusal of the user or password is not a connection problem.
            if let Some(e) = denied {
                return Err(Error::PermissionDenied(e));
            }
            return Err(Error::Connect { endpoints: joined, message, source: None });
        };
        drop(attempts);
        // Every member gets a client; those still unproven start out of rotation and
        // are probed in.
        let mut members = Vec::with_capacity(eps.len());
        for (j, ep) in eps.iter().enumerate() {
            let client = if j == i { Some(c.clone()) } else { connect_member_lazily(ep, &connect_options) };
            members.push((ep.clone(), client, j == i));
        }
        let members = Members::new(members, connect_options);
        members.start_probers(options.health);
        info!(endpoints = %joined, namespace = %options.namespace, "connected to etcd");
        let watches = crate::watchmux::WatchMux::new(members.clone(), options.request_timeout);
        let scope = Scope::new();
        let renewer = crate::keepalive::Renewer::new(members.clone(), scope.clone());
        let inner = Arc::new(Inner { options, members, scope, watches, renewer, queue_watches: Default::default(), pid: std::process::id() });
        crate::lifecycle::register_client(&inner);
        Ok(Client { inner })
    }

    /// Connect to these endpoints with default options.
    pub async fn connect_to<I, S>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::connect(ClientOptions::new(endpoints)).await
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Client {
        Client { inner }
    }

    pub(crate) fn scope(&self) -> &Arc<Scope> {
        &self.inner.scope
    }

    /// True once [`Client::close`] began.
    pub fn is_closed(&self) -> bool {
        self.inner.scope.phase() != Phase::Open || !self.in_this_process()
    }

    /// False in a process forked after the client was made: the connections' threads
    /// stayed in the parent, so the child must make clients of its own (as Celery's
    /// prefork workers and gunicorn's `--preload` workers do after the fork).
    pub fn in_this_process(&self) -> bool {
        self.inner.pid == std::process::id()
    }

    /// Resolves once [`Client::close`] began (or at once if it has).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.scope.closing()
    }

    /// Fail with [`Error::Closed`] once [`Client::close`] began, and in a forked child.
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if !self.in_this_process() {
            return Err(Error::Closed("client (made before this process was forked; make a new one in the child)"));
        }
        match self.inner.scope.phase() {
            Phase::Open => Ok(()),
            _ => Err(Error::Closed("client")),
        }
    }

    /// Close this client and everything made from it, within
    /// [`CLOSE_BUDGET`](crate::lifecycle::CLOSE_BUDGET): sessions revoke their leases (so
    /// locks and leaderships on them end), registrations delete their keys, views and
    /// observers stop, and a lock wait or campaign in progress fails with
    /// [`Error::Closed`]. Then every new operation fails with [`Error::Closed`]. Clones
    /// share the connection, so they are closed too. Idempotent.
    pub async fn close(&self) {
        self.close_within(crate::lifecycle::CLOSE_BUDGET).await;
    }

    /// [`Client::close`] with a bound of your choice; false if it ran out (what was not
    /// closed in time expires with its TTL).
    pub async fn close_within(&self, budget: Duration) -> bool {
        let done = self.inner.scope.close(budget).await;
        self.inner.members.stop_probers();
        if done {
            info!("client closed");
        }
        done
    }

    pub fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// Where the connection to etcd stands now: `Connected`, `Suspended`, `Reconnected`
    /// or `Lost` (see [`crate::connection`] for when each holds and what the recipes do).
    pub fn connection_state(&self) -> crate::ConnectionState {
        self.inner.members.connection().get()
    }

    /// How each endpoint looks now: in rotation or not, and whether its last health probe
    /// found a serving member.
    pub fn endpoint_health(&self) -> Vec<crate::endpoints::EndpointHealth> {
        self.inner.members.health()
    }

    /// The connection state now, then every change, until the client is closed.
    ///
    /// ```no_run
    /// # async fn demo(client: etcd_recipes::Client) {
    /// let mut states = client.connection_states();
    /// while let Some(state) = states.next().await {
    ///     println!("etcd connection: {state}");
    /// }
    /// # }
    /// ```
    pub fn connection_states(&self) -> crate::ConnectionStates {
        let (current, rx) = self.inner.members.connection().subscribe();
        crate::ConnectionStates::new(current, rx, self.closed())
    }

    /// An `etcd_client::Client` for a member in rotation (a cheap clone), for anything
    /// the recipes do not cover. Keys given to it are *not* namespaced. Ask again for
    /// each piece of work: a member that stops answering is taken out of rotation.
    pub fn etcd(&self) -> etcd_client::Client {
        self.inner.members.pick().client.etcd()
    }

    /// The sessions' lease renewals (see [`crate::keepalive`]).
    pub(crate) fn renewer(&self) -> &crate::keepalive::Renewer {
        &self.inner.renewer
    }

    /// The shared watches of wait-queue prefixes (see [`crate::waitqueue::QueueWatches`]).
    pub(crate) fn queue_watches(&self) -> &crate::waitqueue::QueueWatches {
        &self.inner.queue_watches
    }

    pub(crate) fn members(&self) -> &Arc<Members> {
        &self.inner.members
    }

    /// Watch `key` on a member in rotation; the stream ends with an error if that member
    /// stops answering (see [`MemberWatch`]).
    pub(crate) async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: etcd_client::WatchOptions,
    ) -> std::result::Result<MemberWatch, etcd_client::Error> {
        MemberWatch::open(self.members(), key, options, self.request_timeout()).await
    }

    /// An interest in deletes of `key` (under the service prefix `prefix`), taken before
    /// the key is put, watched on the client's shared watch stream (see
    /// [`crate::watchmux`]): no stream of its own, no wait for etcd.
    pub(crate) fn watch_interest(&self, prefix: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> crate::watchmux::Interest {
        self.inner.watches.interest(prefix.into(), key.into())
    }

    /// The full etcd key for a recipe key: namespace + key.
    pub fn full_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.namespace().len() + key.len());
        k.push_str(self.namespace());
        k.push_str(key);
        k
    }

    /// The recipe key for a full etcd key (namespace removed), if it is inside the namespace.
    pub fn strip_namespace<'a>(&self, full: &'a [u8]) -> Option<&'a [u8]> {
        full.strip_prefix(self.namespace().as_bytes())
    }

    /// A read: sent to a member in rotation, and on any connection trouble (or when that
    /// member is taken out of rotation meanwhile) sent again to another, within the
    /// request timeout.
    pub(crate) async fn read<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut(crate::endpoints::Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call(Call::Read, op).await
    }

    /// A range read of `key` (a full etcd key: no namespace is added), retried like
    /// [`Client::read`].
    pub(crate) async fn range(&self, key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Result<etcd_client::GetResponse> {
        let key = key.into();
        self.read(|mut c| {
            let (k, o) = (key.clone(), options.clone());
            async move { c.get(k, o).await }
        })
        .await
    }

    /// A write that may safely be applied twice; retried like a read (see [`Call`]).
    pub(crate) async fn idempotent<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut(crate::endpoints::Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call(Call::Idempotent, op).await
    }

    /// A write: retried only while the failure proves it was never sent (or never
    /// applied: the member had no leader). When it may have been applied, the error is
    /// [`Error::UnknownOutcome`].
    pub(crate) async fn write<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut(crate::endpoints::Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call(Call::Write, op).await
    }

    async fn call<T, F, Fut>(&self, kind: Call, mut op: F) -> Result<T>
    where
        F: FnMut(crate::endpoints::Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let members = self.members();
        let timeout = self.request_timeout();
        let until = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        let mut picked = members.pick();
        loop {
            let down = members.wait_down(picked.index);
            // After a leader change, a request still unanswered 750 ms after it was sent was
            // most likely forwarded to the old leader and will never be answered (etcd gives
            // up on it after 7 s). One sent just before the change may still be answered by
            // the new leader, so it gets those 750 ms.
            let sent = tokio::time::Instant::now();
            let leader_changed = async {
                members.wait_leader_change().await;
                tokio::time::sleep_until(sent + Duration::from_millis(750)).await;
            };
            // A read or an idempotent write that gets no answer within ATTEMPT is given up
            // and sent to another member: the first may be forwarding to a leader that
            // hangs, which a probe of the member itself cannot see. Other writes wait for
            // their answer.
            let attempt_until = match kind {
                Call::Write => until,
                _ => until.min(tokio::time::Instant::now() + ATTEMPT),
            };
            let outcome = tokio::select! {
                r = Box::pin(op(picked.client)) => Some(Ok(r)),
                _ = down => None,
                // A request forwarded to a leader that is gone may never be answered.
                _ = leader_changed => Some(Err(Stalled::LeaderChanged)),
                _ = tokio::time::sleep_until(attempt_until), if attempt_until < until => Some(Err(Stalled::NoAnswer)),
                _ = tokio::time::sleep_until(until) => {
                    members.note_slow(picked.index, "request timed out");
                    return Err(match kind {
                        Call::Read => Error::timeout("etcd request", timeout),
                        _ => Error::UnknownOutcome(format!(
                            "no answer from {} within {timeout:?}; the write may have been applied",
                            members.endpoint(picked.index)
                        )),
                    });
                }
            };
            let endpoint = members.endpoint(picked.index).to_string();
            let retry_why = match outcome {
                Some(Ok(Ok(v))) => return Ok(v),
                Some(Err(Stalled::LeaderChanged)) if kind == Call::Write => {
                    return Err(Error::UnknownOutcome(format!(
                        "the etcd leader changed while the write was in flight on {endpoint}; it may have been applied"
                    )))
                }
                Some(Err(Stalled::LeaderChanged)) => "the etcd leader changed".to_string(),
                Some(Err(Stalled::NoAnswer)) => {
                    members.note_slow(picked.index, "no answer within the attempt time");
                    format!("no answer within {ATTEMPT:?}")
                }
                // The member was taken out of rotation while the request was in flight.
                None if kind == Call::Write => {
                    return Err(Error::UnknownOutcome(format!(
                        "{endpoint} stopped answering while the write was in flight; it may have been applied"
                    )))
                }
                None => "member out of rotation".to_string(),
                Some(Ok(Err(e))) => match classify(&e) {
                    Failure::NotSent => {
                        members.note_slow(picked.index, "connection refused");
                        e.to_string()
                    }
                    Failure::NotApplied => e.to_string(),
                    Failure::Broken if kind == Call::Write => {
                        return Err(Error::UnknownOutcome(format!(
                            "{endpoint}: {e}; the write may have been applied"
                        )))
                    }
                    Failure::Broken => {
                        members.note_slow(picked.index, "request failed");
                        e.to_string()
                    }
                    Failure::Answer => return Err(Error::from(e)),
                },
            };
            if tokio::time::Instant::now() + backoff >= until {
                return Err(match kind {
                    Call::Read => Error::timeout(format!("etcd request (last failure: {retry_why})"), timeout),
                    _ => Error::UnknownOutcome(format!("gave up after {timeout:?}: {retry_why}")),
                });
            }
            debug!(endpoint = %endpoint, reason = %retry_why, ?kind, "retrying on another member");
            // Straight to another member the first time; back off if they all fail.
            if backoff > Duration::from_millis(10) {
                tokio::time::sleep(backoff).await;
            }
            backoff = (backoff * 2).min(Duration::from_millis(200));
            picked = members.pick_other(picked.index);
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// Put a value at `key` (namespaced); returns the revision of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        self.ensure_open()?;
        check_key("key", key)?;
        let (k, v) = (self.full_key(key), value.into());
        let resp = self.write(|mut c| {
            let (k, v) = (k.clone(), v.clone());
            async move { c.put(k, v, None).await }
        }).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Get the value at `key` (namespaced), if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.ensure_open()?;
        check_key("key", key)?;
        let mut resp = self.range(self.full_key(key), None).await?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| kv.value().to_vec()))
    }

    /// Delete `key` (namespaced); returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64> {
        self.ensure_open()?;
        check_key("key", key)?;
        let k = self.full_key(key);
        let resp = self.write(|mut c| {
            let k = k.clone();
            async move { c.delete(k, None).await }
        }).await?;
        Ok(resp.deleted())
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> Result<i64> {
        self.ensure_open()?;
        let resp = self.range(format!("{}\0rev", self.namespace()), Some(GetOptions::new().with_count_only())).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Does this lease still exist in etcd (remaining TTL > 0)?
    pub async fn lease_exists(&self, lease_id: i64) -> Result<bool> {
        self.ensure_open()?;
        let resp = self.read(|mut c| async move { c.lease_time_to_live(lease_id, None).await }).await?;
        debug!(lease = format_args!("{lease_id:x}"), ttl = resp.ttl(), "lease time-to-live");
        // etcd rounds the remaining time down to whole seconds (0 for under a second left)
        // and answers -1 for a lease that does not exist.
        Ok(resp.ttl() >= 0)
    }

    /// Revoke a lease by id (for operators and tests: revoking someone's lease
    /// makes their session lost).
    pub async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        self.idempotent(|mut c| async move { c.lease_revoke(lease_id).await }).await?;
        Ok(())
    }
}

/// What a failed request tells about its outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection could not even be opened: the request never left this process.
    NotSent,
    /// The member refused before applying anything (it has no leader).
    NotApplied,
    /// The connection broke or timed out after the request may have been sent.
    Broken,
    /// A definite answer from etcd (not found, compacted, permission denied, ...).
    Answer,
}

pub(crate) fn classify(e: &etcd_client::Error) -> Failure {
    use tonic::Code;
    if tls_refusal(e) {
        // A certificate refused by either side: no request was sent, and sending it
        // again gets the same refusal.
        return Failure::Answer;
    }
    match e {
        etcd_client::Error::TransportError(_) => Failure::NotSent,
        etcd_client::Error::IoError(_) => Failure::Broken,
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            match s.code() {
                Code::Unavailable if m.contains("tcp connect error") || m.contains("connection refused") => {
                    Failure::NotSent
                }
                // With require-leader set, a member without a leader refuses at once.
                Code::Unavailable if m.contains("no leader") || m.contains("not capable") => Failure::NotApplied,
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal => Failure::Broken,
                // tonic's own deadline ("Timeout expired") and broken HTTP/2 streams.
                Code::Cancelled => Failure::Broken,
                _ => Failure::Answer,
            }
        }
        _ => Failure::Answer,
    }
}

/// The messages of `e` and of every error below it, most general first, without repeats
/// (tonic statuses often say only "transport error" and keep the cause below).
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let mut text = match e {
        // A status's Display carries its source's Debug form; the chain below says it better.
        etcd_client::Error::GRpcStatus(s) => format!("grpc status {:?}: {}", s.code(), s.message()),
        _ => e.to_string(),
    };

    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        etcd_client::Error::IoError(io) => std::error::Error::source(io),
        _ => None,
    };
    while let Some(s) = source {
        let m = s.to_string();
        if !m.is_empty() && !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    if tls_refusal_text(&text) {
        text.insert_str(0, "TLS handshake failed: ");
    }
    text
}

/// True when a TLS handshake failed on a certificate: ours refused by the server (a fatal
/// alert: unknown CA, expired, none sent) or the server's refused by us (not signed by
/// the CA we trust, wrong name). Definite: trying again cannot succeed.
pub(crate) fn tls_refusal(e: &etcd_client::Error) -> bool {
    if !matches!(e, etcd_client::Error::GRpcStatus(_) | etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)) {
        return false;
    }
    tls_refusal_text(&describe(e))
}

fn tls_refusal_text(text: &str) -> bool {
    // rustls' words for these failures.
    ["invalid peer certificate", "received fatal alert", "peer sent no certificates", "certificate required"]
        .iter()
        .any(|m| text.contains(m))
}

/// True when etcd refused the user or password (as opposed to a permission on a key).
pub(crate) fn auth_refusal(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            matches!(s.code(), tonic::Code::InvalidArgument | tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition)
                && (m.contains("authentication failed") || m.contains("invalid auth") || m.contains("user name is empty") || m.contains("user name not found"))
        }
        _ => false,
    }
}

/// A client for one member (lazy: it connects on first use). Authentication needs a
/// round trip, so with a user the member may have no client until it answers.
async fn connect_member(endpoint: &str, options: &ConnectOptions) -> std::result::Result<etcd_client::Client, etcd_client::Error> {
    etcd_client::Client::connect([endpoint], Some(options.clone())).await
}

fn connect_member_lazily(endpoint: &str, options: &ConnectOptions) -> Option<etcd_client::Client> {
    // Without authentication, connecting does no I/O and cannot fail for a dead member.
    futures::FutureExt::now_or_never(connect_member(endpoint, options)).and_then(|r| r.ok())
}

/// Validate a recipe name or key: non-empty, at most [`MAX_KEY_LEN`] bytes, no NUL.
pub(crate) fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid(format!("{what} is {} bytes long; the limit is {MAX_KEY_LEN}", key.len())));
    }
    if key.contains('\0') {
        return Err(Error::invalid(format!("{what} must not contain NUL bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_validation() {
        for ok in ["127.0.0.1:2379", "http://localhost:2379", "https://etcd.example:443/", "[::1]:2379"] {
            assert!(validate_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["", "localhost", "http://", "ftp://x:1", "x:0", "x:99999", "x:port", ":2379", "a:1/path", "a b:1"] {
            let e = validate_endpoint(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
