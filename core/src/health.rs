//! [`health`]: one client's coordination health, for a readiness probe.
//!
//! Built from what the client runs (no request to etcd): its sessions (alive or lost,
//! when each last confirmed a renewal), its views (config and discovery: watch running
//! and caught up), and its registrations (registered, or recovering after a lost lease).
//! `healthy` is true when the client is open, its connection is not suspended or lost, no
//! session is lost, every view is current and no registration is recovering.
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) {
//! let h = etcd_recipes::health::health(&client);
//! if !h.healthy {
//!     eprintln!("not ready: {}", h.problems.join("; "));
//! }
//! # }
//! ```
//!
//! The client's connection state counts too: `SUSPENDED` (no member serves) or `LOST`
//! (a session expired for lack of a confirmed renewal) is a problem, so not healthy.

use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::client::Client;
use crate::ConnectionState;
use crate::metrics::read_board;

/// One session of the client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionHealth {
    pub lease_id: i64,
    /// Granted TTL, seconds.
    pub ttl: i64,
    /// Renewals confirmed (not lost).
    pub alive: bool,
    /// When the last renewal was confirmed (the grant, when none yet).
    pub last_renew: SystemTime,
    /// Why it was lost, when it was.
    pub lost: Option<String>,
}

/// One view (config or service discovery) of the client.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViewHealth {
    /// `"config"` or `"service"`.
    pub kind: String,
    /// The key or prefix it mirrors (with the namespace).
    pub key: String,
    /// The watch is running.
    pub watching: bool,
    /// Watching and its last watch response was not behind etcd.
    pub current: bool,
    /// The revision the view reflects.
    pub revision: i64,
    /// Revisions its last watch response was behind etcd.
    pub lag: i64,
    /// Re-reads after compaction.
    pub compaction_rereads: u64,
}

/// Another component with a state (a registration).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentHealth {
    /// `"registration"`.
    pub kind: String,
    /// What it is (a registration: `<service>/<id>`).
    pub name: String,
    pub ok: bool,
    /// Its state in words (`registered (lease 694d...)`, `recovering: ...`).
    pub state: String,
}

/// A client's health summary; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// Ready: open, connection not suspended or lost, no lost session, every view current,
    /// no registration recovering or lost.
    pub healthy: bool,
    /// The client is not closed.
    pub open: bool,
    pub sessions_alive: usize,
    pub sessions_lost: usize,
    /// The least recent confirmed renewal among alive sessions (`None`: no alive
    /// session): how stale the freshest guarantee of liveness is.
    pub oldest_renew: Option<SystemTime>,
    pub views_current: usize,
    pub views_behind: usize,
    pub sessions: Vec<SessionHealth>,
    pub views: Vec<ViewHealth>,
    pub components: Vec<ComponentHealth>,
    /// What makes it unhealthy, one line each (empty when healthy).
    pub problems: Vec<String>,
}

/// The health of `client` now; see the [module docs](self).
pub fn health(client: &Client) -> Health {
    let now = Instant::now();
    let wall = SystemTime::now();
    let (mut sessions, mut views, mut components) = read_board(client, |b| {
        let sessions: Vec<SessionHealth> = b
            .sessions
            .values()
            .map(|e| SessionHealth {
                lease_id: e.lease_id,
                ttl: e.ttl,
                alive: e.lost.is_none(),
                last_renew: wall - now.saturating_duration_since(e.last_renew.unwrap_or(e.opened)),
                lost: e.lost.clone(),
            })
            .collect();
        let views: Vec<ViewHealth> = b
            .views
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|v| {
                use std::sync::atomic::Ordering::Acquire;
                let watching = v.watching.load(Acquire);
                let lag = v.lag.load(Acquire);
                ViewHealth {
                    kind: v.kind.to_string(),
                    key: v.key.clone(),
                    watching,
                    current: watching && lag == 0,
                    revision: v.revision.load(Acquire),
                    lag,
                    compaction_rereads: v.rereads.load(Acquire),
                }
            })
            .collect();
        let components: Vec<ComponentHealth> = b
            .probes
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|p| {
                let (kind, name, ok, state) = p.probe();
                ComponentHealth { kind: kind.to_string(), name, ok, state }
            })
            .collect();
        (sessions, views, components)
    });
    sessions.sort_by_key(|s| s.lease_id);
    views.sort_by(|a, b| a.key.cmp(&b.key));
    components.sort_by(|a, b| a.name.cmp(&b.name));
    let open = !client.is_closed();
    let mut problems = Vec::new();
    if !open {
        problems.push("client closed".to_string());
    }
    problems.extend(connection_problem(client));
    for s in sessions.iter().filter(|s| !s.alive) {
        problems.push(format!("session {:x} lost: {}", s.lease_id, s.lost.as_deref().unwrap_or("")));
    }
    for v in views.iter().filter(|v| !v.current) {
        if v.watching {
            problems.push(format!("{} view {} is {} revisions behind", v.kind, v.key, v.lag));
        } else {
            problems.push(format!("{} view {} is not watching (re-reading)", v.kind, v.key));
        }
    }
    for c in components.iter().filter(|c| !c.ok) {
        problems.push(format!("{} {}: {}", c.kind, c.name, c.state));
    }
    let oldest_renew = sessions.iter().filter(|s| s.alive).map(|s| s.last_renew).min();
    Health {
        healthy: problems.is_empty(),
        open,
        sessions_alive: sessions.iter().filter(|s| s.alive).count(),
        sessions_lost: sessions.iter().filter(|s| !s.alive).count(),
        oldest_renew,
        views_current: views.iter().filter(|v| v.current).count(),
        views_behind: views.iter().filter(|v| !v.current).count(),
        sessions,
        views,
        components,
        problems,
    }
}

/// What the client's connection state adds to the problems: `SUSPENDED` (no member
/// serves) and `LOST` (a session expired for lack of a confirmed renewal) are not ready.
fn connection_problem(client: &Client) -> Option<String> {
    match client.connection_state() {
        ConnectionState::Connected | ConnectionState::Reconnected => None,
        ConnectionState::Suspended => Some("connection suspended: no etcd member serves".to_string()),
        ConnectionState::Lost => Some("connection lost: a session expired without a confirmed renewal".to_string()),
    }
}
