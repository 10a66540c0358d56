//! [`Session`]: one lease kept alive, which knows its own deadline.
//!
//! The keep-alive task renews the lease every TTL/6 (but not more often than every
//! 500 ms, and at least every TTL/3), rounded down to a grid of a quarter of that period
//! shared by the process, through the client's one keep-alive stream, where the renewals
//! of sessions due at the same time leave as one batch (see `core/src/keepalive.rs`).
//! Each confirmed renewal moves the
//! *deadline* to `time the renewal was sent + TTL`, which is never later than the moment
//! etcd itself would expire the lease (etcd counts from when it received the renewal).
//! When the deadline comes near without a confirmation (a frozen member, a partition,
//! a revoked lease), the session declares itself **lost** before etcd expires the
//! lease, so a lock holder or leader stops acting in time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::keepalive::Answer;
use crate::lifecycle::Child;

/// etcd's largest lease TTL (`MaxLeaseTTL`, in seconds).
pub const MAX_TTL_SECS: i64 = 9_000_000_000;

/// Where a session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Renewals are confirmed; the lease exists at least until the deadline.
    Alive,
    /// Renewal could not be confirmed before the deadline, or etcd said the lease is gone.
    Lost(String),
    /// `close()` was called (the lease was revoked) or the session was dropped.
    Closed,
}

struct Shared {
    client: Client,
    lease_id: i64,
    ttl: i64,
    state: watch::Sender<SessionState>,
    /// Deadline in ms since `epoch` (an atomic so that readers need no lock).
    deadline_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn set_deadline(&self, d: Instant) {
        let ms = d.saturating_duration_since(self.epoch).as_millis() as u64;
        self.deadline_ms.store(ms, std::sync::atomic::Ordering::Release);
    }
    fn deadline(&self) -> Instant {
        self.epoch + Duration::from_millis(self.deadline_ms.load(std::sync::atomic::Ordering::Acquire))
    }
    /// No renewal was confirmed within the TTL: the session is lost, and so is the
    /// connection (see [`crate::connection`]).
    fn expired(&self) {
        if self.mark_lost(format!("no renewal confirmed within its {} s TTL", self.ttl)) {
            self.client.members().connection().session_expired();
        }
    }
    fn mark_lost(&self, reason: String) -> bool {
        self.state.send_if_modified(|s| {
            if *s == SessionState::Alive {
                crate::metrics::session_lost(&self.client, self.lease_id, &reason);
                warn!(lease = format_args!("{:x}", self.lease_id), %reason, "session lost");
                *s = SessionState::Lost(reason);
                true
            } else {
                false
            }
        })
    }
    fn abort_task(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// Stop renewing and revoke the lease (see [`Session::close`]).
    async fn close_lease(&self) -> Result<()> {
        crate::metrics::session_closed(&self.client, self.lease_id);
        self.abort_task();
        let was = self.state.send_replace(SessionState::Closed);
        if was == SessionState::Closed {
            return Ok(());
        }
        let id = self.lease_id;
        let t = self.client.request_timeout();
        let client = &self.client;
        match timeout(t, client.idempotent(|mut c| async move { c.lease_revoke(id).await })).await {
            Err(_) => Err(Error::timeout("lease revoke", t)),
            Ok(Ok(_)) => {
                info!(lease = format_args!("{id:x}"), "lease revoked; session closed");
                Ok(())
            }
            // Already gone: the goal (no lease) holds.
            Ok(Err(e)) if e.to_string().contains("lease not found") => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }
}

impl Child for Shared {
    fn close(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.close_lease().await;
        })
    }
}

/// Held by every clone of a [`Session`]; the last one dropped stops the keep-alive and
/// revokes the lease in the background (bounded by the request timeout).
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        crate::metrics::session_closed(&self.0.client, self.0.lease_id);
        self.0.abort_task();
        let was_alive = self.0.state.send_if_modified(|s| {
            let alive = *s == SessionState::Alive;
            if alive {
                *s = SessionState::Closed;
            }
            alive
        });
        // In a forked child the lease is the parent's: leave it alone.
        if was_alive && self.0.client.in_this_process() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let client = self.0.client.clone();
                let id = self.0.lease_id;
                let t = client.request_timeout().min(Duration::from_secs(2));
                // Until the revoke is done, a process-wide shutdown revokes it too.
                crate::lifecycle::revoke_pending(id, &client);
                handle.spawn(async move {
                    let _ = timeout(t, client.idempotent(|mut c| async move { c.lease_revoke(id).await })).await;
                    crate::lifecycle::revoke_done(id);
                });
            }
        }
    }
}

