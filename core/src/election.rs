//! [`Election`]: leader election, wire-compatible with etcd's Go `concurrency.Election`
//! and `etcdctl elect`.
//!
//! # Protocol
//!
//! An election named `name` is the key prefix `<namespace><name>/`. Each candidate puts
//! `<namespace><name>/<lease id in lowercase hex>` with its proposal as the value,
//! attached to its [`Session`]'s lease; the leader is the key with the smallest create
//! revision. A candidate waits like a [lock](crate::lock) waiter (counting the deletes
//! of the keys ahead of it on one watch of the prefix), and that watch sees its own key
//! too: a key deleted while waiting ends the campaign with [`Error::SessionLost`] (Go does
//! not check; we do, so an expired session never "wins"). Proclaim and resign are transactions guarded by
//! `CreateRevision(leaderKey) == leaderRevision`, which is also the fencing token.
//!
//! Campaigning again through the same session (same key) behaves like Go: the existing
//! key is reused and its value updated when it differs.
//!
//! Names follow the [lock naming rules](crate::lock#names): an election `"a"` sees the
//! candidates of an election `"a/b"` (their keys lie under `a/`).
//!
//! ```no_run
//! # async fn demo(client: etcd_recipes::Client) -> etcd_recipes::Result<()> {
//! use etcd_recipes::{election::Election, Session};
//! let session = Session::new(&client, 5).await?;
//! let election = Election::new(&session, "scheduler")?;
//! let leadership = election.campaign("node-1").await?;
//! tokio::select! {
//!     Some(reason) = leadership.lost() => eprintln!("no longer leader: {reason}"),
//!     _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => leadership.resign().await?,
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, WatchOptions};
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::fence::Fence;
use crate::session::{Session, SessionSource};
use crate::waitqueue::{
    check_name, enter, first_under, guarded_delete, key_has_rev, member_key, on_session, queue_prefix, sleep_opt, wait_turn,
    Cleanup, Turn,
};

/// Who leads an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's full etcd key (with namespace), `<ns><name>/<lease hex>`.
    pub key: String,
    /// The leader's proposal (its value).
    pub value: Vec<u8>,
    /// Create revision of the leader key: the leadership's fencing token.
    pub fencing_token: i64,
    /// The lease the leader key is attached to.
    pub lease_id: i64,
}

impl LeaderInfo {
    fn from_kv(kv: &KeyValue) -> LeaderInfo {
        LeaderInfo {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            fencing_token: kv.create_revision(),
            lease_id: kv.lease(),
        }
    }
}

/// One election (a name), whose candidates run on a shared [`Session`] or on a fresh
/// session per campaign ([`SessionSource::per_use`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Election {
    source: SessionSource,
    name: String,
    prefix: String,
    timeout: Option<Duration>,
}

impl Election {
    /// The election called `name` (namespaced by the client). Same name rules as
    /// [`crate::lock::Lock::new`].
    pub fn new(source: impl Into<SessionSource>, name: &str) -> Result<Election> {
        let source = source.into();
        let prefix = queue_prefix(source.client(), "election name", name)?;
        Ok(Election { source, name: name.to_string(), prefix, timeout: None })
    }

