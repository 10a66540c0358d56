//! Interpreter exit: revoke the leases this process still owns, so that nothing it left
//! behind (a queued lock waiter, a held lock, a leader key, a registration) outlives
//! the process by a TTL.
//!
//! Every lease the binding creates (explicit sessions, the per-acquisition sessions of
//! locks and campaigns, registrations) is tracked by an [`ExitHook`] while its owner
//! lives. When the owner is dropped its lease stays on a short "recently ended" list:
//! its drop-time cleanup (a spawned delete / revoke) may still be in flight when the
//! interpreter exits right after, e.g. `asyncio.run` cancelling a pending `acquire()`
//! just before returning. At exit, [`revoke_all`] revokes both lists (revoking a lease
//! that is already gone is a harmless error), bounded by [`EXIT_BUDGET`] overall.
//!
//! Only the process that created the leases revokes them: a forked child that exits
//! through `atexit` leaves its parent's leases alone.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_recipes::{Client, Session};

/// A lease and the client to revoke it with.
pub type Lease = (Client, i64);
type Probe = Box<dyn Fn() -> Option<Lease> + Send>;

/// How long an ended owner's lease stays on the revoke-at-exit list.
const RECENT: Duration = Duration::from_secs(5);
/// Upper bound on the time interpreter exit spends revoking.
pub const EXIT_BUDGET: Duration = Duration::from_millis(1500);

struct State {
    next: u64,
    live: BTreeMap<u64, Probe>,
    recent: Vec<(Instant, Lease)>,
    pid: u32,
}

static STATE: Mutex<State> = Mutex::new(State { next: 0, live: BTreeMap::new(), recent: Vec::new(), pid: 0 });

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a lease on the revoke-at-exit list while alive; moves it to the "recently
/// ended" list when dropped.
#[must_use = "the lease is only tracked while the hook lives"]
pub struct ExitHook(u64);

/// Track whatever lease `probe` names at exit time (None: nothing to revoke).
pub fn track(probe: impl Fn() -> Option<Lease> + Send + 'static) -> ExitHook {
    let mut st = state();
    st.pid = std::process::id();
    st.next += 1;
    let id = st.next;
    st.live.insert(id, Box::new(probe));
    ExitHook(id)
}

/// Track the lease of `session`.
pub fn track_session(session: &Session) -> ExitHook {
    let (client, lease) = (session.client().clone(), session.lease_id());
    track(move || Some((client.clone(), lease)))
}

/// Put `lease` on the "recently ended" list (for owners whose probe cannot answer in drop).
pub fn recently_ended(lease: Lease) {
    let mut st = state();
    let now = Instant::now();
    st.recent.retain(|(t, _)| now.duration_since(*t) < RECENT);
    st.recent.push((now, lease));
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        let probe = state().live.remove(&self.0);
        // Probe outside the lock (it may touch other locks).
        if let Some(lease) = probe.and_then(|p| p()) {
            recently_ended(lease);
        }
    }
}

/// The leases to revoke now (empties both lists; empty in a forked child).
fn take_all() -> Vec<Lease> {
    let (probes, recent) = {
        let mut st = state();
        if st.pid != std::process::id() {
            st.live.clear();
            st.recent.clear();
            return Vec::new();
        }
        let now = Instant::now();
        let recent: Vec<Lease> =
            std::mem::take(&mut st.recent).into_iter().filter(|(t, _)| now.duration_since(*t) < RECENT).map(|(_, l)| l).collect();
        (std::mem::take(&mut st.live), recent)
    };
    let mut out: Vec<Lease> = probes.values().filter_map(|p| p()).collect();
    out.extend(recent);
    out.sort_by_key(|(_, id)| *id);
    out.dedup_by_key(|(_, id)| *id);
    out
}

/// Revoke every tracked lease, concurrently, within [`EXIT_BUDGET`]. Blocks (call it
/// detached from the interpreter, from a thread outside the runtime).
pub fn revoke_all() {
    let leases = take_all();
    if leases.is_empty() {
        return;
    }
    let n = leases.len();
    crate::runtime::rt().block_on(async move {
        let all = futures::future::join_all(leases.into_iter().map(|(client, id)| async move {
            let _ = client.revoke_lease(id).await;
        }));
        if tokio::time::timeout(EXIT_BUDGET, all).await.is_err() {
            tracing::warn!(target: "etcd_recipes::exit", leases = n, "interpreter exit: not every lease could be revoked in time; the rest expire with their TTL");
        } else {
            tracing::debug!(target: "etcd_recipes::exit", leases = n, "interpreter exit: leases revoked");
        }
    });
}
