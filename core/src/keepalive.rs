//! Lease renewals of all the sessions of a client, on one keep-alive stream, in batches.
//!
//! Each [`crate::session::Session`] decides when its lease needs renewing and asks its
//! client's [`Renewer`]. The renewer keeps one `LeaseKeepAlive` stream open on a member in
//! rotation, sends every request queued at that moment in one go, and hands each answer to
//! the session that asked (etcd answers the requests of a stream in order, each naming its
//! lease). Sessions renew on a shared grid of times (see `session::on_grid`), so the
//! renewals of many sessions leave together, and etcd reads and answers them in a few
//! frames instead of one stream and one wake-up per lease: with 2,000 sessions of TTL
//! 10 s in one process, etcd spent 1.4-1.5 s of CPU per 20 s instead of 3.2-3.6 s with a
//! stream per session, and the client 0.21-0.24 s instead of 1.35-1.5 s (measured on 2
//! cores, the two builds alternating against one etcd).
//!
//! The stream runs on the raft leader when the client's health probes know which member
//! that is (else on a member in rotation): a follower forwards each renewal to the leader
//! on its own, one after the other, and with 2,000 sessions of TTL 10 s on one endpoint
//! the three members spent 11.9-12.4 s of CPU in a run through a follower against
//! 5.5-5.6 s through the leader.
//!
//! The stream is given up, and its unanswered requests told to ask again, when its member
//! is taken out of rotation, when it breaks, or when requests wait longer than the
//! shortest budget among them with no answer at all coming back (a frozen member, or one
//! forwarding to a leader that is gone). The next request opens a stream on another
//! member. A session never waits past its own deadline for an answer (see
//! [`crate::session`]); this module only decides where its requests go.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use crate::endpoints::Members;
use crate::lifecycle::{Phase, Scope};

/// With no request for this long (and none waiting), the stream is closed and the task
/// ends; the next request starts them again.
const IDLE: Duration = Duration::from_secs(60);

/// What became of a renewal request.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// etcd renewed the lease for this many seconds (`<= 0`: etcd does not know the lease).
    Renewed(i64),
    /// The stream was moved to another member before the answer came: ask again at once.
    Moved(String),
    /// The stream failed (or could not be opened): ask again after a short pause.
    Failed(String),
}

struct Request {
    lease: i64,
    /// How long this request may wait with no answer at all coming on the stream.
    budget: Duration,
    reply: oneshot::Sender<Answer>,
}

/// A client's lease renewals (see the module docs).
pub(crate) struct Renewer {
    members: Arc<Members>,
    scope: Arc<Scope>,
    /// The running task's queue; `None` before the first request.
    tx: Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl Renewer {
    pub(crate) fn new(members: Arc<Members>, scope: Arc<Scope>) -> Renewer {
        Renewer { members, scope, tx: Mutex::new(None) }
    }

    /// Ask etcd to renew `lease`; the answer comes on the returned receiver (dropped
    /// unanswered only when the client is closing). `budget`: how long the request may
    /// wait with no answer coming on the stream before the stream is given up. Must be
    /// called inside a tokio runtime.
    pub(crate) fn renew(&self, lease: i64, budget: Duration) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        let mut req = Request { lease, budget, reply };
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tx.as_ref() {
            match t.send(req) {
                Ok(()) => return rx,
                // The task ended (idle, or the client closed): start another.
                Err(mpsc::error::SendError(r)) => req = r,
            }
        }
        if self.scope.phase() != Phase::Open {
            // The client is closing: nothing is renewed any more (the reply goes unanswered).
            return rx;
        }
        let (t, queue) = mpsc::unbounded_channel();
        let _ = t.send(req);
        *tx = Some(t);
        tokio::spawn(run(self.members.clone(), self.scope.clone(), queue));
        rx
    }
}