    /// Make [`Election::campaign`] give up after `timeout` ([`Error::LockTimeout`], the
    /// one kind for "gave up waiting"); `None`: wait as long as it takes (the default).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Election {
        self.timeout = timeout;
        self
    }

    /// The election name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stand as a candidate with `value` and wait until leader (up to the timeout set
    /// with [`Election::with_timeout`]). Cancel by dropping the future: our candidate key
    /// is deleted. [`Error::SessionLost`] if the session is lost (or our key vanished)
    /// while waiting; [`Error::Closed`] if the client is closed meanwhile.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        self.campaign_within(value, self.timeout).await
    }

    /// [`Election::campaign`], giving up after `timeout` (`None`: never).
    pub async fn campaign_within(&self, value: impl Into<Vec<u8>>, timeout: Option<Duration>) -> Result<Leadership> {
        let value = value.into();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        on_session(&self.source, deadline, || self.gave_up(), |session, owned| async move {
            self.campaign_on(&session, owned, value, deadline).await
        })
        .await
    }

    async fn campaign_on(
        &self,
        session: &Session,
        owned: bool,
        value: Vec<u8>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Leadership> {
        let key = member_key(&self.prefix, session.lease_id());
        let span = info_span!("etcd_recipes.election.campaign", name = %self.name, key = %key);
        let session_lost = |r: Option<String>| Error::SessionLost {
            lease_id: session.lease_id(),
            reason: r.unwrap_or_else(|| "was closed".into()),
        };
        async move {
            session.ensure_alive()?;
            let client = session.client().clone();
            let mut cleanup = Cleanup::new(client.clone(), key.clone(), None);
            let work = async {
                let entered = enter(&client, &self.prefix, &key, value.clone(), session.lease_id())
                    .await
                    .map_err(|e| session.lost_in_etcd(e));
                let entered = match entered {
                    Ok(e) => e,
                    Err(e) => {
                        // The put may have been applied before the error: remove it.
                        cleanup.arm();
                        return Err(e);
                    }
                };
                if entered.created {
                    cleanup.arm();
                } else if entered.existing_value.as_deref() != Some(&value[..]) {
                    // Campaigning again from the same session: update the proposal (as Go).
                    put_if_rev(&client, &key, entered.rev, value.clone(), session.lease_id())
                        .await?
                        .then_some(())
                        .ok_or_else(|| session_lost(Some("candidate key vanished".into())))?;
                }
                if entered.owner_rev.is_some_and(|o| o != entered.rev) {
                    let turn = wait_turn(&client, &self.prefix, &key, entered.rev, entered.ahead()).await?;
                    return Ok((entered.rev, turn));
                }
                // The transaction saw our key as the leader, at its revision.
                Ok::<_, Error>((entered.rev, Turn::Ours { at: entered.header_rev }))
            };
            let outcome = tokio::select! {
                r = work => r,
                r = session.lost() => Err(session_lost(r)),
                _ = sleep_opt(deadline) => Err(self.gave_up()),
            };
            // `from`: a revision at which our key existed and led; the leadership's watch
            // of its own key starts after it.
            let (rev, from) = match outcome {
                Ok((rev, Turn::Ours { at })) => (rev, at),
                Ok((_, Turn::KeyGone)) => {
                    cleanup.run().await;
                    return Err(session_lost(Some(format!(
                        "candidate key {key} vanished while waiting (lease expired or revoked)"
                    ))));
                }
                Err(e) => {
                    // A timeout before `enter` armed nothing; arm so the key goes either way.
                    if e.kind() == ErrorKind::LockTimeout {
                        cleanup.arm();
                    }
                    cleanup.run().await;
                    return Err(e);
                }
            };
            if let Err(e) = session.ensure_alive() {
                cleanup.run().await;
                return Err(e);
            }
            cleanup.disarm();
            info!(revision = rev, "elected leader");
            crate::metrics::election_won(&self.name, rev);
            Ok(Leadership::start(self, session.clone(), owned, key, rev, value, from))
        }
        .instrument(span)
        .await
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        leader_of(self.source.client(), &self.prefix).await.map(|(l, _)| l)
    }

    /// A stream of leaders: the current one first (or `None`), then every change.
    pub fn observe(&self) -> LeaderObserver {
        LeaderObserver::new(self.source.client().clone(), self.prefix.clone())
    }

    fn gave_up(&self) -> Error {
        Error::LockTimeout { name: format!("leadership of election {:?}", self.name), reason: "timed out".into() }
    }
}

/// The current leader of election `name`, without a session.
pub async fn current_leader(client: &Client, name: &str) -> Result<Option<LeaderInfo>> {
    client.ensure_open()?;
    check_name("election name", name)?;
    leader_of(client, &client.full_key(&format!("{name}/"))).await.map(|(l, _)| l)
}

/// Observe election `name` without a session; see [`LeaderObserver`].
pub fn observe(client: &Client, name: &str) -> Result<LeaderObserver> {
    check_name("election name", name)?;
    Ok(LeaderObserver::new(client.clone(), client.full_key(&format!("{name}/"))))
}

async fn leader_of(client: &Client, prefix: &str) -> Result<(Option<LeaderInfo>, i64)> {
    let (p, opts) = first_under(prefix);
    let resp = client.range(p, Some(opts)).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().first().map(LeaderInfo::from_kv), rev))
}

