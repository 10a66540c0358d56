//! Lifetimes: what a [`Client`](crate::Client) owns, and the process-wide [`shutdown`].
//!
//! Every session, registration and view made from a client is one of its *children*.
//! [`Client::close`](crate::Client::close) closes them all (sessions revoke their lease,
//! registrations delete their key, views stop), bounded in time, and from then on the
//! client refuses new operations with [`Error::Closed`](crate::Error::Closed). A lock wait
//! or a campaign in progress ends with that error at once. Requests are not cut off
//! mid-way: a clean-up that is already on its way (deleting a waiter's key, revoking a
//! lease) still completes, so closing never leaves a key behind for a TTL.
//!
//! [`shutdown`] does the same for every client of the process, and also revokes the
//! leases of sessions that were dropped but whose background revoke has not finished.
//! The Python and Node packages call it at interpreter / process exit, signals included,
//! so that a process leaves nothing behind for a TTL. In a forked child it closes only the
//! clients made in the child: those inherited from the parent, and their leases, are the
//! parent's (and are closed for the child: see [`Client::in_this_process`](crate::Client::in_this_process)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::client::Client;

/// The default bound of [`Client::close`](crate::Client::close) and [`shutdown`].
pub const CLOSE_BUDGET: Duration = Duration::from_secs(5);

/// Something a client must close when it closes.
pub(crate) trait Child: Send + Sync {
    fn close(self: Arc<Self>) -> BoxFuture<'static, ()>;
}

/// Where a client stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// `close()` began: waits end with `Closed`, children are being closed (their
    /// requests still go out).
    Closing,
    /// Closed: new operations fail with `Closed` at their entry; clean-ups already on
    /// their way (a waiter's key deleted, a lease revoked) still complete.
    Closed,
}

/// A client's children and its phase.
pub(crate) struct Scope {
    phase: watch::Sender<Phase>,
    children: Mutex<Vec<Weak<dyn Child>>>,
    /// The list's length at which [`Scope::adopt`] next drops the children already gone.
    sweep_at: std::sync::atomic::AtomicUsize,
}

impl Scope {
    pub(crate) fn new() -> Arc<Scope> {
        Arc::new(Scope { phase: watch::channel(Phase::Open).0, children: Mutex::new(Vec::new()), sweep_at: std::sync::atomic::AtomicUsize::new(64) })
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Resolves once `close()` began.
    pub(crate) fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.phase.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p != Phase::Open).await;
        }
    }

    /// Close `child` when the client closes.
    pub(crate) fn adopt(&self, child: Weak<dyn Child>) {
        let mut v = self.children.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the children already gone once the list has doubled since the last sweep:
        // constant time per adoption, not a sweep of every child each time.
        if v.len() >= self.sweep_at.load(std::sync::atomic::Ordering::Relaxed) {
            v.retain(|w| w.strong_count() > 0);
            self.sweep_at.store((v.len() * 2).max(64), std::sync::atomic::Ordering::Relaxed);
        }
        v.push(child);
    }

    /// Close every child (concurrently, within `budget`), then refuse requests.
    /// Returns false when the budget ran out first. Idempotent: a second call waits
    /// for nothing.
    pub(crate) async fn close(&self, budget: Duration) -> bool {
        let first = self.phase.send_if_modified(|p| {
            let open = *p == Phase::Open;
            if open {
                *p = Phase::Closing;
            }
            open
        });
        if !first {
            return true;
        }
        let children: Vec<_> = std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures::future::join_all(children.into_iter().filter_map(|w| w.upgrade()).map(|c| c.close()));
        let done = tokio::time::timeout(budget, all).await.is_ok();
        self.phase.send_replace(Phase::Closed);
        done
    }
}

/// Every client of the process, so that [`shutdown`] can close them (weak: a dropped
/// client is gone already).
static CLIENTS: Mutex<Vec<Weak<crate::client::Inner>>> = Mutex::new(Vec::new());

pub(crate) fn register_client(inner: &Arc<crate::client::Inner>) {
    let mut all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(inner));
}

/// Leases whose session was dropped and whose revoke is still on its way.
static DROPPED: Mutex<Option<HashMap<i64, Client>>> = Mutex::new(None);

pub(crate) fn revoke_pending(lease: i64, client: &Client) {
    DROPPED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(lease, client.clone());
}

pub(crate) fn revoke_done(lease: i64) {
    if let Some(m) = DROPPED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        m.remove(&lease);
    }
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// True once [`shutdown`] began: recipes end quietly instead of healing or warning.
pub fn is_shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Acquire)
}

/// What [`shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Clients closed.
    pub clients: usize,
    /// Leases of dropped sessions revoked.
    pub leases: usize,
    /// False when the budget ran out before everything was closed; what is left
    /// expires with its TTL.
    pub complete: bool,
}

/// Close every client of this process and revoke every lease it still owns, within
/// `budget`. Called by the Python and Node packages at exit; a Rust program calls it
/// before returning from `main` (or closes its clients). Idempotent.
pub async fn shutdown(budget: Duration) -> ShutdownReport {
    // In a forked child, the clients (and leases) inherited from the parent are the
    // parent's: only those made in this process are closed.
    SHUTTING_DOWN.store(true, Ordering::Release);
    let clients: Vec<Client> = {
        let all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(|w| w.upgrade()).map(Client::from_inner).filter(Client::in_this_process).collect()
    };
    let dropped: Vec<(i64, Client)> = DROPPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(|m| m.drain().filter(|(_, c)| c.in_this_process()).collect())
        .unwrap_or_default();
    let report = ShutdownReport { clients: clients.len(), leases: dropped.len(), complete: false };
    if clients.is_empty() && dropped.is_empty() {
        return ShutdownReport { complete: true, ..report };
    }
    let closes = futures::future::join_all(clients.iter().map(|c| c.close_within(budget)));
    let revokes = futures::future::join_all(dropped.iter().map(|(id, c)| async move {
        let _ = c.revoke_lease(*id).await;
    }));
    let complete = match tokio::time::timeout(budget, futures::future::join(closes, revokes)).await {
        Ok((closed, _)) => closed.into_iter().all(|c| c),
        Err(_) => false,
    };
    if complete {
        info!(clients = report.clients, leases = report.leases, "shutdown: everything closed");
    } else {
        warn!(clients = report.clients, "shutdown: not everything closed within {budget:?}; the rest expires with its TTL");
    }
    debug!(?report, "shutdown done");
    ShutdownReport { complete, ..report }
}

/// [`shutdown`] from synchronous code (an exit hook): runs it on `handle` from a helper
/// thread and waits, so it is safe to call from any thread, also one of the runtime.
pub fn shutdown_blocking(handle: &tokio::runtime::Handle, budget: Duration) -> ShutdownReport {
    let handle = handle.clone();
    std::thread::scope(|s| {
        s.spawn(move || handle.block_on(shutdown(budget))).join().unwrap_or_default()
    })
}
