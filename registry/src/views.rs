//! Rendered answers, cached until the store changes: a thousand readers of the page or of the
//! JSON between two changes cost one rendering, not a thousand.
//!
//! "Changes" means the watch index: registrations, removals, health transitions. A passing
//! check only moves `LastCheck`, and at 10,000 endpoints that happens 2,000 times a second;
//! re-rendering for each would make the cache useless, so a rendering is also kept until it is
//! [`MAX_AGE`] old, and `LastCheck` may lag by that much.
//!
//! Only small renderings are kept: one larger than [`CACHE_LIMIT`] (judged before it is built,
//! from the number of endpoints and the size of a record in the last rendering) is not built
//! at all but streamed (`stream`), a batch of records at a time, so that what a large registry
//! holds for its readers is a chunk per reader, not a copy of the store per rendering.
//!
//! Memory is bounded by the store, never by the readers: filters come from clients' query
//! strings, so what the cache holds is counted in bytes. The unfiltered JSON and the page are
//! always kept (one each); filtered renderings only while their total stays within
//! [`filtered_budget`] (the unfiltered listing's size, at least [`FILTERED_FLOOR`]), so the
//! whole cache holds at most about three listings' worth. Renderings are built one at a time
//! (a reader who finds the rendering it wants missing waits for the one being built, then
//! looks again), so a crowd of readers arriving together after a change builds one, not one
//! each.

use crate::page;
use crate::reply::Render;
use crate::store::{Filter, Store};
use crate::stream;
use common::wire::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How stale `LastCheck` may be in a cached rendering.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The largest rendering built whole and kept: 1,000 endpoints (about 210 KB of JSON, 330 KB of
/// page) stay cached, read at the speed of a static file; 10,000 (2 MB each) are streamed, so
/// a registry of any size holds at most a few of these for its readers.
pub const CACHE_LIMIT: usize = 512 * 1024;

/// Bytes per record assumed until a rendering has measured them: a record with two tags.
const JSON_RECORD_GUESS: usize = 256;
const PAGE_RECORD_GUESS: usize = 384;

/// Distinct filtered listings kept at once, however small: a bound on the map's own size.
const MAX_FILTERED: usize = 32;

/// The least room filtered renderings get, so that small registries cache a few filters
/// even when their full listing is tiny.
const FILTERED_FLOOR: usize = 1 << 20;

/// Room for filtered renderings: as much as the unfiltered listing takes (a filter selects
/// from it, so one filtered rendering never needs more), and at least [`FILTERED_FLOOR`].
fn filtered_budget(unfiltered_len: usize) -> usize {
    unfiltered_len.max(FILTERED_FLOOR)
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Json(Option<Status>, Vec<String>),
    Page,
}

impl Key {
    /// The two renderings always kept: `GET /endpoints` and the page.
    fn is_filtered(&self) -> bool {
        matches!(self, Key::Json(status, tags) if status.is_some() || !tags.is_empty())
    }
}

/// A rendered body and the watch index it reflects.
#[derive(Clone)]
pub struct Rendered {
    pub index: u64,
    pub body: Arc<[u8]>,
}

struct Entry {
    at: Instant,
    rendered: Rendered,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    /// Bytes of the filtered renderings in `entries`.
    filtered_bytes: usize,
    /// Length of the last unfiltered JSON rendering: the budget's measure, and the capacity a
    /// new JSON rendering starts with.
    unfiltered_len: usize,
}

impl Cache {
    fn fresh(&self, key: &Key, index: u64) -> Option<Rendered> {
        let entry = self.entries.get(key)?;
        (entry.rendered.index == index && entry.at.elapsed() < MAX_AGE).then(|| entry.rendered.clone())
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            if key.is_filtered() {
                self.filtered_bytes -= old.rendered.body.len();
            }
        }
    }

    /// Keeps `rendered` under `key` if the budget allows: filtered renderings make room by
    /// evicting other filtered ones (stale ones first), and one that cannot fit is not kept.
    fn insert(&mut self, key: Key, rendered: Rendered, index: u64) {
        self.remove(&key);
        let len = rendered.body.len();
        if key == Key::Json(None, Vec::new()) {
            self.unfiltered_len = len;
        }
        if key.is_filtered() {
            let budget = filtered_budget(self.unfiltered_len);
            if len > budget {
                return;
            }
            // Stale ones first: they would be rendered again anyway.
            let mut victims: Vec<(bool, Key)> = self
                .entries
                .iter()
                .filter(|(k, _)| k.is_filtered())
                .map(|(k, e)| (e.rendered.index == index && e.at.elapsed() < MAX_AGE, k.clone()))
                .collect();
            victims.sort_by_key(|(fresh, _)| *fresh);
            let mut victims = victims.into_iter();
            let filtered_count = |c: &Cache| c.entries.keys().filter(|k| k.is_filtered()).count();
            while self.filtered_bytes + len > budget || filtered_count(self) >= MAX_FILTERED {
                match victims.next() {
                    Some((_, k)) => self.remove(&k),
                    None => return,
                }
            }
            self.filtered_bytes += len;
        }
        self.entries.insert(key, Entry { at: Instant::now(), rendered });
    }

    /// Bytes held by every rendering in the cache.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries.values().map(|e| e.rendered.body.len()).sum()
    }
}

