//! A throwaway real etcd for tests (feature `testing`): one member or a 3-member
//! cluster on free loopback ports in a temporary directory, with the faults tests
//! need (stop, kill, SIGSTOP/SIGCONT, restart, wipe, compact).
//!
//! The etcd binary is `$ETCD_BIN` if set, else `etcd` on `PATH`; `etcdctl` is taken
//! from beside it (or `$ETCDCTL_BIN`, or `PATH`). Everything is stopped on drop.
//!
//! ```no_run
//! # async fn demo() -> etcd_recipes::Result<()> {
//! let mut etcd = etcd_recipes::testing::EtcdCluster::start(1)?;
//! let client = etcd_recipes::Client::connect_to(etcd.endpoints()).await?;
//! etcd.pause(0)?;   // SIGSTOP
//! etcd.resume(0)?;  // SIGCONT
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

use crate::error::{Error, Result};

fn harness_err(msg: impl Into<String>) -> Error {
    Error::Etcd(etcd_client::Error::Internal(format!("test etcd: {}", msg.into())))
}

/// Ports handed out by this process, so that two clusters started at once never share one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| harness_err(format!("no free port: {e}")))?;
        let p = l.local_addr().map_err(|e| harness_err(e.to_string()))?.port();
        let mut used = USED_PORTS.lock().unwrap_or_else(|p| p.into_inner());
        if used.get_or_insert_with(HashSet::new).insert(p) {
            return Ok(p);
        }
    }
    Err(harness_err("could not find a free port"))
}

/// Path of the etcd binary the harness will run.
pub fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    which("etcd").unwrap_or_else(|| PathBuf::from("etcd"))
}

/// Path of the etcdctl matching [`etcd_binary`].
pub fn etcdctl_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCDCTL_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let beside = etcd_binary().with_file_name("etcdctl");
    if beside.is_file() {
        return beside;
    }
    which("etcdctl").unwrap_or_else(|| PathBuf::from("etcdctl"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The version the etcd binary reports, e.g. `"3.4.23"`.
pub fn etcd_version() -> Result<String> {
    let out = Command::new(etcd_binary())
        .arg("--version")
        .output()
        .map_err(|e| harness_err(format!("cannot run {:?}: {e}", etcd_binary())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| harness_err(format!("unexpected `etcd --version` output: {text}")))
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd (1 or more members). Dropping it kills every member and deletes its files.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster").field("endpoints", &self.endpoints()).finish()
    }
}

impl EtcdCluster {
    /// Start `members` members (1 or 3 are the useful sizes) and wait until healthy.
    pub fn start(members: usize) -> Result<EtcdCluster> {
        if members == 0 {
            return Err(Error::invalid("an etcd cluster needs at least one member"));
        }
        let dir = tempfile::Builder::new()
            .prefix("etcd-recipes-test-")
            .tempdir()
            .map_err(|e| harness_err(format!("temp dir: {e}")))?;
        let mut ms = Vec::with_capacity(members);
        for i in 0..members {
            ms.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            });
        }
        let initial_cluster = ms
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("etcd-recipes-{}-{}", std::process::id(), ms[0].client_port);
        let mut c = EtcdCluster { members: ms, initial_cluster, token, dir };
        for i in 0..members {
            c.spawn(i)?;
        }
        c.wait_healthy(Duration::from_secs(30))?;
        info!(endpoints = ?c.endpoints(), "test etcd started");
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| harness_err(format!("log file: {e}")))?;
        let log2 = log.try_clone().map_err(|e| harness_err(e.to_string()))?;
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token, "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| harness_err(format!("cannot start {:?} (set ETCD_BIN or install etcd-server): {e}", etcd_binary())))?;
        m.child = Some(child);
        Ok(())
    }

    /// Client URLs of every member, e.g. `http://127.0.0.1:40123`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The temporary directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of member `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members.get(i)?.child.as_ref().map(|c| c.id())
    }

    fn member(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members.get_mut(i).ok_or_else(|| Error::invalid(format!("no member {i} (cluster has {n})")))
    }

    fn signal(&mut self, i: usize, sig: libc::c_int) -> Result<()> {
        let m = self.member(i)?;
        let child = m.child.as_ref().ok_or_else(|| harness_err(format!("member {i} is not running")))?;
        // SAFETY: kill(2) on a child we spawned and have not yet reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        if rc != 0 {
            return Err(harness_err(format!("kill({sig}) failed: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// SIGSTOP member `i`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGSTOP)
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGCONT)
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = self.member(i)?;
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Stop member `i` gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) -> Result<()> {
        let m = self.member(i)?;
        if let Some(mut c) = m.child.take() {
            // SAFETY: as in `signal`. SIGCONT first, in case it was paused.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Start member `i` again (after `stop` or `kill`) and wait until the cluster is healthy.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        self.member(i)?;
        self.spawn(i)?;
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Stop and start member `i`, keeping its data.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.stop(i)?;
        self.start_member(i)
    }

    /// Stop every member, delete all data, and start a brand-new cluster on the same
    /// ports: every key and lease is gone, as after a disaster.
    pub fn restart_wiped(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.stop(i)?;
        }
        for m in &self.members {
            if m.data_dir.exists() {
                fs::remove_dir_all(&m.data_dir).map_err(|e| harness_err(format!("wipe: {e}")))?;
            }
        }
        for i in 0..self.members.len() {
            self.spawn(i)?;
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Stop every member (the temp dir stays until drop).
    pub fn stop_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.stop(i)?;
        }
        Ok(())
    }

    /// Wait until every running member reports healthy (it has a leader).
    pub fn wait_healthy(&mut self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        for i in 0..self.members.len() {
            loop {
                if let Some(c) = self.members[i].child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        self.members[i].child = None;
                        return Err(harness_err(format!(
                            "member {i} exited ({status}); log:\n{}",
                            self.log_tail(i, 30)
                        )));
                    }
                } else {
                    break; // not running: nothing to wait for
                }
                if health(self.members[i].client_port) {
                    break;
                }
                if Instant::now() > until {
                    return Err(harness_err(format!(
                        "member {i} not healthy within {within:?}; log:\n{}",
                        self.log_tail(i, 30)
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The last `n` lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Compact the store at its current revision (physically); returns that revision.
    /// Fails after 10 s (for instance when every member is paused) instead of hanging.
    pub async fn compact(&self) -> Result<i64> {
        compact_endpoints(self.endpoints()).await
    }

    /// An `etcdctl` command aimed at this cluster (API v3), ready for more args.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(etcdctl_binary());
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoints().join(",")));
        cmd
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                // SAFETY: as in `signal`; SIGCONT so a paused member can die.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Compact the store behind `endpoints` (for instance one chosen member of a cluster) at
/// its current revision, physically; returns that revision. Fails after 10 s instead of
/// hanging when no member answers.
pub async fn compact_endpoints(endpoints: Vec<String>) -> Result<i64> {
    let limit = Duration::from_secs(10);
    let run = async {
        let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
        let mut c = etcd_client::Client::connect(endpoints, Some(opts)).await?;
        let rev = c
            .get("\0", Some(etcd_client::GetOptions::new().with_count_only()))
            .await?
            .header()
            .map(|h| h.revision())
            .unwrap_or(0);
        c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await?;
        Ok(rev)
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| Error::Timeout { what: "test etcd compaction".into(), after: limit })?
}

/// GET /health on a client port; true when etcd says `"health":"true"`.
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("\"health\":\"true\"")
}
