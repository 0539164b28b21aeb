//! The health checker: one thread that knows when each endpoint is due and drives every probe
//! in flight on non-blocking sockets, waiting on all of them at once in one epoll set (through
//! `mio`). A hung endpoint holds one of `-check-concurrency` places for one timeout and
//! nothing else; the lock on the store is never held while a probe waits.
//!
//! Why one thread and not a pool: a probe spends its life waiting (for the connect, then for
//! the answer), and a thread per waiting probe cost a thread's wake-ups and stack per probe in
//! flight, and as many threads as hung endpoints to tolerate. Here a probe in flight costs a
//! socket and a [`Slot`] with its 1 KiB head buffer, reused from probe to probe.

use crate::metrics::Metrics;
use crate::store::{Applied, BeforeCheck, CheckJob, Store};
use common::probe::{describe, write_request, Connection, HeadReader, Outcome, Reuse, MAX_READ};
use common::wire::Status;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// How often and how patiently to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Probes in flight at once (`-check-concurrency`): how many hung endpoints, each holding
    /// its place for one timeout, the checker absorbs before a due check has to wait.
    pub concurrency: usize,
    /// Connections kept open between two checks of an endpoint (`-check-keep-alive`). A kept
    /// connection spares the next probe its connect and close, most of a probe's cost, and
    /// costs a file descriptor and the kernel's memory for an idle socket (about 3.5 KiB,
    /// charged to the registry's memory cgroup) until the endpoint's next check.
    pub keep_alive: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        // 1,024 in flight: a probe in flight costs a socket (one file descriptor) and about
        // 1.2 KiB, not a thread, so the cap is set by what the registry may open: a third of
        // a 4,096 open-file limit, the rest left for connections (at most 512 by default).
        // 1,024 hung endpoints at a 2 s timeout and a 5 s interval average 410 in flight.
        // 1,024 kept: about 4 MiB of kernel memory, and with the probes in flight and the
        // connections, still inside a 4,096 open-file limit.
        CheckConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            concurrency: 1024,
            keep_alive: 1024,
        }
    }
}

/// "Too many open files", for the process and for the system (Linux's numbers).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// The token of the waker that `check_now` and `drop` use to wake the loop.
const WAKER: Token = Token(usize::MAX);

/// The name of the checker's thread (in `/proc/PID/task/*/comm`, `top -H`).
const THREAD_NAME: &str = "check-poll";

/// The events taken from the kernel in one wait: a bound on work between two looks at the
/// clock, not on probes in flight.
const EVENTS: usize = 1024;

/// The least time between two waits on the kernel. Every wake-up of the thread costs a context
/// switch (measured: 15% of the checker's CPU when each answer woke it alone, at 2,000 probes a
/// second); waiting this long first lets answers, due checks and new Names gather, so one
/// wake-up handles all of them. It delays a verdict by at most this much, against timeouts of
/// seconds.
const GATHER: Duration = Duration::from_millis(2);

enum Message {
    /// Check this endpoint now: it is new or moved.
    CheckNow(CheckJob),
    /// The registry is shutting down.
    Stop,
}

/// A check to make: the endpoint, when it was due, and whether it is its first.
struct Work {
    job: CheckJob,
    due: Instant,
    first: bool,
}

/// A handle on the running checker; dropping it stops the thread (probes in flight are
/// abandoned) and waits for it.
pub struct Checker {
    tx: Sender<Message>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

/// The waker, rung once for any number of messages sent before the thread takes them: a burst
/// of new Names costs one write to the eventfd, not one each.
struct Wake {
    waker: Waker,
    rung: AtomicBool,
}

impl Wake {
    fn ring(&self) {
        if !self.rung.swap(true, SeqCst) {
            // Fails only if the eventfd does, which the next ring retries.
            if self.waker.wake().is_err() {
                self.rung.store(false, Relaxed);
            }
        }
    }

