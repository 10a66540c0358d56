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
}

type Shared = Arc<Mutex<Option<testing::EtcdCluster>>>;

/// A real etcd (one member or a cluster) on free loopback ports in a temp dir, started with
/// `$ETCD_BIN` (or `etcd` on PATH). `close()` stops every member and deletes its files.
#[napi]
pub struct EtcdCluster {
    inner: Shared,
    endpoints: Vec<String>,
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
    /// Start the members and wait until the cluster is healthy.
    #[napi(ts_return_type = "Promise<EtcdCluster>", writable = true, configurable = true)]
    pub fn start<'env>(env: &'env Env, options: Option<EtcdClusterOptions>) -> napi::Result<PromiseRaw<'env, EtcdCluster>> {
        let n = options.and_then(|o| o.members).unwrap_or(1) as usize;
        errors::promise(env, async move {
            let c = tokio::task::spawn_blocking(move || testing::EtcdCluster::start(n))
                .await
                .map_err(|e| internal(e.to_string()))??;
            let endpoints = c.endpoints();
            Ok(EtcdCluster { inner: Arc::new(Mutex::new(Some(c))), endpoints })
        })
    }

    /// Client URLs of every member, e.g. `http://127.0.0.1:40123`.
    #[napi(getter)]
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
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
    pub fn stop<'env>(&self, env: &'env Env, member: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        blocking(env, &self.inner, move |c| c.stop(member as usize))
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
            with(&inner, |_| Ok(()))?;
            etcd_recipes::testing::compact_endpoints(endpoints).await
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
