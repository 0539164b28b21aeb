//! One health probe: `GET http://ADDRESS/healthz`, any 2xx passes, unless the answer names
//! another instance than the one registered there. Written on a bare `TcpStream` because the
//! checker needs two things from the answer, its status line and the instance header, and
//! must bound every step by one deadline.
//!
//! The parts that do no I/O of their own ([`write_request`], [`HeadReader`]: when to peek, when
//! to read, how a head is parsed and judged) are shared by the blocking [`probe`] (the
//! server's `healthcheck` subcommand) and the registry's checker, which drives many probes at
//! once on non-blocking sockets: both ask the same question and read the answer the same way.

use crate::validate::clip;
use crate::wire::INSTANCE_HEADER;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Why it failed, in words for `LastError`.
    Fail(String),
    /// The answer named another instance (the header [`INSTANCE_HEADER`]): the registered one is
    /// gone and a stranger holds its port. Proof, not a doubt, so it counts at once.
    Taken(String),
}

impl Outcome {
    /// The sentence for `LastError`, or `None` for a pass.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Pass => None,
            Outcome::Fail(why) => Some(why.clone()),
            Outcome::Taken(by) => {
                Some(format!("GET /healthz was answered by instance {by:?}: another instance holds this address now"))
            }
        }
    }
}

/// The most of an answer a probe reads: a head fits several times over, and a hostile
/// endpoint cannot make the checker read more.
pub const MAX_READ: usize = 1024;

/// Probes `address` within `timeout` (connect, send and read together). With `expect`, an
/// answer whose instance header names someone else is [`Outcome::Taken`]; an answer without
/// the header is judged by its status alone, as every server that is not ours answers.
pub fn probe(address: SocketAddr, timeout: Duration, expect: Option<&str>) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream =
        match remaining(deadline).and_then(|wait| TcpStream::connect_timeout(&address, wait).map_err(describe)) {
            Ok(stream) => stream,
            Err(why) => return Outcome::Fail(why),
        };
    // One small write into a new connection's empty send buffer: it neither blocks nor waits
    // for Nagle, so the socket needs no write timeout and no TCP_NODELAY (two system calls a
    // probe, at thousands of probes a second).
    let mut request = Vec::new();
    write_request(&mut request, address, Reuse::Close);
    if let Err(e) = stream.write_all(&request) {
        return Outcome::Fail(describe(e));
    }
    let mut head = HeadReader::new();
    loop {
        let step = remaining(deadline)
            .and_then(|wait| stream.set_read_timeout(Some(wait)).map_err(describe))
            .and_then(|()| head.advance(&mut stream, expect).map_err(describe));
        match step {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(why) => return head.stalled(why, expect),
        }
    }
}

/// The words for an I/O error in `LastError`: a timeout, or a read that would block past the
/// deadline, is "timed out".
pub fn describe(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_string())
}

/// Whether a probe asks the endpoint to keep its connection open for the next probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// `Connection: close`: one connection a probe.
    Close,
    /// HTTP/1.1's default: the connection stays open, and the next probe of the endpoint
    /// skips the connect (see [`HeadReader::whole_answer`]).
    KeepAlive,
}

/// Writes the probe's request for `address` into `out`, replacing what it held: a caller that
/// probes again and again reuses one buffer.
pub fn write_request(out: &mut Vec<u8>, address: SocketAddr, reuse: Reuse) {
    out.clear();
    let connection = match reuse {
        Reuse::Close => "Connection: close\r\n",
        Reuse::KeepAlive => "",
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "GET /healthz HTTP/1.1\r\nHost: {address}\r\nUser-Agent: service-registry/{}\r\n{connection}\r\n",
        crate::VERSION
    );
}

