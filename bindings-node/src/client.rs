//! `Client`: one connection. `close()` is core's: it ends everything made from the client.

use etcd_recipes::{ClientOptions, Error as CoreError, TlsConfig};
use napi::bindgen_prelude::{BigInt, Buffer, Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::errors::{self, bytes};
use crate::session::Session;

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

fn options(env: &Env, o: ConnectOptions) -> napi::Result<ClientOptions> {
    let mut opts = ClientOptions::new(o.endpoints);
    if let Some(t) = errors::millis(env, "connectTimeoutMs", o.connect_timeout_ms)? {
        opts = opts.with_connect_timeout(t);
    }
    if let Some(t) = errors::millis(env, "requestTimeoutMs", o.request_timeout_ms)? {
        opts = opts.with_request_timeout(t);
    }
    match (o.user, o.password) {
        (Some(u), p) => opts = opts.with_user(u, p.unwrap_or_default()),
        (None, Some(_)) => return Err(errors::invalid(env, "password given without user")),
        (None, None) => {}
    }
    let (ca, cert, key) = (o.ca_cert.map(bytes), o.cert.map(bytes), o.key.map(bytes));
    if ca.is_some() || cert.is_some() || key.is_some() || o.tls_domain.is_some() {
        opts = opts.with_tls(TlsConfig { ca_pem: ca, client_cert_pem: cert, client_key_pem: key, domain: o.tls_domain });
    }
    Ok(match o.namespace {
        Some(ns) => opts.with_namespace(ns),
        None => opts,
    })
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
    pub(crate) core: etcd_recipes::Client,
}

#[napi]
impl Client {
    /// Connect and wait until etcd answers (at most `connectTimeoutMs`).
    ///
    /// Rejects with code `INVALID_ARGUMENT` (a `TypeError`) for bad options and `CONNECT`
    /// when no endpoint answers in time.
    #[napi(strict, ts_return_type = "Promise<Client>", writable = true, configurable = true)]
    pub fn connect<'env>(env: &'env Env, options: ConnectOptions) -> napi::Result<PromiseRaw<'env, Client>> {
        let opts = self::options(env, options)?;
        errors::promise(env, async move { Ok(Client { core: etcd_recipes::Client::connect(opts).await? }) })
    }

    /// The endpoints given to `connect`.
    #[napi(getter)]
    pub fn endpoints(&self) -> Vec<String> {
        self.core.options().endpoints().to_vec()
    }

    /// The key namespace of this client ("" when none).
    #[napi(getter)]
    pub fn namespace(&self) -> String {
        self.core.namespace().to_string()
    }

    /// True once `close()` was called.
    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// This client's coordination health now, for a readiness probe (no request to etcd).
    #[napi]
    pub fn health(&self) -> crate::health::Health {
        etcd_recipes::health::health(&self.core).into()
    }

    /// Put a value (a string or bytes) at `key` (namespaced); resolves to the revision of the write.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn put<'env>(&self, env: &'env Env, key: String, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, i64>> {
        let (c, v) = (self.core.clone(), bytes(value));
        errors::promise(env, async move { c.put(&key, v).await })
    }

    /// The value at `key` (namespaced) as a Buffer, or `null` when there is none.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn get<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, Option<Buffer>>> {
        let c = self.core.clone();
        errors::promise(env, async move { Ok(c.get(&key).await?.map(Buffer::from)) })
    }

    /// The value at `key` (namespaced) as a UTF-8 string, or `null` (code `DECODE` if not UTF-8).
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn get_string<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let c = self.core.clone();
        errors::promise(env, async move {
            let value = c.get(&key).await?;
            value.map(String::from_utf8).transpose().map_err(|e| CoreError::Decode { key, message: e.to_string() })
        })
    }

    /// Delete `key` (namespaced); resolves to the number of keys deleted (0 or 1).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete<'env>(&self, env: &'env Env, key: String) -> napi::Result<PromiseRaw<'env, i64>> {
        let c = self.core.clone();
        errors::promise(env, async move { c.delete(&key).await })
    }

    /// The current revision of the store.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn revision<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let c = self.core.clone();
        errors::promise(env, async move { c.revision().await })
    }

    /// Grant a lease (`ttl` seconds, default 10) and keep it alive: the unit of liveness of
    /// locks and elections.
    #[napi(strict, ts_return_type = "Promise<Session>")]
    pub fn session<'env>(&self, env: &'env Env, options: Option<SessionOptions>) -> napi::Result<PromiseRaw<'env, Session>> {
        let ttl = errors::ttl(env, options.and_then(|o| o.ttl))?;
        let c = self.core.clone();
        errors::promise(env, async move { Ok(Session::from(etcd_recipes::Session::new(&c, ttl).await?)) })
    }

    /// Does this lease (a bigint, or a decimal or 0x-hex string) still exist in etcd?
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn lease_exists<'env>(&self, env: &'env Env, lease_id: Either<String, BigInt>) -> napi::Result<PromiseRaw<'env, bool>> {
        let (c, id) = (self.core.clone(), errors::lease_id(env, lease_id)?);
        errors::promise(env, async move { c.lease_exists(id).await })
    }

    /// Revoke a lease by id: for operators and tests (its holder's session becomes lost).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn revoke_lease<'env>(&self, env: &'env Env, lease_id: Either<String, BigInt>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (c, id) = (self.core.clone(), errors::lease_id(env, lease_id)?);
        errors::promise(env, async move { c.revoke_lease(id).await })
    }

    /// Close the client and everything made from it, within 5 s: sessions are revoked
    /// (locks and leaderships on them end), registrations removed, views and iterators
    /// ended, waits rejected with `CLOSED`. Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let c = self.core.clone();
        errors::promise(env, async move {
            c.close().await;
            Ok(())
        })
    }

    /// `await using client = await Client.connect(...)`: closes the client.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }
}
