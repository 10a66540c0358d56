//! [`LeaderLoop`] and [`LeaderLatch`]: leadership as a running service, on top of an
//! [`Election`](crate::election::Election) (same keys, so `etcdctl elect -l` and Go's
//! `Election.Observe` see our leader).
//!
//! # Leader loop (Curator `LeaderSelector` with auto-requeue, client-go `leaderelection`)
//!
//! [`LeaderLoop::run`] campaigns; once leader it runs your *work* with the
//! [`Leadership`] and a [`CancelSignal`]. The signal fires the moment leadership ends
//! for any reason other than the work returning: the session was lost (its deadline
//! passed unconfirmed, or etcd said the lease is gone), our key was deleted or replaced
//! by someone else, the loop was stopped, or the client was closed. The loop then waits
//! for the work to finish (at most [`LeaderLoop::stop_timeout`]; a work still running
//! after that is aborted) and resigns. When the work returns (with `Ok` or an error) the
//! loop resigns at once, so the next candidate takes over. Then, unless
//! [`LeaderLoop::requeue`] is false, it campaigns again with a fresh session (per-use
//! sources) and the loop goes on.
//!
//! A work error is logged (`warn`) and reported in [`LeaderEvent::StoppedLeading`]
//! ([`StopReason::Returned`] with `error`); it does not end the loop.
//!
//! The loop ends on [`LeaderLoop::close`], when the last handle is dropped, when the
//! future of [`LeaderLoop::run`] is dropped, when the client is closed
//! ([`Error::Closed`] from `run`/`wait`), after one term when `requeue` is false, or on
//! an error that campaigning again cannot fix (permission denied, a shared session lost).
//! Stopping while leading cancels the work, waits for it (bounded) and resigns.
//!
//! Within one loop, terms never overlap: the next campaign starts only after the
//! previous work finished (or was aborted) and the key was resigned. Across processes,
//! etcd guarantees one key is leader; a work that must not act on a stale leadership
//! guards its writes with [`Leadership::fence`] (the fencing token strictly increases
//! from term to term).
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::leader::LeaderLoop;
//! use etcd_recipes::SessionSource;
//! let lp = LeaderLoop::new(SessionSource::per_use(&client, 5)?, "scheduler", "node-1")?;
//! lp.run(|leadership, cancel| async move {
//!     loop {
//!         tokio::select! {
//!             _ = cancel.cancelled() => return Ok::<_, etcd_recipes::Error>(()),
//!             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
//!                 leadership.fence().put("scheduler/tick", "node-1").await?;
//!             }
//!         }
//!     }
//! })
//! .await
//! # }
//! ```
//!
//! # Leader latch (Curator `LeaderLatch`)
//!
//! [`LeaderLatch::start`] campaigns in the background and holds leadership until closed;
//! after a loss it campaigns again. Ask [`LeaderLatch::is_leader`], wait with
//! [`LeaderLatch::await_leader`] (gives up with [`Error::LockTimeout`]), follow
//! [`LeaderLatch::events`], and [`LeaderLatch::close`] to resign and stop.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::election::{Election, LeaderInfo, Leadership};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::Child;
use crate::session::{Session, SessionSource, SessionState};

/// The default of [`LeaderLoop::stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a term (one leadership) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The work returned; `error` is its error (or panic) message when it failed.
    Returned { error: Option<String> },
    /// Leadership was lost: the session was lost, or our key was deleted or replaced.
    Lost(String),
    /// The loop was stopped (stop, close, dropped), the session was closed by its
    /// owner, or the client was closed.
    Cancelled,
}

impl StopReason {
    /// `"returned"`, `"lost"` or `"cancelled"`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::Returned { .. } => "returned",
            StopReason::Lost(_) => "lost",
            StopReason::Cancelled => "cancelled",
        }
    }

    /// The loss reason or the work's error, if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            StopReason::Returned { error } => error.as_deref(),
            StopReason::Lost(r) => Some(r),
            StopReason::Cancelled => None,
        }
    }
}

