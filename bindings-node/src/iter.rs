//! The one piece every Node async iterator shares: a core stream behind a cancel switch.
//! `next()` waits for the stream's next item, the iterator's `return()` (a `break` in
//! `for await`) or the client's close, whichever comes first; `return()` drops the stream,
//! which cancels its watch in core.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{watch, Mutex};

use crate::client::{drop_in_runtime, Scope};

pub(crate) struct StreamCell<T> {
    scope: Arc<Scope>,
    stream: Arc<Mutex<Option<BoxStream<'static, etcd_recipes::Result<T>>>>>,
    cancel: watch::Sender<bool>,
}

impl<T: Send + 'static> StreamCell<T> {
    pub(crate) fn new(scope: Arc<Scope>, stream: BoxStream<'static, etcd_recipes::Result<T>>) -> Self {
        let (cancel, _) = watch::channel(false);
        StreamCell { scope, stream: Arc::new(Mutex::new(Some(stream))), cancel }
    }

    /// A future for the next item: `Ok(None)` when the iteration is over.
    pub(crate) fn next(&self) -> impl std::future::Future<Output = etcd_recipes::Result<Option<T>>> + Send + 'static {
        let stream = self.stream.clone();
        let mut cancelled = self.cancel.subscribe();
        let closed = self.scope.closed();
        async move {
            let mut guard = tokio::select! {
                g = stream.lock() => g,
                _ = cancelled.wait_for(|c| *c) => return Ok(None),
            };
            let Some(s) = guard.as_mut() else { return Ok(None) };
            let item = tokio::select! {
                item = s.next() => item,
                _ = cancelled.wait_for(|c| *c) => None,
                _ = closed => None,
            };
            match item {
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(e)) => Err(e),
                None => {
                    drop_in_runtime(guard.take());
                    Ok(None)
                }
            }
        }
    }

    /// End the iteration and drop the core stream.
    pub(crate) fn close(&self) -> impl std::future::Future<Output = etcd_recipes::Result<()>> + Send + 'static {
        self.cancel.send_replace(true);
        let stream = self.stream.clone();
        async move {
            let taken = stream.lock().await.take();
            drop(taken);
            Ok(())
        }
    }
}

impl<T> Drop for StreamCell<T> {
    fn drop(&mut self) {
        self.cancel.send_replace(true);
        if let Ok(mut g) = self.stream.try_lock() {
            drop_in_runtime(g.take());
        }
    }
}
