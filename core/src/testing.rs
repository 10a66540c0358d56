//! A throwaway real etcd for tests (feature `testing`): one member or a 3-member
//! cluster on free loopback ports in a temporary directory, with the faults tests
//! need (stop, kill, SIGSTOP/SIGCONT, restart, wipe, compact).
//!
//! The etcd binary is `$ETCD_BIN` if set, else `etcd` on `PATH`; `etcdctl` is taken
//! from beside it (or `$ETCDCTL_BIN`, or `PATH`). Everything is stopped on drop.
//!
//! [`EtcdCluster::start_with`] also starts etcd with TLS (mutual TLS, with certificates
//! generated at start: see [`TestCerts`]) and/or with user/password authentication.
//!
//! ```no_run
//! # async fn demo() -> etcd_recipes::Result<()> {
//! let mut etcd = etcd_recipes::testing::EtcdCluster::start(1)?;
//! let client = etcd_recipes::Client::connect_to(etcd.endpoints()).await?;
//! etcd.pause(0)?;   // SIGSTOP
//! etcd.resume(0)?;  // SIGCONT
//!
//! use etcd_recipes::testing::{EtcdCluster, StartOptions};
//! let secure = EtcdCluster::start_with(StartOptions::new(1).with_tls().with_auth())?;
//! let client = etcd_recipes::Client::connect(secure.client_options()).await?;
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

use crate::client::{ClientOptions, TlsConfig};
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
    /// Plain-HTTP `/health` (and `/metrics`), used when clients must speak TLS.
    metrics_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// How to start a test etcd ([`EtcdCluster::start_with`]).
#[derive(Clone, Debug)]
pub struct StartOptions {
    members: usize,
    tls: bool,
    auth: bool,
}

impl StartOptions {
    /// `members` members (1 or 3 are the useful sizes), plain HTTP, no authentication.
    pub fn new(members: usize) -> Self {
        StartOptions { members, tls: false, auth: false }
    }

    /// Serve clients on `https://` only, with a server certificate for 127.0.0.1 and
    /// localhost, and require a client certificate signed by the test CA
    /// (`--client-cert-auth`). The certificates are generated at start: [`EtcdCluster::certs`].
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Enable user/password authentication: a `root` user (with the root role) whose
    /// password is [`EtcdCluster::password`]. [`EtcdCluster::add_user`] adds users with no
    /// permission at all.
    pub fn with_auth(mut self) -> Self {
        self.auth = true;
        self
    }
}

/// PEM files generated for a TLS test etcd, all in one directory. Every certificate is
/// an ECDSA P-256 one; valid ones run from 1975 to 4096.
#[derive(Clone, Debug)]
pub struct TestCerts {
    /// The directory holding every file below.
    pub dir: PathBuf,
    /// The CA that signed the server certificate and the good client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate the server accepts.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Another CA, which signed nothing the server or a client trusts.
    pub other_ca: PathBuf,
    /// A client certificate signed by [`TestCerts::other_ca`]: the server refuses it.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    /// A client certificate signed by the right CA that expired in 2001.
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
}

