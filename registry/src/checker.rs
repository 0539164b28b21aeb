//! The health checker: a scheduler thread that knows when each endpoint is due, and a fixed
//! pool of workers that probe. A hung endpoint holds one worker for one timeout and nothing
//! else; the lock on the store is never held while a probe waits.

use crate::metrics::Metrics;
use crate::store::{Applied, BeforeCheck, CheckJob, Store};
use common::probe::probe;
use common::probe::Outcome;
use common::wire::Status;
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How often and how patiently to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Probes in flight at once: the number of worker threads.
    pub workers: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig { interval: Duration::from_secs(5), timeout: Duration::from_secs(2), workers: 64 }
    }
}

/// Worker threads only probe and record: small stacks keep 64 of them cheap.
const WORKER_STACK: usize = 64 * 1024;

enum Message {
    /// Check this endpoint now: it is new or moved.
    CheckNow(CheckJob),
    /// A worker recorded this job's result: schedule the endpoint's next check. (A job whose
    /// endpoint is gone sends nothing: there is nothing to schedule.)
    Done { job: CheckJob, due: Instant, first: bool },
    /// The registry is shutting down.
    Stop,
}

struct Work {
    job: CheckJob,
    due: Instant,
    first: bool,
}

/// A handle on the running checker; dropping it stops the scheduler, and the workers finish
/// their current probe and exit.
pub struct Checker {
    tx: Sender<Message>,
}

impl Checker {
    /// Starts the scheduler and `config.workers` workers over `store`.
    pub fn start(store: Arc<Store>, config: CheckConfig, metrics: Arc<Metrics>) -> std::io::Result<Checker> {
        let (tx, rx) = channel();
        let (work_tx, work_rx) = channel::<Work>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        for i in 0..config.workers.max(1) {
            let (store, work_rx, done_tx, metrics) = (store.clone(), work_rx.clone(), tx.clone(), metrics.clone());
            thread::Builder::new()
                .name(format!("check-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || work(&store, &metrics, &work_rx, &done_tx, config.timeout))?;
        }
        thread::Builder::new()
            .name("check-scheduler".into())
            .spawn(move || schedule(&rx, &work_tx, config.interval))?;
        Ok(Checker { tx })
    }

    /// Asks for a check of a new or moved endpoint at once.
    pub fn check_now(&self, job: CheckJob) {
        // The scheduler only stops when this handle is dropped, so the send cannot fail here.
        let _ = self.tx.send(Message::CheckNow(job));
    }
}

/// A due check in the scheduler's heap, earliest first.
struct Due {
    seq: u64,
    work: Work,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.work.due, self.seq) == (other.work.due, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest.
        (other.work.due, other.seq).cmp(&(self.work.due, self.seq))
    }
}

/// When to check next. After the immediate first check, the second comes at a random point
/// within one interval, so a thousand servers registering in the same second (a registry
/// restart) are spread over the interval instead of probed in one burst ever after. From then
/// on, every interval; the gap between two checks never exceeds one interval, which is what
/// bounds detection time.
fn next_due(due: Instant, first: bool, interval: Duration, spread: &RandomState, job: &CheckJob) -> Instant {
    let now = Instant::now();
    if first {
        let fraction = (spread.hash_one((&job.name, job.generation)) % 1000 + 1) as u32;
        return now + interval * fraction / 1000;
    }
    (due + interval).max(now)
}

fn schedule(rx: &Receiver<Message>, work_tx: &Sender<Work>, interval: Duration) {
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    let spread = RandomState::new();
    loop {
        let wait = heap
            .peek()
            .map_or(Duration::from_secs(3600), |d: &Due| d.work.due.saturating_duration_since(Instant::now()));
        let next = match rx.recv_timeout(wait) {
            Ok(Message::CheckNow(job)) => Some(Due { seq, work: Work { job, due: Instant::now(), first: true } }),
            Ok(Message::Done { job, due, first }) => {
                let due = next_due(due, first, interval, &spread, &job);
                Some(Due { seq, work: Work { job, due, first: false } })
            }
            Err(RecvTimeoutError::Timeout) => None,
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(due) = next {
            seq += 1;
            heap.push(due);
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.work.due <= now) {
            let Some(due) = heap.pop() else { break };
            // Whether the endpoint is still registered is the worker's question, asked just
            // before it probes: asking here too took the store's lock 2,000 more times a
            // second at 10,000 endpoints, against every registration.
            if work_tx.send(due.work).is_err() {
                return;
            }
        }
    }
}

fn work(
    store: &Store,
    metrics: &Metrics,
    work_rx: &Mutex<Receiver<Work>>,
    done_tx: &Sender<Message>,
    timeout: Duration,
) {
    loop {
        let next = work_rx.lock().map(|rx| rx.recv());
        let Ok(Ok(Work { job, due, first })) = next else { return };
        // Asked now, not when it was queued: a client that keeps moving a Name between hung
        // addresses must not keep workers busy with probes that no longer count.
        match store.before_check(&job, Instant::now()) {
            BeforeCheck::Probe => {}
            BeforeCheck::Stale => continue,
            BeforeCheck::Expired { record, ttl } => {
                let ttl = common::duration::format(ttl);
                log::info!(
                    "Removed {} at {}: not registered again within its TTL of {ttl}",
                    record.name,
                    record.address
                );
                metrics.lease_expiries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
        }
        let started = Instant::now();
        // The Name is what the instance must answer as: another name is a stranger on its port.
        let outcome = probe(job.address, timeout, Some(&job.name));
        metrics.probe(outcome == Outcome::Pass, started.elapsed());
        log::debug!("probe {} at {}: {:?}", job.name, job.address, outcome);
        let applied = store.record_check(&job, &outcome, Instant::now(), SystemTime::now());
        report(&job, &outcome, &applied);
        if applied == Applied::Removed {
            metrics.removals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if matches!(applied, Applied::Recorded { .. }) && done_tx.send(Message::Done { job, due, first }).is_err() {
            return;
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        // Workers hold senders too, so the channel never disconnects by itself.
        let _ = self.tx.send(Message::Stop);
    }
}

/// Logs what a check changed: a first pass at info, every other transition at warn, removals
/// at info.
fn report(job: &CheckJob, outcome: &Outcome, applied: &Applied) {
    match (applied, outcome) {
        (Applied::Recorded { from: Status::Pending, to: Status::Passing }, _) => {
            log::info!("{} at {} is passing", job.name, job.address);
        }
        (Applied::Recorded { from, to }, Outcome::Fail(_) | Outcome::Taken(_)) if from != to => {
            let why = outcome.error().unwrap_or_default();
            log::warn!("{} at {} is {to} (was {from}): {why}", job.name, job.address);
        }
        (Applied::Recorded { from, to }, _) if from != to => {
            log::warn!("{} at {} is {to} (was {from})", job.name, job.address);
        }
        (Applied::Removed, _) => log::info!("Removed {} at {}: critical for too long", job.name, job.address),
        _ => {}
    }
}
