//! Many watches of one client on one gRPC watch stream, as etcd's Go client does, for
//! the one thing a registration watches: deletes of its own key.
//!
//! A registration keeps a watch on its own key for as long as it lives (to put the key
//! back when someone deletes it). With a stream per watch, every registration opened a
//! stream of its own and waited for etcd to create it: registering 2,000 instances from
//! one client cost 2,000 streams, and the watch creations took about as long as the
//! registrations themselves. Here each watch is a watch id on the client's one shared
//! stream; the create request is sent in the background (the watch starts at a known
//! revision, so nothing that happens before etcd creates it is missed).
//!
//! **One watch per service for many registrations.** Even on one stream, a watch per key
//! cost etcd a create, and 2,000 registrations of one service from one client took twice
//! the raw grant-and-put time. So the first registration of a service in a client
//! watches its own key, and the second and later ones *join the service's group*: one
//! watch of the service prefix, deletes only (`NOPUT`), shared by all of them and routed
//! here by key. A process with one registration per service still hears only about its
//! own key; one with many hears every delete under that service, one event per
//! instance leaving, which is what it asked to watch anyway.
//!
//! A member joins its group ([`WatchMux::interest`]) *before* its put, so every delete
//! of its key after the put is routed to it; deletes from before the put (an old key of
//! the same name) are dropped by revision. The group's watch starts after the put of the
//! member that reports first; a member whose put came earlier than that start is not
//! covered and watches its own key instead (this happens only among registrations
//! started at the same moment).
//!
//! The stream runs on one member. When it breaks, or a probe finds its member hung, it
//! is opened again on a member in rotation and every watch is created again from the
//! revision after the last event it delivered (a group watch also moves on with etcd's
//! progress notifications): watchers see no gap and no error. A watch that etcd cancels
//! (its start revision was compacted) reports [`KeyChange::Cancelled`] to every key it
//! served, and ends; its owners re-read their keys and watch them on their own.
//!
//! The stream's task runs only while watches exist: dropping the last [`KeyWatch`] ends
//! it, so it never outlives the recipes that use it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{EventType, WatchFilterType, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tracing::debug;

use crate::endpoints::Members;

/// What a key watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyChange {
    /// The key was deleted at this revision.
    Deleted { rev: i64 },
    /// etcd cancelled the watch (for example: its start revision was compacted). Nothing
    /// more comes; read the key and watch again.
    Cancelled { reason: String },
}

/// The shared watch stream of one client (created on the first watch).
pub(crate) struct WatchMux {
    members: Arc<Members>,
    timeout: Duration,
    state: Mutex<State>,
}

struct State {
    next_id: i64,
    /// The running task's commands; `None` while no task runs.
    cmds: Option<mpsc::UnboundedSender<Cmd>>,
    /// Per service prefix: how many interests are alive, and the group, if any.
    prefixes: HashMap<Vec<u8>, PrefixEntry>,
}

impl State {
    /// A dead group is no longer its prefix's (new interests start another); the entry
    /// goes with it when no interest is left.
    fn forget(&mut self, group: &Arc<Group>) {
        let Some(e) = self.prefixes.get_mut(&group.prefix) else { return };
        if e.group.as_ref().is_some_and(|x| Arc::ptr_eq(x, group)) {
            e.group = None;
            if e.live == 0 {
                self.prefixes.remove(&group.prefix);
            }
        }
    }
}

#[derive(Default)]
struct PrefixEntry {
    live: usize,
    group: Option<Arc<Group>>,
}

/// One watch of a prefix (deletes only) shared by its members' keys.
struct Group {
    prefix: Vec<u8>,
    inner: Mutex<GroupInner>,
}