/// A connection a probe reads its answer from: std's blocking `TcpStream` here, the checker's
/// non-blocking one there (where `WouldBlock` means "wait until it is readable").
pub trait Connection {
    /// Copies what has arrived into `buf` without consuming it.
    fn peek_answer(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Consumes what has arrived into `buf`.
    fn read_answer(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Connection for TcpStream {
    fn peek_answer(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }
    fn read_answer(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }
}

/// Reads the head of one answer, [`MAX_READ`] bytes at most, in a fixed buffer that a caller
/// may keep and [`reset`](HeadReader::reset) for the next probe.
///
/// Peeked, not read: when the head is in the first bytes to arrive (it is, from servers that
/// write head and body at once), the answer stays unread, and a socket closed with unread data
/// is reset (RST) rather than left in TIME_WAIT for a minute. At 10,000 endpoints the checker
/// opens 2,000 connections a second: TIME_WAIT would hold 120,000 sockets (the kernel's cap is
/// often 131,072) and make every connect search past them for a port. HAProxy closes its
/// checks with RST for this reason.
///
/// When the head comes in pieces, it is read until it is whole, the buffer is full or the
/// answer ends. Once the status line is in, a stall is judged on what arrived (as an answer
/// without the instance header), not failed: see [`HeadReader::stalled`].
pub struct HeadReader {
    buf: [u8; MAX_READ],
    /// Bytes read (consumed) so far; peeked bytes are not counted.
    len: usize,
    /// Whether the first look (a peek) was taken and found the head incomplete.
    peeked: bool,
    /// When the first look held one whole answer the connection may carry another after
    /// (see [`HeadReader::whole_answer`]): its length.
    whole: Option<usize>,
    /// Whether any byte of an answer arrived.
    answered: bool,
}

impl Default for HeadReader {
    fn default() -> Self {
        HeadReader::new()
    }
}

impl HeadReader {
    /// An empty reader.
    pub const fn new() -> HeadReader {
        HeadReader { buf: [0; MAX_READ], len: 0, peeked: false, whole: None, answered: false }
    }

    /// Makes the reader ready for another answer.
    pub fn reset(&mut self) {
        self.len = 0;
        self.peeked = false;
        self.whole = None;
        self.answered = false;
    }

    /// The length of the answer when it arrived whole in the first look, nothing after it, on a
    /// connection the server keeps open (HTTP/1.1, a `Content-Length` body, no
    /// `Connection: close`): read that much, and the connection is ready for the next request.
    /// `None` for anything else (pieces, chunked bodies, more bytes than one answer), which is
    /// then closed unread, with a reset, as every probe's connection used to be.
    pub fn whole_answer(&self) -> Option<usize> {
        self.whole
    }

    /// Whether any byte of an answer arrived: a kept connection that ends without one was
    /// closed by the server while idle, which says nothing of the endpoint's health.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Takes one step: the first a peek, the next ones reads. `Ok(Some)` is the verdict,
    /// `Ok(None)` asks for another step, and an error is the connection's (on a non-blocking
    /// one, `WouldBlock` means: step again when it is readable; any other error or the deadline
    /// ends the probe through [`HeadReader::stalled`]).
    pub fn advance(&mut self, conn: &mut impl Connection, expect: Option<&str>) -> io::Result<Option<Outcome>> {
        if !self.peeked {
            let peeked = conn.peek_answer(&mut self.buf)?;
            if peeked == 0 {
                return Ok(Some(Outcome::Fail("connection closed before an answer".into())));
            }
            self.answered = true;
            if head_complete(&self.buf[..peeked]) || peeked == self.buf.len() {
                self.whole = reusable_length(&self.buf[..peeked]);
                return Ok(Some(verdict(parse_head(&self.buf[..peeked]), expect)));
            }
            // In pieces: read from the start, peeked bytes included.
            self.peeked = true;
            return Ok(None);
        }
        let n = conn.read_answer(&mut self.buf[self.len..])?;
        self.len += n;
        self.answered |= n > 0;
        let bytes = &self.buf[..self.len];
        if n > 0 && !head_complete(bytes) && self.len < self.buf.len() {
            return Ok(None);
        }
        let head = if self.len == 0 {
            Err("connection closed before an answer".into())
        } else if !bytes.contains(&b'\n') {
            Err(if self.len == self.buf.len() {
                "answer has no status line in its first 1024 bytes".into()
            } else {
                "connection closed before an answer".into()
            })
        } else {
            parse_head(bytes)
        };
        Ok(Some(verdict(head, expect)))
    }

    /// The verdict when reading stopped before the head was whole, for `why` (the deadline, an
    /// error): judged on what arrived if its status line did, else a failure for `why`.
    pub fn stalled(&self, why: String, expect: Option<&str>) -> Outcome {
        let bytes = &self.buf[..self.len];
        if bytes.contains(&b'\n') {
            verdict(parse_head(bytes), expect)
        } else {
            Outcome::Fail(why)
        }
    }
}

/// What a probe reads of an answer.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    instance: Option<String>,
}

fn verdict(head: Result<Head, String>, expect: Option<&str>) -> Outcome {
    match head {
        Ok(head) => judge(&head, expect),
        Err(why) => Outcome::Fail(why),
    }
}

fn judge(head: &Head, expect: Option<&str>) -> Outcome {
    match (expect, head.instance.as_deref()) {
        (Some(expected), Some(answered)) if answered != expected => Outcome::Taken(clip(answered).to_string()),
        _ if (200..300).contains(&head.status) => Outcome::Pass,
        _ => Outcome::Fail(format!("GET /healthz answered {}", head.status)),
    }
}

/// Whether `bytes` hold a whole head: the blank line that ends it.
fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

/// The length of `bytes` when they are exactly one whole HTTP/1.1 answer after which the
/// connection stays open: a head ending in a blank line, a `Content-Length` body, no
/// `Transfer-Encoding`, no `Connection: close`.
fn reusable_length(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut lines = bytes[..head_end - 4].split(|b| *b == b'\n');
    if !lines.next()?.starts_with(b"HTTP/1.1 ") {
        return None;
    }
    let mut body = None;
    for line in lines {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            // Twice is ambiguous (request smuggling's trick): not kept.
            if body.replace(value.parse::<usize>().ok()?).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("connection")
                && value.split(',').any(|token| token.trim().eq_ignore_ascii_case("close")))
        {
            return None;
        }
    }
    let length = head_end.checked_add(body?)?;
    (length == bytes.len()).then_some(length)
}

/// Reads the status code from `HTTP/1.x NNN ...` and the instance header from the whole lines
/// after it.
fn parse_head(head: &[u8]) -> Result<Head, String> {
    let mut lines = head.split(|b| *b == b'\n');
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    // The last piece has no line end: it may be cut short, so it is not read.
    let whole = head.iter().rposition(|b| *b == b'\n').map_or(&head[..0], |end| &head[..end]);
    let instance = whole.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let line = String::from_utf8_lossy(line);
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case(INSTANCE_HEADER).then(|| value.trim().to_string())
    });
    Ok(Head { status, instance: instance.filter(|i| !i.is_empty()) })
}

