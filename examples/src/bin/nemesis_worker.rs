//! Nemesis worker (Rust face): fenced increments of one counter under one lock, the
//! protocol of `tests/nemesis/worker.py`. Usage: nemesis_worker ENDPOINTS NAME SECONDS [lock|elect]

use std::time::{Duration, Instant};

use etcd_recipes::election::Election;
use etcd_recipes::lock::Lock;
use etcd_recipes::{Client, ClientOptions, ErrorKind, Session};
use serde_json::json;

#[tokio::main]
async fn main() -> etcd_recipes::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (endpoints, name) = (args[1].split(',').map(String::from).collect::<Vec<_>>(), args[2].clone());
    let until = Instant::now() + Duration::from_secs_f64(args[3].parse().expect("seconds"));
    let elect = args.get(4).map(String::as_str) == Some("elect");
    let counter = if elect { "nemesis/leader-counter" } else { "nemesis/counter" };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    let client = Client::connect(ClientOptions::new(endpoints).with_connect_timeout(Duration::from_secs(10))).await?;
    let mut session: Option<Session> = None;
    while Instant::now() < until {
        let t0 = Instant::now();
        let mut rec = json!({ "w": name });
        let attempt = async {
            // A session lost to a fault is replaced by a fresh one for the next attempt.
            if session.as_ref().is_none_or(|s| !s.is_alive()) {
                session = Some(Session::new(&client, 3).await?);
            }
            let session = session.as_ref().expect("just set");
            // The fence of the lock or of the leadership, and how to let go.
            let (fence, token, release): (etcd_recipes::Fence, i64, Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>) = if elect {
                let leadership = tokio::time::timeout(Duration::from_secs(10), Election::new(session, "nemesis/election")?.campaign(name.clone()))
                    .await
                    .map_err(|_| etcd_recipes::Error::LockTimeout { name: "nemesis/election".into(), reason: "campaign timed out".into() })??;
                let (fence, token) = (leadership.fence().clone(), leadership.revision());
                (fence, token, Box::new(move || Box::pin(async move { let _ = leadership.resign().await; })))
            } else {
                let guard = Lock::new(session, "nemesis/lock")?.acquire_timeout(Duration::from_secs(10)).await?;
                let (fence, token) = (guard.fence().clone(), guard.fencing_token());
                (fence, token, Box::new(move || Box::pin(async move { let _ = guard.release().await; })))
            };
            let raw = client.get(counter).await?.unwrap_or_else(|| b"0 0".to_vec());
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (n, stored) = text.split_once(' ').map(|(a, b)| (a.parse::<i64>().unwrap_or(0), b.parse::<i64>().unwrap_or(0))).unwrap_or((0, 0));
            rec["t"] = json!(token);
            rec["n"] = json!(n + 1);
            if token <= stored {
                rec["violation"] = json!(format!("token {token} not above stored {stored}"));
            }
            let r = fence.put(counter, format!("{} {token}", n + 1)).await;
            release().await;
            r.map(|_| ())
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = term.recv() => break,
        };
        match result {
            Ok(()) => rec["r"] = json!("ok"),
            Err(e) if e.kind() == ErrorKind::Fenced => rec["r"] = json!("fenced"),
            Err(e) if e.kind() == ErrorKind::UnknownOutcome => rec["r"] = json!("unknown"),
            Err(e) => {
                rec["r"] = json!("error");
                rec["k"] = json!(e.kind().code());
            }
        }
        rec["ms"] = json!((t0.elapsed().as_secs_f64() * 1e5).round() / 100.0);
        println!("{rec}");
    }
    if let Some(s) = session {
        let _ = s.close().await;
    }
    Ok(())
}
