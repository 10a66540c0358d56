//! Many watches of one client on one gRPC watch stream, as etcd's Go client does.
//!
//! A registration keeps a watch on its own key for as long as it lives (to put the key
//! back when someone deletes it). With a stream per watch, every registration opened a
//! stream of its own and waited for etcd to create it: registering 2,000 instances from
//! one client cost 2,000 streams, and the watch creations took about as long as the
//! registrations themselves. Here each watch is a watch id on the client's one shared
//! stream; the create request is sent in the background (the watch starts at a known
//! revision, so nothing that happens before etcd creates it is missed).
//!
//! The stream runs on one member. When it breaks, or a probe finds its member hung, it
//! is opened again on a member in rotation and every watch is created again from the
//! revision after the last event it delivered: watchers see no gap and no error. A watch
//! that etcd cancels (its start revision was compacted) gets the cancel response and
//! ends; its owner re-reads, as after any cancelled watch.
//!
//! The stream's task runs only while watches exist: dropping the last [`MuxWatch`] ends
//! it, so it never outlives the recipes that use it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tracing::debug;

use crate::endpoints::Members;

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
}

enum Cmd {
    Add(i64, Sub),
    Cancel(i64),
}

struct Sub {
    key: Vec<u8>,
    /// Where the watch (re)starts: after the last event delivered.
    next_rev: i64,
    tx: mpsc::UnboundedSender<WatchResponse>,
}

impl Sub {
    fn options(&self, id: i64) -> WatchOptions {
        WatchOptions::new().with_start_revision(self.next_rev).with_watch_id(id)
    }
}

/// One watch on the shared stream: the responses for its key, in order. Dropping it
/// cancels the watch in etcd.
pub(crate) struct MuxWatch {
    id: i64,
    rx: mpsc::UnboundedReceiver<WatchResponse>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl MuxWatch {
    /// The next response for this watch; `None` after etcd cancelled it (the cancel
    /// response comes first) or when the client's stream task ended.
    pub(crate) async fn message(&mut self) -> Option<WatchResponse> {
        self.rx.recv().await
    }
}

impl Drop for MuxWatch {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Cancel(self.id));
    }
}

impl WatchMux {
    pub(crate) fn new(members: Arc<Members>, timeout: Duration) -> Arc<WatchMux> {
        Arc::new(WatchMux { members, timeout, state: Mutex::new(State { next_id: 0, cmds: None }) })
    }

    /// Watch the single key `key` from revision `from` on the shared stream. Must be
    /// called inside a tokio runtime (it may start the stream's task).
    pub(crate) fn watch(self: &Arc<Self>, key: impl Into<Vec<u8>>, from: i64) -> MuxWatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.next_id += 1;
        let id = st.next_id;
        let mut cmd = Cmd::Add(id, Sub { key: key.into(), next_rev: from, tx });
        if let Some(cmds) = &st.cmds {
            match cmds.send(cmd) {
                Ok(()) => return MuxWatch { id, rx, cmds: cmds.clone() },
                Err(mpsc::error::SendError(c)) => cmd = c,
            }
        }
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let _ = cmds.send(cmd);
        st.cmds = Some(cmds.clone());
        tokio::spawn(run(self.clone(), cmd_rx));
        MuxWatch { id, rx, cmds }
    }

    /// The task may end: only when no watch is left and no command is queued, decided
    /// under the lock that [`WatchMux::watch`] sends under (so no watch is ever added to
    /// a task that is ending).
    fn finish(&self, cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>, subs: &mut HashMap<i64, Sub>) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
                        deliver(&mut subs, &mut cancels, resp);
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
/// events it carries. A cancelled watch gets the cancel response and ends.
fn deliver(subs: &mut HashMap<i64, Sub>, cancels: &mut VecDeque<i64>, resp: WatchResponse) {
    let id = resp.watch_id();
    if resp.canceled() {
        if let Some(sub) = subs.remove(&id) {
            let _ = sub.tx.send(resp);
        }
        return;
    }
    if resp.created() && resp.events().is_empty() {
        return;
    }
    let Some(sub) = subs.get_mut(&id) else { return };
    if let Some(last) = resp.events().last().and_then(|e| e.kv()) {
        sub.next_rev = sub.next_rev.max(last.mod_revision() + 1);
    }
    if sub.tx.send(resp).is_err() {
        // Its owner is gone (the cancel command is on its way too).
        subs.remove(&id);
        cancels.push_back(id);
    }
}
