//! The shared scenario suite, run against core: every scenario of `tests/scenarios.json`
//! (the same file the Python and Node suites run against their faces; the language is
//! described in `tests/README.md`).
//!
//! One test walks the whole list against one etcd (each scenario in its own key
//! namespace; a scenario asking for 3 members gets a cluster of its own) and reports every
//! failing scenario by name, its step, and what was expected and got. It fails on an op it
//! does not know and unless it ran every scenario of the file.
//!
//! `cargo nextest run -p etcd-recipes --test scenarios`; `SCENARIO=<part of a name>` runs
//! only the matching scenarios (and then fails, saying how many it left out).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_recipes::barrier::{Barrier, DoubleBarrier};
use etcd_recipes::config::{ConfigChange, ConfigChanges, ConfigOptions, ConfigView};
use etcd_recipes::counter::Counter;
use etcd_recipes::election::{self, Election, LeaderInfo, LeaderObserver, Leadership};
use etcd_recipes::lock::{Lock, LockGuard};
use etcd_recipes::queue::{PriorityQueue, Queue, QueueItem};
use etcd_recipes::registry::{
    self, DownInstancePolicy, Instance, InstanceSets, Picker, Readiness, RegisterOptions, Registration, RegistrationState,
    ServiceView, ViewOptions,
};
use etcd_recipes::rwlock::{RwLock, Side as RwSide};
use etcd_recipes::semaphore::Semaphore;
use etcd_recipes::workqueue::{WorkItem, WorkQueue};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::{Client, ClientOptions, Session, SessionSource, SessionState};
use serde_json::{json, Map, Value as Json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/scenarios.json");

/// Every op this runner maps to core (must cover the file's `ops` table).
const KNOWN_OPS: &[&str] = &[
    "client.connect", "client.put", "client.get", "client.delete", "client.revision", "client.is_closed",
    "client.close", "client.session", "client.lock", "client.election", "client.leader", "client.observe_leader",
    "client.register", "client.list_instances", "client.discover", "client.config",
    "client.semaphore", "client.rwlock", "client.barrier", "client.double_barrier", "client.queue",
    "client.priority_queue", "client.work_queue", "client.counter",
    "session.lease_id", "session.ttl", "session.is_alive", "session.state", "session.lost", "session.close",
    "session.lock", "session.election", "session.register",
    "lock.acquire", "lock.try_acquire",
    "guard.key", "guard.name", "guard.lease_id", "guard.fencing_token", "guard.is_held", "guard.put", "guard.delete",
    "guard.lost", "guard.release",
    "election.campaign", "election.leader", "election.observe",
    "leadership.is_leader", "leadership.value", "leadership.key", "leadership.lease_id", "leadership.fencing_token",
    "leadership.proclaim", "leadership.resign", "leadership.lost",
    "observer.next",
    "registration.state", "registration.lease_id", "registration.reregistrations", "registration.update_metadata",
    "registration.close", "registration.readiness", "registration.set_readiness",
    "view.instances", "view.updates", "view.close", "updates.next", "view.pick", "view.available", "view.note_error",
    "view.is_down",
    "config.get", "config.get_string", "config.get_json", "config.has", "config.keys", "config.changes",
    "config.close", "changes.next",
    "semaphore.acquire", "semaphore.try_acquire",
    "rwlock.read", "rwlock.write", "rwlock.try_read", "rwlock.try_write",
    "barrier.hold", "barrier.release", "barrier.is_held", "barrier.wait",
    "double_barrier.enter", "double_barrier.leave",
    "queue.enqueue", "queue.dequeue", "queue.try_dequeue", "queue.length",
    "priority_queue.enqueue", "priority_queue.dequeue", "priority_queue.try_dequeue", "priority_queue.length",
    "work_queue.put", "work_queue.receive", "work_queue.try_receive", "work_queue.length", "work_queue.dead_letters",
    "work_queue.requeue_dead", "work_queue.requeue_all_dead",
    "work_item.id", "work_item.value", "work_item.deliveries", "work_item.fencing_token", "work_item.lease_id",
    "work_item.is_held", "work_item.ack", "work_item.nack", "work_item.lost",
    "counter.get", "counter.add", "counter.compare_and_set", "counter.set",
    "task.await", "task.done",
    "admin.keys", "admin.lease_exists", "admin.revoke_lease",
];

const EXPECTATIONS: &[&str] = &["value", "match", "error", "some", "gt", "ne", "len", "prefix", "ended"];

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

/// What a variable holds: data (normalised to JSON: bytes as text, or `{"hex": ...}` when
/// not UTF-8), the end of an iterator, or a handle of the face.
#[derive(Clone)]
enum Val {
    Data(Json),
    End,
    Client(Client),
    Session(Session),
    Lock(Lock),
    Guard(Arc<LockGuard>),
    Election(Election),
    Leadership(Arc<Leadership>),
    Observer(Arc<Mutex<LeaderObserver>>),
    Registration(Arc<Registration>),
    View(ServiceView),
    Updates(Arc<Mutex<InstanceSets>>),
    Config(ConfigView),
    Changes(Arc<Mutex<ConfigChanges>>),
    Task(Arc<Mutex<TaskState>>),
    Semaphore(Semaphore),
    RwLock(RwLock),
    Barrier(Barrier),
    DoubleBarrier(Arc<DoubleBarrier>),
    Queue(Queue),
    PriorityQueue(PriorityQueue),
    WorkQueue(WorkQueue),
    WorkItem(Arc<WorkItem>),
    Counter(Counter),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Data(_) => "data",
            Val::End => "end",
            Val::Client(_) => "client",
            Val::Session(_) => "session",
            Val::Lock(_) => "lock",
            Val::Guard(_) => "guard",
            Val::Election(_) => "election",
            Val::Leadership(_) => "leadership",
            Val::Observer(_) => "observer",
            Val::Registration(_) => "registration",
            Val::View(_) => "view",
            Val::Updates(_) => "updates",
            Val::Config(_) => "config",
            Val::Changes(_) => "changes",
            Val::Task(_) => "task",
            Val::Semaphore(_) => "semaphore",
            Val::RwLock(_) => "rwlock",
            Val::Barrier(_) => "barrier",
            Val::DoubleBarrier(_) => "double_barrier",
            Val::Queue(_) => "queue",
            Val::PriorityQueue(_) => "priority_queue",
            Val::WorkQueue(_) => "work_queue",
            Val::WorkItem(_) => "work_item",
            Val::Counter(_) => "counter",
        }
    }

    /// A short description for failure messages (never a large payload).
    fn describe(&self) -> String {
        match self {
            Val::Data(j) => short(&j.to_string()),
            Val::End => "<ended>".into(),
            other => format!("<{}>", other.kind()),
        }
    }
}

