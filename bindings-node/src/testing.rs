//! `EtcdCluster`: a throwaway real etcd for tests (core `testing::EtcdCluster`), exported to
//! users as `require('etcd-recipes/testing')`.

use std::sync::{Arc, Mutex};

use etcd_recipes::testing;
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use crate::errors;

/// Options of `EtcdCluster.start()`.
#[napi(object)]
pub struct EtcdClusterOptions {
    /// Number of members (1 or 3 are the useful sizes; default 1).
    pub members: Option<u32>,
    /// Serve clients on `https://` only and require a client certificate signed by the
    /// test CA (mutual TLS); the certificates are generated at start (`certs`).
    pub tls: Option<bool>,
    /// Turn on user/password authentication with a root user (`user`, `password`);
    /// `addUser()` adds users with no permission.
    pub auth: Option<bool>,
}

/// Paths of the PEM files generated for a TLS test etcd. Read them (`fs.readFileSync`)
/// for `Client.connect({ caCert, cert, key })`.
#[napi(object)]
#[derive(Clone)]
pub struct TestCerts {
    /// The CA that signed the server certificate and the good client certificates.
    pub ca: String,
    /// A client certificate the server accepts, and its key.
    pub client_cert: String,
    pub client_key: String,
    /// Another CA, which signed nothing the server or a client trusts.
    pub other_ca: String,
    /// A client certificate signed by `otherCa` (the server refuses it), and its key.
    pub other_client_cert: String,
    pub other_client_key: String,
    /// A client certificate signed by the right CA that expired in 2001, and its key.
    pub expired_client_cert: String,
    pub expired_client_key: String,
    /// The server certificate (for 127.0.0.1 and localhost) and its key.
    pub server_cert: String,
    pub server_key: String,
    /// The directory holding every file.
    pub dir: String,
}

impl From<&testing::TestCerts> for TestCerts {
    fn from(c: &testing::TestCerts) -> Self {
        let p = |p: &std::path::Path| p.to_string_lossy().into_owned();
        TestCerts {
            ca: p(&c.ca),
            client_cert: p(&c.client_cert),
            client_key: p(&c.client_key),
            other_ca: p(&c.other_ca),
            other_client_cert: p(&c.other_client_cert),
            other_client_key: p(&c.other_client_key),
            expired_client_cert: p(&c.expired_client_cert),
            expired_client_key: p(&c.expired_client_key),
            server_cert: p(&c.server_cert),
            server_key: p(&c.server_key),
            dir: p(&c.dir),
        }
    }
}

type Shared = Arc<Mutex<Option<testing::EtcdCluster>>>;

/// A real etcd (one member or a cluster) on free loopback ports in a temp dir, started with
/// `$ETCD_BIN` (or `etcd` on PATH). `close()` stops every member and deletes its files.
#[napi]
pub struct EtcdCluster {
    inner: Shared,
    endpoints: Vec<String>,
    etcdctl: Vec<String>,
    dir: String,
    certs: Option<TestCerts>,
    user: Option<String>,
    password: Option<String>,
}

fn with<T>(inner: &Shared, f: impl FnOnce(&mut testing::EtcdCluster) -> etcd_recipes::Result<T>) -> etcd_recipes::Result<T> {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_mut() {
        Some(c) => f(c),
        None => Err(etcd_recipes::Error::Closed("test etcd cluster")),
    }
}

/// Run a blocking harness call off the JS thread.
fn blocking<'env>(
    env: &'env Env,
    inner: &Shared,
    f: impl FnOnce(&mut testing::EtcdCluster) -> etcd_recipes::Result<()> + Send + 'static,
) -> napi::Result<PromiseRaw<'env, ()>> {
    let inner = inner.clone();
    errors::promise(env, async move {
        tokio::task::spawn_blocking(move || with(&inner, f))
            .await
            .map_err(|e| internal(e.to_string()))?
    })
}

fn internal(msg: String) -> etcd_recipes::Error {
    etcd_recipes::Error::Etcd(etcd_recipes::etcd_client::Error::Internal(msg))
}