/// What a loop (or latch) reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderEvent {
    /// We became leader (client-go `OnStartedLeading`); the work starts now.
    StartedLeading { fencing_token: i64, key: String, lease_id: i64 },
    /// Our term ended (client-go `OnStoppedLeading`); the work has finished and we resigned.
    StoppedLeading { fencing_token: i64, reason: StopReason },
    /// The election's leader changed (client-go `OnNewLeader`), us included; `None`: no
    /// leader. Observed independently of our own terms, so it may arrive just before or
    /// after our `StartedLeading`.
    NewLeader(Option<LeaderInfo>),
}

/// Given to the work: fires when the work must stop (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct CancelSignal {
    rx: watch::Receiver<Option<StopReason>>,
}

impl CancelSignal {
    /// True once fired.
    pub fn is_cancelled(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// Why it fired, once it has.
    pub fn reason(&self) -> Option<StopReason> {
        self.rx.borrow().clone()
    }

    /// Resolves when it fires (at once if it has), with the reason.
    pub async fn cancelled(&self) -> StopReason {
        let mut rx = self.rx.clone();
        let r = match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or(StopReason::Cancelled),
            Err(_) => StopReason::Cancelled,
        };
        r
    }
}

/// The work's future, boxed (what [`LeaderLoop::start`] keeps).
type WorkFuture = Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;
type WorkFn = Box<dyn FnMut(Arc<Leadership>, CancelSignal) -> WorkFuture + Send>;

/// Shared by the handles and the loop task.
struct LoopShared {
    name: String,
    client: crate::Client,
    /// Stop requested.
    stop: watch::Sender<bool>,
    /// `true` once the loop task has ended (or never will start: stopped before start).
    ended: watch::Sender<bool>,
    /// The end's error, handed to the first `wait`.
    error: Mutex<Option<Error>>,
    /// The leadership of the current term.
    current: watch::Sender<Option<Arc<Leadership>>>,
    /// (terms started, terms ended, how the latest ended).
    terms: watch::Sender<(u64, u64, Option<StopReason>)>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<LeaderEvent>>>,
    started: AtomicBool,
    /// Stopped because the client is closing: the loop ends with `Closed`.
    client_closing: AtomicBool,
}

impl LoopShared {
    fn emit(&self, ev: LeaderEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| s.send(ev.clone()).is_ok());
    }

    fn request_stop(&self) {
        self.stop.send_replace(true);
        if !self.started.swap(true, Ordering::AcqRel) {
            // Never started: nothing will end it otherwise.
            self.finish(Ok(()));
        }
    }

    fn finish(&self, r: Result<()>) {
        let r = match r {
            Ok(()) if self.client_closing.load(Ordering::Acquire) => Err(Error::Closed("client")),
            r => r,
        };
        if let Err(e) = r {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.ended.send_replace(true);
    }

    async fn wait_ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }
}

impl Child for LoopShared {
    fn close(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            self.client_closing.store(true, Ordering::Release);
            self.request_stop();
            self.wait_ended().await;
        })
    }
}

/// Held by every handle; the last one dropped stops the loop (in the background).
struct Owner(Arc<LoopShared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.request_stop();
    }
}