enum TaskState {
    Running(JoinHandle<Outcome>),
    Done(Outcome),
}

/// Why an op did not give a value: an error of the face (its kind code), or a problem of
/// the scenario or this runner (always a failure, whatever was expected).
#[derive(Clone, Debug)]
enum Fail {
    Lib { code: &'static str, message: String },
    Runner(String),
}

impl From<etcd_recipes::Error> for Fail {
    fn from(e: etcd_recipes::Error) -> Self {
        Fail::Lib { code: e.kind().code(), message: e.to_string() }
    }
}

type Outcome = Result<Val, Fail>;

fn describe(o: &Outcome) -> String {
    match o {
        Ok(v) => format!("ok {}", v.describe()),
        Err(Fail::Lib { code, message }) => format!("error {code} ({})", short(message)),
        Err(Fail::Runner(m)) => format!("runner error: {}", short(m)),
    }
}

fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn data(j: impl Into<Json>) -> Val {
    Val::Data(j.into())
}

fn none() -> Val {
    Val::Data(Json::Null)
}

fn bytes_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

fn opt_bytes_json(b: Option<impl AsRef<[u8]>>) -> Json {
    b.map(|b| bytes_json(b.as_ref())).unwrap_or(Json::Null)
}

fn instance_json(i: &Instance) -> Json {
    json!({ "id": i.id, "addr": i.addr, "metadata": i.metadata })
}

fn instances_json(list: &[Instance]) -> Val {
    Val::Data(Json::Array(list.iter().map(instance_json).collect()))
}

fn leader_json(l: Option<LeaderInfo>) -> Val {
    Val::Data(match l {
        None => Json::Null,
        Some(l) => json!({
            "key": l.key,
            "value": bytes_json(&l.value),
            "fencing_token": l.fencing_token,
            "lease_id": l.lease_id,
        }),
    })
}

fn item_json(i: Option<QueueItem>) -> Val {
    Val::Data(match i {
        None => Json::Null,
        Some(i) => json!({ "key": i.key, "value": bytes_json(&i.value), "revision": i.revision }),
    })
}

/// What `client.register` and `session.register` take (but the TTL).
fn register_options(a: &Args<'_>) -> Result<RegisterOptions, Fail> {
    let mut o = RegisterOptions::new(a.str("service")?, a.str("id")?, a.str("addr")?).metadata(a.json("metadata"));
    if let Some(r) = a.opt_str("readiness")? {
        o = o.readiness(Readiness::parse(&r)?);
    }
    if let Some(h) = a.opt_bool("self_heal")? {
        o = o.self_heal(h);
    }
    Ok(o)
}

/// A whole number argument into the face's type; out of its range is the Rust face's
/// boundary check (its types make such a value unrepresentable): `INVALID_ARGUMENT`.
fn whole<T: TryFrom<i64>>(what: &str, n: i64) -> Result<T, Fail> {
    T::try_from(n).map_err(|_| Fail::from(etcd_recipes::Error::InvalidArgument(format!("{what} out of range: {n}"))))
}

fn change_json(c: ConfigChange) -> Val {
    Val::Data(json!({
        "key": c.key,
        "old": opt_bytes_json(c.old),
        "new": opt_bytes_json(c.new),
        "revision": c.revision,
    }))
}

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

struct Args<'a>(&'a Map<String, Json>);

fn bad(m: impl Into<String>) -> Fail {
    Fail::Runner(m.into())
}

impl Args<'_> {
    fn get(&self, k: &str) -> Option<&Json> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn str(&self, k: &str) -> Result<String, Fail> {
        match self.get(k) {
            Some(Json::String(s)) => Ok(s.clone()),
            other => Err(bad(format!("argument {k:?} must be a string, got {other:?}"))),
        }
    }
    fn opt_str(&self, k: &str) -> Result<Option<String>, Fail> {
        self.get(k).map(|_| self.str(k)).transpose()
    }
    fn i64(&self, k: &str) -> Result<i64, Fail> {
        self.get(k).and_then(Json::as_i64).ok_or_else(|| bad(format!("argument {k:?} must be an integer")))
    }
    fn opt_i64(&self, k: &str) -> Result<Option<i64>, Fail> {
        self.get(k).map(|_| self.i64(k)).transpose()
    }
    /// Seconds (a number), as a `Duration`.
    fn opt_secs(&self, k: &str) -> Result<Option<Duration>, Fail> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|s| *s >= 0.0)
                .map(|s| Some(Duration::from_secs_f64(s)))
                .ok_or_else(|| bad(format!("argument {k:?} must be a number of seconds"))),
        }
    }
    fn opt_bool(&self, k: &str) -> Result<Option<bool>, Fail> {
        match self.get(k) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(format!("argument {k:?} must be a boolean"))),
        }
    }
    /// A value to store: text, or `{"hex": "..."}` for arbitrary bytes.
    fn bytes(&self, k: &str) -> Result<Vec<u8>, Fail> {
        match self.get(k) {
            Some(Json::String(s)) => Ok(s.as_bytes().to_vec()),
            Some(Json::Object(o)) if o.len() == 1 && o.get("hex").is_some_and(Json::is_string) => {
                let h = o["hex"].as_str().unwrap_or_default();
                (0..h.len())
                    .step_by(2)
                    .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| bad(format!("argument {k:?}: bad hex {h:?}")))
            }
            other => Err(bad(format!("argument {k:?} must be text or {{\"hex\": ...}}, got {other:?}"))),
        }
    }
    /// Any JSON (metadata); absent is null.
    fn json(&self, k: &str) -> Json {
        self.get(k).cloned().unwrap_or(Json::Null)
    }
}