/// A read's answer: a rendering, or a body to render as it is sent.
pub enum View {
    Whole(Rendered),
    Streamed { index: u64, body: Arc<dyn Render> },
}

impl View {
    /// The rendering, if it was built whole.
    #[cfg(test)]
    pub fn whole(self) -> Option<Rendered> {
        match self {
            View::Whole(rendered) => Some(rendered),
            View::Streamed { .. } => None,
        }
    }
}

/// The cache of rendered listings.
pub struct Views {
    cache: Mutex<Cache>,
    /// Held while a rendering is built: one at a time.
    rendering: Mutex<()>,
    /// Bytes per record of the JSON and of the page, as last measured.
    json_record: Arc<AtomicUsize>,
    page_record: Arc<AtomicUsize>,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            cache: Mutex::default(),
            rendering: Mutex::default(),
            json_record: Arc::new(AtomicUsize::new(JSON_RECORD_GUESS)),
            page_record: Arc::new(AtomicUsize::new(PAGE_RECORD_GUESS)),
        }
    }
}

/// Whether `records` of `per_record` bytes each are more than [`CACHE_LIMIT`].
fn too_large(records: usize, per_record: &AtomicUsize) -> bool {
    records.saturating_mul(per_record.load(Relaxed)) > CACHE_LIMIT
}

impl Views {
    /// `GET /endpoints` with `filter`, as JSON. A filtered listing is judged by the whole
    /// store's size: it cannot be larger.
    pub fn endpoints(&self, store: &Arc<Store>, filter: &Filter) -> View {
        let key = Key::Json(filter.status, filter.tags.clone());
        if too_large(store.len(), &self.json_record) {
            self.lock().remove(&key);
            let body =
                stream::Json { store: store.clone(), filter: filter.clone(), per_record: self.json_record.clone() };
            return View::Streamed { index: store.index(), body: Arc::new(body) };
        }
        View::Whole(self.cached(store, key, |capacity| {
            let snapshot = store.list(filter);
            // Pre-sized from the last unfiltered rendering, so the body is not copied as it
            // grows; a filtered one fits in that (pages not written are never touched).
            let mut body = Vec::with_capacity(capacity);
            if serde_json::to_writer(&mut body, &snapshot.records).is_err() {
                body = b"[]".to_vec();
            }
            if snapshot.records.len() >= 64 && filter == &Filter::default() {
                self.json_record.store(body.len() / snapshot.records.len(), Relaxed);
            }
            Rendered { index: snapshot.index, body: body.into() }
        }))
    }

    /// The HTML page.
    pub fn page(&self, store: &Arc<Store>) -> View {
        if too_large(store.len(), &self.page_record) {
            self.lock().remove(&Key::Page);
            let index = store.index();
            let body = stream::Page {
                store: store.clone(),
                index,
                version: crate::VERSION,
                banner: banner(store),
                per_record: self.page_record.clone(),
            };
            return View::Streamed { index, body: Arc::new(body) };
        }
        View::Whole(self.cached(store, Key::Page, |_| {
            let snapshot = store.list(&Filter::default());
            let html = page::render(&snapshot.records, snapshot.index, crate::VERSION, banner(store).as_deref());
            if snapshot.records.len() >= 64 {
                self.page_record.store(html.len() / snapshot.records.len(), Relaxed);
            }
            Rendered { index: snapshot.index, body: html.into_bytes().into() }
        }))
    }

