//! service-registry: where services on dynamic host ports announce themselves.
//!
//! Instances `POST /register` their `{Name, Address, Tags}`; a checker probes each
//! `http://ADDRESS/healthz` on a bounded pool of threads and marks, then removes, what stops
//! answering; the registry serves its endpoints as JSON and as an HTML page. The wire format,
//! flag parsing, durations and log format live here too, shared with `dynamic-port-server`.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod blocking;
pub mod checker;
pub mod cidr;
pub mod clock;
pub mod duration;
pub mod flags;
pub mod guard;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod probe;
pub mod service;
pub mod store;
pub mod text;
pub mod url;
pub mod validate;
pub mod views;
pub mod watch;
pub mod wire;

/// The version both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