impl TestCerts {
    /// Generate a fresh set of certificates into `dir` (created if missing).
    pub fn generate(dir: &Path) -> Result<TestCerts> {
        use rcgen::{
            date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| harness_err(format!("generating test certificates: {e}"));
        fs::create_dir_all(dir).map_err(|e| harness_err(format!("{}: {e}", dir.display())))?;
        let write = |name: &str, pem: String| -> Result<PathBuf> {
            let p = dir.join(name);
            fs::write(&p, pem).map_err(|e| harness_err(format!("{}: {e}", p.display())))?;
            Ok(p)
        };
        let ca = |cn: &str| -> Result<(String, Issuer<'static, KeyPair>)> {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.self_signed(&key).map_err(err)?;
            Ok((cert.pem(), Issuer::new(params, key)))
        };
        let leaf = |issuer: &Issuer<'static, KeyPair>,
                    cn: &str,
                    sans: Vec<String>,
                    usages: Vec<ExtendedKeyUsagePurpose>,
                    expired: bool|
         -> Result<(String, String)> {
            let mut params = CertificateParams::new(sans).map_err(err)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = usages;
            params.use_authority_key_identifier_extension = true;
            if expired {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(2001, 1, 1);
            }
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.signed_by(&key, issuer).map_err(err)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (ca_pem, issuer) = ca("etcd-recipes test CA")?;
        let (other_ca_pem, other_issuer) = ca("etcd-recipes other test CA")?;
        // etcd's own gateway dials the server with the server certificate: it needs both usages.
        let server = leaf(&issuer, "etcd-recipes test server", vec!["127.0.0.1".into(), "localhost".into()], vec![ServerAuth, ClientAuth], false)?;
        let client = leaf(&issuer, "etcd-recipes-test-client", vec![], vec![ClientAuth], false)?;
        let other = leaf(&other_issuer, "etcd-recipes-test-client", vec![], vec![ClientAuth], false)?;
        let expired = leaf(&issuer, "etcd-recipes-test-client", vec![], vec![ClientAuth], true)?;
        Ok(TestCerts {
            dir: dir.to_path_buf(),
            ca: write("ca.pem", ca_pem)?,
            server_cert: write("server.pem", server.0)?,
            server_key: write("server-key.pem", server.1)?,
            client_cert: write("client.pem", client.0)?,
            client_key: write("client-key.pem", client.1)?,
            other_ca: write("other-ca.pem", other_ca_pem)?,
            other_client_cert: write("other-client.pem", other.0)?,
            other_client_key: write("other-client-key.pem", other.1)?,
            expired_client_cert: write("expired-client.pem", expired.0)?,
            expired_client_key: write("expired-client-key.pem", expired.1)?,
        })
    }

    /// The TLS options of a client the server accepts (the CA and the good client certificate).
    pub fn tls_config(&self) -> Result<TlsConfig> {
        Ok(TlsConfig {
            ca_pem: Some(read(&self.ca)?),
            client_cert_pem: Some(read(&self.client_cert)?),
            client_key_pem: Some(read(&self.client_key)?),
            domain: None,
        })
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).map_err(|e| harness_err(format!("{}: {e}", p.display())))
}

/// The name of the user [`StartOptions::with_auth`] creates.
pub const ROOT_USER: &str = "root";

/// A running etcd (1 or more members). Dropping it kills every member and deletes its files.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    certs: Option<TestCerts>,
    password: Option<String>,
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
        Self::start_with(StartOptions::new(members))
    }

    /// Start a cluster as `options` say (TLS, authentication) and wait until healthy
    /// (with authentication, until it is enabled).
    pub fn start_with(options: StartOptions) -> Result<EtcdCluster> {
        let members = options.members;
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
                metrics_port: free_port()?,
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
        let certs = if options.tls { Some(TestCerts::generate(&dir.path().join("tls"))?) } else { None };
        let password = options.auth.then(|| format!("root-{:016x}", rand::random::<u64>()));
        let mut c = EtcdCluster { members: ms, initial_cluster, token, certs, password, dir };
        for i in 0..members {
            c.spawn(i)?;
        }
        c.wait_healthy(Duration::from_secs(30))?;
        c.enable_auth()?;
        info!(endpoints = ?c.endpoints(), tls = options.tls, auth = options.auth, "test etcd started");
        Ok(c)
    }

    /// The generated certificates, when started [`StartOptions::with_tls`].
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// The root user's name ([`ROOT_USER`]), when started [`StartOptions::with_auth`].
    pub fn user(&self) -> Option<&str> {
        self.password.as_ref().map(|_| ROOT_USER)
    }