/// One lease, kept alive in the background until closed, dropped or lost.
///
/// Clones share the same lease. Locks, elections and registrations hold a session;
/// when it is lost, they are lost too.
///
/// ```no_run
/// # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
/// let session = etcd_recipes::Session::new(&client, 10).await?;
/// tokio::select! {
///     Some(reason) = session.lost() => eprintln!("stop working: {reason}"),
///     _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
/// }
/// session.close().await?; // revokes the lease
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease_id", &format_args!("{:x}", self.shared.lease_id))
            .field("ttl", &self.shared.ttl)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Session {
    /// Grant a lease of `ttl_secs` seconds and keep it alive.
    ///
    /// etcd may raise a very small TTL to its minimum; [`Session::ttl`] tells the granted one.
    pub async fn new(client: &Client, ttl_secs: i64) -> Result<Session> {
        check_ttl(ttl_secs)?;
        client.ensure_open()?;
        let sent = Instant::now();
        // Retried like a read: a grant whose answer was lost leaves an orphan lease with
        // nothing attached, which etcd expires after its TTL.
        let grant = timeout(client.request_timeout(), client.idempotent(|mut c| async move { c.lease_grant(ttl_secs, None).await }))
            .await
            .map_err(|_| Error::timeout("lease grant", client.request_timeout()))??;
        if !grant.error().is_empty() {
            return Err(Error::Etcd(etcd_client::Error::LeaseKeepAliveError(grant.error().to_string())));
        }
        let lease_id = grant.id();
        let ttl = grant.ttl();
        info!(lease = format_args!("{lease_id:x}"), ttl, "lease granted");
        crate::metrics::session_opened(client, lease_id, ttl);
        let (state, _) = watch::channel(SessionState::Alive);
        let shared = Arc::new(Shared {
            client: client.clone(),
            lease_id,
            ttl,
            state,
            deadline_ms: 0.into(),
            epoch: sent,
            task: std::sync::Mutex::new(None),
        });
        shared.set_deadline(sent + Duration::from_secs(ttl as u64));
        let span = info_span!("etcd_recipes.session", lease = format_args!("{lease_id:x}"), ttl);
        let task = tokio::spawn(keep_alive(Arc::downgrade(&shared)).instrument(span));
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let child: std::sync::Weak<dyn Child> = Arc::downgrade(&shared) as _;
        client.scope().adopt(child);
        let owner = Arc::new(Owner(shared.clone()));
        Ok(Session { shared, _owner: owner })
    }

    /// The lease id.
    pub fn lease_id(&self) -> i64 {
        self.shared.lease_id
    }

    /// The TTL etcd granted, in seconds.
    pub fn ttl(&self) -> i64 {
        self.shared.ttl
    }

    /// The client this session was made with.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.shared.state.borrow().clone()
    }

    /// True while renewals are confirmed.
    pub fn is_alive(&self) -> bool {
        *self.shared.state.borrow() == SessionState::Alive
    }

    /// The latest moment up to which the lease is known to exist.
    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Resolves when the session stops being alive: `Some(reason)` when it was lost
    /// (renewal not confirmed in time, the lease expired or was revoked in etcd), `None`
    /// when it was closed by its owner (`close()`, the client closed, process shutdown).
    pub async fn lost(&self) -> Option<String> {
        wait_not_alive(self.shared.state.subscribe()).await
    }

    /// A lock named `name` on this session; see [`crate::lock::Lock::new`].
    pub fn lock(&self, name: &str) -> Result<crate::lock::Lock> {
        crate::lock::Lock::new(self, name)
    }

    /// An election named `name` on this session; see [`crate::election::Election::new`].
    pub fn election(&self, name: &str) -> Result<crate::election::Election> {
        crate::election::Election::new(self, name)
    }

    /// Register a service instance on this session; see
    /// [`crate::registry::Registration::register_on`].
    pub async fn register(&self, opts: crate::registry::RegisterOptions) -> Result<crate::registry::Registration> {
        crate::registry::Registration::register_on(self, opts).await
    }

    /// Fail with [`Error::SessionLost`] unless the session is alive.
    pub fn ensure_alive(&self) -> Result<()> {
        match &*self.shared.state.borrow() {
            SessionState::Alive => Ok(()),
            SessionState::Lost(r) => Err(Error::SessionLost { lease_id: self.shared.lease_id, reason: r.clone() }),
            SessionState::Closed => {
                Err(Error::SessionLost { lease_id: self.shared.lease_id, reason: "was closed".into() })
            }
        }
    }

    /// An error from a request made with this session's lease: when etcd said the lease
    /// is gone, the session is lost now (not at its next renewal), and the error names it.
    pub(crate) fn lost_in_etcd(&self, e: Error) -> Error {
        match e {
            Error::SessionLost { lease_id: 0, reason } => {
                self.shared.mark_lost(reason.clone());
                Error::SessionLost { lease_id: self.shared.lease_id, reason }
            }
            other => other,
        }
    }

    /// Mark the session lost from outside (a recipe noticed its key vanished).
    #[allow(dead_code)]
    pub(crate) fn mark_lost(&self, reason: impl Into<String>) {
        self.shared.mark_lost(reason.into());
    }

    /// Stop renewing and revoke the lease: every key attached to it is deleted.
    /// Idempotent. After the client was closed, the lease is already revoked.
    pub async fn close(&self) -> Result<()> {
        self.shared.close_lease().await
    }
}