/// `If CreateRevision(key)==rev Then Put(key, value, lease)`; true if applied.
async fn put_if_rev(client: &Client, key: &str, rev: i64, value: Vec<u8>, lease: i64) -> Result<bool> {
    let txn = Txn::new()
        .when(vec![Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then(vec![TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)))]);
    // A proclamation: the same put twice leaves the same value, but its outcome is the
    // caller's to know, so it is not retried once it may have been sent.
    let resp = client
        .write(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(resp.succeeded())
}

#[derive(Clone, Debug)]
enum Ended {
    Lost(String),
    Normally,
}

struct LeadershipShared {
    /// `None` while leader; `Some` once ended (never goes back).
    state: watch::Sender<Option<Ended>>,
}

impl LeadershipShared {
    fn mark(&self, how: Ended) {
        self.state.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(how);
                true
            } else {
                false
            }
        });
    }
}

/// Being the leader of an [`Election`]. Resigns on [`Leadership::resign`] or on drop
/// (a background delete, when a tokio runtime is running).
///
/// A background task owned by this handle watches our key: when it is deleted or
/// replaced, or the session is lost, [`Leadership::lost`] resolves and
/// [`Leadership::is_leader`] turns false for good.
pub struct Leadership {
    session: Session,
    /// The session was made for this campaign: close it on resign.
    owned: bool,
    name: String,
    key: String,
    rev: i64,
    fence: Fence,
    value: Mutex<Vec<u8>>,
    shared: std::sync::Arc<LeadershipShared>,
    resigned: AtomicBool,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("revision", &self.rev)
            .field("leader", &self.is_leader())
            .finish()
    }
}

impl Leadership {
    fn start(e: &Election, session: Session, owned: bool, key: String, rev: i64, value: Vec<u8>, from: i64) -> Leadership {
        let shared = std::sync::Arc::new(LeadershipShared { state: watch::channel(None).0 });
        let client = session.client().clone();
        let span = info_span!("etcd_recipes.election.leadership", name = %e.name, key = %key, revision = rev);
        let task = tokio::spawn(
            watch_own_key(client.clone(), session.clone(), key.clone(), rev, from, shared.clone()).instrument(span),
        );
        Leadership {
            session,
            owned,
            name: e.name.clone(),
            fence: Fence::new(client, key.clone(), rev),
            key,
            rev,
            value: Mutex::new(value),
            shared,
            resigned: AtomicBool::new(false),
            task,
        }
    }

    /// Our full leader key, `<namespace><name>/<lease hex>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: the create revision of our key. Strictly increases from one
    /// leader of this election to the next.
    pub fn fencing_token(&self) -> i64 {
        self.rev
    }

    /// Same as [`Leadership::fencing_token`] (the create revision of our key).
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The election name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease behind the leadership.
    pub fn lease_id(&self) -> i64 {
        self.session.lease_id()
    }

    /// Writes guarded by `CreateRevision(leaderKey) == revision`.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The value we last proclaimed (or campaigned with).
    pub fn value(&self) -> Vec<u8> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True until the leadership is lost, resigned or the session stops being alive.
    /// Once false, it never becomes true again.
    pub fn is_leader(&self) -> bool {
        self.shared.state.borrow().is_none() && self.session.is_alive()
    }

    /// Resolves when leadership ends: `Some(reason)` when it was **lost** (the session
    /// was lost, or our key was deleted or replaced by someone else), `None` when it ended
    /// normally (resigned, dropped, its session or client closed).
    pub async fn lost(&self) -> Option<String> {
        let mut rx = self.shared.state.subscribe();
        let ended = match rx.wait_for(|s| s.is_some()).await {
            Ok(s) => s.clone().unwrap_or(Ended::Normally),
            Err(_) => Ended::Normally,
        };
        match ended {
            Ended::Lost(r) => Some(r),
            Ended::Normally => None,
        }
    }