    /// The root user's password, when started [`StartOptions::with_auth`].
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Client options that work against this cluster: its endpoints, and the test CA and
    /// good client certificate (with TLS) and the root user (with authentication).
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.endpoints());
        if let Some(certs) = &self.certs {
            // The files were written at start; a failure to read them shows at connect.
            o = o.with_tls(certs.tls_config().unwrap_or_default());
        }
        if let Some(p) = &self.password {
            o = o.with_user(ROOT_USER, p.clone());
        }
        o
    }

    /// `etcd_client` options for the harness's own requests (as root once authentication is on).
    fn admin_connect_options(&self, as_root: bool) -> Result<etcd_client::ConnectOptions> {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(5));
        if let Some(certs) = &self.certs {
            o = o.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&certs.ca)?))
                    .identity(etcd_client::Identity::from_pem(read(&certs.client_cert)?, read(&certs.client_key)?)),
            );
        }
        if let Some(p) = self.password.as_ref().filter(|_| as_root) {
            o = o.with_user(ROOT_USER, p.clone());
        }
        Ok(o)
    }

    /// With authentication: create the root role and user and enable authentication.
    fn enable_auth(&self) -> Result<()> {
        let Some(password) = self.password.clone() else { return Ok(()) };
        // Authentication is not on yet: connect without a user.
        let options = self.admin_connect_options(false)?;
        let endpoints = self.endpoints();
        block_on_thread(async move {
            let mut c = etcd_client::Client::connect(endpoints, Some(options)).await?;
            // etcd 3.4 has no root role until one is added; 3.5 neither. Either way, add it.
            if let Err(e) = c.role_add(ROOT_USER).await {
                if !e.to_string().contains("already exists") {
                    return Err(e.into());
                }
            }
            c.user_add(ROOT_USER, password, None).await?;
            c.user_grant_role(ROOT_USER, ROOT_USER).await?;
            c.auth_enable().await?;
            Ok(())
        })
    }

    /// Add a user with this password and no role, so no permission on any key
    /// (needs [`StartOptions::with_auth`]). Blocking, like the rest of the harness.
    pub fn add_user(&self, name: &str, password: &str) -> Result<()> {
        if self.password.is_none() {
            return Err(Error::invalid("add_user needs a cluster started with authentication"));
        }
        let options = self.admin_connect_options(true)?;
        let (endpoints, name, password) = (self.endpoints(), name.to_string(), password.to_string());
        block_on_thread(async move {
            let mut c = etcd_client::Client::connect(endpoints, Some(options)).await?;
            c.user_add(name, password, None).await?;
            Ok(())
        })
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
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(etcd_binary());
        if let Some(certs) = &self.certs {
            // Clients must speak mTLS; /health stays on plain HTTP for `wait_healthy`.
            cmd.arg("--cert-file").arg(&certs.server_cert);
            cmd.arg("--key-file").arg(&certs.server_key);
            cmd.arg("--trusted-ca-file").arg(&certs.ca);
            cmd.arg("--client-cert-auth");
            cmd.args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", m.metrics_port)]);
        }
        let child = cmd
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

    /// Client URL of member `i` (`https://` with TLS).
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
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
    /// ports: every key and lease is gone, as after a disaster. With authentication, the
    /// root user is created again (users added by [`EtcdCluster::add_user`] are gone).
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
        self.wait_healthy(Duration::from_secs(30))?;
        self.enable_auth()
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
                let m = &self.members[i];
                if health(if self.certs.is_some() { m.metrics_port } else { m.client_port }) {
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
        compact_endpoints_with(self.endpoints(), self.admin_options()?).await
    }

    /// `etcd_client` options for administrative requests to this cluster: the test CA
    /// and good client certificate (with TLS), the root user (with authentication).
    pub fn admin_options(&self) -> Result<etcd_client::ConnectOptions> {
        self.admin_connect_options(true)
    }

    /// `etcdctl` arguments aimed at this cluster: `--endpoints=...`, and the TLS files
    /// and root user when it has them.
    pub fn etcdctl_args(&self) -> Vec<String> {
        let mut args = vec![format!("--endpoints={}", self.endpoints().join(","))];
        if let Some(certs) = &self.certs {
            args.push(format!("--cacert={}", certs.ca.display()));
            args.push(format!("--cert={}", certs.client_cert.display()));
            args.push(format!("--key={}", certs.client_key.display()));
        }
        if let Some(p) = &self.password {
            args.push(format!("--user={ROOT_USER}:{p}"));
        }
        args
    }

    /// An `etcdctl` command aimed at this cluster (API v3), ready for more args.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(etcdctl_binary());
        cmd.env("ETCDCTL_API", "3").args(self.etcdctl_args());
        cmd
    }
}

/// Run `fut` to completion on a runtime of its own in a thread of its own, so that the
/// blocking harness can make etcd requests whether or not it is called inside a runtime.
fn block_on_thread<T: Send>(fut: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| harness_err(format!("runtime: {e}")))?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), fut)
                    .await
                    .map_err(|_| harness_err("no answer within 30 s"))?
            })
        })
        .join()
        .unwrap_or_else(|_| Err(harness_err("harness thread panicked")))
    })
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
    compact_endpoints_with(endpoints, etcd_client::ConnectOptions::new()).await
}

