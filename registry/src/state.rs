//! The registry's shared state, as request handlers see it: built once by `startup`, read by
//! every connection's thread.

use crate::access::{ProbePolicy, WriteToken};
use crate::checker::Checker;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::views::Views;
use std::sync::Arc;

/// Everything a request may need.
pub struct Registry {
    pub store: Arc<Store>,
    pub checker: Checker,
    pub views: Views,
    pub token: WriteToken,
    pub probe_policy: ProbePolicy,
    pub metrics: Arc<Metrics>,
    /// `-max-watchers`: blocking queries waiting at once.
    pub max_waiters: usize,
}
