//! service-registry: where services on dynamic host ports announce themselves.
//!
//! Instances `POST /register` their `{Name, Address, Tags}`; a checker probes each
//! `http://ADDRESS/healthz` and marks, then removes, what stops answering; the registry serves
//! its endpoints as JSON and as an HTML page. What the registry and the server both speak
//! (wire format, validation, flags, durations, log format, the probe) is the `common` crate.
//!
//! The modules import only downward:
//!
//! ```text
//! startup      binds the listeners, starts the checker, hands requests to api
//! api          routing and writes          -> blocking_query, reads, reply, route, state
//! blocking_query  ?index=&wait= reads      -> reads, reply, state
//! reads        listings, records, the page -> reply, state, views, store
//! reply        answers on the wire         -> metrics, route, text
//! state        the shared Registry         -> store, checker, views, access, metrics
//! checker      one thread, every probe     -> store, metrics, common::probe
//! views        cached renderings           -> page, stream, store
//! stream       renderings written in pieces -> page, reply, store
//! page         the HTML                    -> common::wire
//! store        endpoints, the watch index  -> health, guard, text, common::wire
//! metrics      counters, by Route          -> route
//! health, guard, access, cidr, route, text, url: leaves (access -> cidr)
//! ```
#![forbid(unsafe_code)]

mod access;
mod api;
mod blocking_query;
mod checker;
mod cidr;
mod file_limit;
mod guard;
mod health;
mod metrics;
mod page;
mod reads;
mod reply;
mod route;
mod startup;
mod state;
mod store;
mod stream;
mod text;
mod url;
mod views;
pub mod watch;

pub use access::{ProbePolicy, WriteToken};
pub use checker::CheckConfig;
pub use cidr::Cidr;
pub use guard::GuardConfig;
pub use health::Thresholds;
pub use startup::{
    start, Config, Running, StartError, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_ENDPOINTS, DEFAULT_MAX_WAITERS,
    DEFAULT_WARM_UP,
};
/// The store on its own, for embedding and for its model-based tests.
pub use store::{Applied, BeforeCheck, Change, CheckJob, Filter, Store, StoreError};

/// The version the registry reports.
pub const VERSION: &str = common::VERSION;
