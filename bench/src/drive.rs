//! The load generator's engine: many keep-alive connections driven by one thread through
//! epoll (mio), each with one request in flight, as wrk does.
//!
//! A thread per connection blocked in `read` cost a wake-up and a context switch per answer,
//! on the same two cores as the server under test: 13 µs of CPU a request with 32 clients,
//! half a core at 35,000 req/s. Here a busy thread finds the next answers already waiting
//! when it returns to `epoll_wait`, and the server's `send` rarely has anyone to wake.

use crate::http::{find, invalid, Head, Length, MAX_HEAD};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// More failed requests than this and the run gives up: the target is broken, not slow.
pub const MAX_ERRORS: u64 = 1000;
/// How often the loop looks for requests past their timeout when nothing happens.
const TICK: Duration = Duration::from_millis(50);

/// What one thread saw.
pub struct Outcome {
    /// Microseconds from the first byte sent to the last byte received, per 2xx answer.
    pub latencies: Vec<u32>,
    pub errors: u64,
    pub statuses: Vec<(u16, u64)>,
    pub body_bytes: u64,
    /// When the last answer arrived.
    pub finished: Instant,
}

/// The work every thread shares: the requests to cycle over, the next request's number, how
/// many to send at most and for how long (from when every thread is ready).
pub struct Plan<'a> {
    pub target: SocketAddr,
    pub requests: &'a [Vec<u8>],
    pub next: &'a AtomicU64,
    pub limit: u64,
    pub duration: Duration,
    pub timeout: Duration,
}

/// A plan under way: its deadline is known.
struct Running<'a> {
    plan: &'a Plan<'a>,
    deadline: Instant,
}

impl<'a> std::ops::Deref for Running<'a> {
    type Target = Plan<'a>;
    fn deref(&self) -> &Plan<'a> {
        self.plan
    }
}

impl Running<'_> {
    /// The next request to send, or `None` when the count or the time is up.
    fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.limit && Instant::now() < self.deadline).then(|| (i % self.requests.len() as u64) as usize)
    }
}

enum Stage {
    Write {
        written: usize,
    },
    Head,
    Body {
        left: usize,
    },
    /// A chunked body (the Go original's page): `left` bytes of the current chunk and its
    /// CRLF still to skip; `conn.head` holds what has arrived and is not yet parsed.
    Chunked {
        left: usize,
    },
}

struct Conn {
    stream: TcpStream,
    request: usize,
    sent: Instant,
    stage: Stage,
    head: Vec<u8>,
    status: u16,
    length: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn { stream, request: 0, sent: Instant::now(), stage: Stage::Head, head: Vec::new(), status: 0, length: 0 }
    }
}

enum Step {
    /// Waiting for the socket.
    Blocked,
    /// An answer arrived whole.
    Answered,
}

/// Opens `connections` connections, then drives them until the plan is done. The
/// connections are open before this returns its first request, so `ready` (called once they
/// are) lets the caller start the clock for every thread at once.
pub fn run(plan: &Plan, connections: usize, ready: impl FnOnce()) -> io::Result<Outcome> {
    let opened = Poll::new().and_then(|poll| {
        let conns = (0..connections).map(|i| connect(plan, &poll, Token(i)).map(|s| Some(Conn::new(s))));
        Ok((conns.collect::<io::Result<Vec<_>>>()?, poll))
    });
    // Called whatever happened: the caller's other threads wait for this one.
    ready();
    let (mut conns, mut poll) = opened?;
    let plan = &Running { plan, deadline: Instant::now() + plan.duration };
    let mut out = Outcome {
        latencies: Vec::with_capacity(1 << 20),
        errors: 0,
        statuses: Vec::new(),
        body_bytes: 0,
        finished: Instant::now(),
    };
    let mut live = 0;
    for token in 0..conns.len() {
        if start_next(plan, &mut conns[token]) {
            live += 1 - drive(plan, &poll, &mut conns, token, &mut out);
        } else {
            finish(&poll, &mut conns, token);
        }
    }
    let mut events = Events::with_capacity(1024);
    while live > 0 && out.errors <= MAX_ERRORS {
        if let Err(e) = poll.poll(&mut events, Some(TICK)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            live -= drive(plan, &poll, &mut conns, event.token().0, &mut out);
        }
        // A request past its timeout counts as an error; its connection is replaced.
        let now = Instant::now();
        for token in 0..conns.len() {
            let late = conns[token].as_ref().is_some_and(|c| now.duration_since(c.sent) > plan.timeout);
            if late {
                out.errors += 1;
                live -= restart(plan, &poll, &mut conns, token, &mut out);
            }
        }
    }
    Ok(out)
}

