//! The one owner of the registry's state: a `Mutex<HashMap>` of endpoints and the counters that
//! say when it changed. No other module locks it, and no lock is held across network I/O:
//! the checker takes a [`CheckJob`], probes with the lock released, and reports back.

use crate::guard::{EvictionGuard, GuardConfig, GuardEvent, Hold};
use crate::health::{Health, Thresholds};
use crate::text;
use common::clock;
use common::probe::Outcome;
use common::validate::Valid;
use common::wire::{Endpoint, Status};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the checker needs to probe one endpoint, and to know whether its answer still applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckJob {
    pub name: String,
    pub address: SocketAddr,
    /// Changes whenever the Name is registered at a new Address; a result for an older
    /// generation is dropped.
    pub generation: u64,
}

/// Why a registration was refused by the store (validation happened before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The configured cap on endpoints is reached.
    Full { limit: usize },
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new Name.
    Created,
    /// A known Name at a new Address: its health starts again from pending.
    Moved,
    /// A known Name at the same Address: tags replaced, health kept.
    Renewed,
}

/// The answer to a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub record: Endpoint,
    pub change: Change,
    /// Set when the endpoint must be checked at once (new or moved).
    pub check_now: Option<CheckJob>,
}

/// What the checker should do with a due check, asked just before it probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeCheck {
    /// The endpoint is registered as the job says: probe it.
    Probe,
    /// The endpoint is gone or was re-registered elsewhere: drop the job.
    Stale,
    /// Its lease ran out (not registered again within its TTL): removed now, here is its record.
    Expired { record: Endpoint, ttl: Duration },
}

/// What a check result did to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The endpoint is gone or was re-registered elsewhere; the result was dropped.
    Stale,
    /// Recorded; `from` and `to` differ when the status changed.
    Recorded { from: Status, to: Status },
    /// Critical for longer than allowed: removed.
    Removed,
}

/// Which records a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<Status>,
    /// Every one of these tags must be present.
    pub tags: Vec<String>,
}

/// Part of a listing: see [`Store::batch`].
#[derive(Debug, Clone)]
pub struct Batch {
    pub records: Vec<Endpoint>,
    /// The Name to read the next batch after; `None` at the end.
    pub next: Option<String>,
}

/// A consistent listing: the records and the watch index at the moment it was taken.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub index: u64,
    pub records: Vec<Endpoint>,
}

/// One endpoint as the store keeps it: compact (times as milliseconds, the address parsed, the
/// tags in one allocation, the Name only as the map's key), since at 100,000 endpoints every
/// byte is 100 KB. It is boxed in the map, so the map's nodes stay small (a node holds eleven
/// of them) and one record costs one allocation of its own size. The wire record is built from
/// it when asked for: from a copy taken while the store's lock is held and turned into text
/// after it is released, so that registrations and probe results queue on the lock for a map
/// lookup and not for formatting.
#[derive(Clone)]
struct Entry {
    address: SocketAddr,
    /// Every tag followed by `\n`: validated tags hold no control character, and one string is
    /// one allocation where a `Vec<String>` was one per tag and one more for the vector.
    tags: Box<str>,
    status: Status,
    consecutive_failures: u32,
    /// Milliseconds since 1970, as `RegisteredAt` shows them.
    registered_at: u64,
    /// Milliseconds since 1970 of the last check; 0 before the first.
    last_check: u64,
    last_error: Option<Box<str>>,
    generation: u64,
    critical_since: Option<Instant>,
    /// Registered with a `TTL`: the record ends unless registered again within it. Boxed: few
    /// records have one, and unboxed it took 48 bytes of every record.
    lease: Option<Box<Lease>>,
}

/// `tags` in the form [`Entry::tags`] keeps them.
fn packed_tags(tags: &[String]) -> Box<str> {
    let mut packed = String::with_capacity(tags.iter().map(|t| t.len() + 1).sum());
    for tag in tags {
        packed.push_str(tag);
        packed.push('\n');
    }
    packed.into_boxed_str()
}

