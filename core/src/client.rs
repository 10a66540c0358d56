//! [`Client`]: one connection to etcd shared by every recipe, and its [`ClientOptions`].

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions};
use tracing::{debug, info, instrument};

use crate::error::{Error, Result};

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

struct Inner {
    options: ClientOptions,
}

/// One connection to etcd, cheap to clone and shared by every recipe.
///
/// Every key a recipe touches is prefixed with the client's namespace.
#[derive(Clone)]
pub struct Client {
    etcd: etcd_client::Client,
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

impl Client {
    /// Connect and wait until etcd answers (at most the connect timeout).
    ///
    /// Fails fast with [`Error::InvalidArgument`] for bad options and with
    /// [`Error::Connect`] when no endpoint answers in time.
    #[instrument(name = "etcd_recipes.connect", skip_all, fields(endpoints = ?options.endpoints))]
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        options.validate()?;
        let eps: Vec<String> = options.endpoints.iter().map(|e| normalise_endpoint(e)).collect();
        let joined = eps.join(",");
        let timeout = options.connect_timeout;
        let connect_err = |message: String, source| Error::Connect { endpoints: joined.clone(), message, source };
        let attempt = async {
            let mut etcd = etcd_client::Client::connect(&eps, Some(options.to_connect_options())).await?;
            // The channel connects lazily; one tiny read proves that a member answers.
            let probe = format!("{}\0probe", options.namespace);
            match etcd.get(probe, Some(GetOptions::new().with_count_only())).await {
                Ok(_) => Ok(etcd),
                // Connected and authenticated, just not allowed to read there: fine.
                Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => Ok(etcd),
                Err(e) => Err(e),
            }
        };
        let etcd = match tokio::time::timeout(timeout, attempt).await {
            Err(_) => return Err(connect_err(format!("no member answered within {timeout:?}"), None)),
            Ok(Err(e)) => {
                return Err(match Error::from(e) {
                    Error::Connect { message, source, .. } => connect_err(message, source),
                    Error::Timeout { .. } => connect_err(format!("no member answered within {timeout:?}"), None),
                    other => other,
                })
            }
            Ok(Ok(c)) => c,
        };
        info!(endpoints = %joined, namespace = %options.namespace, "connected to etcd");
        Ok(Client { etcd, inner: Arc::new(Inner { options }) })
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

    pub fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// The underlying `etcd_client::Client` (a cheap clone), for anything the recipes
    /// do not cover. Keys given to it are *not* namespaced.
    pub fn etcd(&self) -> etcd_client::Client {
        self.etcd.clone()
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

    /// Run `op`, retrying while the failure proves the request never left this process
    /// (the connection to the chosen member could not be opened, e.g. it is down and the
    /// balancer has not noticed yet). Such a retry is safe even for writes. Bounded by the
    /// request timeout.
    pub(crate) async fn retry<T, F, Fut>(&self, mut op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let until = tokio::time::Instant::now() + self.request_timeout();
        let mut backoff = Duration::from_millis(10);
        loop {
            match op(self.etcd.clone()).await {
                Err(e) if never_sent(&e) && tokio::time::Instant::now() + backoff < until => {
                    debug!(error = %e, "request not sent; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                r => return r,
            }
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// Put a value at `key` (namespaced); returns the revision of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        check_key("key", key)?;
        let (k, v) = (self.full_key(key), value.into());
        let resp = self.retry(|mut c| {
            let (k, v) = (k.clone(), v.clone());
            async move { c.put(k, v, None).await }
        }).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Get the value at `key` (namespaced), if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key("key", key)?;
        let k = self.full_key(key);
        let mut resp = self.retry(|mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        }).await?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| kv.value().to_vec()))
    }

    /// Delete `key` (namespaced); returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64> {
        check_key("key", key)?;
        let k = self.full_key(key);
        let resp = self.retry(|mut c| {
            let k = k.clone();
            async move { c.delete(k, None).await }
        }).await?;
        Ok(resp.deleted())
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> Result<i64> {
        let k = format!("{}\0rev", self.namespace());
        let resp = self.retry(|mut c| {
            let k = k.clone();
            async move { c.get(k, Some(GetOptions::new().with_count_only())).await }
        }).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Does this lease still exist in etcd (remaining TTL > 0)?
    pub async fn lease_exists(&self, lease_id: i64) -> Result<bool> {
        let resp = self.retry(|mut c| async move { c.lease_time_to_live(lease_id, None).await }).await?;
        debug!(lease = format_args!("{lease_id:x}"), ttl = resp.ttl(), "lease time-to-live");
        Ok(resp.ttl() > 0)
    }

    /// Revoke a lease by id (for operators and tests: revoking someone's lease
    /// makes their session lost).
    pub async fn revoke_lease(&self, lease_id: i64) -> Result<()> {
        self.retry(|mut c| async move { c.lease_revoke(lease_id).await }).await?;
        Ok(())
    }
}

/// True when the error says the connection could not even be opened, so the request
/// was never sent.
pub(crate) fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                && (s.message().contains("tcp connect error") || s.message().contains("connection refused"))
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
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