/// Campaign, work while leader, resign, campaign again: see the [module docs](self).
/// Clones are handles to the same loop; the last one dropped stops it.
#[derive(Clone)]
pub struct LeaderLoop {
    source: SessionSource,
    election: Election,
    value: Vec<u8>,
    requeue: bool,
    stop_timeout: Duration,
    shared: Arc<LoopShared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for LeaderLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLoop")
            .field("name", &self.shared.name)
            .field("requeue", &self.requeue)
            .field("leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

impl LeaderLoop {
    /// A loop on election `name` (same name rules as [`Election::new`]) campaigning with
    /// `value`, on a shared session or a fresh session per term
    /// ([`SessionSource::per_use`]). Nothing happens until [`LeaderLoop::run`] or
    /// [`LeaderLoop::start`].
    pub fn new(source: impl Into<SessionSource>, name: &str, value: impl Into<Vec<u8>>) -> Result<LeaderLoop> {
        let source = source.into();
        let election = Election::new(source.clone(), name)?;
        let client = source.client().clone();
        let shared = Arc::new(LoopShared {
            name: name.to_string(),
            client,
            stop: watch::channel(false).0,
            ended: watch::channel(false).0,
            error: Mutex::new(None),
            current: watch::channel(None).0,
            terms: watch::channel((0, 0, None)).0,
            subscribers: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            client_closing: AtomicBool::new(false),
        });
        let owner = Arc::new(Owner(shared.clone()));
        Ok(LeaderLoop {
            source,
            election,
            value: value.into(),
            requeue: true,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            shared,
            _owner: owner,
        })
    }

    /// Campaign again after a term ends (default true). False: the loop ends after one term.
    pub fn requeue(mut self, requeue: bool) -> LeaderLoop {
        self.requeue = requeue;
        self
    }

    /// How long a cancelled work may take to finish before it is aborted (default 5 s).
    pub fn stop_timeout(mut self, t: Duration) -> LeaderLoop {
        self.stop_timeout = t;
        self
    }

    /// The election name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// True while a term is running and its leadership holds.
    pub fn is_leader(&self) -> bool {
        self.shared.current.borrow().as_ref().is_some_and(|l| l.is_leader())
    }

    /// The current term's leadership, if leading.
    pub fn leadership(&self) -> Option<Arc<Leadership>> {
        self.shared.current.borrow().clone()
    }

    /// True once the loop has ended.
    pub fn is_stopped(&self) -> bool {
        *self.shared.ended.borrow()
    }

    /// Every event from now on, in order, until the loop ends. Subscribe before
    /// starting to see everything.
    pub fn events(&self) -> LeaderEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        if !*self.shared.ended.borrow() {
            self.shared.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        }
        LeaderEvents { rx: tokio_stream::wrappers::UnboundedReceiverStream::new(rx) }
    }

    /// Start the loop in the background with `work` (see the [module docs](self)).
    /// [`Error::InvalidArgument`] if it was started (or stopped) already.
    pub fn start<F, Fut, E>(&self, mut work: F) -> Result<()>
    where
        F: FnMut(Arc<Leadership>, CancelSignal) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let boxed: WorkFn = Box::new(move |l, c| {
            let fut = work(l, c);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.start_boxed(boxed)
    }

    fn start_boxed(&self, work: WorkFn) -> Result<()> {
        self.shared.client.ensure_open()?;
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return Err(Error::invalid(format!("leader loop {:?} was started already", self.shared.name)));
        }
        let child: Weak<dyn Child> = Arc::downgrade(&self.shared) as _;
        self.shared.client.scope().adopt(child);
        let run = Runner {
            source: self.source.clone(),
            election: self.election.clone(),
            value: self.value.clone(),
            requeue: self.requeue,
            stop_timeout: self.stop_timeout,
            shared: self.shared.clone(),
        };
        let shared = self.shared.clone();
        let span = info_span!("etcd_recipes.leader_loop", name = %self.shared.name);
        tokio::spawn(
            async move {
                let observer = tokio::spawn(observe(run.election.clone(), Arc::downgrade(&run.shared)));
                let r = run.run(work).await;
                observer.abort();
                match &r {
                    Ok(()) => info!("leader loop ended"),
                    Err(e) => warn!(error = %e, "leader loop ended"),
                }
                shared.finish(r);
            }
            .instrument(span),
        );
        Ok(())
    }

    /// [`LeaderLoop::start`], then wait until the loop ends ([`LeaderLoop::wait`]).
    /// Dropping this future stops the loop (the work is cancelled and we resign in the
    /// background).
    pub async fn run<F, Fut, E>(&self, work: F) -> Result<()>
    where
        F: FnMut(Arc<Leadership>, CancelSignal) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        struct StopOnDrop<'a>(&'a LoopShared, bool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.request_stop();
                }
            }
        }
        self.start(work)?;
        let mut guard = StopOnDrop(&self.shared, true);
        let r = self.wait().await;
        guard.1 = false;
        r
    }

    /// Wait until the loop ends: `Ok` when stopped or after its last term (requeue false),
    /// [`Error::Closed`] when the client was closed, or the error that ended it (returned
    /// to the first waiter only; later ones get `Ok`).
    pub async fn wait(&self) -> Result<()> {
        self.shared.wait_ended().await;
        match self.shared.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stop: cancel the work (if leading), wait for it (bounded by the stop timeout),
    /// resign, and end the loop. Idempotent; resolves once the loop has ended.
    pub async fn close(&self) {
        self.shared.request_stop();
        self.shared.wait_ended().await;
    }

    /// `Some(reason)` if the current term (or, when not leading, the next one) ends by a
    /// loss; `None` if it ends otherwise or the loop ends first.
    pub async fn lost(&self) -> Option<String> {
        let mut rx = self.shared.terms.subscribe();
        let mut ended = self.shared.ended.subscribe();
        let (started, done, _) = rx.borrow().clone();
        let target = if started > done { started } else { started + 1 };
        tokio::select! {
            r = rx.wait_for(|(_, d, _)| *d >= target) => match r {
                Ok(t) => match &t.2 {
                    Some(StopReason::Lost(r)) => Some(r.clone()),
                    _ => None,
                },
                Err(_) => None,
            },
            _ = ended.wait_for(|e| *e) => None,
        }
    }
}