/// Milliseconds since 1970 (the resolution every time on the wire has).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn wall(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// A record's lease: how long each registration keeps it, and when the last one runs out.
///
/// Why leases and the instance header both exist: a dead server's port goes to the next process
/// that binds one. If that is another of our servers, its answers name it and the first check
/// fails with proof (`Outcome::Taken`). If it is any other process that answers 200, no check
/// can tell; only the dead instance's silence can, and the lease is how the registry hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    ttl: Duration,
    /// What removal is decided on: the monotonic clock.
    expires: Instant,
    /// What `ExpiresAt` says, fixed at the registration so that rendering reads no clock.
    expires_wall: SystemTime,
}

impl Lease {
    fn starting(ttl: Option<Duration>, now: Instant, wall: SystemTime) -> Option<Box<Lease>> {
        ttl.map(|ttl| Box::new(Lease { ttl, expires: now + ttl, expires_wall: wall + ttl }))
    }
}

impl Entry {
    fn health(&self) -> Health {
        Health {
            status: self.status,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.as_deref().map(str::to_string),
            critical_since: self.critical_since,
        }
    }

    /// The record as the wire format has it.
    fn record(self, name: String) -> Endpoint {
        Endpoint {
            name,
            address: text::address(self.address),
            tags: self.tags().map(str::to_string).collect(),
            status: self.status,
            registered_at: clock::rfc3339(wall(self.registered_at)),
            last_check: (self.last_check > 0).then(|| clock::rfc3339(wall(self.last_check))),
            last_error: self.last_error.map(String::from),
            consecutive_failures: self.consecutive_failures,
            expires_at: self.lease.map(|lease| clock::rfc3339(lease.expires_wall)),
        }
    }

    fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.split_terminator('\n')
    }

    /// Whether a listing with `filter` shows this entry.
    fn shown_by(&self, filter: &Filter) -> bool {
        filter.status.is_none_or(|s| self.status == s) && filter.tags.iter().all(|t| self.tags().any(|m| m == t))
    }
}

struct State {
    /// Sorted by Name, so that a listing is read in order a batch at a time (see
    /// [`Store::batch`]) rather than copied whole and sorted.
    entries: BTreeMap<Box<str>, Box<Entry>>,
    /// Endpoints per status, in [`Status::ALL`] order, kept with every change so that counting
    /// is free for the page, the metrics and the eviction guard.
    counts: [usize; 3],
    guard: EvictionGuard,
    /// Grows with every change a watcher cares about: registrations that change something,
    /// removals, status, failure counts and errors. A passing check that only refreshes
    /// `LastCheck` leaves it alone, so watchers are not woken every few milliseconds.
    index: u64,
    next_generation: u64,
    /// Set when the registry stops: waiters return at once.
    closed: bool,
}

impl State {
    fn count(&mut self, from: Option<Status>, to: Option<Status>) {
        if let Some(from) = from {
            self.counts[from.index()] -= 1;
        }
        if let Some(to) = to {
            self.counts[to.index()] += 1;
        }
    }

    fn touched(&mut self, meaningful: bool) {
        if meaningful {
            self.index += 1;
        }
    }
}

/// The registry's endpoints.
pub struct Store {
    state: Mutex<State>,
    changed: Condvar,
    thresholds: Thresholds,
    max_endpoints: usize,
    /// Until then the registry is warming up: see [`Store::warming_for`].
    warm_until: Instant,
}

impl Store {
    /// An empty store holding at most `max_endpoints`, its removals watched by an eviction
    /// guard set by `guard`.
    pub fn new(thresholds: Thresholds, max_endpoints: usize, guard: GuardConfig) -> Store {
        let state = State {
            entries: BTreeMap::new(),
            counts: [0; 3],
            guard: EvictionGuard::new(guard, Instant::now()),
            // From 1, as Consul's: a client that has seen nothing asks with index=0 and is
            // answered at once.
            index: 1,
            next_generation: 0,
            closed: false,
        };
        Store {
            state: Mutex::new(state),
            changed: Condvar::new(),
            thresholds,
            max_endpoints,
            warm_until: Instant::now(),
        }
    }

