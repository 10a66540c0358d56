//! The demo, one part per recipe; `src/bin/demo.rs` runs them in order.

pub mod config;
pub mod election;
pub mod lock;
pub mod registry;
pub mod session;