    /// Publish a new value while still leader; [`Error::NotLeader`] if not.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = value.into();
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let ok = put_if_rev(self.session.client(), &self.key, self.rev, value.clone(), self.session.lease_id()).await?;
        if !ok {
            self.shared.mark(Ended::Lost("leader key deleted or replaced".into()));
            return Err(self.not_leader());
        }
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = value;
        debug!(key = %self.key, "proclaimed");
        Ok(())
    }

    /// Step down: delete our key (guarded by the revision). Idempotent; the next
    /// candidate takes over at once.
    pub async fn resign(&self) -> Result<()> {
        self.shared.mark(Ended::Normally);
        if self.resigned.load(Ordering::Acquire) {
            return Ok(());
        }
        let span = info_span!("etcd_recipes.election.resign", name = %self.name, key = %self.key);
        async {
            if self.owned {
                // Revoking our own lease deletes the key in the same step.
                self.session.close().await?;
            } else if self.session.state() != crate::SessionState::Closed {
                guarded_delete(self.session.client(), &self.key, self.rev).await?;
            }
            self.resigned.store(true, Ordering::Release);
            self.task.abort();
            info!("resigned");
            Ok(())
        }
        .instrument(span)
        .await
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader { name: self.name.clone() }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.mark(Ended::Normally);
        if self.resigned.load(Ordering::Acquire) || self.owned {
            // Our own session goes with this handle: its drop revokes the lease.
            return;
        }
        let (client, key, rev) = (self.session.client().clone(), self.key.clone(), self.rev);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                match guarded_delete(&client, &key, rev).await {
                    Ok(_) => info!(%key, "resigned on drop"),
                    Err(e) => warn!(%key, error = %e, "resign on drop failed; the key goes with its lease"),
                }
            });
        }
    }
}

/// Watch our own key from `from + 1`: DELETE or a re-created key ends the leadership;
/// so does session loss. Watch errors and compaction: re-read and re-watch.
async fn watch_own_key(
    client: Client,
    session: Session,
    key: String,
    rev: i64,
    mut from: i64,
    shared: std::sync::Arc<LeadershipShared>,
) {
    let watcher = async {
        let mut backoff = Duration::from_millis(50);
        loop {
            match watch_key_once(&client, &key, rev, from + 1).await {
                Ok(reason) => return reason,
                Err(e) => {
                    debug!(error = %e, "leader key watch interrupted; re-reading");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    match key_has_rev(&client, &key, rev).await {
                        Ok((true, header)) => {
                            from = header;
                            backoff = Duration::from_millis(50);
                        }
                        Ok((false, _)) => return "leader key deleted".to_string(),
                        Err(e) => debug!(error = %e, "re-read failed"),
                    }
                }
            }
        }
    };
    let ended = tokio::select! {
        r = watcher => Ended::Lost(r),
        r = session.lost() => match r {
            Some(r) => Ended::Lost(r),
            None => Ended::Normally,
        },
    };
    // A key deleted because our own session was closed is a normal end, not a loss.
    let ended = match ended {
        Ended::Lost(_) if session.state() == crate::SessionState::Closed || crate::lifecycle::is_shutting_down() => {
            Ended::Normally
        }
        e => e,
    };
    match (&ended, shared.state.borrow().is_some()) {
        (Ended::Lost(reason), false) => warn!(%reason, "leadership lost"),
        _ => debug!(?ended, "leadership ended"),
    }
    shared.mark(ended);
}

/// Ok(reason) when the key was deleted or replaced; Err when the watch broke.
async fn watch_key_once(client: &Client, key: &str, rev: i64, start: i64) -> Result<String> {
    let mut stream = client.watch(key, WatchOptions::new().with_start_revision(start)).await?;
    loop {
        let Some(r) = stream.message().await? else { return Err(Error::Closed("watch stream")) };
        if r.canceled() {
            return Err(Error::Etcd(etcd_client::Error::WatchError(format!(
                "watch cancelled (compact revision {}): {}",
                r.compact_revision(),
                r.cancel_reason()
            ))));
        }
        for ev in r.events() {
            match ev.event_type() {
                EventType::Delete => return Ok("leader key deleted".into()),
                EventType::Put => {
                    if ev.kv().map(|kv| kv.create_revision()) != Some(rev) {
                        return Ok("leader key replaced".into());
                    }
                }
            }
        }
    }
}

/// A stream of an election's leaders: the current leader (or `None`) first, then every
/// change (a new leader, a new value, no leader). Never yields the same leader twice in a
/// row. Changes that reach the observer together (one watch response, or while it
/// re-reads) are coalesced into the latest leader. Survives compaction and reconnects
/// (re-reads, then watches again). Ends only when
/// dropped, when its client is closed, or after yielding an error that retrying cannot
/// fix (e.g. permission denied).
pub struct LeaderObserver {
    inner: Pin<Box<dyn Stream<Item = Result<Option<LeaderInfo>>> + Send>>,
}

