//! The example programs (`src/bin`) and the demo run to completion against a throwaway
//! etcd and print what they say they do.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_recipes::testing::EtcdCluster;

/// Run `exe` against a fresh etcd; returns its stdout. Fails on a non-zero exit, a panic,
/// or a missing expected line (each a substring of some line of the output).
fn run(exe: &str, expected: &[&str], within: Duration) -> String {
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let t0 = Instant::now();
    let out = Command::new(exe)
        .env("ETCD_ENDPOINTS", etcd.endpoints().join(","))
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    let elapsed = t0.elapsed();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail = |s: &str| s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "{exe}: {}\nstdout:\n{}\nstderr:\n{}", out.status, tail(&stdout), tail(&stderr));
    assert!(!stderr.contains("panicked"), "{exe} panicked:\n{}", tail(&stderr));
    for line in expected {
        assert!(stdout.lines().any(|l| l.contains(line)), "{exe}: no line with {line:?} in:\n{}", tail(&stdout));
    }
    assert!(elapsed < within, "{exe} took {elapsed:?} (bound {within:?})");
    stdout.into_owned()
}

#[test]
fn barrier_example() {
    run(
        env!("CARGO_BIN_EXE_barrier"),
        &[
            "gate held: true",
            "a wait with a short timeout gives up: LOCK_TIMEOUT",
            "still waiting at the gate: 3",
            "worker-3 passes the gate",
            "gate held now: false",
            "all 3 entered; they started within",
            "a fourth party is turned away, the barrier is full: LOCK_TIMEOUT",
            "all 3 left together: done",
        ],
        Duration::from_secs(30),
    );
}

#[test]
fn queue_example() {
    run(
        env!("CARGO_BIN_EXE_queue"),
        &[
            "enqueued 6 jobs; length: 6",
            "each job went to exactly one consumer: 6 taken, 6 distinct, length now 0",
            "a waiting consumer woke up with job-7",
            "dequeue on an empty queue gives up: LOCK_TIMEOUT",
            "dequeued in order: page on-call, patch openssl, rotate logs, resize images, weekly digest",
        ],
        Duration::from_secs(30),
    );
}

/// The whole demo, every part. Its own bound is ~40 s; this one is loose for a loaded machine.
#[test]
fn demo_runs_every_part() {
    let out = run(
        env!("CARGO_BIN_EXE_demo"),
        &[
            "== Lock",
            "== Semaphore: 3 permits, 5 workers ==",
            "never more than 3 inside at once",
            "writer: waiting (still waiting after 300 ms: true)",
            "reader-3 arrives while the writer works: waiting = true",
            "work cancelled at once",
            "the old leader's late fenced write is refused: FENCED",
            "worker-3 passes the gate",
            "dequeued lowest number first, FIFO within one: page on-call, patch openssl, rotate logs, weekly digest",
            "worker-2 took invoice-1 (attempt 2): redelivered, not lost",
            "worker-1's late ack is refused: FENCED",
            "the counter reads 100",
            "Demo finished.",
        ],
        Duration::from_secs(120),
    );

    // One term per loop (requeue off): the leader whose lease was revoked, then the other.
    let leads: Vec<_> = out.lines().filter(|l| l.contains(": leads (fencing token")).collect();
    assert_eq!(leads.len(), 2, "two terms, one per loop: {leads:?}");
}

/// A tonic channel balanced over etcd members registered as a service: calls reach every
/// member, then none reach a draining one or one that left.
#[test]
fn grpc_balance_example() {
    run(
        env!("CARGO_BIN_EXE_grpc_balance"),
        &[
            "registered 3 etcd members as instances of etcd-members",
            "the channel balances over [\"m0\", \"m1\", \"m2\"]",
            "answered by 3 members",
            "m0 draining: 30 calls, 0 to m0",
            "m1 left: 10 calls, all answered by [\"m2\"]",
            "view.pick() gives m2",
        ],
        Duration::from_secs(60),
    );
}