// ---------------------------------------------------------------------------------------
// Ops: each one maps to one call of core
// ---------------------------------------------------------------------------------------

/// What every op of one scenario shares.
struct Env {
    endpoints: Vec<String>,
    ns: String,
    admin: Client,
}

macro_rules! subject {
    ($s:expr, $variant:ident) => {
        match $s {
            Some(Val::$variant(x)) => x,
            Some(other) => return Err(bad(format!("expected a {} subject, got {}", stringify!($variant), other.kind()))),
            None => return Err(bad("this op needs a subject (\"on\")")),
        }
    };
}

/// One op, on the heap: the ops' state machines together are too large for a test
/// thread's stack.
fn exec(env: Arc<Env>, op: String, subject: Option<Val>, args: Json) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
    let kind = op.split('.').next().unwrap_or_default();
    if RECIPE_KINDS.contains(&kind) || RECIPE_FACTORIES.contains(&op.as_str()) {
        Box::pin(exec_recipe(op, subject, args))
    } else {
        Box::pin(exec_base(env, op, subject, args))
    }
}

/// The kinds of the coordination recipes (semaphore .. counter), run by `exec_recipe`.
const RECIPE_KINDS: &[&str] =
    &["semaphore", "rwlock", "barrier", "double_barrier", "queue", "priority_queue", "work_queue", "work_item", "counter"];
const RECIPE_FACTORIES: &[&str] = &[
    "client.semaphore", "client.rwlock", "client.barrier", "client.double_barrier", "client.queue",
    "client.priority_queue", "client.work_queue", "client.counter",
];