#[derive(Default)]
struct GroupInner {
    /// The group's watch: its id and start revision, once a member reported its put.
    watch: Option<(i64, i64)>,
    /// etcd cancelled the watch, or the last member left: no member joins any more.
    dead: bool,
    next_member: u64,
    members: HashMap<Vec<u8>, Vec<(u64, mpsc::UnboundedSender<KeyChange>)>>,
    count: usize,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, GroupInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Cmd {
    Add(i64, Sub),
    Cancel(i64),
}

enum Route {
    Key(mpsc::UnboundedSender<KeyChange>),
    Group(Arc<Group>),
}

struct Sub {
    key: Vec<u8>,
    /// Where the watch (re)starts: after the last event delivered.
    next_rev: i64,
    route: Route,
}

impl Sub {
    fn options(&self, id: i64) -> WatchOptions {
        let o = WatchOptions::new().with_start_revision(self.next_rev).with_watch_id(id).with_filters([WatchFilterType::NoPut]);
        match self.route {
            Route::Key(_) => o,
            Route::Group(_) => o.with_prefix().with_progress_notify(),
        }
    }
}

/// A registration's standing interest in deletes of its key, taken before its put
/// (see the module docs). Holds the prefix's count while alive.
pub(crate) struct Interest {
    mux: Arc<WatchMux>,
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// The group joined before the put, until the first [`Interest::watch`].
    pending: Option<Membership>,
}

/// A member's place in a group.
struct Membership {
    group: Arc<Group>,
    id: u64,
    key: Vec<u8>,
    rx: mpsc::UnboundedReceiver<KeyChange>,
}

/// A watch of one key's deletes: on its own watch id, or routed from its service's group.
/// Dropping it cancels its watch in etcd (a group's when its last member leaves).
pub(crate) struct KeyWatch {
    mux: Arc<WatchMux>,
    kind: KeyWatchKind,
    /// Deletes before this revision are of an older key of the same name.
    from: i64,
}

enum KeyWatchKind {
    Own { id: i64, rx: mpsc::UnboundedReceiver<KeyChange> },
    Member(Option<Membership>),
}

impl KeyWatch {
    /// The next change of the key; `None` after [`KeyChange::Cancelled`] or when the
    /// client's stream task ended.
    pub(crate) async fn message(&mut self) -> Option<KeyChange> {
        loop {
            let got = match &mut self.kind {
                KeyWatchKind::Own { rx, .. } => rx.recv().await,
                KeyWatchKind::Member(Some(m)) => m.rx.recv().await,
                KeyWatchKind::Member(None) => None,
            };
            match got {
                Some(KeyChange::Deleted { rev }) if rev < self.from => continue,
                other => return other,
            }
        }
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        match &mut self.kind {
            KeyWatchKind::Own { id, .. } => self.mux.cancel(*id),
            KeyWatchKind::Member(m) => {
                if let Some(m) = m.take() {
                    self.mux.leave(m);
                }
            }
        }
    }
}

impl Interest {
    /// Watch the key's deletes from revision `from` (the revision after our put): in the
    /// group joined before the put when it covers `from`, else on a watch of its own.
    /// Must be called inside a tokio runtime (it may start the stream's task).
    pub(crate) fn watch(&mut self, from: i64) -> KeyWatch {
        if let Some(m) = self.pending.take() {
            // Locks: the mux's state before a group's, never the other way round; so the
            // id is taken, and the watch added, with the group's lock not held.
            let id = self.mux.next_id();
            let (covered, create) = {
                let mut g = m.group.lock();
                match g.watch {
                    _ if g.dead => (false, false),
                    Some((_, start)) => (from >= start, false),
                    None => {
                        g.watch = Some((id, from));
                        (true, true)
                    }
                }
            };
            if create {
                // Sent before this member can leave (it leaves through the watch returned
                // below), so the group's last member out always finds the watch to cancel.
                let sub = Sub { key: m.group.prefix.clone(), next_rev: from, route: Route::Group(m.group.clone()) };
                self.mux.send(Cmd::Add(id, sub));
            }
            if covered {
                return KeyWatch { mux: self.mux.clone(), kind: KeyWatchKind::Member(Some(m)), from };
            }
            self.mux.leave(m);
        }
        self.mux.watch_key(self.key.clone(), from)
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        if let Some(m) = self.pending.take() {
            self.mux.leave(m);
        }
        let mut st = self.mux.lock();
        if let Some(e) = st.prefixes.get_mut(&self.prefix) {
            e.live -= 1;
            if e.live == 0 && e.group.is_none() {
                st.prefixes.remove(&self.prefix);
            }
        }
    }
}

impl WatchMux {
    pub(crate) fn new(members: Arc<Members>, timeout: Duration) -> Arc<WatchMux> {
        Arc::new(WatchMux { members, timeout, state: Mutex::new(State { next_id: 0, cmds: None, prefixes: HashMap::new() }) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> i64 {
        let mut st = self.lock();
        st.next_id += 1;
        st.next_id
    }

    /// Take an interest in deletes of `key` (under the service prefix `prefix`), before
    /// the key is put: when the client already has a live interest under `prefix`, join
    /// the prefix's group.
    pub(crate) fn interest(self: &Arc<Self>, prefix: Vec<u8>, key: Vec<u8>) -> Interest {
        let mut st = self.lock();
        let entry = st.prefixes.entry(prefix.clone()).or_default();
        entry.live += 1;
        let mut pending = None;
        if entry.live >= 2 {
            let group = entry.group.get_or_insert_with(|| {
                Arc::new(Group { prefix: prefix.clone(), inner: Mutex::new(GroupInner::default()) })
            });
            let mut g = group.lock();
            let (tx, rx) = mpsc::unbounded_channel();
            g.next_member += 1;
            let id = g.next_member;
            g.members.entry(key.clone()).or_default().push((id, tx));
            g.count += 1;
            drop(g);
            pending = Some(Membership { group: group.clone(), id, key: key.clone(), rx });
        }
        drop(st);
        Interest { mux: self.clone(), prefix, key, pending }
    }

    /// Leave a group; the last member out cancels the group's watch.
    fn leave(&self, m: Membership) {
        let mut st = self.lock();
        let mut g = m.group.lock();
        if let Some(v) = g.members.get_mut(&m.key) {
            v.retain(|(id, _)| *id != m.id);
            if v.is_empty() {
                g.members.remove(&m.key);
            }
        }
        g.count -= 1;
        if g.count > 0 {
            return;
        }
        g.dead = true;
        let watch = g.watch.map(|(id, _)| id);
        drop(g);
        st.forget(&m.group);
        drop(st);
        if let Some(id) = watch {
            self.cancel(id);
        }
    }

    /// Watch deletes of the single key `key` from revision `from` on the shared stream.
    fn watch_key(self: &Arc<Self>, key: Vec<u8>, from: i64) -> KeyWatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id();
        self.send(Cmd::Add(id, Sub { key, next_rev: from, route: Route::Key(tx) }));
        KeyWatch { mux: self.clone(), kind: KeyWatchKind::Own { id, rx }, from }
    }

    /// Cancel watch `id` (nothing to do when no task runs: nothing was created in etcd).
    fn cancel(&self, id: i64) {
        if let Some(cmds) = &self.lock().cmds {
            let _ = cmds.send(Cmd::Cancel(id));
        }
    }

    /// Add a watch on the stream's task, starting the task when none runs. Must be
    /// called inside a tokio runtime.
    fn send(self: &Arc<Self>, mut cmd: Cmd) {
        let mut st = self.lock();
        if let Some(cmds) = &st.cmds {
            match cmds.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(c)) => cmd = c,
            }
        }
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let _ = cmds.send(cmd);
        st.cmds = Some(cmds);
        tokio::spawn(run(self.clone(), cmd_rx));
    }