    /// A store that is warming up for `period` from now. A registry starts empty, and its
    /// servers come back as each renews, within one register interval: until then the list is
    /// incomplete, readers are told so, and nothing that acts on absence removes anything
    /// (neither a long-critical endpoint nor an ended lease).
    pub fn warming_for(mut self, period: Duration) -> Store {
        self.warm_until = Instant::now() + period;
        self
    }

    /// How much of the warm-up is left, or `None` once it is over.
    pub fn warming(&self) -> Option<Duration> {
        Some(self.warm_until.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
    }

    /// Ends the warm-up for watchers: the listings change (they no longer say "warming"), so
    /// the index moves and blocking queries wake.
    pub fn warm_up_over(&self) {
        let mut state = self.lock();
        self.touched(&mut state, true);
    }

    /// Whether removals are held now: during the warm-up, or while the eviction guard holds.
    fn holding_removals(&self, state: &State, now: Instant) -> bool {
        now < self.warm_until || state.guard.hold(now).is_some()
    }

    /// The eviction guard's hold, if one is in force.
    pub fn eviction_hold(&self) -> Option<Hold> {
        self.lock().guard.hold(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the map itself is still whole
        // (every mutation below is a single insert or remove), so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn touched(&self, state: &mut State, meaningful: bool) {
        state.touched(meaningful);
        if meaningful {
            self.changed.notify_all();
        }
    }

    /// Registers or re-registers an endpoint. A known Name at the same Address keeps its
    /// health (the server re-registers every few seconds; that must not reset it); at a new
    /// Address it starts again as pending.
    /// A registration with a `TTL` starts or renews the record's lease; one without ends it.
    pub fn register(&self, valid: Valid, now: SystemTime) -> Result<Registered, StoreError> {
        let Valid { name, address, tags, ttl } = valid;
        let lease = Lease::starting(ttl, Instant::now(), now);
        let (copy, change, check_now) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            match state.entries.get_mut(name.as_str()) {
                Some(entry) if entry.address == address => {
                    // A renewed lease is no news to watchers; a lease that starts, ends or
                    // changes its TTL is.
                    let changed =
                        !entry.tags().eq(tags.iter().map(String::as_str)) || entry.lease.as_ref().map(|l| l.ttl) != ttl;
                    if changed {
                        entry.tags = packed_tags(&tags);
                    }
                    entry.lease = lease;
                    let copy = Entry::clone(entry);
                    if changed {
                        self.touched(state, true);
                    }
                    (copy, Change::Renewed, None)
                }
                found => {
                    let change = if found.is_some() { Change::Moved } else { Change::Created };
                    if change == Change::Created && state.entries.len() >= self.max_endpoints {
                        return Err(StoreError::Full { limit: self.max_endpoints });
                    }
                    state.next_generation += 1;
                    let generation = state.next_generation;
                    let entry = Entry {
                        address,
                        tags: packed_tags(&tags),
                        status: Status::Pending,
                        consecutive_failures: 0,
                        registered_at: millis(now),
                        last_check: 0,
                        last_error: None,
                        generation,
                        critical_since: None,
                        lease,
                    };
                    let job = CheckJob { name: name.clone(), address, generation };
                    let copy = entry.clone();
                    let replaced = state.entries.insert(name.as_str().into(), Box::new(entry));
                    state.count(replaced.map(|e| e.status), Some(Status::Pending));
                    self.touched(state, true);
                    (copy, change, Some(job))
                }
            }
        };
        Ok(Registered { record: copy.record(name), change, check_now })
    }

    /// Removes an endpoint by Name; `None` if it was not registered.
    pub fn deregister(&self, name: &str) -> Option<Endpoint> {
        let mut state = self.lock();
        let removed = state.entries.remove(name)?;
        state.count(Some(removed.status), None);
        self.touched(&mut state, true);
        drop(state);
        Some(removed.record(name.to_string()))
    }

    /// One endpoint by Name.
    pub fn get(&self, name: &str) -> Option<Endpoint> {
        let copy = self.lock().entries.get(name).map(|e| Entry::clone(e));
        copy.map(|e| e.record(name.to_string()))
    }

    /// The endpoints that match `filter`, sorted by Name, with the counters they reflect.
    pub fn list(&self, filter: &Filter) -> Snapshot {
        let state = self.lock();
        let copies: Vec<(String, Entry)> = state
            .entries
            .iter()
            .filter(|(_, e)| e.shown_by(filter))
            .map(|(n, e)| (n.to_string(), Entry::clone(e)))
            .collect();
        let index = state.index;
        drop(state);
        let records: Vec<Endpoint> = copies.into_iter().map(|(name, e)| e.record(name)).collect();
        Snapshot { index, records }
    }

    /// Up to `max` of the endpoints that match `filter`, in Name order, starting after the Name
    /// `after` (from the first without one), and where the next batch starts (`None`: there
    /// is none). The lock is held for one batch only: a listing of any size is read a batch at
    /// a time, each batch consistent in itself, so neither the lock nor a copy of the whole
    /// store is held while a reader takes its time. At most `8 × max` entries are looked at
    /// per batch, so a filter that matches little does not hold the lock for a whole scan.
    pub fn batch(&self, filter: &Filter, after: Option<&str>, max: usize) -> Batch {
        let state = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut copies: Vec<(String, Entry)> = Vec::with_capacity(max.min(state.entries.len()));
        let max = max.max(1);
        let mut next = None;
        let mut last_looked: Option<&str> = None;
        for (looked, (name, entry)) in state.entries.range::<str, _>((start, Bound::Unbounded)).enumerate() {
            if copies.len() == max || looked == max * 8 {
                next = last_looked.map(str::to_string);
                break;
            }
            last_looked = Some(name);
            if entry.shown_by(filter) {
                copies.push((name.to_string(), Entry::clone(entry)));
            }
        }
        drop(state);
        Batch { records: copies.into_iter().map(|(name, e)| e.record(name)).collect(), next }
    }

    /// How many endpoints have each status, in [`Status::ALL`] order.
    pub fn counts(&self) -> [usize; 3] {
        self.lock().counts
    }

    /// How many endpoints are registered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The watch index: see the field's comment.
    pub fn index(&self) -> u64 {
        self.lock().index
    }

    /// Whether a check job still describes a registered endpoint.
    pub fn is_current(&self, job: &CheckJob) -> bool {
        self.lock().entries.get(job.name.as_str()).is_some_and(|e| e.generation == job.generation)
    }

    /// Asked just before a probe: whether the job still applies, and whether the endpoint's
    /// lease ran out, in which case it is removed here, whatever its checks said. Every
    /// endpoint is checked once an interval, so a lease ends at most one interval late. While
    /// removals are held (the warm-up, the eviction guard), leases are held too: an unreachable
    /// registry misses renewals as surely as it fails checks.
    pub fn before_check(&self, job: &CheckJob, now: Instant) -> BeforeCheck {
        let mut state = self.lock();
        let Some(entry) = state.entries.get(job.name.as_str()).filter(|e| e.generation == job.generation) else {
            return BeforeCheck::Stale;
        };
        let Some(lease) = entry.lease.as_deref().copied().filter(|lease| now >= lease.expires) else {
            return BeforeCheck::Probe;
        };
        if self.holding_removals(&state, now) {
            return BeforeCheck::Probe;
        }
        let Some(removed) = state.entries.remove(job.name.as_str()) else { return BeforeCheck::Stale };
        state.count(Some(removed.status), None);
        self.touched(&mut state, true);
        drop(state);
        BeforeCheck::Expired { record: removed.record(job.name.clone()), ttl: lease.ttl }
    }

    /// Records a check result, applying the health rules; removes the endpoint if it has been
    /// critical too long.
    pub fn record_check(&self, job: &CheckJob, outcome: &Outcome, now: Instant, wall: SystemTime) -> Applied {
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(job.name.as_str()).filter(|e| e.generation == job.generation) else {
            return Applied::Stale;
        };
        let before = entry.health();
        let after = before.after(outcome, &self.thresholds, now);
        let passing = state.counts[Status::Passing.index()];
        // An answer from another instance is a failure of this registration, not of the
        // network: the guard counts it as an answer.
        let answered = !matches!(outcome, Outcome::Fail(_));
        let guard_event = state.guard.observe(before.status, answered, passing, now);
        if let Some(event) = guard_event {
            log_guard(&event);
            // The page shows the hold, so its start and end are changes.
            self.touched(&mut state, true);
        }
        let holding = self.holding_removals(&state, now);
        let Some(entry) = state.entries.get_mut(job.name.as_str()) else { return Applied::Stale };
        if after.expired(&self.thresholds, now) && !holding {
            state.entries.remove(job.name.as_str());
            state.count(Some(before.status), None);
            self.touched(&mut state, true);
            return Applied::Removed;
        }
        let meaningful = after != before;
        entry.status = after.status;
        entry.consecutive_failures = after.consecutive_failures;
        // Only replaced when it changes: a failing endpoint's error is usually the same text.
        if entry.last_error.as_deref() != after.last_error.as_deref() {
            entry.last_error = after.last_error.map(String::into_boxed_str);
        }
        entry.last_check = millis(wall);
        entry.critical_since = after.critical_since;
        state.count(Some(before.status), Some(after.status));
        self.touched(&mut state, meaningful);
        Applied::Recorded { from: before.status, to: after.status }
    }

    /// Wakes every waiter for good: the registry is stopping.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks until the watch index passes `seen` or `deadline` comes; returns the index then.
    pub fn wait_for_change(&self, seen: u64, deadline: Instant) -> u64 {
        let mut state = self.lock();
        while state.index <= seen && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.index
    }
}

fn log_guard(event: &GuardEvent) {
    match event {
        GuardEvent::Hold { failed, checked } => log::warn!(
            "Holding removals: {failed} of {checked} checks of passing endpoints failed within one interval, so \
             the registry suspects its own network; they go critical but stay listed until most pass again"
        ),
        GuardEvent::ReleaseRecovered { passing, of } => {
            log::warn!("Releasing the removal hold: {passing} endpoints pass again, of {of} before it")
        }
        GuardEvent::ReleaseTimedOut { held } => log::warn!(
            "Releasing the removal hold after {}: endpoints critical for too long are removed again",
            common::duration::format(*held)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn valid(name: &str, address: &str, tags: &[&str]) -> Valid {
        Valid {
            name: name.into(),
            address: address.parse().unwrap(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ttl: None,
        }
    }

    fn leased(name: &str, ttl_secs: u64) -> Valid {
        Valid { ttl: Some(Duration::from_secs(ttl_secs)), ..valid(name, "10.0.0.1:80", &[]) }
    }

    fn store() -> Store {
        Store::new(
            Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_secs(30) },
            3,
            GuardConfig::default(),
        )
    }

    #[test]
    fn a_lease_ends_the_record_unless_it_is_registered_again_in_time() {
        let s = store();
        let job = s.register(leased("a", 10), SystemTime::now()).unwrap().check_now.unwrap();
        s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now());
        assert!(s.get("a").unwrap().expires_at.is_some(), "a leased record says when it ends");
        assert_eq!(s.before_check(&job, Instant::now() + Duration::from_secs(9)), BeforeCheck::Probe);

        let renewed = s.register(leased("a", 10), SystemTime::now()).unwrap();
        assert_eq!(renewed.change, Change::Renewed);
        assert_eq!(renewed.record.status, Status::Passing, "a renewal keeps the health");
        let index = s.index();
        match s.before_check(&job, Instant::now() + Duration::from_secs(10)) {
            BeforeCheck::Expired { record, ttl } => {
                assert_eq!((record.name.as_str(), ttl), ("a", Duration::from_secs(10)));
            }
            other => panic!("the lease should have ended: {other:?}"),
        }
        assert!(s.get("a").is_none(), "removed whatever its checks said");
        assert_eq!(s.counts(), [0, 0, 0]);
        assert!(s.index() > index, "watchers see the removal");
        assert_eq!(s.before_check(&job, Instant::now()), BeforeCheck::Stale);
    }

    #[test]
    fn a_registration_without_ttl_has_no_lease_and_ends_one() {
        let s = store();
        let job = s.register(valid("plain", "10.0.0.1:80", &[]), SystemTime::now()).unwrap().check_now.unwrap();
        assert_eq!(s.get("plain").unwrap().expires_at, None);
        assert_eq!(s.before_check(&job, Instant::now() + Duration::from_secs(86_400 * 365)), BeforeCheck::Probe);

        let job = s.register(leased("a", 5), SystemTime::now()).unwrap().check_now.unwrap();
        let index = s.index();
        s.register(valid("a", "10.0.0.1:80", &[]), SystemTime::now()).unwrap();
        assert!(s.index() > index, "a lease that ends is news to watchers");
        assert_eq!(s.get("a").unwrap().expires_at, None);
        assert_eq!(s.before_check(&job, Instant::now() + Duration::from_secs(60)), BeforeCheck::Probe);
    }

    #[test]
    fn leases_are_held_while_the_eviction_guard_holds_removals() {
        let window = Duration::from_secs(1);
        let s = Store::new(Thresholds::default(), 100, GuardConfig { share: 0.5, window, ..GuardConfig::default() });
        let jobs: Vec<CheckJob> = (0..20)
            .map(|i| s.register(leased(&format!("e{i}"), 1), SystemTime::now()).unwrap().check_now.unwrap())
            .collect();
        let now = Instant::now();
        for job in &jobs {
            s.record_check(job, &Outcome::Pass, now, SystemTime::now());
        }
        for job in &jobs {
            s.record_check(job, &Outcome::Fail("timed out".into()), now, SystemTime::now());
        }
        // The guard judges a window when the next one opens.
        s.record_check(&jobs[0], &Outcome::Fail("timed out".into()), now + window, SystemTime::now());
        assert!(s.eviction_hold().is_some(), "every passing endpoint failing at once starts a hold");
        let later = now + window + Duration::from_secs(5);
        assert_eq!(s.before_check(&jobs[0], later), BeforeCheck::Probe, "no lease ends during a hold");
        assert_eq!(s.len(), 20);
    }

    #[test]
    fn an_answer_from_another_instance_makes_a_passing_record_critical_at_once() {
        let s = store();
        let job = s.register(valid("web-1", "10.0.0.1:80", &[]), SystemTime::now()).unwrap().check_now.unwrap();
        s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now());
        let applied = s.record_check(&job, &Outcome::Taken("web-2".into()), Instant::now(), SystemTime::now());
        assert_eq!(applied, Applied::Recorded { from: Status::Passing, to: Status::Critical });
        let record = s.get("web-1").unwrap();
        assert!(record.last_error.unwrap().contains("\"web-2\""), "LastError names who holds the address now");
    }

    #[test]
    fn re_registration_replaces_and_keeps_health_at_the_same_address() {
        let s = store();
        let first = s.register(valid("a", "10.0.0.1:80", &["x"]), SystemTime::now()).unwrap();
        assert_eq!(first.change, Change::Created);
        let job = first.check_now.expect("a new endpoint is checked at once");
        s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now());

        let renewed = s.register(valid("a", "10.0.0.1:80", &["y"]), SystemTime::now()).unwrap();
        assert_eq!(renewed.change, Change::Renewed);
        assert!(renewed.check_now.is_none());
        assert_eq!(renewed.record.status, Status::Passing);
        assert_eq!(renewed.record.tags, ["y"]);

        let moved = s.register(valid("a", "10.0.0.2:80", &[]), SystemTime::now()).unwrap();
        assert_eq!(moved.change, Change::Moved);
        assert_eq!(moved.record.status, Status::Pending);
        assert!(!s.is_current(&job), "the old address's checks no longer apply");
        assert_eq!(s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now()), Applied::Stale);
        assert_eq!(s.get("a").unwrap().status, Status::Pending);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_cap_refuses_new_names_but_not_renewals() {
        let s = store();
        for n in ["a", "b", "c"] {
            s.register(valid(n, "10.0.0.1:80", &[]), SystemTime::now()).unwrap();
        }
        assert_eq!(
            s.register(valid("d", "10.0.0.1:80", &[]), SystemTime::now()).unwrap_err(),
            StoreError::Full { limit: 3 }
        );
        assert!(s.register(valid("a", "10.0.0.9:80", &[]), SystemTime::now()).is_ok());
    }

