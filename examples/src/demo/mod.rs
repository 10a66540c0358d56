//! The demo, one part per recipe; `src/bin/demo.rs` runs them in order.

pub mod barrier;
pub mod config;
pub mod counter;
pub mod election;
pub mod leader;
pub mod lock;
pub mod queue;
pub mod registry;
pub mod rwlock;
pub mod semaphore;
pub mod session;
pub mod workqueue;