/// The open stream.
struct Stream {
    index: usize,
    /// Sends a request for the lease its `id` is set to.
    keeper: etcd_client::LeaseKeeper,
    responses: etcd_client::LeaseKeepAliveStream,
    /// Resolves when the member is taken out of rotation.
    down: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Requests sent on the stream and not answered yet, by lease, oldest first.
#[derive(Default)]
struct Waiting {
    by_lease: HashMap<i64, VecDeque<oneshot::Sender<Answer>>>,
    count: usize,
    /// The last answer, or when the first of the waiting requests was sent.
    quiet_since: Option<Instant>,
    /// The shortest budget among the requests sent since nothing was waiting.
    budget: Option<Duration>,
}

impl Waiting {
    fn sent(&mut self, r: Request) {
        self.by_lease.entry(r.lease).or_default().push_back(r.reply);
        self.count += 1;
        self.quiet_since.get_or_insert_with(Instant::now);
        self.budget = Some(self.budget.map_or(r.budget, |b| b.min(r.budget)));
    }

    fn answered(&mut self, lease: i64, ttl: i64) {
        if let Some(q) = self.by_lease.get_mut(&lease) {
            if let Some(reply) = q.pop_front() {
                let _ = reply.send(Answer::Renewed(ttl));
                self.count -= 1;
            }
            if q.is_empty() {
                self.by_lease.remove(&lease);
            }
        }
        if self.count == 0 {
            self.quiet_since = None;
            self.budget = None;
        } else {
            self.quiet_since = Some(Instant::now());
        }
    }

    /// When the stream counts as stalled, if anything waits.
    fn stalled_at(&self) -> Option<Instant> {
        Some(self.quiet_since? + self.budget?)
    }

