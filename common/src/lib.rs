//! What `service-registry` and `dynamic-port-server` both speak, so the two cannot drift: the
//! seed's wire format and its validation, Go-style flags and durations, times as the seed
//! prints them, the seed's log format, and the one health probe (the registry's checker and
//! the server's `healthcheck` subcommand ask the same question the same way).
//!
//! Nothing here knows about the registry's store or the server's web page: both depend on this
//! crate, never on each other.
#![forbid(unsafe_code)]

pub mod address;
pub mod clock;
pub mod duration;
pub mod flags;
pub mod html;
pub mod logging;
pub mod probe;
pub mod token;
pub mod validate;
pub mod wire;

/// The version both binaries report (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