async fn exec_base(env: Arc<Env>, op: String, subject: Option<Val>, args: Json) -> Outcome {
    let empty = Map::new();
    let a = Args(args.as_object().unwrap_or(&empty));
    let s = subject.as_ref();
    Ok(match op.as_str() {
        // ----- client
        "client.connect" => {
            let ns = format!("{}{}", env.ns, a.opt_str("namespace")?.unwrap_or_default());
            let opts = ClientOptions::new(env.endpoints.clone())
                .with_namespace(ns)
                .with_connect_timeout(Duration::from_secs(10));
            Val::Client(Client::connect(opts).await?)
        }
        "client.put" => data(subject!(s, Client).put(&a.str("key")?, a.bytes("value")?).await?),
        "client.get" => Val::Data(opt_bytes_json(subject!(s, Client).get(&a.str("key")?).await?)),
        "client.delete" => data(subject!(s, Client).delete(&a.str("key")?).await?),
        "client.revision" => data(subject!(s, Client).revision().await?),
        "client.is_closed" => data(subject!(s, Client).is_closed()),
        "client.close" => {
            subject!(s, Client).close().await;
            none()
        }
        "client.session" => Val::Session(Session::new(subject!(s, Client), a.i64("ttl")?).await?),
        "client.lock" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            Val::Lock(Lock::new(source, &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?))
        }
        "client.election" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            Val::Election(Election::new(source, &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?))
        }
        "client.leader" => leader_json(election::current_leader(subject!(s, Client), &a.str("name")?).await?),
        "client.observe_leader" => {
            Val::Observer(Arc::new(Mutex::new(election::observe(subject!(s, Client), &a.str("name")?)?)))
        }
        "client.register" => {
            let c = subject!(s, Client);
            let mut o = register_options(&a)?;
            if let Some(ttl) = a.opt_i64("ttl")? {
                o = o.ttl(ttl);
            }
            Val::Registration(Arc::new(Registration::register(c, o).await?))
        }
        "client.list_instances" => instances_json(&registry::list_instances(subject!(s, Client), &a.str("service")?).await?.0),
        "client.discover" => {
            let mut o = ViewOptions::new().include_not_ready(a.opt_bool("include_not_ready")?.unwrap_or(false));
            if let Some(p) = a.opt_str("picker")? {
                o = o.picker(Picker::parse(&p)?);
            }
            if let Some(z) = a.opt_str("prefer_zone")? {
                o = o.prefer_zone(z);
            }
            let mut policy = DownInstancePolicy::default();
            if let Some(n) = a.opt_i64("down_threshold")? {
                policy.threshold = whole("down_threshold", n)?;
            }
            if let Some(d) = a.opt_secs("down_period")? {
                policy.period = d;
            }
            Val::View(ServiceView::start_with(subject!(s, Client), &a.str("service")?, o.down_policy(policy)).await?)
        }
        "client.config" => {
            let c = subject!(s, Client);
            let key = a.str("key")?;
            Val::Config(if a.opt_bool("prefix")?.unwrap_or(false) {
                ConfigView::prefix(c, &key, ConfigOptions::default()).await?
            } else {
                ConfigView::key(c, &key, ConfigOptions::default()).await?
            })
        }

        // ----- session
        "session.lease_id" => data(subject!(s, Session).lease_id()),
        "session.ttl" => data(subject!(s, Session).ttl()),
        "session.is_alive" => data(subject!(s, Session).is_alive()),
        "session.state" => data(match subject!(s, Session).state() {
            SessionState::Alive => "alive",
            SessionState::Lost(_) => "lost",
            SessionState::Closed => "closed",
        }),
        "session.lost" => data(subject!(s, Session).lost().await),
        "session.close" => {
            subject!(s, Session).close().await?;
            none()
        }
        "session.lock" => {
            Val::Lock(Lock::new(subject!(s, Session), &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?))
        }
        "session.election" => Val::Election(Election::new(subject!(s, Session), &a.str("name")?)?),
        "session.register" => Val::Registration(Arc::new(subject!(s, Session).register(register_options(&a)?).await?)),

        // ----- lock
        "lock.acquire" => {
            let l = subject!(s, Lock);
            Val::Guard(Arc::new(match a.opt_secs("timeout")? {
                Some(t) => l.acquire_within(Some(t)).await?,
                None => l.acquire().await?,
            }))
        }
        "lock.try_acquire" => Val::Guard(Arc::new(subject!(s, Lock).try_acquire().await?)),

        // ----- guard
        "guard.key" => data(subject!(s, Guard).key()),
        "guard.name" => data(subject!(s, Guard).name()),
        "guard.lease_id" => data(subject!(s, Guard).lease_id()),
        "guard.fencing_token" => data(subject!(s, Guard).fencing_token()),
        "guard.is_held" => data(subject!(s, Guard).is_held()),
        "guard.put" => data(subject!(s, Guard).fence().put(&a.str("key")?, a.bytes("value")?).await?),
        "guard.delete" => data(subject!(s, Guard).fence().delete(&a.str("key")?).await?),
        "guard.lost" => data(subject!(s, Guard).lost().await),
        "guard.release" => {
            subject!(s, Guard).release().await?;
            none()
        }

        // ----- election
        "election.campaign" => {
            let e = subject!(s, Election);
            let value = a.bytes("value")?;
            Val::Leadership(Arc::new(match a.opt_secs("timeout")? {
                Some(t) => e.campaign_within(value, Some(t)).await?,
                None => e.campaign(value).await?,
            }))
        }
        "election.leader" => leader_json(subject!(s, Election).leader().await?),
        "election.observe" => Val::Observer(Arc::new(Mutex::new(subject!(s, Election).observe()))),
        "leadership.is_leader" => data(subject!(s, Leadership).is_leader()),
        "leadership.value" => Val::Data(bytes_json(&subject!(s, Leadership).value())),
        "leadership.key" => data(subject!(s, Leadership).key()),
        "leadership.lease_id" => data(subject!(s, Leadership).lease_id()),
        "leadership.fencing_token" => data(subject!(s, Leadership).fencing_token()),
        "leadership.proclaim" => {
            subject!(s, Leadership).proclaim(a.bytes("value")?).await?;
            none()
        }
        "leadership.resign" => {
            subject!(s, Leadership).resign().await?;
            none()
        }
        "leadership.lost" => data(subject!(s, Leadership).lost().await),
        "observer.next" => match subject!(s, Observer).lock().await.next().await {
            None => Val::End,
            Some(r) => leader_json(r?),
        },

        // ----- registry
        "registration.state" => data(match subject!(s, Registration).state() {
            RegistrationState::Registered { .. } => "registered",
            RegistrationState::Recovering { .. } => "recovering",
            RegistrationState::Lost { .. } => "lost",
            RegistrationState::Closed => "closed",
        }),
        "registration.readiness" => data(subject!(s, Registration).readiness().as_str()),
        "registration.set_readiness" => {
            subject!(s, Registration).set_readiness(Readiness::parse(&a.str("readiness")?)?).await?;
            none()
        }
        "registration.lease_id" => data(subject!(s, Registration).lease_id()),
        "registration.reregistrations" => data(subject!(s, Registration).reregistrations()),
        "registration.update_metadata" => {
            subject!(s, Registration).update_metadata(a.json("metadata")).await?;
            none()
        }
        "registration.close" => {
            subject!(s, Registration).close().await?;
            none()
        }
        "view.instances" => instances_json(&subject!(s, View).instances()),
        "view.available" => instances_json(&subject!(s, View).available()),
        "view.pick" => {
            let exclude: Vec<String> = match a.get("exclude") {
                None => Vec::new(),
                Some(j) => serde_json::from_value(j.clone()).map_err(|_| bad("exclude must be a list of ids"))?,
            };
            data(subject!(s, View).pick_where(|i| !exclude.contains(&i.id)).map(|i| instance_json(&i)).unwrap_or(Json::Null))
        }
        "view.note_error" => {
            subject!(s, View).note_error(&a.str("id")?);
            none()
        }
        "view.is_down" => data(subject!(s, View).is_down(&a.str("id")?)),
        "view.updates" => Val::Updates(Arc::new(Mutex::new(subject!(s, View).updates()))),
        "view.close" => {
            subject!(s, View).close();
            none()
        }
        "updates.next" => match subject!(s, Updates).lock().await.next().await {
            None => Val::End,
            Some(set) => instances_json(&set),
        },

        // ----- config
        "config.get" => Val::Data(opt_bytes_json(subject!(s, Config).get(&a.str("key")?))),
        "config.get_string" => data(subject!(s, Config).get_string(&a.str("key")?)?),
        "config.get_json" => data(subject!(s, Config).get_json_value(&a.str("key")?)?),
        "config.has" => data(subject!(s, Config).has(&a.str("key")?)),
        "config.keys" => data(subject!(s, Config).keys()),
        "config.changes" => Val::Changes(Arc::new(Mutex::new(subject!(s, Config).changes()))),
        "config.close" => {
            subject!(s, Config).close();
            none()
        }
        "changes.next" => match subject!(s, Changes).lock().await.next().await {
            None => Val::End,
            Some(r) => change_json(r?),
        },

        // ----- background steps
        "task.done" => data(match &*subject!(s, Task).lock().await {
            TaskState::Running(h) => h.is_finished(),
            TaskState::Done(_) => true,
        }),
        "task.await" => {
            let mut st = subject!(s, Task).lock().await;
            let out = match &mut *st {
                TaskState::Done(o) => return o.clone(),
                TaskState::Running(h) => h.await.unwrap_or_else(|e| Err(bad(format!("background step panicked: {e}")))),
            };
            *st = TaskState::Done(out.clone());
            return out;
        }

        // ----- the runner's own client (same namespace)
        "admin.keys" => {
            let prefix = format!("{}{}", env.ns, a.str("prefix")?);
            let resp = env
                .admin
                .etcd()
                .get(prefix, Some(GetOptions::new().with_prefix().with_keys_only()))
                .await
                .map_err(etcd_recipes::Error::from)?;
            let mut keys: Vec<String> = resp
                .kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key()[env.ns.len()..]).into_owned())
                .collect();
            keys.sort();
            data(keys)
        }
        "admin.lease_exists" => data(env.admin.lease_exists(a.i64("lease")?).await?),
        "admin.revoke_lease" => {
            env.admin.revoke_lease(a.i64("lease")?).await?;
            none()
        }
        other => return Err(bad(format!("unknown op {other:?}"))),
    })
}

