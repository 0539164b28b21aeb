//! Rendered answers, cached until the store changes: a thousand readers of the page or of the
//! JSON between two changes cost one rendering, not a thousand.
//!
//! "Changes" means the watch index: registrations, removals, health transitions. A passing
//! check only moves `LastCheck`, and at 10,000 endpoints that happens 2,000 times a second;
//! re-rendering for each would make the cache useless, so a rendering is also kept until it is
//! [`MAX_AGE`] old, and `LastCheck` may lag by that much.

use crate::page;
use crate::store::{Filter, Store};
use common::wire::Status;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How stale `LastCheck` may be in a cached rendering.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Distinct listings kept at once. Filters come from clients, so the cache must not grow with
/// them; past this many it starts again empty.
const MAX_CACHED: usize = 32;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Json(Option<Status>, Vec<String>),
    Page,
}

/// A rendered body and the watch index it reflects.
#[derive(Clone)]
pub struct Rendered {
    pub index: u64,
    pub body: Arc<[u8]>,
}

/// The cache of rendered listings.
#[derive(Default)]
pub struct Views {
    cache: Mutex<HashMap<Key, (Instant, Rendered)>>,
}

impl Views {
    /// `GET /endpoints` with `filter`, as JSON.
    pub fn endpoints(&self, store: &Store, filter: &Filter) -> Rendered {
        let key = Key::Json(filter.status, filter.tags.clone());
        self.cached(store, key, || {
            let snapshot = store.list(filter);
            let body = serde_json::to_vec(&snapshot.records).unwrap_or_else(|_| b"[]".to_vec());
            Rendered { index: snapshot.index, body: body.into() }
        })
    }

    /// The HTML page.
    pub fn page(&self, store: &Store) -> Rendered {
        self.cached(store, Key::Page, || {
            let snapshot = store.list(&Filter::default());
            let hold = store.eviction_hold().map(|hold| {
                format!(
                    "Removals are on hold: {} of {} checks of passing endpoints failed together, so the registry \
                     suspects its own network. Critical endpoints stay listed until most of the {} pass again.",
                    hold.failed, hold.checked, hold.of
                )
            });
            let warming = store.warming().map(|_| {
                "Warming up: this registry started moments ago, and servers come back as they renew, within their \
                 register interval. The list may be incomplete until then, and nothing is removed."
                    .to_string()
            });
            let banner = warming.or(hold);
            let html = page::render(&snapshot.records, snapshot.index, crate::VERSION, banner.as_deref());
            Rendered { index: snapshot.index, body: html.into_bytes().into() }
        })
    }

    fn cached(&self, store: &Store, key: Key, render: impl FnOnce() -> Rendered) -> Rendered {
        let index = store.index();
        if let Some((at, hit)) = self.lock().get(&key) {
            if hit.index == index && at.elapsed() < MAX_AGE {
                return hit.clone();
            }
        }
        // Render with no lock held; two readers may render the same version, which is harmless.
        let rendered = render();
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), rendered.clone()));
        rendered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Rendered)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