/// The loop task's own copy of the configuration.
struct Runner {
    source: SessionSource,
    election: Election,
    value: Vec<u8>,
    requeue: bool,
    stop_timeout: Duration,
    shared: Arc<LoopShared>,
}

fn fatal(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::InvalidArgument | ErrorKind::Decode)
}

impl Runner {
    async fn stopped(&self) {
        let mut rx = self.shared.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn stop_requested(&self) -> bool {
        *self.shared.stop.borrow()
    }

    async fn run(&self, mut work: WorkFn) -> Result<()> {
        let client = self.shared.client.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stop_requested() {
                return Ok(());
            }
            client.ensure_open()?;
            if let SessionSource::Shared(s) = &self.source {
                match s.state() {
                    SessionState::Alive => {}
                    SessionState::Closed => return Ok(()),
                    SessionState::Lost(_) => return Err(s.ensure_alive().unwrap_err()),
                }
            }
            // A per-use session is made here (not inside the campaign) so that stopping
            // mid-campaign revokes it before `stop` returns: no candidate key is left.
            let made = match &self.source {
                SessionSource::Shared(_) => Ok((self.election.clone(), None)),
                SessionSource::PerUse { client, ttl_secs } => tokio::select! {
                    s = Session::new(client, *ttl_secs) => s.and_then(|s| Ok((Election::new(&s, &self.shared.name)?, Some(s)))),
                    _ = self.stopped() => return Ok(()),
                },
            };
            let campaign = match made {
                Ok((election, session)) => {
                    let r = tokio::select! {
                        r = election.campaign_within(self.value.clone(), None) => Some(r),
                        _ = self.stopped() => None,
                    };
                    match r {
                        Some(Ok(l)) => Ok((l, session)),
                        Some(Err(e)) => {
                            close_quietly(session).await;
                            Err(e)
                        }
                        None => {
                            close_quietly(session).await;
                            return Ok(());
                        }
                    }
                }
                Err(e) => Err(e),
            };
            let (leadership, session) = match campaign {
                Ok((l, s)) => (Arc::new(l), s),
                Err(e) if e.kind() == ErrorKind::Closed || fatal(&e) => return Err(e),
                Err(e)
                    if e.kind() == ErrorKind::SessionLost
                        && matches!(&self.source, SessionSource::Shared(s) if !s.is_alive()) =>
                {
                    continue; // the state check above ends the loop
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "campaign failed; campaigning again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stopped() => return Ok(()),
                        _ = client.closed() => return Err(Error::Closed("client")),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let reason = self.term(&leadership, &mut work).await;
            close_quietly(session).await;
            if self.stop_requested() {
                return Ok(());
            }
            if client.is_closed() {
                return Err(Error::Closed("client"));
            }
            if !self.requeue {
                return Ok(());
            }
            debug!(reason = reason.kind(), "campaigning again");
        }
    }

    /// One term: run the work until it returns or leadership ends; resign.
    async fn term(&self, l: &Arc<Leadership>, work: &mut WorkFn) -> StopReason {
        let token = l.fencing_token();
        let span = info_span!("etcd_recipes.leader_loop.term", fencing_token = token);
        async {
            let sh = &self.shared;
            sh.current.send_replace(Some(l.clone()));
            sh.terms.send_modify(|t| t.0 += 1);
            sh.emit(LeaderEvent::StartedLeading { fencing_token: token, key: l.key().to_string(), lease_id: l.lease_id() });
            info!("started leading");
            let (cancel_tx, cancel_rx) = watch::channel(None);
            let mut task = tokio::spawn(work(l.clone(), CancelSignal { rx: cancel_rx }));
            let client = sh.client.clone();
            let returned = tokio::select! {
                r = &mut task => Ok(r),
                r = l.lost() => Err(match r {
                    Some(reason) => StopReason::Lost(reason),
                    None => StopReason::Cancelled,
                }),
                _ = self.stopped() => Err(StopReason::Cancelled),
                _ = client.closed() => Err(StopReason::Cancelled),
            };
            let reason = match returned {
                Ok(r) => {
                    let error = match r {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(e) => Some(format!("work panicked or was aborted: {e}")),
                    };
                    if let Some(e) = &error {
                        warn!(error = %e, "work failed; resigning");
                    }
                    StopReason::Returned { error }
                }
                Err(reason) => {
                    match &reason {
                        StopReason::Lost(r) => warn!(reason = %r, "leadership lost; cancelling the work"),
                        _ => info!("stopping; cancelling the work"),
                    }
                    cancel_tx.send_replace(Some(reason.clone()));
                    match tokio::time::timeout(self.stop_timeout, &mut task).await {
                        Ok(Ok(Ok(()))) => {}
                        Ok(Ok(Err(e))) => debug!(error = %e, "cancelled work ended with an error"),
                        Ok(Err(e)) => debug!(error = %e, "cancelled work panicked"),
                        Err(_) => {
                            warn!(timeout = ?self.stop_timeout, "work did not stop in time after cancel; aborted");
                            task.abort();
                        }
                    }
                    reason
                }
            };
            // Anything the work left running sees the signal too.
            cancel_tx.send_if_modified(|r| {
                if r.is_none() {
                    *r = Some(reason.clone());
                    true
                } else {
                    false
                }
            });
            if let Err(e) = l.resign().await {
                debug!(error = %e, "resign failed; the key goes with its lease");
            }
            sh.current.send_replace(None);
            sh.terms.send_modify(|t| {
                t.1 += 1;
                t.2 = Some(reason.clone());
            });
            sh.emit(LeaderEvent::StoppedLeading { fencing_token: token, reason: reason.clone() });
            info!(reason = reason.kind(), "stopped leading");
            reason
        }
        .instrument(span)
        .await
    }
}

async fn close_quietly(session: Option<Session>) {
    if let Some(s) = session {
        if let Err(e) = s.close().await {
            debug!(error = %e, "closing the term's session failed; the lease expires with its TTL");
        }
    }
}

/// Report the election's leaders as [`LeaderEvent::NewLeader`] while the loop lives.
async fn observe(election: Election, shared: Weak<LoopShared>) {
    let mut obs = election.observe();
    while let Some(item) = obs.next().await {
        let Some(sh) = shared.upgrade() else { return };
        match item {
            Ok(leader) => sh.emit(LeaderEvent::NewLeader(leader)),
            Err(e) => {
                debug!(error = %e, "leader observer ended");
                return;
            }
        }
    }
}

/// The events of a [`LeaderLoop`] or [`LeaderLatch`]; ends when the loop ends.
pub struct LeaderEvents {
    rx: tokio_stream::wrappers::UnboundedReceiverStream<LeaderEvent>,
}

impl std::fmt::Debug for LeaderEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderEvents").finish_non_exhaustive()
    }
}

