//! TLS (mutual) and user/password authentication against a real etcd: what works, and
//! that every refusal is a typed error that comes at once instead of after the connect
//! timeout.

mod common;
use common::init_tracing;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_recipes::lock::Lock;
use etcd_recipes::testing::{EtcdCluster, StartOptions};
use etcd_recipes::{Client, ClientOptions, Error, ErrorKind, Session, TlsConfig};

/// Connect timeout of the clients below: long, so that a refusal that waited for it
/// instead of failing at once is caught by `FAST`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A refusal must come within this (loose: the machine may be busy).
const FAST: Duration = Duration::from_secs(10);
/// Bound on anything that should succeed.
const LIMIT: Duration = Duration::from_secs(30);

fn pem(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tls(ca: &Path, identity: Option<(&Path, &Path)>) -> TlsConfig {
    TlsConfig {
        ca_pem: Some(pem(ca)),
        client_cert_pem: identity.map(|(c, _)| pem(c)),
        client_key_pem: identity.map(|(_, k)| pem(k)),
        domain: None,
    }
}

/// An error's kind and the first 300 characters of its message.
fn summary(e: &Error) -> String {
    let m = e.to_string();
    format!("{:?}: {}", e.kind(), m.chars().take(300).collect::<String>())
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.unwrap_or_else(|_| panic!("{what}: no result within {LIMIT:?}"))
}

/// Connect with `options`; it must fail with `kind`, well before the connect timeout.
async fn refused(options: ClientOptions, kind: ErrorKind, what: &str) -> Error {
    let started = Instant::now();
    let r = bounded(what, Client::connect(options.with_connect_timeout(CONNECT_TIMEOUT))).await;
    let took = started.elapsed();
    let e = match r {
        Ok(_) => panic!("{what}: connected, expected {kind:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), kind, "{what}: wrong kind after {took:?}: {}", summary(&e));
    assert!(took < FAST, "{what}: refused only after {took:?} (connect timeout {CONNECT_TIMEOUT:?}): {}", summary(&e));
    eprintln!("{what}: refused after {took:?}: {}", summary(&e));
    e
}

/// A put, a get and a lock acquire/release over `client`.
async fn put_get_and_lock(client: &Client, tag: &str) {
    let rev = bounded("put", client.put(&format!("{tag}/k"), "v")).await.expect("put");
    assert!(rev > 0, "put revision {rev}");
    let got = bounded("get", client.get(&format!("{tag}/k"))).await.expect("get");
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    let session = bounded("session", Session::new(client, 10)).await.expect("session");
    let lock = Lock::new(&session, &format!("{tag}/lock")).expect("lock");
    let guard = bounded("acquire", lock.acquire_timeout(Duration::from_secs(10))).await.expect("acquire");
    assert!(guard.is_held());
    bounded("release", guard.release()).await.expect("release");
    // Held again at once by someone else: the first hold is really gone.
    let again = bounded("try_acquire", lock.try_acquire()).await.expect("lock free after release");
    bounded("release", again.release()).await.expect("release");
    bounded("close", session.close()).await.expect("session close");
}

fn tls_cluster() -> EtcdCluster {
    EtcdCluster::start_with(StartOptions::new(1).with_tls()).expect("start etcd with TLS")
}

fn auth_cluster() -> EtcdCluster {
    EtcdCluster::start_with(StartOptions::new(1).with_auth()).expect("start etcd with auth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_put_get_and_lock() {
    init_tracing();
    let etcd = tls_cluster();
    assert!(etcd.endpoints().iter().all(|e| e.starts_with("https://")), "{:?}", etcd.endpoints());
    let certs = etcd.certs().expect("certs");
    let options = ClientOptions::new(etcd.endpoints())
        .with_tls(tls(&certs.ca, Some((&certs.client_cert, &certs.client_key))))
        .with_connect_timeout(CONNECT_TIMEOUT);
    let client = bounded("connect", Client::connect(options)).await.expect("connect over mTLS");
    put_get_and_lock(&client, "mtls").await;
    // The harness's own options work too (and so does its compaction, over TLS).
    let client2 = bounded("connect", Client::connect(etcd.client_options())).await.expect("connect");
    assert_eq!(bounded("get", client2.get("mtls/k")).await.expect("get").as_deref(), Some(&b"v"[..]));
    assert!(bounded("compact", etcd.compact()).await.expect("compact") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_server_cert_from_an_untrusted_ca_is_a_fast_connect_error() {
    init_tracing();
    let etcd = tls_cluster();
    let certs = etcd.certs().unwrap();
    let options = ClientOptions::new(etcd.endpoints())
        .with_tls(tls(&certs.other_ca, Some((&certs.client_cert, &certs.client_key))));
    let e = refused(options, ErrorKind::Connect, "server cert not signed by the trusted CA").await;
    assert!(e.to_string().contains("certificate"), "{}", summary(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_client_cert_from_another_ca_is_a_fast_connect_error() {
    init_tracing();
    let etcd = tls_cluster();
    let certs = etcd.certs().unwrap();
    let options = ClientOptions::new(etcd.endpoints())
        .with_tls(tls(&certs.ca, Some((&certs.other_client_cert, &certs.other_client_key))));
    refused(options, ErrorKind::Connect, "client cert signed by another CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_expired_client_cert_is_a_fast_connect_error() {
    init_tracing();
    let etcd = tls_cluster();
    let certs = etcd.certs().unwrap();
    let options = ClientOptions::new(etcd.endpoints())
        .with_tls(tls(&certs.ca, Some((&certs.expired_client_cert, &certs.expired_client_key))));
    refused(options, ErrorKind::Connect, "expired client cert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_without_a_client_cert_is_a_fast_connect_error() {
    init_tracing();
    let etcd = tls_cluster();
    let certs = etcd.certs().unwrap();
    let options = ClientOptions::new(etcd.endpoints()).with_tls(tls(&certs.ca, None));
    refused(options, ErrorKind::Connect, "no client cert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_without_tls_options_is_an_invalid_argument() {
    init_tracing();
    let etcd = tls_cluster();
    refused(ClientOptions::new(etcd.endpoints()), ErrorKind::InvalidArgument, "https without TLS options").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_wrong_password_unknown_user_and_no_user_are_fast_permission_denied() {
    init_tracing();
    let etcd = auth_cluster();
    let user = etcd.user().expect("user");
    let wrong = ClientOptions::new(etcd.endpoints()).with_user(user, "not-the-password");
    refused(wrong, ErrorKind::PermissionDenied, "wrong password").await;
    let unknown = ClientOptions::new(etcd.endpoints()).with_user("nobody", "whatever");
    refused(unknown, ErrorKind::PermissionDenied, "unknown user").await;
    // No user at all: etcd refuses every request.
    refused(ClientOptions::new(etcd.endpoints()), ErrorKind::PermissionDenied, "no user").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_user_without_permission_is_denied_a_put_and_a_lock() {
    init_tracing();
    let etcd = auth_cluster();
    etcd.add_user("reader", "reader-pw").expect("add user");
    let options = ClientOptions::new(etcd.endpoints())
        .with_user("reader", "reader-pw")
        .with_connect_timeout(CONNECT_TIMEOUT);
    // Authenticates fine: connecting needs no permission on any key.
    let client = bounded("connect", Client::connect(options)).await.expect("connect as a user without roles");
    let e = bounded("put", client.put("k", "v")).await.expect_err("put without permission");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "put: {}", summary(&e));
    let e = bounded("get", client.get("k")).await.expect_err("get without permission");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "get: {}", summary(&e));
    let started = Instant::now();
    let session = bounded("session", Session::new(&client, 10)).await;
    // etcd lets any authenticated user grant a lease; the lock's key is what is refused.
    let e = match session {
        Err(e) => e,
        Ok(session) => {
            let lock = Lock::new(&session, "denied-lock").expect("lock");
            let e = bounded("acquire", lock.acquire_timeout(Duration::from_secs(15))).await.expect_err("lock without permission");
            let _ = bounded("close", session.close()).await;
            e
        }
    };
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "lock after {:?}: {}", started.elapsed(), summary(&e));
    assert!(started.elapsed() < FAST, "lock refused only after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_correct_user_works() {
    init_tracing();
    let etcd = auth_cluster();
    let (user, password) = (etcd.user().unwrap(), etcd.password().unwrap());
    let options = ClientOptions::new(etcd.endpoints()).with_user(user, password).with_connect_timeout(CONNECT_TIMEOUT);
    let client = bounded("connect", Client::connect(options)).await.expect("connect as root");
    put_get_and_lock(&client, "auth").await;
    // The harness's compaction and etcdctl work against an auth cluster.
    assert!(bounded("compact", etcd.compact()).await.expect("compact") > 0);
    let out = etcd.etcdctl().args(["get", "auth/k", "--print-value-only"]).output().expect("etcdctl");
    assert!(out.status.success(), "etcdctl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_together() {
    init_tracing();
    let etcd = EtcdCluster::start_with(StartOptions::new(1).with_tls().with_auth()).expect("start");
    let client = bounded("connect", Client::connect(etcd.client_options().with_connect_timeout(CONNECT_TIMEOUT)))
        .await
        .expect("connect over mTLS as root");
    put_get_and_lock(&client, "both").await;
    let certs = etcd.certs().unwrap();
    let wrong = ClientOptions::new(etcd.endpoints())
        .with_tls(tls(&certs.ca, Some((&certs.client_cert, &certs.client_key))))
        .with_user(etcd.user().unwrap(), "wrong");
    refused(wrong, ErrorKind::PermissionDenied, "mTLS with a wrong password").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_three_members() {
    init_tracing();
    let etcd = EtcdCluster::start_with(StartOptions::new(3).with_tls()).expect("start 3 members with TLS");
    let client = bounded("connect", Client::connect(etcd.client_options().with_connect_timeout(CONNECT_TIMEOUT)))
        .await
        .expect("connect over mTLS to 3 members");
    put_get_and_lock(&client, "three").await;
    // Every member refuses: one fast CONNECT naming each.
    let certs = etcd.certs().unwrap();
    let e = refused(
        ClientOptions::new(etcd.endpoints()).with_tls(tls(&certs.ca, Some((&certs.expired_client_cert, &certs.expired_client_key)))),
        ErrorKind::Connect,
        "expired client cert, 3 members",
    )
    .await;
    let text = e.to_string();
    assert!(etcd.endpoints().iter().all(|ep| text.contains(ep.as_str())), "{}", summary(&e));
}