/// Moves one connection on as far as its socket allows. Returns 1 when the connection is
/// finished with (the plan is done), else 0.
fn drive(plan: &Running, poll: &Poll, conns: &mut [Option<Conn>], token: usize, out: &mut Outcome) -> usize {
    loop {
        let Some(conn) = conns[token].as_mut() else { return 0 };
        match step(plan, conn) {
            Ok(Step::Blocked) => return 0,
            Ok(Step::Answered) => {
                let took = conn.sent.elapsed();
                out.finished = Instant::now();
                count(&mut out.statuses, conn.status);
                if (200..300).contains(&conn.status) {
                    out.latencies.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                    out.body_bytes += conn.length as u64;
                } else {
                    out.errors += 1;
                }
                if !start_next(plan, &mut conns[token]) {
                    return finish(poll, conns, token);
                }
            }
            Err(_) => {
                out.errors += 1;
                return restart(plan, poll, conns, token, out);
            }
        }
    }
}

/// Replaces a failed connection with a new one and starts the next request on it.
fn restart(plan: &Running, poll: &Poll, conns: &mut [Option<Conn>], token: usize, out: &mut Outcome) -> usize {
    if let Some(mut old) = conns[token].take() {
        let _ = poll.registry().deregister(&mut old.stream);
    }
    if out.errors > MAX_ERRORS {
        return 1;
    }
    let Ok(stream) = connect(plan, poll, Token(token)) else {
        out.errors += 1;
        return 1;
    };
    conns[token] = Some(Conn::new(stream));
    if !start_next(plan, &mut conns[token]) {
        return finish(poll, conns, token);
    }
    drive(plan, poll, conns, token, out)
}

fn finish(poll: &Poll, conns: &mut [Option<Conn>], token: usize) -> usize {
    if let Some(mut conn) = conns[token].take() {
        let _ = poll.registry().deregister(&mut conn.stream);
    }
    1
}

/// Puts the connection's next request in place; false when the plan is done.
fn start_next(plan: &Running, slot: &mut Option<Conn>) -> bool {
    let (Some(conn), Some(request)) = (slot.as_mut(), plan.take()) else { return false };
    conn.request = request;
    conn.sent = Instant::now();
    conn.stage = Stage::Write { written: 0 };
    true
}

/// One connection's state machine: write the request, read the head, discard the body.
fn step(plan: &Running, conn: &mut Conn) -> io::Result<Step> {
    loop {
        match conn.stage {
            Stage::Write { written } => {
                let request = &plan.requests[conn.request];
                match conn.stream.write(&request[written..]) {
                    Ok(n) if written + n == request.len() => {
                        conn.head.clear();
                        conn.stage = Stage::Head;
                        // Nothing can have arrived yet, and the last answer was read to its
                        // end, so the answer's arrival will be an event: reading now would
                        // only cost a system call that says "nothing yet".
                        return Ok(Step::Blocked);
                    }
                    Ok(n) => conn.stage = Stage::Write { written: written + n },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Blocked),
                    Err(e) => return Err(e),
                }
            }
            Stage::Head => {
                let mut buf = [0u8; 4096];
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed the connection")),
                    Ok(n) => conn.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Blocked),
                    Err(e) => return Err(e),
                }
                let Some(at) = find(&conn.head, b"\r\n\r\n") else {
                    if conn.head.len() > MAX_HEAD {
                        return Err(invalid("response head over 64 KiB"));
                    }
                    continue;
                };
                let head = Head::parse(&conn.head[..at + 4])?;
                let length = match head.length {
                    Length::Fixed(n) => n,
                    Length::None => 0,
                    Length::Chunked => {
                        if !head.keep_alive {
                            return Err(invalid("answer not reusable as keep-alive"));
                        }
                        conn.status = head.status;
                        conn.length = 0;
                        conn.head.drain(..at + 4);
                        conn.stage = Stage::Chunked { left: 0 };
                        continue;
                    }
                };
                let arrived = conn.head.len() - (at + 4);
                if arrived > length || !head.keep_alive {
                    return Err(invalid("answer not reusable as keep-alive"));
                }
                conn.status = head.status;
                conn.length = length;
                conn.stage = Stage::Body { left: length - arrived };
            }
            Stage::Body { left: 0 } => return Ok(Step::Answered),
            Stage::Chunked { left } => {
                if left > 0 && !conn.head.is_empty() {
                    let n = left.min(conn.head.len());
                    conn.head.drain(..n);
                    conn.stage = Stage::Chunked { left: left - n };
                    continue;
                }
                if left == 0 {
                    if let Some(at) = find(&conn.head, b"\r\n") {
                        let line = std::str::from_utf8(&conn.head[..at]).map_err(|_| invalid("bad chunk size"))?;
                        let hex = line.split(';').next().unwrap_or_default().trim();
                        let size = usize::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?;
                        if size == 0 {
                            // The last chunk; no trailers expected, only the closing CRLF.
                            if conn.head.len() < at + 4 {
                                // Wait for it below.
                            } else {
                                if conn.head.len() > at + 4 {
                                    return Err(invalid("answer not reusable as keep-alive"));
                                }
                                conn.head.clear();
                                return Ok(Step::Answered);
                            }
                        } else {
                            conn.head.drain(..at + 2);
                            conn.length += size;
                            conn.stage = Stage::Chunked { left: size + 2 };
                            continue;
                        }
                    } else if conn.head.len() > MAX_HEAD {
                        return Err(invalid("chunk size line over 64 KiB"));
                    }
                }
                let mut buf = [0u8; 16384];
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed the connection")),
                    Ok(n) => conn.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Blocked),
                    Err(e) => return Err(e),
                }
            }
            Stage::Body { left } => match crate::sys::discard_arrived(&conn.stream, left) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed the connection")),
                Ok(n) => conn.stage = Stage::Body { left: left - n.min(left) },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Blocked),
                Err(e) => return Err(e),
            },
        }
    }
}