/// `Some(reason)` once the state is `Lost`, `None` once `Closed` (or dropped).
pub(crate) async fn wait_not_alive(mut rx: watch::Receiver<SessionState>) -> Option<String> {
    let r = rx.wait_for(|s| *s != SessionState::Alive).await;
    match r {
        Ok(s) => match &*s {
            SessionState::Lost(r) => Some(r.clone()),
            _ => None,
        },
        Err(_) => None,
    }
}

/// The default TTL of a session a recipe makes for itself, in seconds.
pub const DEFAULT_TTL_SECS: i64 = 10;

/// A TTL must be 1 s ..= etcd's maximum.
pub fn check_ttl(ttl_secs: i64) -> Result<()> {
    if ttl_secs <= 0 {
        return Err(Error::invalid(format!("ttl must be at least 1 second, got {ttl_secs}")));
    }
    if ttl_secs > MAX_TTL_SECS {
        return Err(Error::invalid(format!("ttl {ttl_secs} s is above etcd's maximum of {MAX_TTL_SECS} s")));
    }
    Ok(())
}

/// Where a lock or an election gets its session from.
///
/// - [`SessionSource::Shared`]: a session you made and own; many recipes may share it, and
///   when it is lost all of them are.
/// - [`SessionSource::PerUse`]: each acquisition / campaign grants a session of its own
///   with this TTL, and closes it when the lock is released, the leadership resigned, or
///   the wait gives up. The usual choice: one lease per holder, nothing to manage.
#[derive(Clone, Debug)]
pub enum SessionSource {
    Shared(Session),
    PerUse { client: Client, ttl_secs: i64 },
}

impl SessionSource {
    /// A fresh session of `ttl_secs` per use ([`Error::InvalidArgument`] for a bad TTL).
    pub fn per_use(client: &Client, ttl_secs: i64) -> Result<SessionSource> {
        check_ttl(ttl_secs)?;
        Ok(SessionSource::PerUse { client: client.clone(), ttl_secs })
    }

    /// The client sessions come from.
    pub fn client(&self) -> &Client {
        match self {
            SessionSource::Shared(s) => s.client(),
            SessionSource::PerUse { client, .. } => client,
        }
    }

    /// The session to use now, and whether the caller owns it (closes it when done).
    pub(crate) async fn session(&self) -> Result<(Session, bool)> {
        match self {
            SessionSource::Shared(s) => Ok((s.clone(), false)),
            SessionSource::PerUse { client, ttl_secs } => Ok((Session::new(client, *ttl_secs).await?, true)),
        }
    }
}

impl From<&Session> for SessionSource {
    fn from(s: &Session) -> Self {
        SessionSource::Shared(s.clone())
    }
}

impl From<Session> for SessionSource {
    fn from(s: Session) -> Self {
        SessionSource::Shared(s)
    }
}