    /// Called by the thread before it takes the messages: one sent after this rings again.
    /// A swap, not a store: reading the sender's `true` orders its message before the look
    /// at the channel that follows.
    fn answered(&self) {
        self.rung.swap(false, SeqCst);
    }
}

impl Checker {
    /// Starts the checker's thread over `store`, with at most `config.concurrency` probes in
    /// flight.
    pub fn start(store: Arc<Store>, config: CheckConfig, metrics: Arc<Metrics>) -> io::Result<Checker> {
        let poll = Poll::new()?;
        let wake = Arc::new(Wake { waker: Waker::new(poll.registry(), WAKER)?, rung: AtomicBool::new(false) });
        let (tx, rx) = channel();
        let checks = Checks {
            poll,
            rx,
            wake: wake.clone(),
            store,
            metrics,
            config: CheckConfig { concurrency: config.concurrency.max(1), ..config },
            schedule: BinaryHeap::new(),
            seq: 0,
            spread: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            deadlines: VecDeque::new(),
            kept: HashMap::new(),
        };
        let thread = thread::Builder::new().name(THREAD_NAME.into()).spawn(move || checks.run())?;
        Ok(Checker { tx, wake, thread: Some(thread) })
    }

    /// Asks for a check of a new or moved endpoint at once.
    pub fn check_now(&self, job: CheckJob) {
        // The thread only stops when this handle is dropped, so neither can fail here but for
        // a bug, which the thread's panic reports.
        let _ = self.tx.send(Message::CheckNow(job));
        self.wake.ring();
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        self.wake.ring();
        if let Some(thread) = self.thread.take() {
            // A panic in the checker was reported on its thread already.
            let _ = thread.join();
        }
    }
}

/// A due check in the schedule, earliest first.
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

/// A place for one probe in flight. Slots are reused, buffers and all: a probe allocates
/// nothing of its own but its job's copy of the Name.
#[derive(Default)]
struct Slot {
    /// Counts the probes this slot has held, so that a token or a deadline of an earlier one
    /// is told apart from the probe in it now.
    round: u32,
    probe: Option<InFlight>,
    request: Vec<u8>,
    head: HeadReader,
}

/// One probe in flight.
struct InFlight {
    work: Work,
    stream: TcpStream,
    started: Instant,
    /// Bytes of the request written so far.
    sent: usize,
    /// Whether the connection was kept from the endpoint's last check.
    reused: bool,
}

/// Whose connection a kept one is: an address and the registration it was opened for (the
/// generation), so that two Names at one address each keep their own, and a Name that moved
/// never reuses its old one.
type KeptFor = (SocketAddr, u64);

fn kept_for(job: &CheckJob) -> KeptFor {
    (job.address, job.generation)
}

/// A probe's token: its slot in the low 32 bits, the slot's round above them.
fn token(index: usize, round: u32) -> Token {
    Token(((round as usize) << 32) | index)
}

fn slot_of(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// The non-blocking stream as a probe's [`Connection`] (`WouldBlock`: not yet).
struct Nonblocking<'a>(&'a TcpStream);

impl Connection for Nonblocking<'_> {
    fn peek_answer(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.peek(buf)
    }
    fn read_answer(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut &*self.0).read(buf)
    }
}

/// The checker's thread and everything it owns.
struct Checks {
    poll: Poll,
    rx: Receiver<Message>,
    wake: Arc<Wake>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: CheckConfig,
    /// Every registered endpoint's next check (a job whose endpoint is gone is dropped when
    /// it comes due).
    schedule: BinaryHeap<Due>,
    seq: u64,
    spread: RandomState,
    slots: Vec<Slot>,
    /// Slots without a probe.
    free: Vec<usize>,
    in_flight: usize,
    /// When each probe in flight times out, with its token. Every probe has the same timeout,
    /// so deadlines come in the order probes start: a queue, not a heap. A probe that ends
    /// earlier leaves its entry behind, skipped when it comes up (its slot moved on).
    deadlines: VecDeque<(Instant, Token)>,
    /// Idle connections kept for the endpoints' next checks, at most `config.keep_alive`.
    /// Still registered with the poll under their last probe's token, whose events are then
    /// ignored: a connection the server closes meanwhile is found out by the next probe.
    kept: HashMap<KeptFor, TcpStream>,
}