/// Reads the status code from `HTTP/1.x NNN ...`.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {:?}", text.chars().take(40).collect::<String>())),
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
    use std::net::TcpListener;
    use std::thread;

    /// A one-shot endpoint that answers `reply` to the first connection.
    fn answer_once(reply: &'static [u8]) -> SocketAddr {
        answer_in_pieces(vec![reply])
    }

    /// A one-shot endpoint that answers the first connection with `pieces`, 50 ms apart.
    fn answer_in_pieces(pieces: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.set_nodelay(true);
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        thread::sleep(Duration::from_millis(50));
                    }
                    let _ = s.write_all(piece);
                }
            }
        });
        addr
    }

    #[test]
    fn passes_on_2xx_only() {
        let cases: &[(&[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", true),
            (b"HTTP/1.0 204 No Content\r\n\r\n", true),
            (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            (b"HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n", false),
            (b"SSH-2.0-OpenSSH\r\n", false),
            (b"", false),
        ];
        for (reply, passes) in cases {
            let outcome = probe(answer_once(reply), Duration::from_secs(2), None);
            assert_eq!(outcome == Outcome::Pass, *passes, "{:?}: {outcome:?}", String::from_utf8_lossy(reply));
        }
    }

    use super::test_shared::time_wait_towards;

    #[test]
    fn probes_leave_no_socket_in_time_wait() {
        // An endpoint that answers, then waits for the prober to close first: the side that
        // closes first is the one a FIN would leave in TIME_WAIT.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            for _ in 0..5 {
                let Ok((mut s, _)) = listener.accept() else { return };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        for _ in 0..5 {
            assert_eq!(probe(addr, Duration::from_secs(2), None), Outcome::Pass);
        }
        server.join().unwrap();
        assert_eq!(time_wait_towards(addr.port()), 0, "the prober's sockets are reset, not left in TIME_WAIT");
    }

    #[test]
    fn a_status_line_in_pieces_is_still_read() {
        let addr = answer_in_pieces(vec![b"HTTP/1.1 20", b"4 No Content\r\n\r\n"]);
        assert_eq!(probe(addr, Duration::from_secs(2), None), Outcome::Pass);
    }

    #[test]
    fn a_refused_connection_fails_at_once() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t0 = Instant::now();
        assert!(matches!(probe(addr, Duration::from_secs(2), None), Outcome::Fail(_)));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_silent_endpoint_fails_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let outcome = probe(listener.local_addr().unwrap(), Duration::from_millis(200), None);
        assert_eq!(outcome, Outcome::Fail("timed out".into()));
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn an_answer_naming_another_instance_is_taken_whatever_its_status() {
        let cases: &[(&[u8], Outcome)] = &[
            (b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-2\r\n\r\n", Outcome::Taken("web-2".into())),
            (b"HTTP/1.1 503 Busy\r\nx-instance-name:  web-2 \r\n\r\n", Outcome::Taken("web-2".into())),
            (b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-1\r\n\r\n", Outcome::Pass),
            (b"HTTP/1.1 503 Busy\r\nX-Instance-Name: web-1\r\n\r\n", Outcome::Fail("GET /healthz answered 503".into())),
            (b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n", Outcome::Pass),
            (b"HTTP/1.1 200 OK\r\nX-Instance-Name:\r\n\r\n", Outcome::Pass),
        ];
        for (reply, want) in cases {
            assert_eq!(
                &probe(answer_once(reply), Duration::from_secs(2), Some("web-1")),
                want,
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
        let taken = b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-2\r\n\r\n";
        assert_eq!(
            probe(answer_once(taken), Duration::from_secs(2), None),
            Outcome::Pass,
            "nothing expected, nothing taken"
        );
        assert!(Outcome::Taken("web-2".into()).error().unwrap().contains("\"web-2\""));
    }

    #[test]
    fn only_one_whole_answer_that_leaves_the_connection_open_is_kept() {
        let kept: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
            b"HTTP/1.1 503 Busy\r\ncontent-length:0\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Instance-Name: web-1\r\nContent-Length: 2\r\n\r\nok",
        ];
        for answer in kept {
            assert_eq!(reusable_length(answer), Some(answer.len()), "{:?}", String::from_utf8_lossy(answer));
        }
        let closed: &[&[u8]] = &[
            // Asked to close, or HTTP/1.0's default close.
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive, Close\r\n\r\nok\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
            // No length, or one that cannot be trusted: the end of the answer is unknown.
            b"HTTP/1.1 200 OK\r\n\r\nok\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nok\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            // Not all of the body yet, or more than one answer.
            b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nok\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            // A head of bare newlines, or no head at all.
            b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ];
        for answer in closed {
            assert_eq!(reusable_length(answer), None, "{:?}", String::from_utf8_lossy(answer));
        }
    }

    #[test]
    fn a_head_in_pieces_is_read_whole() {
        let addr = answer_in_pieces(vec![b"HTTP/1.1 200 OK\r\n", b"X-Instance-Name: web-2\r\n\r\n"]);
        assert_eq!(probe(addr, Duration::from_secs(2), Some("web-1")), Outcome::Taken("web-2".into()));
    }

    #[test]
    fn a_head_that_stalls_after_its_status_line_is_judged_on_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nServer: slow");
            thread::sleep(Duration::from_millis(600));
        });
        assert_eq!(probe(addr, Duration::from_millis(300), Some("web-1")), Outcome::Pass);
        server.join().unwrap();
    }
}
