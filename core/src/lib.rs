//! # etcd-recipes
//!
//! The four coordination recipes that services build on etcd, written once and
//! correctly: a distributed [lock](crate::lock), [leader election](crate::election),
//! a service [registry and discovery](crate::registry), and a watched
//! [configuration cache](crate::config).
//!
//! Locks, elections and registrations use exactly the key layout of etcd's Go
//! `concurrency` and `naming/endpoints` packages, so they interoperate with
//! `etcdctl lock`, `etcdctl elect`, Go services and etcd's gRPC resolver.
//!
//! Everything runs on the caller's tokio runtime; nothing here creates one.
//!
//! ```no_run
//! use etcd_recipes::{Client, ClientOptions, Session};
//! # async fn demo() -> etcd_recipes::Result<()> {
//! let client = Client::connect(ClientOptions::new(["127.0.0.1:2379"])).await?;
//! let session = Session::new(&client, 10).await?;
//! println!("lease {:x} alive: {}", session.lease_id(), session.is_alive());
//! session.close().await?;
//! # Ok(()) }
//! ```

pub mod barrier;
pub mod client;
pub mod config;
pub mod connection;
pub mod counter;
pub mod election;
pub mod endpoints;
pub mod error;
pub mod fence;
pub mod grpc;
pub mod health;
pub(crate) mod keepalive;
pub mod inspect;
pub mod leader;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
pub mod picker;
pub(crate) mod mirror;
pub mod queue;
pub mod registry;
pub mod rwlock;
pub mod semaphore;
pub mod session;
mod tlsprobe;
pub(crate) mod waitqueue;
pub(crate) mod watchmux;
pub mod workqueue;
#[cfg(feature = "testing")]
pub mod testing;

/// The etcd client crate this one is built on, for anything the recipes do not cover.
pub use etcd_client;
pub use client::{Client, ClientOptions, TlsConfig};
pub use connection::{ConnectionState, ConnectionStates};
pub use endpoints::{EndpointHealth, HealthCheck};
pub use error::{Error, ErrorKind, Result};
pub use fence::{Fence, FencedOp};
pub use lifecycle::{shutdown, shutdown_blocking, ShutdownReport};
pub use session::{Session, SessionSource, SessionState};
