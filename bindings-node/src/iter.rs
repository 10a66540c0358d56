//! The one mechanism behind every Node async iterator: a native object over a core stream
//! with `next()` (resolves to the next item, or `undefined` at the end) and `return()`
//! (stops it: drops the core stream, which cancels its watch). `index.js` turns each such
//! class into an async iterator with one `async function*` helper. A stream ends by
//! itself when core ends it (its view or client closed).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::StreamExt;
use napi::bindgen_prelude::{Either, Either3, PromiseRaw, ToNapiValue};
use napi::Env;
use tokio::sync::{watch, Mutex};

use crate::{errors, Held};

type Inner<T> = Arc<Mutex<Option<BoxStream<'static, etcd_recipes::Result<T>>>>>;

pub(crate) struct Cell<T> {
    stream: Held<Inner<T>>,
    stop: watch::Sender<bool>,
}

impl<T: ToNapiValue + Send + 'static> Cell<T> {
    pub(crate) fn new<S>(stream: S) -> Self
    where
        S: futures::Stream<Item = etcd_recipes::Result<T>> + Send + 'static,
    {
        Cell { stream: Held::new(Arc::new(Mutex::new(Some(stream.boxed())))), stop: watch::channel(false).0 }
    }

    /// The next item, or `undefined` once the stream ended or was stopped.
    pub(crate) fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Either<T, ()>>> {
        let (stream, mut stop) = ((*self.stream).clone(), self.stop.subscribe());
        errors::promise(env, async move {
            let next = async {
                let mut s = stream.lock_owned().await;
                let item = match s.as_mut() {
                    Some(st) => st.next().await,
                    None => None,
                };
                if item.is_none() {
                    s.take();
                }
                item
            };
            let item = tokio::select! {
                item = next => item,
                _ = stop.wait_for(|s| *s) => None,
            };
            item.transpose().map(|v| v.map_or(Either::B(()), Either::A))
        })
    }

    /// The next item if the stream has one at hand, polled once here on the JS thread:
    /// an item that arrived while JS was busy (a config change that came with the put's
    /// answer) is handed over without the two thread wake-ups of `next()`. `false` when it
    /// has none yet (or a `next()` holds the stream): then `next()`; `undefined` once the
    /// stream ended. (`false`, not `null`: the leader observer yields `null` for "no
    /// leader", and no stream yields booleans.) The iterator of `index.js` calls one at a time, so items keep their
    /// order.
    pub(crate) fn take(&self, env: &Env) -> napi::Result<Either3<T, bool, ()>> {
        if *self.stop.borrow() {
            return Ok(Either3::B(false)); // `next()` says it ended
        }
        let Ok(mut g) = self.stream.try_lock() else { return Ok(Either3::B(false)) };
        let Some(s) = g.as_mut() else { return Ok(Either3::C(())) };
        let _entered = crate::RUNTIME.get().map(|h| h.enter());
        // A waker that does nothing: if nothing is at hand, `next()` polls again with its own.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match s.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(v))) => Ok(Either3::A(v)),
            Poll::Ready(Some(Err(e))) => Err(errors::sync(env, e)),
            Poll::Ready(None) => {
                g.take();
                Ok(Either3::C(()))
            }
            Poll::Pending => Ok(Either3::B(false)),
        }
    }

    /// Stop: a pending `next()` resolves to `undefined`, the core stream is dropped.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
        let stream = (*self.stream).clone();
        crate::spawn(async move {
            stream.lock().await.take();
        });
    }
}

/// A native stream class `$name` of `$item`s (`$doc` its doc comment, `$next_ts` the TS
/// type of `next()` once `index.js` made it an async iterator).
macro_rules! stream_class {
    ($name:ident, $item:ty, $next_ts:literal, $doc:literal) => {
        #[doc = $doc]
        #[napi_derive::napi]
        pub struct $name(crate::iter::Cell<$item>);

        #[napi_derive::napi]
        impl $name {
            /// The next item; `done` once it ended (`return()`, its view or client closed).
            #[napi(ts_return_type = $next_ts)]
            pub fn next<'env>(
                &self,
                env: &'env napi::Env,
            ) -> napi::Result<napi::bindgen_prelude::PromiseRaw<'env, napi::bindgen_prelude::Either<$item, ()>>> {
                self.0.next(env)
            }

            /// The next item if one is at hand, else `false` (`undefined`: ended); for the
            /// iterator of `index.js`.
            #[napi(js_name = "_take", skip_typescript)]
            pub fn take(
                &self,
                env: &napi::Env,
            ) -> napi::Result<napi::bindgen_prelude::Either3<$item, bool, ()>> {
                self.0.take(env)
            }

            /// Stop iterating and cancel the watch (what `break` in `for await` calls).
            #[napi(js_name = "return", ts_return_type = $next_ts)]
            pub fn stop(&self) {
                self.0.stop()
            }
        }
    };
}
pub(crate) use stream_class;