impl LeaderEvents {
    /// The next event; `None` once the loop has ended.
    pub async fn next(&mut self) -> Option<LeaderEvent> {
        StreamExt::next(&mut self.rx).await
    }
}

impl Stream for LeaderEvents {
    type Item = LeaderEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaderEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// Campaigns in the background and holds leadership until closed; campaigns again after
/// a loss (Curator `LeaderLatch`). See the [module docs](self). Clones share the latch;
/// the last one dropped closes it.
#[derive(Clone, Debug)]
pub struct LeaderLatch {
    lp: LeaderLoop,
}

impl LeaderLatch {
    /// A latch on election `name` with `value` (per-use sessions or a shared one). It
    /// campaigns once [`LeaderLatch::start`]ed; subscribe to [`LeaderLatch::events`] before.
    pub fn new(source: impl Into<SessionSource>, name: &str, value: impl Into<Vec<u8>>) -> Result<LeaderLatch> {
        Ok(LeaderLatch { lp: LeaderLoop::new(source, name, value)? })
    }

    /// Start campaigning in the background. [`Error::InvalidArgument`] if started (or
    /// closed) already; [`Error::Closed`] if the client is closed.
    pub fn start(&self) -> Result<()> {
        self.lp.start(|_l, cancel| async move {
            cancel.cancelled().await;
            Ok::<_, Infallible>(())
        })
    }