    fn fail_all(&mut self, answer: impl Fn() -> Answer) {
        for (_, q) in self.by_lease.drain() {
            for reply in q {
                let _ = reply.send(answer());
            }
        }
        *self = Waiting::default();
    }
}

async fn run(members: Arc<Members>, scope: Arc<Scope>, mut queue: mpsc::UnboundedReceiver<Request>) {
    let closing = scope.closing();
    drop(scope);
    tokio::pin!(closing);
    let mut outbox: VecDeque<Request> = VecDeque::new();
    let mut waiting = Waiting::default();
    let mut stream: Option<Stream> = None;
    let mut last_request = Instant::now();
    loop {
        while let Ok(r) = queue.try_recv() {
            last_request = Instant::now();
            outbox.push_back(r);
        }
        // Requests whose session gave up on them are not sent.
        outbox.retain(|r| !r.reply.is_closed());
        let opening = if stream.is_none() { outbox.pop_front() } else { None };
        if let Some(first) = opening {
            let budget = outbox.iter().map(|r| r.budget).fold(first.budget, Duration::min);
            // On the leader when the probes know it: a follower forwards each renewal to
            // the leader on its own, one after the other.
            let picked = members.pick_leader().unwrap_or_else(|| members.pick());
            let index = picked.index;
            let mut lease_client = picked.client.lease_client();
            let mut down = Box::pin(members.wait_down(index));
            let opened = tokio::select! {
                r = tokio::time::timeout(budget, lease_client.keep_alive(first.lease)) => match r {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(Answer::Failed(e.to_string())),
                    Err(_) => Err(Answer::Moved(format!("no answer within {budget:?}"))),
                },
                _ = &mut down => Err(Answer::Moved("member out of rotation".to_string())),
                _ = &mut closing => return,
            };
            match opened {
                // Opening the stream renews `first` already, but its answer (with the TTL
                // granted) is taken by the opening itself: the request is sent again on
                // the stream like any other.
                Ok((keeper, responses)) => {
                    outbox.push_front(first);
                    stream = Some(Stream { index, keeper, responses, down });
                }
                // etcd does not know that lease: an answer for it alone.
                Err(Answer::Failed(why)) if why.contains("lease not found") => {
                    let _ = first.reply.send(Answer::Renewed(0));
                    continue;
                }
                // Every request is answered: a failure makes the sessions ask again after
                // their pause (so nothing spins while no member answers), no answer in
                // time makes them ask again at once, on another member. No back-off of
                // its own here: while etcd elects a leader, a renewal must go out as soon
                // as one is there, well before the sessions' deadlines.
                Err(answer) => {
                    members.note_slow(index, "lease keep-alive stream could not be opened");
                    debug!(endpoint = members.endpoint(index), ?answer, "lease keep-alive stream not opened");
                    for r in std::iter::once(first).chain(outbox.drain(..)) {
                        let _ = r.reply.send(answer.clone());
                    }
                    continue;
                }
            }
        }
        // Send what the stream takes now; the rest when it has room.
        if let Some(s) = &mut stream {
            while let Some(r) = outbox.pop_front() {
                s.keeper.id = r.lease;
                // One poll: a send that cannot complete at once is dropped unsent.
                if let Some(Ok(())) = s.keeper.keep_alive().now_or_never() {
                    waiting.sent(r);
                } else {
                    // Full, or the stream is ending (its responses tell how).
                    outbox.push_front(r);
                    break;
                }
            }
        }
        // Between batches, a stream that is not on the leader (opened before the probes
        // knew it, or the leader changed since) is closed; the next batch opens one there.
        if waiting.count == 0 && outbox.is_empty() {
            if let Some(s) = &stream {
                if members.pick_leader().is_some_and(|p| p.index != s.index) {
                    debug!(endpoint = members.endpoint(s.index), "lease keep-alive stream not on the leader; moving it there");
                    stream = None;
                }
            }
        }
        let idle_at = last_request + IDLE;
        let Some(s) = stream.as_mut() else {
            // No stream and nothing to send: wait for a request, or end when idle.
            tokio::select! {
                r = queue.recv() => match r {
                    Some(r) => {
                        last_request = Instant::now();
                        outbox.push_back(r);
                    }
                    None => return,
                },
                _ = sleep_until(idle_at) => return,
                _ = &mut closing => return,
            }
            continue;
        };
        let Stream { index, keeper, responses, down } = s;
        let index = *index;
        if let Some(r) = outbox.front() {
            keeper.id = r.lease;
        }
        let stalled_at = waiting.stalled_at();
        tokio::select! {
            // Answers first: they free the sessions waiting for them.
            biased;
            msg = responses.message() => match msg {
                Ok(Some(resp)) => waiting.answered(resp.id(), resp.ttl()),
                Ok(None) => {
                    broke(&members, index, &mut waiting, "the stream ended".into());
                    stream = None;
                }
                Err(e) => {
                    broke(&members, index, &mut waiting, e.to_string());
                    stream = None;
                }
            },
            _ = down => {
                debug!(endpoint = members.endpoint(index), "member of the lease keep-alive stream hung; moving it");
                waiting.fail_all(|| Answer::Moved("member out of rotation".into()));
                stream = None;
            }
            _ = sleep_until(stalled_at.unwrap_or(idle_at)), if stalled_at.is_some() => {
                members.note_slow(index, "no lease renewal answered in time");
                debug!(endpoint = members.endpoint(index), "lease keep-alive stream gave no answer in time; moving it");
                waiting.fail_all(|| Answer::Moved("no answer in time".into()));
                stream = None;
            }
            // The stream has room again (for the first queued lease).
            sent = keeper.keep_alive(), if !outbox.is_empty() => match sent {
                Ok(()) => {
                    if let Some(r) = outbox.pop_front() {
                        waiting.sent(r);
                    }
                }
                Err(e) => {
                    broke(&members, index, &mut waiting, e.to_string());
                    stream = None;
                }
            },
            r = queue.recv() => match r {
                Some(r) => {
                    last_request = Instant::now();
                    outbox.push_back(r);
                }
                None => return,
            },
            _ = sleep_until(idle_at), if waiting.count == 0 && outbox.is_empty() => {
                debug!("lease keep-alive stream idle; closing it");
                return;
            }
            _ = &mut closing => return,
        }
    }
}

/// The stream broke (it ended, or failed): its member is noted slow, and every request
/// waiting on it is answered so that its session asks again after a pause.
fn broke(members: &Members, index: usize, waiting: &mut Waiting, why: String) {
    members.note_slow(index, "lease keep-alive stream broke");
    debug!(endpoint = members.endpoint(index), reason = %why, "lease keep-alive stream broke");
    waiting.fail_all(|| Answer::Failed(why.clone()));
}