impl std::fmt::Debug for LeaderObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderObserver").finish_non_exhaustive()
    }
}

struct ObserveState {
    client: Client,
    prefix: String,
    /// The leader as of `rev`, if known (None before the first read).
    leader: Option<Option<LeaderInfo>>,
    rev: i64,
    last_emitted: Option<Option<LeaderInfo>>,
    stream: Option<crate::endpoints::MemberWatch>,
    backoff: Duration,
    done: bool,
}

impl LeaderObserver {
    fn new(client: Client, prefix: String) -> LeaderObserver {
        let st = ObserveState {
            client,
            prefix,
            leader: None,
            rev: 0,
            last_emitted: None,
            stream: None,
            backoff: Duration::from_millis(50),
            done: false,
        };
        let s = futures::stream::unfold(st, |mut st| async move {
            if st.done || st.client.is_closed() {
                return None;
            }
            // The client closing ends the stream (no error: nothing went wrong).
            let closed = st.client.closed();
            let item = tokio::select! {
                i = st.next_change() => i,
                _ = closed => return None,
            };
            if item.is_err() {
                st.done = true;
            }
            Some((item, st))
        });
        LeaderObserver { inner: Box::pin(s) }
    }

    /// The next leader (see the type docs); `None` only after a fatal error was yielded.
    pub async fn next(&mut self) -> Option<Result<Option<LeaderInfo>>> {
        self.inner.next().await
    }
}

impl Stream for LeaderObserver {
    type Item = Result<Option<LeaderInfo>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

fn fatal(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::InvalidArgument | ErrorKind::Decode)
}

impl ObserveState {
    /// Advance until the leader differs from the last one yielded; return it.
    async fn next_change(&mut self) -> Result<Option<LeaderInfo>> {
        loop {
            if let Some(cur) = &self.leader {
                if self.last_emitted.as_ref() != Some(cur) {
                    self.last_emitted = Some(cur.clone());
                    if let Some(l) = cur { crate::metrics::leader_seen(&self.client, &self.prefix, l.fencing_token) }
                    return Ok(cur.clone());
                }
            }
            match self.step().await {
                Ok(()) => self.backoff = Duration::from_millis(50),
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => {
                    debug!(error = %e, "observe: retrying after error");
                    self.stream = None;
                    self.leader = None;
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn resync(&mut self) -> Result<()> {
        let (leader, rev) = leader_of(&self.client, &self.prefix).await?;
        self.leader = Some(leader);
        self.rev = rev;
        Ok(())
    }

    /// One unit of progress: read, (re)open the watch, or apply one watch response.
    async fn step(&mut self) -> Result<()> {
        if self.leader.is_none() {
            return self.resync().await;
        }
        if self.stream.is_none() {
            let opts = WatchOptions::new().with_prefix().with_start_revision(self.rev + 1);
            self.stream = Some(self.client.watch(self.prefix.clone(), opts).await?);
        }
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        let resp = match stream.message().await? {
            Some(r) => r,
            None => return Err(Error::Closed("watch stream")),
        };
        if resp.canceled() {
            debug!(compact = resp.compact_revision(), reason = resp.cancel_reason(), "observe: watch cancelled; re-reading");
            self.stream = None;
            return self.resync().await;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            if kv.mod_revision() <= self.rev {
                continue;
            }
            let cur = self.leader.clone().flatten();
            let key = kv.key();
            match ev.event_type() {
                EventType::Put => match cur {
                    None => self.leader = Some(Some(LeaderInfo::from_kv(kv))),
                    Some(l) if l.key.as_bytes() == key => {
                        if kv.create_revision() == l.fencing_token {
                            self.leader = Some(Some(LeaderInfo::from_kv(kv)));
                        } else {
                            // Recreated (a delete we somehow skipped): trust a fresh read.
                            self.stream = None;
                            return self.resync().await;
                        }
                    }
                    Some(_) => {} // a later candidate: cannot be the leader
                },
                EventType::Delete => {
                    if cur.as_ref().is_some_and(|l| l.key.as_bytes() == key) {
                        // The leader went: read who is first now; skip events up to that read.
                        self.resync().await?;
                        continue;
                    }
                }
            }
            self.rev = self.rev.max(kv.mod_revision());
        }
        Ok(())
    }
}