impl From<&SessionSource> for SessionSource {
    fn from(s: &SessionSource) -> Self {
        s.clone()
    }
}

/// Safety margin: the session is declared lost this long before its deadline.
fn margin(ttl: i64) -> Duration {
    (Duration::from_secs(ttl as u64) / 10).min(Duration::from_millis(500))
}

/// Renewal times lie on a grid shared by the whole process, so that the renewals of
/// sessions with the same TTL leave together, as one batch on the client's keep-alive
/// stream (see [`crate::keepalive`]). `t` is rounded down to a multiple of `step` (never
/// later: a lease is renewed at least as often as its period says).
fn on_grid(t: Instant, step: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now));
    let step = step.as_nanos().max(1);
    match t.checked_duration_since(origin) {
        Some(since) => origin + Duration::from_nanos((since.as_nanos() / step * step) as u64),
        None => t,
    }
}

/// The grid's step for a renewal period: a quarter of it, in whole 100 ms when it is
/// that long.
fn grid_step(period: Duration) -> Duration {
    let q = period / 4;
    let tenth = Duration::from_millis(100);
    if q >= tenth {
        tenth * (q.as_millis() / 100) as u32
    } else {
        q
    }
}

async fn keep_alive(weak: std::sync::Weak<Shared>) {
    let (client, lease_id, ttl) = match weak.upgrade() {
        Some(s) => (s.client.clone(), s.lease_id, s.ttl),
        None => return,
    };
    // More often than Go's TTL/3 for short TTLs: the deadline counts from the last
    // confirmed renewal, and while etcd elects a new leader (1-2 s) nothing is confirmed,
    // so a TTL 3 s session renewed every second could be declared lost during an election.
    let period = Duration::from_millis((ttl as u64 * 1000 / 6).max(500).min(ttl as u64 * 1000 / 3).max(100));
    let step = grid_step(period);
    let margin = margin(ttl);
    // How long a request may wait with no answer at all on the client's keep-alive stream
    // (a frozen member, or one forwarding to a leader that is gone) before the stream is
    // moved to another member, early enough to try there before the deadline.
    let budget = (period / 2).max(Duration::from_millis(250));
    let mut next = on_grid(Instant::now() + period, step);
    loop {
        let deadline = match weak.upgrade() {
            Some(s) => s.deadline(),
            None => return,
        };
        let lost_at = deadline.checked_sub(margin).unwrap_or(deadline);
        // Wait for the next renewal time, unless the deadline comes first.
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = sleep_until(lost_at) => {
                if let Some(s) = weak.upgrade() {
                    s.expired();
                }
                return;
            }
        }
        // Taken before the request leaves: the deadline counts from no later than the
        // moment etcd renews the lease.
        let sent = Instant::now();
        let answer = client.renewer().renew(lease_id, budget);
        match timeout_at(lost_at, answer).await {
            Err(_) => {
                if let Some(s) = weak.upgrade() {
                    s.expired();
                }
                return;
            }
            Ok(Ok(Answer::Renewed(granted))) if granted <= 0 => {
                if let Some(s) = weak.upgrade() {
                    s.mark_lost("expired or revoked in etcd".into());
                }
                return;
            }
            Ok(Ok(Answer::Renewed(granted))) => {
                let Some(s) = weak.upgrade() else { return };
                s.set_deadline(sent + Duration::from_secs(granted as u64));
                crate::metrics::session_renewed(&client, lease_id, sent.elapsed());
                debug!(granted, "lease renewed");
                next = on_grid(sent + period, step);
            }
            Ok(Ok(Answer::Moved(why))) => {
                debug!(reason = %why, "lease keep-alive stream moved; renewing again");
                next = Instant::now();
            }
            // A failure of the shared stream says nothing about this lease in particular
            // (etcd answers a lease it does not know with TTL 0, above): ask again.
            Ok(Ok(Answer::Failed(why))) => {
                debug!(reason = %why, "lease renewal failed; retrying");
                next = Instant::now() + Duration::from_millis(200).min(period);
            }
            // The renewer stopped before answering (the client is closing): ask again
            // after a pause; the session's own close ends this task.
            Ok(Err(_)) => {
                next = Instant::now() + Duration::from_millis(50).min(period);
            }
        }
    }
}