/// The ops of the coordination recipes (semaphore, read-write lock, barriers, queues,
/// work queue, counter).
async fn exec_recipe(op: String, subject: Option<Val>, args: Json) -> Outcome {
    let empty = Map::new();
    let a = Args(args.as_object().unwrap_or(&empty));
    let s = subject.as_ref();
    Ok(match op.as_str() {
        "client.semaphore" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            let permits = whole("permits", a.i64("permits")?)?;
            Val::Semaphore(Semaphore::new(source, &a.str("name")?, permits)?.with_timeout(a.opt_secs("timeout")?))
        }
        "client.rwlock" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            Val::RwLock(RwLock::new(source, &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?))
        }
        "client.barrier" => {
            Val::Barrier(Barrier::new(subject!(s, Client), &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?))
        }
        "client.double_barrier" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            let count = whole("count", a.i64("count")?)?;
            Val::DoubleBarrier(Arc::new(
                DoubleBarrier::new(source, &a.str("name")?, count)?.with_timeout(a.opt_secs("timeout")?),
            ))
        }
        "client.queue" => Val::Queue(Queue::new(subject!(s, Client), &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?)),
        "client.priority_queue" => Val::PriorityQueue(
            PriorityQueue::new(subject!(s, Client), &a.str("name")?)?.with_timeout(a.opt_secs("timeout")?),
        ),
        "client.work_queue" => {
            let c = subject!(s, Client);
            let source = SessionSource::per_use(c, a.opt_i64("ttl")?.unwrap_or(10))?;
            let max = a.opt_i64("max_deliveries")?.map(|m| whole("max_deliveries", m)).transpose()?;
            Val::WorkQueue(
                WorkQueue::new(source, &a.str("name")?)?.with_max_deliveries(max)?.with_timeout(a.opt_secs("timeout")?),
            )
        }
        "client.counter" => Val::Counter(Counter::new(subject!(s, Client), &a.str("key")?)?),

        // ----- semaphore, read-write lock
        "semaphore.acquire" => {
            let sem = subject!(s, Semaphore);
            Val::Guard(Arc::new(match a.opt_secs("timeout")? {
                Some(t) => sem.acquire_within(Some(t)).await?,
                None => sem.acquire().await?,
            }))
        }
        "semaphore.try_acquire" => Val::Guard(Arc::new(subject!(s, Semaphore).try_acquire().await?)),
        "rwlock.read" | "rwlock.write" => {
            let rw = subject!(s, RwLock);
            let side = if op == "rwlock.read" { RwSide::Read } else { RwSide::Write };
            Val::Guard(Arc::new(match a.opt_secs("timeout")? {
                Some(t) => rw.acquire_within(side, Some(t)).await?,
                None if op == "rwlock.read" => rw.read().await?,
                None => rw.write().await?,
            }))
        }
        "rwlock.try_read" => Val::Guard(Arc::new(subject!(s, RwLock).try_read().await?)),
        "rwlock.try_write" => Val::Guard(Arc::new(subject!(s, RwLock).try_write().await?)),

        // ----- barriers
        "barrier.hold" => data(subject!(s, Barrier).hold().await?),
        "barrier.release" => data(subject!(s, Barrier).release().await?),
        "barrier.is_held" => data(subject!(s, Barrier).is_held().await?),
        "barrier.wait" => {
            let b = subject!(s, Barrier);
            match a.opt_secs("timeout")? {
                Some(t) => b.wait_within(Some(t)).await?,
                None => b.wait().await?,
            }
            none()
        }
        "double_barrier.enter" => {
            let d = subject!(s, DoubleBarrier);
            match a.opt_secs("timeout")? {
                Some(t) => d.enter_within(Some(t)).await?,
                None => d.enter().await?,
            }
            none()
        }
        "double_barrier.leave" => {
            let d = subject!(s, DoubleBarrier);
            match a.opt_secs("timeout")? {
                Some(t) => d.leave_within(Some(t)).await?,
                None => d.leave().await?,
            }
            none()
        }

        // ----- queues
        "queue.enqueue" => data(subject!(s, Queue).enqueue(a.bytes("value")?).await?),
        "queue.dequeue" => {
            let q = subject!(s, Queue);
            item_json(Some(match a.opt_secs("timeout")? {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            }))
        }
        "queue.try_dequeue" => item_json(subject!(s, Queue).try_dequeue().await?),
        "queue.length" => data(subject!(s, Queue).length().await?),
        "priority_queue.enqueue" => {
            let q = subject!(s, PriorityQueue);
            let priority = whole("priority", a.i64("priority")?)?;
            data(q.enqueue(a.bytes("value")?, priority).await?)
        }
        "priority_queue.dequeue" => {
            let q = subject!(s, PriorityQueue);
            item_json(Some(match a.opt_secs("timeout")? {
                Some(t) => q.dequeue_within(Some(t)).await?,
                None => q.dequeue().await?,
            }))
        }
        "priority_queue.try_dequeue" => item_json(subject!(s, PriorityQueue).try_dequeue().await?),
        "priority_queue.length" => data(subject!(s, PriorityQueue).length().await?),

        // ----- work queue
        "work_queue.put" => data(subject!(s, WorkQueue).put(a.bytes("value")?, a.opt_secs("delay")?).await?),
        "work_queue.receive" => {
            let q = subject!(s, WorkQueue);
            Val::WorkItem(Arc::new(match a.opt_secs("timeout")? {
                Some(t) => q.receive_within(Some(t)).await?,
                None => q.receive().await?,
            }))
        }
        "work_queue.try_receive" => Val::WorkItem(Arc::new(subject!(s, WorkQueue).try_receive().await?)),
        "work_queue.length" => data(subject!(s, WorkQueue).length().await?),
        "work_queue.dead_letters" => Val::Data(Json::Array(
            subject!(s, WorkQueue)
                .dead_letters()
                .await?
                .into_iter()
                .map(|d| json!({ "id": d.id, "value": bytes_json(&d.value), "deliveries": d.deliveries }))
                .collect(),
        )),
        "work_queue.requeue_dead" => data(subject!(s, WorkQueue).requeue_dead(&a.str("id")?).await?),
        "work_queue.requeue_all_dead" => data(subject!(s, WorkQueue).requeue_all_dead().await?),
        "work_item.id" => data(subject!(s, WorkItem).id()),
        "work_item.value" => Val::Data(bytes_json(subject!(s, WorkItem).value())),
        "work_item.deliveries" => data(subject!(s, WorkItem).deliveries()),
        "work_item.fencing_token" => data(subject!(s, WorkItem).fencing_token()),
        "work_item.lease_id" => data(subject!(s, WorkItem).lease_id()),
        "work_item.is_held" => data(subject!(s, WorkItem).is_held()),
        "work_item.ack" => {
            subject!(s, WorkItem).ack().await?;
            none()
        }
        "work_item.nack" => {
            subject!(s, WorkItem).nack(a.opt_secs("delay")?).await?;
            none()
        }
        "work_item.lost" => data(subject!(s, WorkItem).lost().await),

        // ----- counter
        "counter.get" => data(subject!(s, Counter).get().await?),
        "counter.add" => data(subject!(s, Counter).add(a.opt_i64("delta")?.unwrap_or(1)).await?),
        "counter.compare_and_set" => {
            data(subject!(s, Counter).compare_and_set(a.i64("expected")?, a.i64("new")?).await?)
        }
        "counter.set" => data(subject!(s, Counter).set(a.i64("value")?).await?),
        other => return Err(bad(format!("unknown op {other:?}"))),
    })
}

