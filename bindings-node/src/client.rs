//! `Client`: one connection, the parent of every session, lock, election, registration and
//! view made from it. `client.close()` closes them all, so that nothing keeps running (or
//! keeps Node's event loop alive) once the client is closed.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use etcd_recipes::{ClientOptions, ErrorKind, TlsConfig};
use futures::future::BoxFuture;
use napi::bindgen_prelude::{Buffer, Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;
use tokio::sync::watch;

use crate::errors;
use crate::session::Session;

/// The runtime handle handed to napi at init (kept so that objects dropped by the JS
/// garbage collector can still spawn their clean-up).
pub(crate) static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Drop `value` inside the shared runtime, so that core's `Drop` impls can spawn their
/// best-effort clean-up (delete a key, revoke a lease) even from a GC finalizer.
pub(crate) fn drop_in_runtime<T>(value: T) {
    match RUNTIME.get() {
        Some(h) => {
            let _g = h.enter();
            drop(value);
        }
        None => drop(value),
    }
}

/// Something made from a client that `client.close()` must close.
pub(crate) trait Child: Send + Sync {
    fn shutdown(self: Arc<Self>) -> BoxFuture<'static, ()>;
}

/// What every object made from a client shares with it.
pub(crate) struct Scope {
    pub(crate) core: etcd_recipes::Client,
    closed: watch::Sender<bool>,
    children: Mutex<Vec<Weak<dyn Child>>>,
}

impl Scope {
    /// Fail with `CLOSED` once the client is closed.
    pub(crate) fn check(&self) -> etcd_recipes::Result<()> {
        if *self.closed.borrow() {
            Err(etcd_recipes::Error::Closed("client"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the client is closed.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Close `child` when the client closes.
    pub(crate) fn adopt(&self, child: Weak<dyn Child>) {
        let mut v = self.children.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(child);
    }
}

/// TLS material as PEM text or bytes.
pub type Pem = Either<String, Uint8Array>;


fn pem(p: Option<Pem>) -> Option<Vec<u8>> {
    p.map(|p| match p {
        Either::A(s) => s.into_bytes(),
        Either::B(b) => b.to_vec(),
    })
}

/// How to connect to etcd.
#[napi(object)]
pub struct ConnectOptions {
    /// etcd endpoints: `host:port`, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// How long `connect` waits for the first answer from etcd, in ms (default 5000).
    pub connect_timeout_ms: Option<f64>,
    /// Deadline of each etcd request, in ms (default 10000). Waits such as lock acquisition
    /// are bounded by their own timeouts.
    pub request_timeout_ms: Option<f64>,
    /// etcd user name (with `password`).
    pub user: Option<String>,
    /// etcd password (with `user`).
    pub password: Option<String>,
    /// PEM CA certificate(s) that signed the server certificate (for `https://`).
    pub ca_cert: Option<Either<String, Uint8Array>>,
    /// PEM client certificate, for mutual TLS (with `key`).
    pub cert: Option<Either<String, Uint8Array>>,
    /// PEM client private key, for mutual TLS (with `cert`).
    pub key: Option<Either<String, Uint8Array>>,
    /// Server name to verify when it differs from the endpoint host.
    pub tls_domain: Option<String>,
    /// A prefix put in front of every key this client's recipes read or write, e.g. `"myapp/"`.
    pub namespace: Option<String>,
}

/// Options of `client.session()`.
#[napi(object)]
pub struct SessionOptions {
    /// Lease TTL in seconds (default 10). The lease is renewed every TTL/6 (at most every 500 ms).
    pub ttl: Option<f64>,
}

/// One connection to etcd, shared by every recipe made from it.
///
/// ```js
/// const client = await Client.connect({ endpoints: ['127.0.0.1:2379'] })
/// await client.put('greeting', 'hello')
/// await client.close()
/// ```
#[napi]
pub struct Client {
    pub(crate) scope: Arc<Scope>,
}

fn build_options(env: &Env, o: ConnectOptions) -> napi::Result<ClientOptions> {
    let mut opts = ClientOptions::new(o.endpoints);
    if let Some(ms) = o.connect_timeout_ms {
        opts = opts.with_connect_timeout(errors::millis(env, "connectTimeoutMs", ms)?);
    }
    if let Some(ms) = o.request_timeout_ms {
        opts = opts.with_request_timeout(errors::millis(env, "requestTimeoutMs", ms)?);
    }
    match (o.user, o.password) {
        (Some(u), Some(p)) => opts = opts.with_user(u, p),
        (Some(u), None) => opts = opts.with_user(u, String::new()),
        (None, Some(_)) => return Err(errors::invalid(env, "password given without user")),
        (None, None) => {}
    }
    let (ca, cert, key) = (pem(o.ca_cert), pem(o.cert), pem(o.key));
    if ca.is_some() || cert.is_some() || key.is_some() || o.tls_domain.is_some() {
        opts = opts.with_tls(TlsConfig { ca_pem: ca, client_cert_pem: cert, client_key_pem: key, domain: o.tls_domain });
    }
    if let Some(ns) = o.namespace {
        opts = opts.with_namespace(ns);
    }
    Ok(opts)
}

/// A value to store: a string (stored as UTF-8) or bytes.
pub type Value = Either<String, Uint8Array>;

pub(crate) fn value_bytes(v: Value) -> Vec<u8> {
    match v {
        Either::A(s) => s.into_bytes(),
        Either::B(b) => b.to_vec(),
    }
}

#[napi]
impl Client {
    /// Connect and wait until etcd answers (at most `connectTimeoutMs`).
    ///
    /// Rejects with code `INVALID_ARGUMENT` (a `TypeError`) for bad options and `CONNECT`
    /// when no endpoint answers in time.
    #[napi(ts_return_type = "Promise<Client>", writable = true, configurable = true)]
    pub fn connect<'env>(env: &'env Env, options: ConnectOptions) -> napi::Result<PromiseRaw<'env, Client>> {
        let opts = build_options(env, options)?;
        errors::promise(env, async move {
            let core = etcd_recipes::Client::connect(opts).await?;
            let (closed, _) = watch::channel(false);
            Ok(Client { scope: Arc::new(Scope { core, closed, children: Mutex::new(Vec::new()) }) })
        })
    }

    /// The key namespace of this client ("" when none).
    #[napi(getter)]
    pub fn namespace(&self) -> String {
        self.scope.core.namespace().to_string()
    }

    /// True once `close()` was called.
    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.scope.is_closed()
    }

    /// Put a value (a string or bytes) at `key` (namespaced); resolves to the revision of the write.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn put<'env>(&self, env: &'env Env, key: String, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, i64>> {
        let (scope, v) = (self.scope.clone(), value_bytes(value));
        errors::promise(env, async move {
            scope.check()?;
            scope.core.put(&key, v).await
        })
    }

    /// The value at `key` (namespaced) as a Buffer, or `null` when there is none.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn get<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, Option<Buffer>>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            Ok(scope.core.get(&key).await?.map(Buffer::from))
        })
    }

    /// The value at `key` (namespaced) as a UTF-8 string, or `null` (code `DECODE` if not UTF-8).
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn get_string<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            match scope.core.get(&key).await? {
                None => Ok(None),
                Some(v) => String::from_utf8(v).map(Some).map_err(|e| etcd_recipes::Error::Decode {
                    key: key.clone(),
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Delete `key` (namespaced); resolves to the number of keys deleted (0 or 1).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, i64>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            scope.core.delete(&key).await
        })
    }

    /// The current revision of the store.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn revision<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            scope.core.revision().await
        })
    }

    /// Grant a lease (`ttl` seconds, default 10) and keep it alive: the unit of liveness of
    /// locks and elections.
    #[napi(ts_return_type = "Promise<Session>")]
    pub fn session<'env>(&self, env: &'env Env, options: Option<SessionOptions>) -> napi::Result<PromiseRaw<'env, Session>> {
        let ttl = ttl_arg(env, options.and_then(|o| o.ttl))?;
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            let core = etcd_recipes::Session::new(&scope.core, ttl).await?;
            Ok(Session::new(scope, core))
        })
    }

    /// Revoke a lease by id (decimal string or bigint): for operators and tests.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn revoke_lease<'env>(&self, env: &'env Env, lease_id: Either<String, napi::bindgen_prelude::BigInt>) -> napi::Result<PromiseRaw<'env, ()>> {
        let id = lease_arg(env, lease_id)?;
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            scope.core.revoke_lease(id).await
        })
    }

    /// `await using client = await Client.connect(...)`: closes the client.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }

    /// Does this lease still exist in etcd (remaining TTL > 0)?
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn lease_exists<'env>(&self, env: &'env Env, lease_id: Either<String, napi::bindgen_prelude::BigInt>) -> napi::Result<PromiseRaw<'env, bool>> {
        let id = lease_arg(env, lease_id)?;
        let scope = self.scope.clone();
        errors::promise(env, async move {
            scope.check()?;
            scope.core.lease_exists(id).await
        })
    }

    /// Close the client and everything made from it (sessions are revoked, locks released,
    /// leaderships resigned, registrations removed, views and iterators ended). Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let scope = self.scope.clone();
        errors::promise(env, async move {
            let first = scope.closed.send_if_modified(|c| !std::mem::replace(c, true));
            if first {
                let children: Vec<_> = std::mem::take(&mut *scope.children.lock().unwrap_or_else(|p| p.into_inner()));
                let all = children.into_iter().filter_map(|w| w.upgrade()).map(|c| c.shutdown());
                let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(all)).await;
            }
            Ok(())
        })
    }
}

/// A TTL option in whole seconds (default 10).
pub(crate) fn ttl_arg(env: &Env, ttl: Option<f64>) -> napi::Result<i64> {
    match ttl {
        None => Ok(10),
        Some(t) => errors::whole(env, "ttl", t, 1.0, etcd_recipes::session::MAX_TTL_SECS as f64),
    }
}

/// A lease id given as a decimal/hex string or a bigint.
pub(crate) fn lease_arg(env: &Env, v: Either<String, napi::bindgen_prelude::BigInt>) -> napi::Result<i64> {
    match v {
        Either::A(s) => {
            let parsed = match s.strip_prefix("0x") {
                Some(h) => i64::from_str_radix(h, 16).ok(),
                None => s.parse::<i64>().ok(),
            };
            parsed.ok_or_else(|| errors::invalid(env, format!("lease id {s:?} is not a decimal or 0x-hex integer")))
        }
        Either::B(b) => {
            let (v, lossless) = b.get_i64();
            if lossless {
                Ok(v)
            } else {
                Err(errors::js_error(env, ErrorKind::InvalidArgument, "lease id does not fit in 64 bits".into()))
            }
        }
    }
}