    /// The task may end: only when no watch is left and no command is queued, decided
    /// under the lock that [`WatchMux::send`] sends under (so no watch is ever added to
    /// a task that is ending).
    fn finish(&self, cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>, subs: &mut HashMap<i64, Sub>) -> bool {
        let mut st = self.lock();
        let mut any = false;
        while let Ok(c) = cmd_rx.try_recv() {
            any = true;
            apply(subs, &mut VecDeque::new(), &mut VecDeque::new(), c);
        }
        if any && !subs.is_empty() {
            return false;
        }
        if subs.is_empty() {
            st.cmds = None;
            return true;
        }
        false
    }

    /// etcd cancelled a group's watch: its members hear it, and no one joins it again.
    fn group_cancelled(&self, group: &Arc<Group>, reason: &str) {
        let mut st = self.lock();
        let mut g = group.lock();
        g.dead = true;
        for (_, v) in g.members.drain() {
            for (_, tx) in v {
                let _ = tx.send(KeyChange::Cancelled { reason: reason.to_string() });
            }
        }
        drop(g);
        st.forget(group);
    }
}

/// Apply a command between streams (`creates` and `cancels` are what the open stream
/// still has to send).
fn apply(subs: &mut HashMap<i64, Sub>, creates: &mut VecDeque<i64>, cancels: &mut VecDeque<i64>, c: Cmd) {
    match c {
        Cmd::Add(id, sub) => {
            subs.insert(id, sub);
            creates.push_back(id);
        }
        Cmd::Cancel(id) => {
            if subs.remove(&id).is_some() {
                if let Some(p) = creates.iter().position(|&x| x == id) {
                    // Never created on this stream: nothing to cancel in etcd.
                    creates.remove(p);
                } else {
                    cancels.push_back(id);
                }
            }
        }
    }
}

async fn run(mux: Arc<WatchMux>, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut subs: HashMap<i64, Sub> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        while let Ok(c) = cmd_rx.try_recv() {
            apply(&mut subs, &mut VecDeque::new(), &mut VecDeque::new(), c);
        }
        if subs.is_empty() {
            if mux.finish(&mut cmd_rx, &mut subs) {
                return;
            }
            continue;
        }
        // Open the stream on a member in rotation, with one of the watches.
        let picked = mux.members.pick();
        let index = picked.index;
        let mut down = Box::pin(mux.members.wait_down(index));
        let mut wc = picked.client.watch_client();
        let (&first, sub) = subs.iter().next().expect("not empty");
        let opened = tokio::select! {
            r = tokio::time::timeout(mux.timeout, wc.watch(sub.key.clone(), Some(sub.options(first)))) => r.ok().and_then(|r| r.ok()),
            _ = &mut down => None,
        };
        let Some(stream) = opened else {
            mux.members.note_slow(index, "shared watch stream could not be opened");
            debug!(endpoint = mux.members.endpoint(index), "shared watch stream not opened; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        let (mut sender, mut responses) = stream.split();
        let mut creates: VecDeque<i64> = subs.keys().copied().filter(|&id| id != first).collect();
        let mut cancels: VecDeque<i64> = VecDeque::new();
        loop {
            // The next request to send: cancels first (they only shrink etcd's work).
            let next = cancels.front().map(|&id| (id, None)).or_else(|| {
                creates.front().and_then(|&id| subs.get(&id).map(|s| (id, Some((s.key.clone(), s.options(id))))))
            });
            let sending = async {
                match &next {
                    Some((id, None)) => sender.cancel(*id).await,
                    Some((_, Some((key, opts)))) => sender.watch(key.clone(), Some(opts.clone())).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                // Responses first: etcd stops reading requests while its answers wait.
                biased;
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        backoff = Duration::from_millis(50);
                        deliver(&mux, &mut subs, &mut cancels, resp);
                    }
                    Ok(None) | Err(_) => {
                        mux.members.note_slow(index, "shared watch stream broke");
                        debug!(endpoint = mux.members.endpoint(index), "shared watch stream broke; opening it again");
                        break;
                    }
                },
                _ = &mut down => {
                    debug!(endpoint = mux.members.endpoint(index), "member of the shared watch stream hung; moving it");
                    break;
                }
                c = cmd_rx.recv() => match c {
                    Some(c) => apply(&mut subs, &mut creates, &mut cancels, c),
                    None => return,
                },
                sent = sending => match sent {
                    Ok(()) => match next {
                        Some((_, None)) => { cancels.pop_front(); }
                        Some((_, Some(_))) => { creates.pop_front(); }
                        None => {}
                    },
                    Err(_) => break,
                },
            }
            if subs.is_empty() && creates.is_empty() {
                // No watch left: close the stream (etcd drops its watchers with it).
                break;
            }
        }
        if !subs.is_empty() {
            // Reopening: wait a little, so a member that refuses at once is not hammered.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Route one response to its watch, moving the watch's restart revision past the
/// events it carries (or to the revision of a progress notification). A cancelled
/// watch reports it to every key it served and ends.
fn deliver(mux: &WatchMux, subs: &mut HashMap<i64, Sub>, cancels: &mut VecDeque<i64>, resp: WatchResponse) {
    let id = resp.watch_id();
    if resp.canceled() {
        if let Some(sub) = subs.remove(&id) {
            // Cancelled by etcd, not by us (e.g. its start revision was compacted): etcd
            // keeps such a watcher on the stream (and counts it) until the client cancels
            // it too or the stream closes, so it is cancelled here as well. (Cancelling a
            // watch etcd no longer has is answered with nothing.)
            cancels.push_back(id);
            let reason = resp.cancel_reason().to_string();
            match sub.route {
                Route::Key(tx) => {
                    let _ = tx.send(KeyChange::Cancelled { reason });
                }
                Route::Group(g) => mux.group_cancelled(&g, &reason),
            }
        }
        return;
    }
    if resp.created() && resp.events().is_empty() {
        return;
    }
    let Some(sub) = subs.get_mut(&id) else { return };
    match resp.events().last().and_then(|e| e.kv()) {
        Some(last) => sub.next_rev = sub.next_rev.max(last.mod_revision() + 1),
        // A progress notification: every event up to the header's revision was sent.
        None => {
            if let Some(h) = resp.header() {
                sub.next_rev = sub.next_rev.max(h.revision() + 1);
            }
            return;
        }
    }
    let deletes = resp.events().iter().filter(|e| e.event_type() == EventType::Delete).filter_map(|e| e.kv());
    match &sub.route {
        Route::Key(tx) => {
            for kv in deletes {
                if tx.send(KeyChange::Deleted { rev: kv.mod_revision() }).is_err() {
                    // Its owner is gone (the cancel command is on its way too).
                    subs.remove(&id);
                    cancels.push_back(id);
                    return;
                }
            }
        }
        Route::Group(group) => {
            let g = group.lock();
            for kv in deletes {
                for (_, tx) in g.members.get(kv.key()).into_iter().flatten() {
                    let _ = tx.send(KeyChange::Deleted { rev: kv.mod_revision() });
                }
            }
        }
    }
}