/// [`compact_endpoints`] with these connect options (e.g. [`EtcdCluster::admin_options`]).
pub async fn compact_endpoints_with(endpoints: Vec<String>, options: etcd_client::ConnectOptions) -> Result<i64> {
    let limit = Duration::from_secs(10);
    let run = async {
        let opts = options.with_timeout(Duration::from_secs(5));
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

// ---------------------------------------------------------------------------------------
// Go reference programs (tests/go/<name>): etcd's own Go code, for interop tests.

/// Builds the Go program `tests/go/<name>` (if its binary is missing or older than one of
/// its files) and returns the binary's path, `<target>/go/bin/<name>`, where `<target>` is
/// `$CARGO_TARGET_DIR` or `target/` at the repository root.
///
/// It builds offline in GOPATH mode against the Debian etcd Go sources
/// (`GOPATH=/usr/share/gocode GO111MODULE=off`, `GOCACHE=<target>/go/cache`), at most once
/// per process, under a file lock (`<target>/go/.lock`, the same as `tests/go/build.sh`), so
/// parallel test processes do not clash. Fails (never skips) when `go` or the etcd Go
/// sources are missing: `scripts/setup` installs them. See `tests/go/README.md`.
pub fn go_program(name: &str) -> std::io::Result<PathBuf> {
    static BUILT: Mutex<Option<std::collections::HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(Default::default);
    if let Some(p) = built.get(name) {
        return Ok(p.clone());
    }
    let p = build_go_program(name)?;
    built.insert(name.to_string(), p.clone());
    Ok(p)
}

/// Where `etcd-server-dev`'s Go sources live (Debian `golang-etcd-server-dev`).
const GOPATH: &str = "/usr/share/gocode";

fn build_go_program(name: &str) -> std::io::Result<PathBuf> {
    use std::io::{Error as IoError, ErrorKind as IoKind};
    use std::os::unix::io::AsRawFd;
    let fail = |kind: IoKind, msg: String| IoError::new(kind, format!("go_program({name:?}): {msg}"));
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(fail(IoKind::InvalidInput, "want the name of a directory of tests/go".into()));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("core/ has a parent").to_path_buf();
    let src = root.join("tests/go").join(name);
    if !src.join("main.go").is_file() {
        return Err(fail(IoKind::NotFound, format!("no Go program at {}", src.join("main.go").display())));
    }
    let go = which("go").ok_or_else(|| {
        fail(IoKind::NotFound, "`go` not found on PATH: run scripts/setup (Debian package golang-go)".into())
    })?;
    let probe = Path::new(GOPATH).join("src/go.etcd.io/etcd/clientv3/concurrency/mutex.go");
    if !probe.is_file() {
        return Err(fail(
            IoKind::NotFound,
            format!("etcd Go sources missing ({}): run scripts/setup (Debian package golang-etcd-server-dev)", probe.display()),
        ));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        Some(t) => root.join(t), // join keeps an absolute path as is
        None => root.join("target"),
    };
    let dir = target.join("go");
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("cache"))?;
    let out = dir.join("bin").join(name);

    // One builder at a time across processes; the lock is released when `lock` is closed.
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
    // SAFETY: flock on a file descriptor we own for the duration of the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(IoError::last_os_error());
    }
    if !is_stale(&out, &src)? {
        return Ok(out);
    }
    let tmp = dir.join("bin").join(format!("{name}.tmp"));
    let res = Command::new(go)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", dir.join("cache"))
        .stdin(Stdio::null())
        .output()?;
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        return Err(fail(IoKind::Other, format!("go build failed ({}):\n{}", res.status, err.trim_end())));
    }
    fs::rename(&tmp, &out)?;
    drop(lock);
    Ok(out)
}

/// True when `out` is missing or older than some file under `src`.
fn is_stale(out: &Path, src: &Path) -> std::io::Result<bool> {
    let built = match fs::metadata(out).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => return Ok(true),
    };
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                dirs.push(e.path());
            } else if m.modified()? > built {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