fn connect(plan: &Plan, poll: &Poll, token: Token) -> io::Result<TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&plan.target, plan.timeout)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(stream);
    poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(stream)
}

fn count(statuses: &mut Vec<(u16, u64)>, status: u16) {
    match statuses.iter_mut().find(|(s, _)| *s == status) {
        Some((_, n)) => *n += 1,
        None => statuses.push((status, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    /// A loopback server answering every request on every connection with `answer(n)`, where
    /// n counts the requests of that connection; it closes the connection when told to.
    fn serve(answer: fn(usize) -> Option<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut s) = stream else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    for n in 0.. {
                        while find(&seen, b"\r\n\r\n").is_none() {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => seen.extend_from_slice(&buf[..k]),
                            }
                        }
                        seen.clear();
                        match answer(n) {
                            Some(bytes) if s.write_all(&bytes).is_ok() => {}
                            _ => return,
                        }
                    }
                });
            }
        });
        addr
    }

    fn plan_for<'a>(target: SocketAddr, requests: &'a [Vec<u8>], next: &'a AtomicU64, limit: u64) -> Plan<'a> {
        Plan { target, requests, next, limit, duration: Duration::from_secs(20), timeout: Duration::from_secs(5) }
    }

    #[test]
    fn sends_exactly_the_planned_requests_and_reads_whole_bodies() {
        // 300 KB bodies arrive in many pieces, and the next answer right behind them.
        const BODY: usize = 300_000;
        let target = serve(|_| {
            let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
            answer.resize(answer.len() + BODY, b'x');
            Some(answer)
        });
        let requests = vec![crate::http::get(target, "/")];
        let next = AtomicU64::new(0);
        let plan = plan_for(target, &requests, &next, 500);
        let outcome = run(&plan, 8, || {}).unwrap();
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.latencies.len(), 500);
        assert_eq!(outcome.statuses, vec![(200, 500)]);
        assert_eq!(outcome.body_bytes, 500 * BODY as u64);
    }

    #[test]
    fn a_closed_connection_is_an_error_and_is_replaced() {
        // Every connection answers twice, then closes: every third request fails.
        let target = serve(|n| (n < 2).then(|| b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()));
        let requests = vec![crate::http::get(target, "/")];
        let next = AtomicU64::new(0);
        let plan = plan_for(target, &requests, &next, 30);
        let outcome = run(&plan, 1, || {}).unwrap();
        assert_eq!((outcome.latencies.len(), outcome.errors), (20, 10));
    }

    #[test]
    fn error_answers_are_counted_but_not_timed() {
        let target = serve(|_| Some(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno".to_vec()));
        let requests = vec![crate::http::get(target, "/")];
        let next = AtomicU64::new(0);
        let plan = plan_for(target, &requests, &next, 50);
        let outcome = run(&plan, 2, || {}).unwrap();
        assert_eq!((outcome.latencies.len(), outcome.errors), (0, 50));
        assert_eq!(outcome.statuses, vec![(503, 50)]);
    }

    #[test]
    fn chunked_answers_are_read_to_their_end_and_timed() {
        // The Go original's page: chunked, in pieces of many sizes, a chunk extension once.
        let target = serve(|n| {
            let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for size in [1, 4096, 10_000 + n % 7] {
                answer.extend_from_slice(format!("{size:x};x=y\r\n").as_bytes());
                answer.resize(answer.len() + size, b'x');
                answer.extend_from_slice(b"\r\n");
            }
            answer.extend_from_slice(b"0\r\n\r\n");
            Some(answer)
        });
        let requests = vec![crate::http::get(target, "/")];
        let next = AtomicU64::new(0);
        let plan = plan_for(target, &requests, &next, 200);
        let outcome = run(&plan, 4, || {}).unwrap();
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.latencies.len(), 200);
        assert!(outcome.body_bytes >= 200 * 14_097, "{}", outcome.body_bytes);
    }
}