    #[test]
    fn lists_are_sorted_and_filtered() {
        let s = Store::new(Thresholds::default(), 10, GuardConfig::default());
        for (n, tags) in [("c", &["web", "eu"][..]), ("a", &["web"]), ("b", &["db"])] {
            let r = s.register(valid(n, "10.0.0.1:80", tags), SystemTime::now()).unwrap();
            if n != "b" {
                s.record_check(&r.check_now.unwrap(), &Outcome::Pass, Instant::now(), SystemTime::now());
            }
        }
        let names = |f: Filter| s.list(&f).records.into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(Filter::default()), ["a", "b", "c"]);
        assert_eq!(names(Filter { status: Some(Status::Passing), tags: vec![] }), ["a", "c"]);
        assert_eq!(names(Filter { status: None, tags: vec!["web".into(), "eu".into()] }), ["c"]);
        assert_eq!(names(Filter { status: Some(Status::Pending), tags: vec!["web".into()] }), Vec::<String>::new());
    }

    #[test]
    fn long_critical_endpoints_are_removed_and_the_index_moves() {
        let s = store();
        let job = s.register(valid("a", "10.0.0.1:80", &[]), SystemTime::now()).unwrap().check_now.unwrap();
        let t0 = Instant::now();
        let i0 = s.index();
        let fail = Outcome::Fail("refused".into());
        assert_eq!(
            s.record_check(&job, &fail, t0, SystemTime::now()),
            Applied::Recorded { from: Status::Pending, to: Status::Critical }
        );
        assert!(s.index() > i0);
        assert_eq!(
            s.record_check(&job, &fail, t0 + Duration::from_secs(29), SystemTime::now()),
            Applied::Recorded { from: Status::Critical, to: Status::Critical }
        );
        assert_eq!(s.record_check(&job, &fail, t0 + Duration::from_secs(30), SystemTime::now()), Applied::Removed);
        assert!(s.get("a").is_none());
    }

    #[test]
    fn a_passing_check_that_changes_nothing_leaves_the_watch_index_alone() {
        let s = store();
        let job = s.register(valid("a", "10.0.0.1:80", &[]), SystemTime::now()).unwrap().check_now.unwrap();
        s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now());
        let (index, before) = (s.index(), s.get("a").unwrap().last_check);
        std::thread::sleep(Duration::from_millis(2));
        s.record_check(&job, &Outcome::Pass, Instant::now(), SystemTime::now());
        assert_eq!(s.index(), index);
        assert_ne!(s.get("a").unwrap().last_check, before, "LastCheck moves all the same");
    }

    #[test]
    fn waiters_wake_on_change_and_time_out_otherwise() {
        let s = std::sync::Arc::new(store());
        let seen = s.index();
        let t0 = Instant::now();
        assert_eq!(s.wait_for_change(seen, t0 + Duration::from_millis(50)), seen);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                s.register(valid("a", "10.0.0.1:80", &[]), SystemTime::now()).unwrap();
            })
        };
        let got = s.wait_for_change(seen, Instant::now() + Duration::from_secs(5));
        writer.join().unwrap();
        assert!(got > seen);
    }
}
