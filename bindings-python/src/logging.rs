//! Core `tracing` events -> Python `logging` (logger `etcd_recipes`).
//!
//! Cheap by construction: only events whose target starts with `etcd_recipes` are
//! considered; those below the logger's effective level (cached, refreshed at most
//! once a second when events flow, and at every `Client.connect`) cost one atomic load.
//! Events that pass go through a bounded channel to one forwarding thread, so tokio
//! workers never wait for the GIL; if Python cannot keep up, events are dropped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Instant;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Python level number for a tracing level.
fn py_level(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The logger's effective level (Python numbering); starts at WARNING like Python's root.
static LEVEL: AtomicU8 = AtomicU8::new(30);
/// When LEVEL was last read from Python, in ms since START.
static REFRESHED_MS: AtomicI64 = AtomicI64::new(0);
static START: OnceLock<Instant> = OnceLock::new();
/// The forwarding thread's channel, and the process that started the thread: a forked
/// child has the channel but not the thread, so its first event starts its own.
static SENDER: std::sync::Mutex<Option<(u32, SyncSender<Record>)>> = std::sync::Mutex::new(None);

/// The channel to this process's forwarding thread (started on first use in a process).
fn sender() -> Option<SyncSender<Record>> {
    let pid = std::process::id();
    let mut s = SENDER.lock().unwrap_or_else(|p| p.into_inner());
    match s.as_ref() {
        Some((p, tx)) if *p == pid => Some(tx.clone()),
        // Not installed: the host process had its own tracing subscriber.
        None => None,
        Some(_) => {
            let (tx, rx) = sync_channel::<Record>(4096);
            std::thread::Builder::new().name("etcd-recipes-log".into()).spawn(move || forwarder(rx)).ok()?;
            *s = Some((pid, tx.clone()));
            Some(tx)
        }
    }
}

fn now_ms() -> i64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

struct Record {
    level: u8,
    /// Python logger name: the tracing target with `::` -> `.` (children of `etcd_recipes`).
    target: &'static str,
    message: String,
    /// Not a real record: just re-read the level.
    refresh_only: bool,
}

/// Re-read the logger's effective level (attached).
pub fn refresh_level(py: Python<'_>) {
    if let Ok(l) = logger(py).and_then(|lg| lg.call_method0("getEffectiveLevel")).and_then(|v| v.extract::<i64>()) {
        LEVEL.store(l.clamp(0, 255) as u8, Ordering::Relaxed);
    }
    REFRESHED_MS.store(now_ms(), Ordering::Relaxed);
}

fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?.call_method1("getLogger", ("etcd_recipes",))
}

fn forwarder(rx: std::sync::mpsc::Receiver<Record>) {
    while let Ok(rec) = rx.recv() {
        let _ = crate::runtime::python_gate(|py| {
            refresh_level(py);
            if rec.refresh_only || rec.level < LEVEL.load(Ordering::Relaxed) {
                return;
            }
            let name = rec.target.replace("::", ".");
            if let Ok(lg) = py.import("logging").and_then(|m| m.call_method1("getLogger", (name,))) {
                // A failing handler is Python's business; never propagate into Rust.
                if lg.call_method1("log", (rec.level, rec.message)).is_err() {
                    PyErr::take(py);
                }
            }
        });
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

struct PyLogLayer;

impl<S: Subscriber> Layer<S> for PyLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("etcd_recipes") {
            return;
        }
        let level = py_level(meta.level());
        let stale = now_ms() - REFRESHED_MS.load(Ordering::Relaxed) > 1000;
        let enabled = level >= LEVEL.load(Ordering::Relaxed);
        if !enabled && !stale {
            return;
        }
        let Some(tx) = sender() else { return };
        if stale {
            // Claim the refresh so that only one event per second asks for it.
            REFRESHED_MS.store(now_ms(), Ordering::Relaxed);
        }
        let message = if enabled {
            let mut f = Fields { message: String::new(), rest: String::new() };
            event.record(&mut f);
            f.message.push_str(&f.rest);
            f.message
        } else {
            String::new()
        };
        match tx.try_send(Record { level, target: meta.target(), message, refresh_only: !enabled }) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Install the bridge as the global tracing subscriber (unless the host process already
/// installed one) and start the forwarding thread.
pub fn install(py: Python<'_>) {
    let _ = START.get_or_init(Instant::now);
    refresh_level(py);
    let (tx, rx) = sync_channel::<Record>(4096);
    {
        let mut s = SENDER.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_some() {
            return;
        }
        *s = Some((std::process::id(), tx));
    }
    let _ = std::thread::Builder::new().name("etcd-recipes-log".into()).spawn(move || forwarder(rx));
    // Events only: the bridge has no use for spans, and a span that no layer wants is not
    // made at all (each lock acquire and release opens one).
    let filter = tracing_subscriber::filter::filter_fn(|m| m.is_event() && m.target().starts_with("etcd_recipes"));
    let subscriber = tracing_subscriber::registry().with(PyLogLayer.with_filter(filter));
    let _ = tracing::subscriber::set_global_default(subscriber);
}