    /// The cached rendering for `key` if it is current, else a new one from `render`, which is
    /// given the capacity to start with.
    fn cached(&self, store: &Store, key: Key, render: impl FnOnce(usize) -> Rendered) -> Rendered {
        if let Some(hit) = self.lock().fresh(&key, store.index()) {
            return hit;
        }
        let _one_at_a_time = self.rendering.lock().unwrap_or_else(|p| p.into_inner());
        // Another reader may have built it while this one waited.
        let index = store.index();
        let capacity = {
            let mut cache = self.lock();
            if let Some(hit) = cache.fresh(&key, index) {
                return hit;
            }
            // The stale rendering goes before the new one is built, not after: the two would
            // otherwise be held together (and the new one twice while it is copied into its
            // `Arc`), the peak of a registry that is read while it changes.
            cache.remove(&key);
            // The store's lock is taken by render(), never with the cache's held.
            cache.unfiltered_len + cache.unfiltered_len / 16
        };
        let rendered = render(capacity);
        self.lock().insert(key, rendered.clone(), store.index());
        rendered
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the page says above its table, if anything: the warm-up, or the eviction guard's hold.
fn banner(store: &Store) -> Option<String> {
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
    warming.or(hold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardConfig;
    use crate::health::Thresholds;
    use common::validate::Valid;
    use std::time::SystemTime;

    fn store_of(n: usize) -> Arc<Store> {
        let store = Store::new(Thresholds::default(), n, GuardConfig::default());
        for i in 0..n {
            let valid = Valid {
                name: format!("endpoint-{i:05}"),
                address: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1).parse().unwrap(),
                tags: vec![format!("tag{}", i % 20), "web".into()],
                ttl: None,
            };
            store.register(valid, SystemTime::now()).unwrap();
        }
        Arc::new(store)
    }

    fn filter(status: Option<Status>, tags: &[String]) -> Filter {
        Filter { status, tags: tags.to_vec() }
    }

    #[test]
    fn many_distinct_filters_cannot_grow_the_cache_past_its_budget() {
        let store = store_of(1_200);
        let views = Views::default();
        let full = views.endpoints(&store, &Filter::default()).whole().expect("cached").body.len();
        let page = views.page(&store).whole().expect("cached").body.len();
        let limit = full + page + filtered_budget(full);
        // Every tag alone, with a status, and pairs: hundreds of distinct query strings, most
        // of them as large as the whole listing ("web" matches every endpoint).
        let mut tags: Vec<Vec<String>> = (0..20).map(|t| vec![format!("tag{t}")]).collect();
        tags.push(vec!["web".into()]);
        tags.extend((0..20).map(|t| vec![format!("tag{t}"), "web".into()]));
        let mut most = 0;
        for status in [None, Some(Status::Pending), Some(Status::Passing), Some(Status::Critical)] {
            for t in &tags {
                let answer = views.endpoints(&store, &filter(status, t)).whole().expect("cached");
                assert!(!answer.body.is_empty());
                let cache = views.lock();
                most = most.max(cache.bytes());
                assert_eq!(cache.filtered_bytes, cache.bytes() - full - page, "the count matches the entries");
                assert!(cache.entries.len() <= MAX_FILTERED + 2);
            }
        }
        assert!(most <= limit, "the cache held {most} bytes, over its budget of {limit}");
        // The two always-kept renderings are still there, and answers are still right.
        let cache = views.lock();
        assert!(cache.entries.contains_key(&Key::Page));
        assert!(cache.entries.contains_key(&Key::Json(None, Vec::new())));
    }

    #[test]
    fn a_filtered_rendering_larger_than_the_budget_is_answered_but_not_kept() {
        let mut cache = Cache { unfiltered_len: 10, ..Cache::default() };
        let big = Rendered { index: 1, body: vec![b'x'; FILTERED_FLOOR + 1].into() };
        let key = Key::Json(Some(Status::Passing), Vec::new());
        cache.insert(key.clone(), big, 1);
        assert!(!cache.entries.contains_key(&key));
        assert_eq!(cache.filtered_bytes, 0);
        let small = Rendered { index: 1, body: vec![b'x'; 100].into() };
        cache.insert(key.clone(), small, 1);
        assert_eq!(cache.filtered_bytes, 100);
        cache.insert(key, Rendered { index: 2, body: vec![b'y'; 50].into() }, 2);
        assert_eq!(cache.filtered_bytes, 50, "a replaced rendering's bytes are given back");
    }

    #[test]
    fn a_rendering_is_reused_until_the_index_moves() {
        let store = store_of(3);
        let views = Views::default();
        let first = views.endpoints(&store, &Filter::default()).whole().unwrap();
        let again = views.endpoints(&store, &Filter::default()).whole().unwrap();
        assert!(Arc::ptr_eq(&first.body, &again.body));
        store.deregister("endpoint-00000");
        let after = views.endpoints(&store, &Filter::default()).whole().unwrap();
        assert!(after.index > first.index);
        assert!(!String::from_utf8_lossy(&after.body).contains("endpoint-00000"));
    }

    fn streamed(view: View) -> Vec<u8> {
        let View::Streamed { body, .. } = view else { panic!("a large rendering is streamed, not kept") };
        let mut out = Vec::new();
        body.render(&mut out).unwrap();
        out
    }

    #[test]
    fn a_listing_over_the_limit_is_streamed_with_the_bytes_a_whole_rendering_has() {
        // More records than one batch, so that batches are joined.
        let store = store_of(3_000);
        let views = Views::default();
        for f in [Filter::default(), filter(None, &["tag3".into()]), filter(Some(Status::Pending), &["web".into()])] {
            let body = streamed(views.endpoints(&store, &f));
            let whole = serde_json::to_vec(&store.list(&f).records).unwrap();
            assert_eq!(body, whole, "filter {f:?}");
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed.len(), if f.tags.first().is_some_and(|t| t == "tag3") { 150 } else { 3_000 });
        }
        let snapshot = store.list(&Filter::default());
        let page = streamed(views.page(&store));
        assert_eq!(
            String::from_utf8(page).unwrap(),
            page::render(&snapshot.records, snapshot.index, crate::VERSION, None)
        );
        assert_eq!(views.lock().bytes(), 0, "nothing that large is kept");
    }

    #[test]
    fn small_listings_stay_cached_and_an_empty_store_streams_nothing_odd() {
        let store = store_of(1_000);
        let views = Views::default();
        assert!(views.endpoints(&store, &Filter::default()).whole().is_some(), "1,000 endpoints are kept");
        assert!(views.page(&store).whole().is_some());
        let empty = store_of(0);
        let body = stream::Json { store: empty, filter: Filter::default(), per_record: Arc::default() };
        let mut out = Vec::new();
        body.render(&mut out).unwrap();
        assert_eq!(out, b"[]");
    }

    /// A client that reads nothing: its first write says so and blocks until it is let go.
    struct Stalled {
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl std::io::Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv_timeout(Duration::from_secs(30));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_stalls_blocks_no_registration() {
        let store = store_of(3_000);
        let views = Views::default();
        let View::Streamed { body, .. } = views.endpoints(&store, &Filter::default()) else { panic!("streamed") };
        let (release_tx, release) = std::sync::mpsc::channel();
        let (entered, stuck) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || body.render(&mut Stalled { entered, release }));
        stuck.recv_timeout(Duration::from_secs(10)).expect("the reader started writing");
        // The reader is stuck in a write; registrations must not be.
        for i in 0..100 {
            let valid = Valid {
                name: format!("endpoint-{i:05}"),
                address: format!("10.0.0.{}:8080", i + 1).parse().unwrap(),
                tags: vec!["moved".into()],
                ttl: None,
            };
            store.register(valid, SystemTime::now()).unwrap();
        }
        assert_eq!(store.get("endpoint-00099").unwrap().tags, ["moved"]);
        drop(release_tx);
        reader.join().unwrap().unwrap();
    }
}