// ---------------------------------------------------------------------------------------
// References and expectations
// ---------------------------------------------------------------------------------------

type Vars = HashMap<String, Val>;

fn var_data<'a>(vars: &'a Vars, name: &str) -> Result<&'a Json, String> {
    match vars.get(name) {
        Some(Val::Data(j)) => Ok(j),
        Some(other) => Err(format!("${name} is a {}, not data", other.kind())),
        None => Err(format!("${name} is not set")),
    }
}

/// Replace `"$name"` by the variable's value and `${name}` inside text by its text.
fn resolve(j: &Json, vars: &Vars) -> Result<Json, String> {
    Ok(match j {
        Json::String(s) if s.starts_with('$') && !s.starts_with("${") => var_data(vars, &s[1..])?.clone(),
        Json::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                out.push_str(&rest[..i]);
                let end = rest[i..].find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
                match var_data(vars, &rest[i + 2..i + end])? {
                    Json::String(t) => out.push_str(t),
                    other => out.push_str(&other.to_string()),
                }
                rest = &rest[i + end + 1..];
            }
            out.push_str(rest);
            Json::String(out)
        }
        Json::Array(a) => Json::Array(a.iter().map(|x| resolve(x, vars)).collect::<Result<_, _>>()?),
        Json::Object(o) => {
            Json::Object(o.iter().map(|(k, v)| Ok((k.clone(), resolve(v, vars)?))).collect::<Result<_, String>>()?)
        }
        other => other.clone(),
    })
}