impl Checks {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut woke = Instant::now();
        loop {
            let now = Instant::now();
            if let Some(gather) = (woke + GATHER).checked_duration_since(now) {
                thread::sleep(gather);
                continue;
            }
            self.time_out(now);
            self.start_due(now);
            let wait = self.next_wake(now);
            let polled = self.poll.poll(&mut events, wait);
            woke = Instant::now();
            if let Err(e) = polled {
                if e.kind() != ErrorKind::Interrupted {
                    // Not seen in practice (epoll_wait fails only on bad arguments); the pause
                    // keeps a persistent failure from spinning.
                    log::error!("health checker: waiting for probes failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for event in &events {
                if event.token() == WAKER {
                    if !self.receive() {
                        return;
                    }
                } else {
                    self.on_event(event);
                }
            }
        }
    }

    /// Takes what `check_now` and `drop` sent; false when it is time to stop.
    fn receive(&mut self) -> bool {
        self.wake.answered();
        loop {
            match self.rx.try_recv() {
                Ok(Message::CheckNow(job)) => self.plan(Work { job, due: Instant::now(), first: true }),
                Err(TryRecvError::Empty) => return true,
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn plan(&mut self, work: Work) {
        self.seq += 1;
        self.schedule.push(Due { seq: self.seq, work });
    }

    /// How long the poll may wait: until the next deadline of a probe in flight, or the next
    /// due check if there is a place for it.
    fn next_wake(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&(_, token)) = self.deadlines.front() {
            if self.holds(token) {
                break;
            }
            self.deadlines.pop_front();
        }
        let deadline = self.deadlines.front().map(|(at, _)| *at);
        let due = self.schedule.peek().filter(|_| self.in_flight < self.config.concurrency).map(|d| d.work.due);
        // mio rounds the wait up to a whole millisecond, which also gathers what comes due
        // within one into one wake-up.
        [deadline, due].into_iter().flatten().min().map(|at| at.saturating_duration_since(now))
    }

    /// Whether `token` is the probe in its slot now.
    fn holds(&self, token: Token) -> bool {
        let (index, round) = slot_of(token);
        self.slots.get(index).is_some_and(|slot| slot.round == round && slot.probe.is_some())
    }

    /// Starts the checks that are due, as long as there is a place for them.
    fn start_due(&mut self, now: Instant) {
        while self.in_flight < self.config.concurrency {
            if self.schedule.peek().is_none_or(|d| d.work.due > now) {
                return;
            }
            let Some(Due { work, .. }) = self.schedule.pop() else { return };
            // Whether the endpoint is still registered is asked now, not when it was planned:
            // a client that keeps moving a Name between hung addresses must not fill the places
            // with probes that no longer count.
            match self.store.before_check(&work.job, Instant::now()) {
                BeforeCheck::Probe => self.start(work, Instant::now(), true),
                BeforeCheck::Stale => self.forget(&work.job),
                BeforeCheck::Expired { record, ttl } => {
                    self.forget(&work.job);
                    let ttl = common::duration::format(ttl);
                    log::info!(
                        "Removed {} at {}: not registered again within its TTL of {ttl}",
                        record.name,
                        record.address
                    );
                    self.metrics.lease_expiries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Starts a probe on the connection kept from the endpoint's last check (when `reuse` and
    /// there is one), or on a new one (non-blocking: it completes later), and gives it a slot.
    /// `started` is when the check began: a retry on a new connection keeps its deadline.
    fn start(&mut self, work: Work, started: Instant, reuse: bool) {
        let kept = if reuse { self.take_kept(&work.job) } else { None };
        let reused = kept.is_some();
        let mut stream = match kept.map_or_else(|| TcpStream::connect(work.job.address), Ok) {
            Ok(stream) => stream,
            // Out of descriptors: an idle kept connection gives its own up, rather than the
            // endpoint failing for the registry's want of one.
            Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) && self.close_one_kept() => {
                return self.start(work, started, false)
            }
            // Refused at once (or no socket to be had): failed at once.
            Err(e) => return self.record(work, started, Outcome::Fail(describe(e))),
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        slot.round = slot.round.wrapping_add(1);
        let token = token(index, slot.round);
        // Kept-alive when there is room to keep the connection afterwards.
        let ask = if reused || self.kept.len() < self.config.keep_alive { Reuse::KeepAlive } else { Reuse::Close };
        // On loopback and fast links the connection is usually up by the time `connect`
        // returns: the request goes at once, and the probe then waits only for the answer
        // (one wake-up a probe, not two). Otherwise it waits to be writable first.
        write_request(&mut slot.request, work.job.address, ask);
        let sent = match send(&stream, &slot.request, 0) {
            Ok(sent) => sent,
            Err(_) if reused => {
                // The server closed the kept connection while it was idle: try a new one.
                self.free.push(index);
                return self.start(work, started, false);
            }
            Err(outcome) => {
                self.free.push(index);
                return self.record(work, started, outcome);
            }
        };
        let interest =
            if sent < slot.request.len() { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        // Edge-triggered, one registration a probe (a kept connection's moves to this token).
        let registered = if reused {
            self.poll.registry().reregister(&mut stream, token, interest)
        } else {
            self.poll.registry().register(&mut stream, token, interest)
        };
        if let Err(e) = registered {
            self.free.push(index);
            return self.record(work, started, Outcome::Fail(describe(e)));
        }
        slot.head.reset();
        slot.probe = Some(InFlight { work, stream, started, sent, reused });
        self.in_flight += 1;
        self.deadlines.push_back((started + self.config.timeout, token));
    }

    /// The connection kept for `job`'s endpoint at its last check, if any.
    fn take_kept(&mut self, job: &CheckJob) -> Option<TcpStream> {
        self.kept.remove(&kept_for(job))
    }

    /// Closes some kept connection, if there is one.
    fn close_one_kept(&mut self) -> bool {
        let Some(key) = self.kept.keys().next().copied() else { return false };
        self.kept.remove(&key);
        true
    }

    /// Closes the connection kept for an endpoint that is gone or moved.
    fn forget(&mut self, job: &CheckJob) {
        self.kept.remove(&kept_for(job));
    }

    /// Moves a probe on: writes the request once connected, reads the head once it comes.
    fn on_event(&mut self, event: &mio::event::Event) {
        let token = event.token();
        if !self.holds(token) {
            return;
        }
        let (index, _) = slot_of(token);
        let Slot { probe, request, head, .. } = &mut self.slots[index];
        let Some(probe) = probe.as_mut() else { return };
        if let Some(outcome) = step(probe, request, head, event) {
            self.finish(index, outcome, Ended::Answered);
        }
    }

    /// Fails the probes whose time is up, or judges what they read before it was.
    fn time_out(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.deadlines.front() {
            if at > now {
                return;
            }
            self.deadlines.pop_front();
            if self.holds(token) {
                let (index, _) = slot_of(token);
                let slot = &self.slots[index];
                let expect = slot.probe.as_ref().map(|p| p.work.job.name.as_str());
                let outcome = slot.head.stalled("timed out".into(), expect);
                self.finish(index, outcome, Ended::TimedOut);
            }
        }
    }

    /// Keeps or closes a probe's connection, frees its slot and records its outcome; or, when
    /// a kept connection turns out closed by the server while idle, tries again on a new one.
    fn finish(&mut self, index: usize, outcome: Outcome, ended: Ended) {
        let Some(InFlight { work, mut stream, started, reused, .. }) = self.slots[index].probe.take() else { return };
        self.free.push(index);
        self.in_flight -= 1;
        let head = &self.slots[index].head;
        if reused && ended == Ended::Answered && !head.answered() {
            drop(stream);
            return self.start(work, started, false);
        }
        let keep = match head.whole_answer() {
            Some(length) if !matches!(outcome, Outcome::Taken(_)) && self.kept.len() < self.config.keep_alive => {
                // The answer was only peeked: reading it leaves the connection at the start of
                // the next one. It arrived whole, so one read takes it all.
                let mut answer = [0; MAX_READ];
                matches!(stream.read(&mut answer[..length]), Ok(n) if n == length)
            }
            _ => false,
        };
        if keep {
            self.kept.insert(kept_for(&work.job), stream);
        } else {
            // Closed before the store is asked; an answer left unread makes the close a reset.
            drop(stream);
        }
        self.record(work, started, outcome);
    }

    /// Counts, records and reports one probe's outcome, and plans the endpoint's next check.
    fn record(&mut self, work: Work, started: Instant, outcome: Outcome) {
        self.metrics.probe(outcome == Outcome::Pass, started.elapsed());
        log::debug!("probe {} at {}: {:?}", work.job.name, work.job.address, outcome);
        let applied = self.store.record_check(&work.job, &outcome, Instant::now(), SystemTime::now());
        report(&work.job, &outcome, &applied);
        if applied == Applied::Removed {
            self.metrics.removals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // A job whose endpoint is gone has nothing to plan, and no connection to keep.
        if matches!(applied, Applied::Recorded { .. }) {
            let due = next_due(work.due, work.first, self.config.interval, &self.spread, &work.job);
            self.plan(Work { due, first: false, ..work });
        } else {
            self.forget(&work.job);
        }
    }
}

/// How a probe in flight ended: with what it read, or at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    TimedOut,
}

/// One probe's progress on `event`: its outcome when it is over.
fn step(probe: &mut InFlight, request: &[u8], head: &mut HeadReader, event: &mio::event::Event) -> Option<Outcome> {
    if probe.sent < request.len() {
        if event.is_error() {
            // The connect failed (refused, unreachable): the socket says why.
            match probe.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Some(Outcome::Fail(describe(e))),
                Ok(None) => {}
            }
        }
        match send(&probe.stream, request, probe.sent) {
            Ok(sent) => probe.sent = sent,
            Err(outcome) => return Some(outcome),
        }
        if probe.sent < request.len() {
            return None;
        }
        // Edge-triggered: an answer that came with this event must be read now; otherwise its
        // own event will come.
        if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
            return None;
        }
    }
    let expect = Some(probe.work.job.name.as_str());
    loop {
        match head.advance(&mut Nonblocking(&probe.stream), expect) {
            Ok(Some(outcome)) => return Some(outcome),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(head.stalled(describe(e), expect)),
        }
    }
}

/// Writes what is left of `request` after `sent` bytes: how much has gone in all, or the
/// failure. One small write into a new connection's empty send buffer goes whole; before the
/// connect completes it would block, and the rest waits for the socket to be writable.
fn send(stream: &TcpStream, request: &[u8], mut sent: usize) -> Result<usize, Outcome> {
    while sent < request.len() {
        match (&*stream).write(&request[sent..]) {
            Ok(0) => return Err(Outcome::Fail("connection closed before an answer".into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Outcome::Fail(describe(e))),
        }
    }
    Ok(sent)
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

// The std-only helpers every crate's tests share (that file says why it is included by path).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/src/shared.rs"]
mod test_shared;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardConfig;
    use crate::health::Thresholds;
    use common::validate::Valid;
    use common::wire::Endpoint;
    use std::net::{SocketAddr, TcpListener, TcpStream as StdStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    /// One checker at a time in this binary, so that counting its threads counts only its own.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    struct Setup {
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        checker: Checker,
    }

    fn start(interval: Duration, timeout: Duration) -> Setup {
        start_keeping(interval, timeout, CheckConfig::default().keep_alive)
    }

    fn start_keeping(interval: Duration, timeout: Duration, keep_alive: usize) -> Setup {
        let thresholds = Thresholds { failures_before_critical: 1, deregister_critical_after: Duration::from_secs(60) };
        let store = Arc::new(Store::new(thresholds, 10_000, GuardConfig::default()));
        let metrics = Arc::new(Metrics::default());
        let config = CheckConfig { interval, timeout, keep_alive, ..CheckConfig::default() };
        let checker = Checker::start(store.clone(), config, metrics.clone()).expect("the checker starts");
        Setup { store, metrics, checker }
    }

    impl Setup {
        fn register(&self, name: &str, address: SocketAddr) {
            let valid = Valid { name: name.into(), address, tags: vec![], ttl: None };
            let registered = self.store.register(valid, SystemTime::now()).expect("room in the store");
            self.checker.check_now(registered.check_now.expect("a new endpoint is checked at once"));
        }

        /// Waits up to `within` for `name`'s record to satisfy `done`.
        fn wait_for(&self, name: &str, within: Duration, done: impl Fn(&Endpoint) -> bool) -> Endpoint {
            let t0 = Instant::now();
            loop {
                let record = self.store.get(name).expect("registered");
                if done(&record) {
                    return record;
                }
                assert!(t0.elapsed() < within, "waited {within:?} for {name}: {record:?}");
                thread::sleep(Duration::from_millis(5));
            }
        }

        fn probes(&self) -> u64 {
            self.metrics.probes_passed.load(SeqCst) + self.metrics.probes_failed.load(SeqCst)
        }
    }

    /// This process's threads named `check-*`, as the checker's threads are (and were: the
    /// pool's `check-0` to `check-63` and `check-scheduler`). Test threads are named after
    /// their test, `checker::tests::...`.
    fn checker_threads() -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").expect("Linux's /proc");
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("check-"))
            .count()
    }

    /// A loopback endpoint that answers every request with `pieces` (50 ms apart), on as many
    /// connections as the prober opens, and notes when each request came, until dropped.
    struct Server {
        addr: SocketAddr,
        arrivals: Arc<Mutex<Vec<Instant>>>,
        connections: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn answering(pieces: &'static [&'static [u8]]) -> Server {
            Server::serving(move |s: &mut StdStream| {
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        thread::sleep(Duration::from_millis(50));
                    }
                    let _ = s.write_all(piece);
                }
                // Then the next request on this connection, if the prober kept it; or wait
                // for the prober to close first: the side that closes first is the one a FIN
                // would leave in TIME_WAIT.
                true
            })
        }

        /// Answers `answer` and closes each connection after it, as a server does whose idle
        /// timeout is shorter than the check interval.
        fn closing_after_each(answer: &'static [u8]) -> Server {
            Server::serving(move |s: &mut StdStream| {
                let _ = s.write_all(answer);
                false
            })
        }

        /// Accepts every connection and holds it, never answering.
        fn hung() -> Server {
            let held = Arc::new(Mutex::new(Vec::new()));
            Server::serving(move |s: &mut StdStream| {
                held.lock().unwrap().push(s.try_clone().expect("a second handle"));
                false
            })
        }

        /// Serves each connection on a thread: `serve` answers one request and says whether
        /// the connection may carry another.
        fn serving(serve: impl Fn(&mut StdStream) -> bool + Send + Sync + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let arrivals = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = thread::spawn({
                let (arrivals, connections, stop) = (arrivals.clone(), connections.clone(), stop.clone());
                move || {
                    let serve = Arc::new(serve);
                    let t0 = Instant::now();
                    // Bounded: a test that forgets to stop it is over by then.
                    while !stop.load(SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                        let Ok((mut s, _)) = listener.accept() else {
                            thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        connections.fetch_add(1, SeqCst);
                        let _ = s.set_nonblocking(false);
                        let serve = serve.clone();
                        let arrivals = arrivals.clone();
                        thread::spawn(move || {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                            let mut buf = [0u8; 1024];
                            // Each read is one request: the prober sends one, then waits.
                            while matches!(s.read(&mut buf), Ok(n) if n > 0) {
                                arrivals.lock().unwrap().push(Instant::now());
                                if !serve(&mut s) {
                                    return;
                                }
                            }
                        });
                    }
                }
            });
            Server { addr, arrivals, connections, stop, thread: Some(thread) }
        }

        fn arrivals(&self) -> Vec<Instant> {
            self.arrivals.lock().unwrap().clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, SeqCst);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    const OK: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-1\r\nContent-Length: 3\r\n\r\nok\n"];

    #[test]
    fn the_checker_is_one_thread_and_dropping_it_ends_it() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_millis(100), Duration::from_secs(1));
        // A new thread names itself once it runs: give it a moment, bounded.
        let deadline = Instant::now() + Duration::from_secs(2);
        while checker_threads() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(checker_threads(), 1);
        drop(setup);
        assert_eq!(checker_threads(), 0, "dropping the checker waits for its thread to end");
    }

    #[test]
    fn a_new_endpoint_is_checked_at_once_and_a_refused_one_fails_fast() {
        let _serial = one_at_a_time();
        // An interval longer than the test: only the first check can be seen.
        let setup = start(Duration::from_secs(30), Duration::from_secs(5));
        let web = Server::answering(OK);
        let t0 = Instant::now();
        setup.register("web-1", web.addr);
        setup.wait_for("web-1", Duration::from_secs(1), |r| r.status == Status::Passing);
        let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        setup.register("gone", refused);
        let record = setup.wait_for("gone", Duration::from_secs(1), |r| r.status == Status::Critical);
        assert!(t0.elapsed() < Duration::from_secs(1), "first checks took {:?}", t0.elapsed());
        assert!(record.last_error.unwrap_or_default().contains("refused"), "the error says why");
        assert_eq!(setup.probes(), 2);
    }

    #[test]
    fn a_silent_endpoint_fails_at_its_timeout() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_secs(30), Duration::from_millis(300));
        let silent = Server::hung();
        let t0 = Instant::now();
        setup.register("silent", silent.addr);
        let record = setup.wait_for("silent", Duration::from_secs(2), |r| r.status == Status::Critical);
        assert!(t0.elapsed() >= Duration::from_millis(300), "failed after {:?}, before its timeout", t0.elapsed());
        assert_eq!(record.last_error.as_deref(), Some("timed out"));
        assert_eq!(silent.arrivals().len(), 1, "the request was sent");
    }