#[napi]
impl EtcdCluster {
    /// Start the members and wait until the cluster is healthy (with `auth`, until
    /// authentication is on).
    #[napi(ts_return_type = "Promise<EtcdCluster>", writable = true, configurable = true)]
    pub fn start<'env>(env: &'env Env, options: Option<EtcdClusterOptions>) -> napi::Result<PromiseRaw<'env, EtcdCluster>> {
        let (n, tls, auth) = match options {
            Some(o) => (o.members.unwrap_or(1) as usize, o.tls.unwrap_or(false), o.auth.unwrap_or(false)),
            None => (1, false, false),
        };
        let mut start = testing::StartOptions::new(n);
        if tls {
            start = start.with_tls();
        }
        if auth {
            start = start.with_auth();
        }
        errors::promise(env, async move {
            let c = tokio::task::spawn_blocking(move || testing::EtcdCluster::start_with(start))
                .await
                .map_err(|e| internal(e.to_string()))??;
            let endpoints = c.endpoints();
            let etcdctl = std::iter::once(testing::etcdctl_binary().to_string_lossy().into_owned()).chain(c.etcdctl_args()).collect();
            let dir = c.dir().to_string_lossy().into_owned();
            let certs = c.certs().map(TestCerts::from);
            let (user, password) = (c.user().map(str::to_string), c.password().map(str::to_string));
            Ok(EtcdCluster { inner: Arc::new(Mutex::new(Some(c))), endpoints, etcdctl, dir, certs, user, password })
        })
    }

    /// The generated certificates (started with `tls: true`), else null.
    #[napi(getter)]
    pub fn certs(&self) -> Option<TestCerts> {
        self.certs.clone()
    }

    /// The root user's name (started with `auth: true`), else null.
    #[napi(getter)]
    pub fn user(&self) -> Option<String> {
        self.user.clone()
    }

    /// The root user's password (started with `auth: true`), else null.
    #[napi(getter)]
    pub fn password(&self) -> Option<String> {
        self.password.clone()
    }

    /// Add a user with this password and no role, so no permission on any key (needs `auth: true`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn add_user<'env>(&self, env: &'env Env, name: String, password: String) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, move |c| c.add_user(&name, &password))
    }

    /// Client URLs of every member, e.g. `http://127.0.0.1:40123`.
    #[napi(getter)]
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// Client URL of member `i`.
    #[napi]
    pub fn endpoint(&self, env: &Env, member: u32) -> napi::Result<String> {
        let n = self.endpoints.len();
        self.endpoints.get(member as usize).cloned().ok_or_else(|| errors::invalid(env, format!("no member {member} (cluster has {n})")))
    }

    /// `etcdctl` aimed at this cluster: the binary, then `--endpoints=...` (and the TLS
    /// files and root user when it has them); run it with `ETCDCTL_API=3`.
    #[napi(getter)]
    pub fn etcdctl(&self) -> Vec<String> {
        self.etcdctl.clone()
    }

    /// The temporary directory holding data and logs (deleted by `close()`).
    #[napi(getter)]
    pub fn dir(&self) -> String {
        self.dir.clone()
    }

    /// Path of the `etcdctl` matching the etcd binary (use with `ETCDCTL_API=3` and `--endpoints`).
    #[napi(getter)]
    pub fn etcdctl_path(&self) -> String {
        testing::etcdctl_binary().to_string_lossy().into_owned()
    }

    /// Path of the etcd binary used.
    #[napi(getter)]
    pub fn etcd_path(&self) -> String {
        testing::etcd_binary().to_string_lossy().into_owned()
    }

    /// Process id of member `i`, or null when it is not running.
    #[napi]
    pub fn pid(&self, env: &Env, member: u32) -> napi::Result<Option<u32>> {
        with(&self.inner, |c| Ok(c.pid(member as usize))).map_err(|e| errors::sync(env, e))
    }

    /// SIGSTOP member `i`: it keeps its sockets but answers nothing.
    #[napi]
    pub fn pause(&self, env: &Env, member: u32) -> napi::Result<()> {
        with(&self.inner, |c| c.pause(member as usize)).map_err(|e| errors::sync(env, e))
    }

    /// SIGCONT member `i`.
    #[napi]
    pub fn resume(&self, env: &Env, member: u32) -> napi::Result<()> {
        with(&self.inner, |c| c.resume(member as usize)).map_err(|e| errors::sync(env, e))
    }

    /// SIGKILL member `i`.
    #[napi]
    pub fn kill(&self, env: &Env, member: u32) -> napi::Result<()> {
        with(&self.inner, |c| c.kill(member as usize)).map_err(|e| errors::sync(env, e))
    }

    /// Stop member `i` gracefully (SIGTERM).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop_member<'env>(&self, env: &'env Env, member: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, move |c| c.stop(member as usize))
    }

    /// Stop every member gracefully; the files stay until `close()`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, |c| c.stop_all())
    }

    /// Start member `i` again (after `stop` or `kill`) and wait until healthy.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn start_member<'env>(&self, env: &'env Env, member: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, move |c| c.start_member(member as usize))
    }

    /// Stop and start member `i`, keeping its data.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn restart<'env>(&self, env: &'env Env, member: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, move |c| c.restart(member as usize))
    }

    /// Stop every member, delete all data and start a brand-new cluster on the same ports.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn restart_wiped<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, |c| c.restart_wiped())
    }

    /// Compact the store at its current revision (physically); resolves to that revision.
    /// Talks to `member` only when given (e.g. while another member is paused); at most 10 s.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn compact<'env>(&self, env: &'env Env, member: Option<u32>) -> napi::Result<PromiseRaw<'env, i64>> {
        let endpoints = match member {
            Some(i) => match self.endpoints.get(i as usize) {
                Some(e) => vec![e.clone()],
                None => return Err(errors::invalid(env, format!("no member {i} (cluster has {})", self.endpoints.len()))),
            },
            None => self.endpoints.clone(),
        };
        let inner = self.inner.clone();
        errors::promise(env, async move {
            let options = with(&inner, |c| c.admin_options())?;
            etcd_recipes::testing::compact_endpoints_with(endpoints, options).await
        })
    }

    /// The last `lines` lines of member `i`'s log.
    #[napi]
    pub fn log_tail(&self, env: &Env, member: u32, lines: Option<u32>) -> napi::Result<String> {
        with(&self.inner, |c| Ok(c.log_tail(member as usize, lines.unwrap_or(30) as usize))).map_err(|e| errors::sync(env, e))
    }

    /// `await using etcd = await EtcdCluster.start()`: stops the cluster.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.close(env)
    }

    /// Stop every member and delete the files. Idempotent.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        errors::promise(env, async move {
            let taken = inner.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(c) = taken {
                let _ = tokio::task::spawn_blocking(move || drop(c)).await;
            }
            Ok(())
        })
    }

    /// Kill every member at once, synchronously (for `process.on('exit')`).
    #[napi]
    pub fn close_sync(&self) {
        let taken = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(taken);
    }
}
