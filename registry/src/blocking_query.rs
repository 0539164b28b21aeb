//! Blocking queries, as Consul has them: `?index=N&wait=30s` holds a read until the watch index
//! passes N or the wait ends, then answers as usual. A waiting query sleeps on the store's
//! condition variable (no polling) on its connection's thread; their number is capped.

use crate::reads::{self, Read};
use crate::reply::{self, Reply};
use crate::route::Listener;
use crate::state::Registry;
use common::duration;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// How long a query waits when it gives no `wait`: Consul's default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The longest wait granted: Consul's cap.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// A blocking query's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The index the client has seen; the answer waits for a larger one.
    pub seen: u64,
    pub wait: Duration,
}

/// Reads `index` and `wait` from a query's pairs. `Ok(None)` without `index`: not a blocking
/// query.
pub fn requested(pairs: &[(String, String)]) -> Result<Option<Wait>, String> {
    let value = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let Some(index) = value("index") else { return Ok(None) };
    let seen = index.parse::<u64>().map_err(|_| format!("index must be a whole number, not {index:?}"))?;
    let wait = match value("wait") {
        None => DEFAULT_WAIT,
        Some(text) => duration::parse(text).map_err(|e| e.to_string())?,
    };
    Ok(Some(Wait { seen, wait: wait.min(MAX_WAIT) }))
}

/// Up to a sixteenth more than asked, as Consul adds, so that many watchers started together do
/// not all return together.
fn with_jitter(wait: Duration) -> Duration {
    let fraction = RandomState::new().hash_one(SystemTime::now()) % 1000;
    wait + wait / 16 * fraction as u32 / 1000
}

/// Answers `request` once the index passes `wait.seen` or the wait ends; at the cap, answers
/// 429 at once. It waits on the connection's own thread (requests are answered there), so a
/// waiting query holds no thread of its own, stays within `-max-connections`, and no idle
/// timer runs on its connection meanwhile.
pub fn wait_then_answer(registry: &Registry, request: tiny_http::Request, listener: Listener, wait: Wait, read: Read) {
    let waiters = &registry.metrics.waiters;
    if waiters.fetch_add(1, Ordering::AcqRel) >= registry.max_waiters as u64 {
        waiters.fetch_sub(1, Ordering::AcqRel);
        let reply = Reply::error(
            429,
            format!(
                "{} blocking queries are already waiting, the most this registry allows: retry later, or without index=",
                registry.max_waiters
            ),
        )
        .with_header("Retry-After", "1".into());
        return reply::respond(&registry.metrics, request, listener, read.route(), reply);
    }
    registry.store.wait_for_change(wait.seen, Instant::now() + with_jitter(wait.wait));
    waiters.fetch_sub(1, Ordering::AcqRel);
    let reply = reads::answer(registry, &read);
    reply::respond(&registry.metrics, request, listener, read.route(), reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        crate::url::query_pairs(query).unwrap()
    }

    #[test]
    fn reads_index_and_wait() {
        assert_eq!(requested(&pairs("status=passing")), Ok(None));
        assert_eq!(requested(&pairs("index=7")), Ok(Some(Wait { seen: 7, wait: DEFAULT_WAIT })));
        assert_eq!(requested(&pairs("index=7&wait=30s")), Ok(Some(Wait { seen: 7, wait: Duration::from_secs(30) })));
        assert_eq!(requested(&pairs("index=7&wait=1h")), Ok(Some(Wait { seen: 7, wait: MAX_WAIT })));
        assert!(requested(&pairs("index=x")).unwrap_err().contains("index must be"));
        assert!(requested(&pairs("index=1&wait=5")).unwrap_err().contains("invalid duration"));
    }

    proptest::proptest! {
        #[test]
        fn any_pairs_are_read_or_refused_without_panicking(
            pairs in proptest::collection::vec(("index|wait|[a-z]{1,5}", ".{0,12}"), 0..6),
        ) {
            let _ = requested(&pairs);
        }
    }

    #[test]
    fn jitter_adds_at_most_a_sixteenth() {
        for _ in 0..100 {
            let w = with_jitter(Duration::from_secs(16));
            assert!(w >= Duration::from_secs(16) && w <= Duration::from_secs(17), "{w:?}");
        }
    }
}
