//! `Session`: one lease kept alive by core; its loss as a Promise or a callback.

use etcd_recipes::SessionState;
use napi::bindgen_prelude::i64n;
use napi_derive::napi;

use crate::members::held_members;
use crate::Held;

/// One lease kept alive in the background (renewed every TTL/6, at most every 500 ms)
/// until closed or lost.
///
/// It declares itself lost as soon as renewal can no longer be confirmed before the lease
/// would expire: `await session.lost()` or `session.onLost(cb)` to stop working in time.
#[napi]
pub struct Session {
    pub(crate) core: Held<etcd_recipes::Session>,
}

impl From<etcd_recipes::Session> for Session {
    fn from(core: etcd_recipes::Session) -> Self {
        Session { core: Held::new(core) }
    }
}

#[napi]
impl Session {
    /// The lease id as a bigint.
    #[napi(getter)]
    pub fn lease_id(&self) -> i64n {
        i64n(self.core.lease_id())
    }

    /// The lease id in lowercase hex (as in lock and election keys, and `etcdctl lease list`).
    #[napi(getter)]
    pub fn lease_id_hex(&self) -> String {
        format!("{:x}", self.core.lease_id())
    }

    /// The TTL etcd granted, in seconds.
    #[napi(getter)]
    pub fn ttl(&self) -> i64 {
        self.core.ttl()
    }

    /// True while renewals are confirmed.
    #[napi(getter)]
    pub fn is_alive(&self) -> bool {
        self.core.is_alive()
    }

    /// `'alive'`, `'lost'` or `'closed'`.
    #[napi(getter, ts_return_type = "'alive' | 'lost' | 'closed'")]
    pub fn state(&self) -> &'static str {
        match self.core.state() {
            SessionState::Alive => "alive",
            SessionState::Lost(_) => "lost",
            SessionState::Closed => "closed",
        }
    }
}

held_members! {
    impl Session {
        loss {
            lost: "Resolves when the session stops being alive: with the reason when it was lost"
                  "(renewals not confirmed, lease expired or revoked), with `null` when it was closed"
                  "(`close()`, the client closed, process exit).";
            on_lost: "Call `callback(reason)` if the session is lost (not when it is closed). Unlike an"
                     "awaited `lost()`, a registered callback does not keep the process alive.";
        }
        end {
            close: "Stop renewing and revoke the lease (every key attached to it is deleted). Idempotent.";
            async_dispose: "`await using session = await client.session()`: closes the session.";
        }
    }
}