/// Does `outcome` meet the (resolved) expectation? `Err` says how it does not.
fn check(exp: &Map<String, Json>, outcome: &Outcome) -> Result<(), String> {
    let got = || describe(outcome);
    if let Err(Fail::Runner(m)) = outcome {
        return Err(format!("runner error: {m}"));
    }
    if let Some(code) = exp.get("error") {
        return match outcome {
            Err(Fail::Lib { code: c, .. }) if Json::from(*c) == *code => Ok(()),
            _ => Err(format!("expected error {}, got {}", code.as_str().unwrap_or("?"), got())),
        };
    }
    let v = match outcome {
        Ok(v) => v,
        Err(_) => return Err(format!("expected success, got {}", got())),
    };
    let ended = matches!(v, Val::End);
    if exp.get("ended") == Some(&Json::Bool(true)) {
        return if ended { Ok(()) } else { Err(format!("expected the iterator to have ended, got {}", got())) };
    }
    let d = match v {
        Val::Data(d) => d,
        _ if exp.is_empty() => return Ok(()),
        _ => return Err(format!("expected data, got {}", got())),
    };
    for (k, want) in exp {
        let ok = match k.as_str() {
            "value" => d == want,
            "match" => match (d, want) {
                (Json::Object(o), Json::Object(w)) => w.iter().all(|(f, x)| o.get(f).unwrap_or(&Json::Null) == x),
                _ => false,
            },
            "some" => !d.is_null() == (want == &Json::Bool(true)),
            "gt" => matches!((d.as_i64(), want.as_i64()), (Some(a), Some(b)) if a > b),
            "ne" => d != want,
            "len" => d.as_array().map(|a| a.len() as u64) == want.as_u64(),
            "prefix" => matches!((d.as_str(), want.as_str()), (Some(a), Some(b)) if a.starts_with(b)),
            other => return Err(format!("unknown expectation {other:?}")),
        };
        if !ok {
            return Err(format!("expected {k} {}, got {}", short(&want.to_string()), got()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------

struct Suite {
    step_timeout: Duration,
    scenarios: Vec<Json>,
}

/// Load the file and check it against its own `ops` table and this runner: every op known,
/// arguments as declared, expectations known. Returns every problem found.
fn load() -> (Suite, Vec<String>) {
    let text = std::fs::read_to_string(FILE).unwrap_or_else(|e| panic!("cannot read {FILE}: {e}"));
    let file: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{FILE} is not JSON: {e}"));
    let mut problems = Vec::new();
    let ops = file["ops"].as_object().cloned().unwrap_or_default();
    for op in ops.keys() {
        if !KNOWN_OPS.contains(&op.as_str()) {
            problems.push(format!("op {op:?} of the file is not known to the Rust runner"));
        }
    }
    let scenarios = file["scenarios"].as_array().cloned().unwrap_or_default();
    if scenarios.is_empty() {
        problems.push("the file has no scenarios".into());
    }
    let mut names = BTreeSet::new();
    for sc in &scenarios {
        let name = sc["name"].as_str().unwrap_or("<unnamed>");
        if !names.insert(name.to_string()) {
            problems.push(format!("scenario name {name:?} is not unique"));
        }
        if !matches!(sc.get("members").map(|m| m.as_u64()), None | Some(Some(1)) | Some(Some(3))) {
            problems.push(format!("{name}: members must be 1 or 3"));
        }
        for (i, st) in sc["steps"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{name}: step {}", i + 1);
            let op = st["op"].as_str().unwrap_or("");
            let Some(decl) = ops.get(op) else {
                problems.push(format!("{at}: op {op:?} is not in the file's ops table"));
                continue;
            };
            let declared: Vec<&str> = decl["args"].as_array().into_iter().flatten().filter_map(Json::as_str).collect();
            let given = st.get("args").and_then(Json::as_object).cloned().unwrap_or_default();
            for k in given.keys() {
                if !declared.iter().any(|d| d.trim_end_matches('?') == k) {
                    problems.push(format!("{at}: {op} takes no argument {k:?}"));
                }
            }
            for d in declared.iter().filter(|d| !d.ends_with('?')) {
                if !given.contains_key(*d) {
                    problems.push(format!("{at}: {op} needs argument {d:?}"));
                }
            }
            let needs_subject = !(op == "client.connect" || op.starts_with("admin."));
            if needs_subject != st.get("on").is_some() {
                problems.push(format!("{at}: {op} {} a subject (\"on\")", if needs_subject { "needs" } else { "takes no" }));
            }
            for field in ["expect", "until"] {
                if let Some(e) = st.get(field) {
                    match e.as_object() {
                        Some(o) => {
                            for k in o.keys().filter(|k| !EXPECTATIONS.contains(&k.as_str())) {
                                problems.push(format!("{at}: unknown expectation {k:?}"));
                            }
                        }
                        None => problems.push(format!("{at}: {field} must be an object")),
                    }
                }
            }
            if st.get("background") == Some(&Json::Bool(true))
                && (st.get("as").is_none() || st.get("expect").is_some() || st.get("until").is_some())
            {
                problems.push(format!("{at}: a background step needs \"as\" and takes no expectation"));
            }
        }
    }
    let step_timeout = Duration::from_secs_f64(file["step_timeout"].as_f64().unwrap_or(30.0));
    (Suite { step_timeout, scenarios }, problems)
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

struct Run {
    env: Arc<Env>,
    vars: Vars,
    clients: Vec<Client>,
    step_timeout: Duration,
}

impl Run {
    fn keep(&mut self, name: Option<&str>, v: Val) {
        if let Val::Client(c) = &v {
            self.clients.push(c.clone());
        }
        if let Some(n) = name {
            self.vars.insert(n.to_string(), v);
        }
    }

    async fn step(&mut self, st: &Json) -> Result<(), String> {
        let op = st["op"].as_str().unwrap_or_default().to_string();
        let subject = match st.get("on").and_then(Json::as_str) {
            None => None,
            Some(on) => {
                let v = self.vars.get(on).ok_or_else(|| format!("${on} is not set"))?;
                let want = op.split('.').next().unwrap_or_default();
                if v.kind() != want {
                    return Err(format!("${on} is a {}, not a {want}", v.kind()));
                }
                Some(v.clone())
            }
        };
        let args = resolve(st.get("args").unwrap_or(&Json::Null), &self.vars)?;
        let name = st.get("as").and_then(Json::as_str);
        let run = |env: Arc<Env>| exec(env, op.clone(), subject.clone(), args.clone());

        if st.get("background") == Some(&Json::Bool(true)) {
            let h = tokio::spawn(run(self.env.clone()));
            self.keep(name, Val::Task(Arc::new(Mutex::new(TaskState::Running(h)))));
            return Ok(());
        }
        if let Some(until) = st.get("until") {
            let exp = resolve(until, &self.vars)?;
            let exp = exp.as_object().cloned().unwrap_or_default();
            let deadline = Instant::now() + self.step_timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let outcome = match tokio::time::timeout(left, run(self.env.clone())).await {
                    Ok(o) => o,
                    Err(_) => return Err(format!("not true within {:?}: {}", self.step_timeout, short(&until.to_string()))),
                };
                if let Err(Fail::Runner(m)) = &outcome {
                    return Err(format!("runner error: {}", short(m)));
                }
                match check(&exp, &outcome) {
                    Ok(()) => {
                        if let Ok(v) = outcome {
                            self.keep(name, v);
                        }
                        return Ok(());
                    }
                    Err(why) if Instant::now() >= deadline => {
                        return Err(format!("not within {:?}: {why}", self.step_timeout))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                }
            }
        }
        let exp = resolve(st.get("expect").unwrap_or(&json!({})), &self.vars)?;
        let exp = exp.as_object().cloned().unwrap_or_default();
        let outcome = tokio::time::timeout(self.step_timeout, run(self.env.clone()))
            .await
            .map_err(|_| format!("did not finish within {:?}", self.step_timeout))?;
        check(&exp, &outcome)?;
        if let Ok(v) = outcome {
            self.keep(name, v);
        }
        Ok(())
    }

    /// Close every client of the scenario (ending all it made) and stop its background steps.
    async fn finish(self) {
        for c in self.clients.iter().chain([&self.env.admin]) {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
        for v in self.vars.values() {
            if let Val::Task(t) = v {
                if let Ok(st) = t.try_lock() {
                    if let TaskState::Running(h) = &*st {
                        h.abort();
                    }
                }
            }
        }
    }
}

/// Run one scenario on `endpoints`; `Err` names the failing step.
async fn run_scenario(index: usize, sc: &Json, endpoints: Vec<String>, step_timeout: Duration) -> Result<(), String> {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let ns = format!("scn-{index:02}-{nonce:08x}/");
    let admin = Client::connect(
        ClientOptions::new(endpoints.clone()).with_namespace(ns.clone()).with_connect_timeout(Duration::from_secs(10)),
    )
    .await
    .map_err(|e| format!("admin client: {e}"))?;
    let mut run = Run {
        env: Arc::new(Env { endpoints, ns: ns.clone(), admin }),
        vars: HashMap::from([("ns".to_string(), Val::Data(Json::String(ns)))]),
        clients: Vec::new(),
        step_timeout,
    };
    let mut result = Ok(());
    for (i, st) in sc["steps"].as_array().into_iter().flatten().enumerate() {
        if let Err(why) = run.step(st).await {
            let on = st.get("on").and_then(Json::as_str).map(|o| format!(" on ${o}")).unwrap_or_default();
            result = Err(format!("step {} ({}{on}): {why}", i + 1, st["op"].as_str().unwrap_or("?")));
            break;
        }
    }
    run.finish().await;
    result
}

#[test]
fn scenario_file_is_valid_for_this_runner() {
    let (suite, problems) = load();
    assert!(problems.is_empty(), "{} problems in {FILE}:\n  {}", problems.len(), problems.join("\n  "));
    assert!(!suite.scenarios.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_of_the_shared_file() {
    common::init_tracing();
    let (suite, problems) = load();
    assert!(problems.is_empty(), "{} problems in {FILE}:\n  {}", problems.len(), problems.join("\n  "));
    let only = std::env::var("SCENARIO").ok().filter(|s| !s.is_empty());
    let etcd = EtcdCluster::start(1).expect("start etcd");
    let total = suite.scenarios.len();
    let mut ran = 0;
    let mut failures = Vec::new();
    for (i, sc) in suite.scenarios.iter().enumerate() {
        let name = sc["name"].as_str().unwrap_or("<unnamed>");
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let t0 = Instant::now();
        let members = sc.get("members").and_then(Json::as_u64).unwrap_or(1) as usize;
        // A scenario that needs 3 members gets a cluster of its own.
        let own = if members > 1 {
            match tokio::task::block_in_place(|| EtcdCluster::start(members)) {
                Ok(c) => Some(c),
                Err(e) => {
                    ran += 1;
                    failures.push(format!("{name}: cannot start {members} members: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
        let endpoints = own.as_ref().unwrap_or(&etcd).endpoints();
        let result = run_scenario(i, sc, endpoints, suite.step_timeout).await;
        ran += 1;
        match result {
            Ok(()) => println!("ok     {name} ({:.1} s)", t0.elapsed().as_secs_f64()),
            Err(why) => {
                println!("FAILED {name} ({:.1} s): {why}", t0.elapsed().as_secs_f64());
                failures.push(format!("{name}: {why}"));
            }
        }
        if let Some(c) = own {
            tokio::task::block_in_place(|| drop(c));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} scenarios failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(ran, total, "ran {ran} of the {total} scenarios of {FILE} (SCENARIO={only:?})");
}
