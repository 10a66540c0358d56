//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions};

/// Log with `RUST_LOG=etcd_recipes=debug cargo nextest run ...`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A client of the test etcd, failing the test if it cannot connect.
pub async fn client(etcd: &EtcdCluster) -> Client {
    Client::connect(ClientOptions::new(etcd.endpoints()).with_connect_timeout(Duration::from_secs(10)))
        .await
        .expect("connect")
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A gauge or counter from one member's `/metrics` page (etcd's own count of watch
/// streams, watchers, keep-alive streams...): the first line starting with `name`; `None`
/// when the member does not answer.
pub async fn member_gauge(endpoint: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://").to_string();
    let read = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), read).await.ok()??;
    Some(body.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0))
}

/// etcd's count of watch streams started (a counter, for [`etcd_gauge`]).
pub const WATCH_STREAMS: &str =
    "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}";

/// etcd's count of unary KV requests of one method answered OK (a counter, for
/// [`etcd_gauge`]): `"Txn"`, `"DeleteRange"`, `"Put"`, `"Range"`.
pub fn kv_requests(method: &str) -> String {
    format!("grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}}")
}

/// The gauge summed over the members that answer.
pub async fn etcd_gauge(etcd: &EtcdCluster, name: &str) -> f64 {
    let mut sum = 0.0;
    for ep in etcd.endpoints() {
        sum += member_gauge(&ep, name).await.unwrap_or(0.0);
    }
    sum
}

/// Index of the current leader, asked of every member.
pub async fn leader_index(etcd: &EtcdCluster) -> usize {
    let eps = etcd.endpoints();
    for _ in 0..200 {
        for (i, ep) in eps.iter().enumerate() {
            let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else { continue };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                if s.leader() != 0 && s.header().map(|h| h.member_id()) == Some(s.leader()) {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader found");
}

// Go reference programs (tests/go): etcd's own code, for interop tests.

/// How long a Go peer may take to report an event.
pub const GO_WITHIN: Duration = Duration::from_secs(20);

/// A running Go program of `tests/go/<name>` (see tests/go/README.md), speaking one JSON
/// object a line on stdout (`{"event":...}`; `{"event":"error",...}` fails `expect`) and
/// taking commands on stdin. Killed on drop.
pub struct GoPeer {
    what: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    events: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    /// An event seen by `quiet`, not yet taken by `expect`.
    early: Option<serde_json::Value>,
}

impl GoPeer {
    /// Starts `tests/go/<program> --endpoints <etcd> <args...>` (built by `go_program`).
    pub fn spawn(program: &str, etcd: &EtcdCluster, args: &[&str]) -> GoPeer {
        let bin = etcd_recipes::testing::go_program(program).unwrap_or_else(|e| panic!("{e}"));
        let mut child = std::process::Command::new(bin)
            .arg("--endpoints")
            .arg(etcd.endpoints().join(","))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn peer");
        let out = child.stdout.take().unwrap();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(|l| l.ok()) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({"event": "garbage", "line": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        GoPeer { what: format!("go {program} {}", args.join(" ")), stdin: child.stdin.take(), child, events, early: None }
    }

    /// The next event, which must be `event` (an error event or an exit fails the test).
    pub async fn expect(&mut self, event: &str) -> serde_json::Value {
        let next = match self.early.take() {
            Some(v) => Ok(Some(v)),
            None => tokio::time::timeout(GO_WITHIN, self.events.recv()).await,
        };
        let v = match next {
            Err(_) => panic!("{}: no {event:?} within {GO_WITHIN:?}", self.what),
            Ok(None) => panic!("{}: exited ({:?}) before {event:?}", self.what, self.child.wait().ok()),
            Ok(Some(v)) => v,
        };
        assert_eq!(v["event"], event, "{}: got {v}", self.what);
        v
    }

    /// No event has arrived yet (the peer reported nothing so far).
    pub fn quiet(&mut self) -> bool {
        if self.early.is_none() {
            self.early = self.events.try_recv().ok();
        }
        self.early.is_none()
    }

    /// Writes one command line to the peer's stdin (`release`, `proclaim <v>`, ...).
    pub fn send(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin open");
        std::io::Write::write_all(w, format!("{line}\n").as_bytes()).and_then(|_| std::io::Write::flush(w)).expect("write to peer");
    }

    /// Closes stdin and waits for the process to exit; returns its exit code.
    pub fn exit_code(&mut self) -> i32 {
        self.stdin = None;
        let until = std::time::Instant::now() + GO_WITHIN;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < until, "{}: still running", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

