//! Client and Session against a real etcd started by the testing harness.

mod common;
use common::{client, etcd_gauge, init_tracing, leader_index, member_gauge};

use std::time::{Duration, Instant};

use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_stays_alive_then_close_revokes_lease() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 3).await.unwrap();
    assert_eq!(s.ttl(), 3);
    // Attach a key so that we can see the lease really is kept in etcd, not just locally.
    let mut kv = c.etcd();
    kv.put("alive", "x", Some(etcd_client::PutOptions::new().with_lease(s.lease_id()))).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(s.is_alive(), "session not alive after {:?}: {:?}", start.elapsed(), s.state());
    }
    assert!(c.lease_exists(s.lease_id()).await.unwrap(), "lease vanished in etcd while alive");
    assert_eq!(c.get("alive").await.unwrap().as_deref(), Some(&b"x"[..]));
    s.close().await.unwrap();
    assert_eq!(s.state(), SessionState::Closed);
    assert!(!c.lease_exists(s.lease_id()).await.unwrap(), "lease still exists after close");
    assert_eq!(c.get("alive").await.unwrap(), None, "key attached to the lease survived close");
    // Closing twice is fine.
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_member_makes_session_lost_before_ttl() {
    init_tracing();
    let mut etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 3).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.is_alive());
    let paused_at = Instant::now();
    etcd.pause(0).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), s.lost()).await;
    let lost_after = paused_at.elapsed();
    etcd.resume(0).unwrap();
    let reason = reason.expect("session never reported lost").expect("lost, not closed");
    assert!(matches!(s.state(), SessionState::Lost(_)), "{:?}", s.state());
    // It fired before the last confirmed deadline (the send time of the last confirmed
    // renewal + TTL), which etcd's own expiry cannot precede.
    assert!(paused_at + lost_after <= s.deadline().into_std(), "lost signalled after the deadline ({lost_after:?} after the pause): {reason}");
    assert_eq!(s.ensure_alive().unwrap_err().kind(), ErrorKind::SessionLost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_makes_session_lost() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 3).await.unwrap();
    c.revoke_lease(s.lease_id()).await.unwrap();
    // The next renewal (every TTL/3) learns the lease is gone.
    let reason = tokio::time::timeout(Duration::from_secs(20), s.lost()).await.expect("not lost").expect("lost, not closed");
    assert!(reason.contains("revoked") || reason.contains("expired"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_session_stops_and_revokes() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 30).await.unwrap();
    let id = s.lease_id();
    let clone = s.clone();
    drop(s);
    assert!(c.lease_exists(id).await.unwrap(), "a live clone must keep the lease");
    drop(clone);
    let until = Instant::now() + Duration::from_secs(20);
    while c.lease_exists(id).await.unwrap() {
        assert!(Instant::now() < until, "lease not revoked after the last handle was dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_losing_one_member_of_three() {
    init_tracing();
    let mut etcd = EtcdCluster::start(3).unwrap();
    let c = client(&etcd).await;
    let s = Session::new(&c, 3).await.unwrap();
    etcd.kill(0).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(7) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(s.is_alive(), "lost after member 0 died: {:?}", s.state());
    }
    etcd.start_member(0).unwrap();
    assert!(c.lease_exists(s.lease_id()).await.unwrap());
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_prefixes_keys() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = Client::connect(ClientOptions::new(etcd.endpoints()).with_namespace("app1/")).await.unwrap();
    c.put("k", "v").await.unwrap();
    let raw = c.etcd().get("app1/k", None).await.unwrap();
    assert_eq!(raw.kvs()[0].value(), b"v");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(c.delete("k").await.unwrap(), 1);
}

#[tokio::test]
async fn bad_input_is_a_typed_error_fast() {
    let kind = |r: etcd_recipes::Result<Client>| r.unwrap_err().kind();
    let empty: Vec<String> = vec![];
    assert_eq!(kind(Client::connect(ClientOptions::new(empty)).await), ErrorKind::InvalidArgument);
    for bad in ["localhost", "http://host:notaport", "ftp://h:1", "", "h:70000"] {
        let e = Client::connect(ClientOptions::new([bad])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        assert!(e.to_string().contains("endpoint"), "{e}");
    }
    // Unreachable: a port nobody listens on. Must fail within the connect timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = Instant::now();
    let e = Client::connect(
        ClientOptions::new([format!("127.0.0.1:{port}")]).with_connect_timeout(Duration::from_millis(800)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    // Within the connect timeout (plus slack for a busy machine), not the default 5 s or a hang.
    assert!(t.elapsed() < Duration::from_millis(800 + 2000), "took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ttl_is_rejected() {
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    for ttl in [0, -5, etcd_recipes::session::MAX_TTL_SECS + 1] {
        let e = Session::new(&c, ttl).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{ttl}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_compacts_and_restarts() {
    let mut etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let r1 = c.put("a", "1").await.unwrap();
    c.put("a", "2").await.unwrap();
    let compacted = etcd.compact().await.unwrap();
    assert!(compacted > r1);
    let old = c.etcd().get("a", Some(etcd_client::GetOptions::new().with_revision(r1))).await;
    assert!(old.is_err(), "reading a compacted revision must fail");
    etcd.restart(0).unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"2"[..]), "data kept across restart");
    etcd.restart_wiped().unwrap();
    let c2 = client(&etcd).await;
    assert_eq!(c2.get("a").await.unwrap(), None, "wipe must lose data");
    let out = etcd.etcdctl().args(["put", "b", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c2.get("b").await.unwrap().as_deref(), Some(&b"3"[..]));
}

/// etcd's count of lease keep-alive streams started, summed over the members that answer.
const KEEPALIVE_STREAMS: &str =
    "grpc_server_started_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"}";
/// etcd's count of keep-alive requests received.
const KEEPALIVE_REQUESTS: &str =
    "grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"}";

/// Wait until every session's deadline lies at least `by` past `base` (renewals confirmed).
async fn wait_renewed(sessions: &[Session], base: &[Instant], by: Duration, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let behind = sessions.iter().zip(base).filter(|(s, b)| s.deadline().into_std() < **b + by).count();
        if behind == 0 {
            return;
        }
        let lost = sessions.iter().filter(|s| !s.is_alive()).count();
        assert!(lost == 0 && Instant::now() < until, "{behind} of {} sessions not renewed within {within:?}; {lost} lost", sessions.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deadlines(sessions: &[Session]) -> Vec<Instant> {
    sessions.iter().map(|s| s.deadline().into_std()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_client_share_one_keep_alive_stream() {
    init_tracing();
    let etcd = EtcdCluster::start(1).unwrap();
    let c = client(&etcd).await;
    let streams_before = etcd_gauge(&etcd, KEEPALIVE_STREAMS).await;
    let requests_before = etcd_gauge(&etcd, KEEPALIVE_REQUESTS).await;
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(Session::new(&c, 3).await.unwrap());
    }
    // Renewed every 500 ms at most: a deadline 1 s later means two renewals or more.
    let base = deadlines(&sessions);
    wait_renewed(&sessions, &base, Duration::from_secs(1), Duration::from_secs(20)).await;
    let streams = etcd_gauge(&etcd, KEEPALIVE_STREAMS).await - streams_before;
    let requests = etcd_gauge(&etcd, KEEPALIVE_REQUESTS).await - requests_before;
    assert_eq!(streams, 1.0, "keep-alive streams etcd saw opened for 50 sessions of one client");
    assert!(requests >= 100.0, "etcd received {requests} keep-alive requests for 50 sessions renewed twice");

    // One lease revoked behind the client's back: that session alone is lost, the others
    // go on renewing on the same stream.
    let gone = sessions.remove(17);
    c.revoke_lease(gone.lease_id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), gone.lost()).await.expect("not lost").expect("lost, not closed");
    assert!(reason.contains("revoked") || reason.contains("expired"), "{reason}");
    let base = deadlines(&sessions);
    wait_renewed(&sessions, &base, Duration::from_secs(1), Duration::from_secs(20)).await;
    assert_eq!(etcd_gauge(&etcd, KEEPALIVE_STREAMS).await - streams_before, 1.0, "the stream was replaced after one lease went");
    for s in &sessions {
        s.close().await.unwrap();
        assert!(!c.lease_exists(s.lease_id()).await.unwrap(), "lease left after close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_one_stream_ride_through_a_paused_member() {
    init_tracing();
    let mut etcd = EtcdCluster::start(3).unwrap();
    let c = client(&etcd).await;
    // TTL 5 s: when the paused member is the leader, nothing is renewed until another is
    // elected (1-2 s).
    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(Session::new(&c, 5).await.unwrap());
    }
    let base = deadlines(&sessions);
    wait_renewed(&sessions, &base, Duration::from_secs(1), Duration::from_secs(20)).await;
    // The member that carries the stream.
    let mut carrier = None;
    for i in 0..3 {
        if member_gauge(&etcd.endpoint(i), KEEPALIVE_STREAMS).await.unwrap_or(0.0) >= 1.0 {
            carrier = Some(i);
        }
    }
    let carrier = carrier.expect("no member counts a keep-alive stream");
    etcd.pause(carrier).unwrap();
    let paused = Instant::now();
    // Renewals confirmed after the pause began: the stream moved to another member.
    let base = vec![paused; sessions.len()];
    let ttl = Duration::from_secs(5);
    let moved = tokio::time::timeout(Duration::from_secs(20), wait_renewed(&sessions, &base, ttl, Duration::from_secs(20))).await;
    etcd.resume(carrier).unwrap();
    moved.expect("renewals did not move off the paused member");
    println!("30 sessions renewed on another member {:?} after member {carrier} was paused", paused.elapsed());
    assert!(sessions.iter().all(|s| s.is_alive()), "a session was lost while one member was paused");
    for s in &sessions {
        s.close().await.unwrap();
    }
}

/// Keep-alive requests each member received over gRPC.
async fn keepalive_requests_per_member(etcd: &EtcdCluster) -> Vec<f64> {
    let mut v = Vec::new();
    for i in 0..3 {
        v.push(member_gauge(&etcd.endpoint(i), KEEPALIVE_REQUESTS).await.unwrap_or(0.0));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_go_to_the_leader() {
    init_tracing();
    let etcd = EtcdCluster::start(3).unwrap();
    let c = client(&etcd).await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(Session::new(&c, 3).await.unwrap());
    }
    let leader = leader_index(&etcd).await;
    // A follower would forward each renewal to the leader. Once the client's probes know
    // the leader, a whole round of renewals (every session renewed at least once) reaches
    // the leader alone.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let before = keepalive_requests_per_member(&etcd).await;
        let base = deadlines(&sessions);
        wait_renewed(&sessions, &base, Duration::from_millis(300), Duration::from_secs(20)).await;
        let after = keepalive_requests_per_member(&etcd).await;
        let to_leader = after[leader] - before[leader];
        let to_followers: f64 = (0..3).filter(|&i| i != leader).map(|i| after[i] - before[i]).sum();
        if to_followers == 0.0 && to_leader >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "renewals still reach followers: {to_followers} requests to followers, {to_leader} to the leader (member {leader})"
        );
    }
    for s in &sessions {
        s.close().await.unwrap();
    }
}
