//! Node face of leader election: `client.election(name)`, `election.campaign(value)` ->
//! `Leadership`, `election.leader()` / `client.leader(name)`, and
//! `for await (const leader of election.observe())`.

use std::sync::Arc;

use etcd_recipes::SessionSource;
use futures::StreamExt;
use napi::bindgen_prelude::{i64n, Buffer, Either, PromiseRaw, Uint8Array};
use napi::Env;
use napi_derive::napi;

use crate::client::Client;
use crate::errors::{self, bytes};
use crate::iter::{stream_class, Cell};
use crate::lock::{per_use, wait, RecipeOptions, WaitOptions};
use crate::members::held_members;
use crate::session::Session;
use crate::Held;

/// Who leads an election.
#[napi(object, object_from_js = false)]
pub struct LeaderInfo {
    /// The leader's full etcd key, `<namespace><name>/<lease hex>`.
    pub key: String,
    /// The leader's proposal.
    pub value: Buffer,
    /// The proposal as text (UTF-8, invalid bytes replaced).
    pub value_string: String,
    /// Create revision of the leader key: the leadership's fencing token.
    pub fencing_token: i64,
    /// The lease the leader key is attached to.
    pub lease_id: i64n,
}

pub(crate) fn leader(l: etcd_recipes::election::LeaderInfo) -> LeaderInfo {
    LeaderInfo {
        key: l.key,
        value_string: String::from_utf8_lossy(&l.value).into_owned(),
        value: Buffer::from(l.value),
        fencing_token: l.fencing_token,
        lease_id: i64n(l.lease_id),
    }
}

stream_class!(
    LeaderObserver,
    Option<LeaderInfo>,
    "Promise<IteratorResult<LeaderInfo | null, undefined>>",
    "`for await (const leader of election.observe())`: the current leader (`null` when there is none), then every change. Survives compaction and reconnects."
);

fn observer(o: etcd_recipes::election::LeaderObserver) -> LeaderObserver {
    LeaderObserver(Cell::new(o.map(|r| r.map(|l| l.map(leader)))))
}

/// An election (same keys as etcd's Go `concurrency.Election` and `etcdctl elect`).
///
/// ```js
/// const election = client.election('scheduler')
/// const leadership = await election.campaign('node-1')
/// leadership.onLost((why) => process.exit(1))
/// for await (const leader of election.observe()) console.log(leader?.valueString)
/// ```
#[napi]
pub struct Election {
    core: Held<etcd_recipes::election::Election>,
}

fn election(env: &Env, source: SessionSource, name: &str, timeout: Option<std::time::Duration>) -> napi::Result<Election> {
    let core = etcd_recipes::election::Election::new(source, name).map_err(|e| errors::sync(env, e))?;
    Ok(Election { core: Held::new(core.with_timeout(timeout)) })
}

#[napi]
impl Client {
    /// The election named `name`. Each campaign runs on a session of its own (`ttl`
    /// seconds, default 10), closed when the leadership is resigned.
    #[napi(strict)]
    pub fn election(&self, env: &Env, name: String, options: Option<RecipeOptions>) -> napi::Result<Election> {
        let (source, timeout) = per_use(env, &self.core, options)?;
        election(env, source, &name, timeout)
    }

    /// The current leader of election `name`, or `null` (no session needed).
    #[napi(ts_return_type = "Promise<LeaderInfo | null>")]
    pub fn leader<'env>(&self, env: &'env Env, name: String) -> napi::Result<PromiseRaw<'env, Option<LeaderInfo>>> {
        let c = self.core.clone();
        errors::promise(env, async move { Ok(etcd_recipes::election::current_leader(&c, &name).await?.map(leader)) })
    }

    /// Observe election `name` (no session needed); see `election.observe()`.
    #[napi]
    pub fn observe_leader(&self, env: &Env, name: String) -> napi::Result<LeaderObserver> {
        etcd_recipes::election::observe(&self.core, &name).map(observer).map_err(|e| errors::sync(env, e))
    }
}