    #[test]
    fn an_answer_naming_another_instance_is_taken_whole_or_in_pieces() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_secs(30), Duration::from_secs(2));
        let whole = Server::answering(&[b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-2\r\n\r\n"]);
        let pieces = Server::answering(&[b"HTTP/1.1 200 OK\r\n", b"X-Instance-Name: web-2\r\n\r\n"]);
        let stalled = Server::answering(&[b"HTTP/1.1 204 No Content\r\nServer: slow"]);
        setup.register("web-1", whole.addr);
        setup.register("web-x", pieces.addr);
        setup.register("web-s", stalled.addr);
        for name in ["web-1", "web-x"] {
            let record = setup.wait_for(name, Duration::from_secs(2), |r| r.status == Status::Critical);
            let error = record.last_error.unwrap_or_default();
            assert!(error.contains("\"web-2\"") && error.contains("another instance"), "{name}: {error}");
        }
        // A head that stalls after its status line is judged on it at the timeout.
        setup.wait_for("web-s", Duration::from_secs(4), |r| r.status == Status::Passing);
    }

    use super::test_shared::time_wait_towards;

    /// Waits up to 5 s for `n` probes.
    fn wait_for_probes(setup: &Setup, n: u64) {
        let t0 = Instant::now();
        while setup.probes() < n {
            assert!(t0.elapsed() < Duration::from_secs(5), "{n} checks within 5 s");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn checks_without_kept_connections_leave_no_socket_in_time_wait() {
        let _serial = one_at_a_time();
        let setup = start_keeping(Duration::from_millis(50), Duration::from_secs(2), 0);
        let web = Server::answering(OK);
        setup.register("web-1", web.addr);
        wait_for_probes(&setup, 5);
        assert_eq!(setup.metrics.probes_failed.load(SeqCst), 0);
        assert!(web.connections.load(SeqCst) >= 5, "a connection a check");
        // Let the endpoint's threads see the resets. Counted before the checker stops: a probe
        // abandoned in flight by the stop is closed before its answer, with a FIN.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(time_wait_towards(web.addr.port()), 0, "the checker's sockets are reset, not left in TIME_WAIT");
        drop(setup);
    }

    #[test]
    fn an_endpoint_is_checked_again_on_the_connection_kept_from_its_last_check() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_millis(50), Duration::from_secs(2));
        let web = Server::answering(OK);
        // Answers that cannot carry another on their connection are closed, as before.
        let closing = Server::answering(&[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"]);
        let no_length = Server::answering(&[b"HTTP/1.1 200 OK\r\n\r\n"]);
        setup.register("web-1", web.addr);
        setup.register("closing", closing.addr);
        setup.register("unsized", no_length.addr);
        wait_for_probes(&setup, 15);
        assert_eq!(setup.metrics.probes_failed.load(SeqCst), 0);
        assert!(web.arrivals().len() >= 5);
        assert_eq!(web.connections.load(SeqCst), 1, "every check of web-1 on one connection");
        assert!(closing.connections.load(SeqCst) >= 4, "Connection: close is honoured");
        assert!(no_length.connections.load(SeqCst) >= 4, "an answer without a length is not kept");
        thread::sleep(Duration::from_millis(100));
        for server in [&web, &closing, &no_length] {
            assert_eq!(time_wait_towards(server.addr.port()), 0, "closed with resets, or kept");
        }
    }

    #[test]
    fn two_names_at_one_address_each_keep_their_own_connection() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_millis(50), Duration::from_secs(2));
        let shared = Server::answering(&[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"]);
        setup.register("web-a", shared.addr);
        setup.register("web-b", shared.addr);
        wait_for_probes(&setup, 10);
        assert_eq!(setup.metrics.probes_failed.load(SeqCst), 0);
        assert_eq!(shared.connections.load(SeqCst), 2, "one kept connection a Name, none taken from the other");
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_replaced_without_a_failure() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_millis(50), Duration::from_secs(2));
        let web = Server::closing_after_each(OK[0]);
        setup.register("web-1", web.addr);
        wait_for_probes(&setup, 6);
        assert_eq!(setup.metrics.probes_failed.load(SeqCst), 0, "{:?}", setup.store.get("web-1"));
        assert!(web.connections.load(SeqCst) >= 6, "a new connection when the kept one was closed");
        assert_eq!(setup.store.get("web-1").unwrap().status, Status::Passing);
    }

    #[test]
    fn a_kept_connection_answered_by_another_instance_is_taken() {
        let _serial = one_at_a_time();
        let setup = start(Duration::from_millis(50), Duration::from_secs(2));
        // The same port, the answer naming web-2: the connection is not kept for a stranger.
        let web = Server::answering(&[b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-2\r\nContent-Length: 3\r\n\r\nok\n"]);
        setup.register("web-1", web.addr);
        let record = setup.wait_for("web-1", Duration::from_secs(2), |r| r.status == Status::Critical);
        assert!(record.last_error.unwrap_or_default().contains("\"web-2\""));
        wait_for_probes(&setup, 3);
        assert!(web.connections.load(SeqCst) >= 2, "each check of a stranger on a new connection");
    }

    #[test]
    fn five_hundred_hung_endpoints_do_not_delay_a_healthy_ones_checks() {
        let _serial = one_at_a_time();
        const HUNG: usize = 500;
        let interval = Duration::from_millis(300);
        // Longer than the test: every hung probe holds its place to the end.
        let setup = start(interval, Duration::from_secs(10));
        let hung = Server::hung();
        for i in 0..HUNG {
            setup.register(&format!("hung-{i:03}"), hung.addr);
        }
        let web = Server::answering(OK);
        let registered = Instant::now();
        setup.register("web-1", web.addr);
        setup.wait_for("web-1", Duration::from_secs(1), |r| r.status == Status::Passing);
        thread::sleep(Duration::from_secs(3));
        let arrivals = web.arrivals();
        let hung_requests = hung.arrivals().len();
        assert_eq!(checker_threads(), 1, "one thread, with {hung_requests} probes waiting");
        drop(setup);

        assert!(hung_requests >= HUNG * 9 / 10, "the hung probes were in flight: {hung_requests} requests arrived");
        let first = arrivals[0] - registered;
        assert!(first < Duration::from_millis(500), "the first check came {first:?} after the registration");
        let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
        let longest = gaps.iter().max().copied().unwrap_or_default();
        eprintln!("{} checks of web-1 in 3 s, longest gap {longest:?}", arrivals.len());
        assert!(arrivals.len() >= 9, "checked every {interval:?}: {gaps:?}");
        // One interval, plus the probe and the time a loaded machine takes to wake a thread.
        assert!(longest < interval + Duration::from_millis(250), "gaps: {gaps:?}");
    }
}
