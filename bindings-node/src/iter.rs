//! The one mechanism behind every Node async iterator: a native object over a core stream
//! with `next()` (resolves to the next item, or `undefined` at the end) and `return()`
//! (stops it: drops the core stream, which cancels its watch). `index.js` turns each such
//! class into an async iterator with one `async function*` helper. A stream ends by
//! itself when core ends it (its view or client closed).

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use napi::bindgen_prelude::{Either, PromiseRaw, ToNapiValue};
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

            /// Stop iterating and cancel the watch (what `break` in `for await` calls).
            #[napi(js_name = "return", ts_return_type = $next_ts)]
            pub fn stop(&self) {
                self.0.stop()
            }
        }
    };
}
pub(crate) use stream_class;