#[napi]
impl Session {
    /// The election named `name`, campaigning on this session (which stays open).
    #[napi(strict)]
    pub fn election(&self, env: &Env, name: String, options: Option<WaitOptions>) -> napi::Result<Election> {
        election(env, SessionSource::Shared((*self.core).clone()), &name, wait(env, options)?)
    }
}

#[napi]
impl Election {
    /// The election name (namespace-relative).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Become a candidate with `value` (a string or bytes) and wait until elected. Rejects
    /// with code `LOCK_TIMEOUT` after `timeoutMs` (default: the election's; our candidate
    /// key is removed), `CLOSED` if the client closes.
    #[napi(strict, ts_return_type = "Promise<Leadership>")]
    pub fn campaign<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>, options: Option<WaitOptions>) -> napi::Result<PromiseRaw<'env, Leadership>> {
        let (e, v, timeout) = ((*self.core).clone(), bytes(value), wait(env, options)?);
        errors::promise(env, async move {
            let l = match timeout {
                Some(t) => e.campaign_within(v, Some(t)).await?,
                None => e.campaign(v).await?,
            };
            Ok(Leadership { core: Held::new(Arc::new(l)) })
        })
    }

    /// The current leader, or `null` when there is none.
    #[napi(ts_return_type = "Promise<LeaderInfo | null>")]
    pub fn leader<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<LeaderInfo>>> {
        let e = (*self.core).clone();
        errors::promise(env, async move { Ok(e.leader().await?.map(leader)) })
    }

    /// The current leader (or `null`), then every change; `break` stops the watch.
    #[napi]
    pub fn observe(&self) -> LeaderObserver {
        observer(self.core.observe())
    }
}

/// Being the leader: the leader key, guarded writes, `proclaim`, `resign`, and the lost
/// signal. Resign with `resign()` or `await using`.
#[napi]
pub struct Leadership {
    core: Held<Arc<etcd_recipes::election::Leadership>>,
}

/// A leadership held by core (a leader loop's or latch's term).
pub(crate) fn leadership(l: Arc<etcd_recipes::election::Leadership>) -> Leadership {
    Leadership { core: Held::new(l) }
}

#[napi]
impl Leadership {
    /// The leader key, `<namespace><name>/<lease hex>`.
    #[napi(getter)]
    pub fn key(&self) -> String {
        self.core.key().to_string()
    }

    /// The election name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// The lease behind the leadership.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// Create revision of the leader key: the fencing token of this leadership.
    #[napi(getter)]
    pub fn fencing_token(&self) -> i64 {
        self.core.fencing_token()
    }

    /// The value last proclaimed (or campaigned with).
    #[napi(getter)]
    pub fn value(&self) -> Buffer {
        Buffer::from(self.core.value())
    }

    /// The value as text (UTF-8, invalid bytes replaced).
    #[napi(getter)]
    pub fn value_string(&self) -> String {
        String::from_utf8_lossy(&self.core.value()).into_owned()
    }

    /// True while the session is alive, the leader key exists and we did not resign.
    #[napi(getter)]
    pub fn is_leader(&self) -> bool {
        self.core.is_leader()
    }

    /// Change the leader value (rejects with code `NOT_LEADER` once leadership is lost).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn proclaim<'env>(&self, env: &'env Env, value: Either<String, Uint8Array>) -> napi::Result<PromiseRaw<'env, ()>> {
        let (l, v) = ((*self.core).clone(), bytes(value));
        errors::promise(env, async move { l.proclaim(v).await })
    }
}

held_members! {
    impl Leadership {
        fenced {
            put: "Put `value` at `key` only while we lead (else code `FENCED`).";
            delete: "Delete `key` only while we lead (else code `FENCED`).";
            txn: "Apply all `ops` atomically only while we lead (else code `FENCED`).";
        }
        loss {
            lost: "Resolves when leadership ends: with the reason when it was lost (session lost, key"
                  "deleted by someone else), with `null` when it ended normally (resigned, client closed).";
            on_lost: "Call `callback(reason)` if leadership is lost (not on resign). Does not keep the process alive.";
        }
        end {
            resign: "Step down (delete the leader key; close the session made for the campaign). Idempotent.";
            async_dispose: "`await using leadership = await election.campaign(...)`: resigns.";
        }
    }
}