    /// The election name.
    pub fn name(&self) -> &str {
        self.lp.name()
    }

    /// True while we hold the leadership.
    pub fn is_leader(&self) -> bool {
        self.lp.is_leader()
    }

    /// The current leadership, if leader.
    pub fn leadership(&self) -> Option<Arc<Leadership>> {
        self.lp.leadership()
    }

    /// True once closed (or ended by the client closing).
    pub fn is_closed(&self) -> bool {
        self.lp.is_stopped()
    }

    /// Resolves with the leadership as soon as we are leader (at once if we are);
    /// [`Error::LockTimeout`] after `timeout` (`None`: wait as long as it takes);
    /// [`Error::Closed`] if the latch is closed (or its client) first.
    pub async fn await_leader(&self, timeout: Option<Duration>) -> Result<Arc<Leadership>> {
        let mut cur = self.lp.shared.current.subscribe();
        let mut ended = self.lp.shared.ended.subscribe();
        let leading = async {
            loop {
                let l = cur.borrow_and_update().clone();
                if let Some(l) = l.filter(|l| l.is_leader()) {
                    return Ok(l);
                }
                if cur.changed().await.is_err() {
                    return Err(Error::Closed("leader latch"));
                }
            }
        };
        let closed = async {
            let _ = ended.wait_for(|e| *e).await;
            if self.lp.shared.client.is_closed() {
                Error::Closed("client")
            } else {
                Error::Closed("leader latch")
            }
        };
        tokio::select! {
            r = leading => r,
            e = closed => Err(e),
            _ = crate::waitqueue::sleep_opt(timeout.map(|t| tokio::time::Instant::now() + t)) => Err(Error::LockTimeout {
                name: format!("leadership of election {:?}", self.lp.name()),
                reason: "timed out".into(),
            }),
        }
    }

    /// See [`LeaderLoop::lost`]: the current (or next) term's loss reason, `None` if it
    /// ends otherwise or the latch closes first.
    pub async fn lost(&self) -> Option<String> {
        self.lp.lost().await
    }

    /// Events from now on (see [`LeaderLoop::events`]).
    pub fn events(&self) -> LeaderEvents {
        self.lp.events()
    }

    /// Resign (if leader) and stop campaigning. Idempotent.
    pub async fn close(&self) {
        self.lp.close().await
    }
}
