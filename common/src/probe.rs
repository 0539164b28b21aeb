//! One health probe: `GET http://ADDRESS/healthz`, any 2xx passes, unless the answer names
//! another instance than the one registered there. Written on a bare `TcpStream` because the
//! checker needs two things from the answer, its status line and the instance header, and
//! must bound every step by one deadline.

use crate::validate::clip;
use crate::wire::INSTANCE_HEADER;
use std::io::{Read, Write};
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
const MAX_READ: usize = 1024;

/// Probes `address` within `timeout` (connect, send and read together). With `expect`, an
/// answer whose instance header names someone else is [`Outcome::Taken`]; an answer without
/// the header is judged by its status alone, as every server that is not ours answers.
pub fn probe(address: SocketAddr, timeout: Duration, expect: Option<&str>) -> Outcome {
    let deadline = Instant::now() + timeout;
    match exchange(address, deadline) {
        Ok(head) => judge(&head, expect),
        Err(why) => Outcome::Fail(why),
    }
}

/// What a probe reads of an answer.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    instance: Option<String>,
}

fn judge(head: &Head, expect: Option<&str>) -> Outcome {
    match (expect, head.instance.as_deref()) {
        (Some(expected), Some(answered)) if answered != expected => Outcome::Taken(clip(answered).to_string()),
        _ if (200..300).contains(&head.status) => Outcome::Pass,
        _ => Outcome::Fail(format!("GET /healthz answered {}", head.status)),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_string())
}

/// Whether `bytes` hold a whole head: the blank line that ends it.
fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

fn exchange(address: SocketAddr, deadline: Instant) -> Result<Head, String> {
    let describe = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    };
    let mut stream = TcpStream::connect_timeout(&address, remaining(deadline)?).map_err(describe)?;
    // One small write into a new connection's empty send buffer: it neither blocks nor waits
    // for Nagle, so the socket needs no write timeout and no TCP_NODELAY (two system calls a
    // probe, at thousands of probes a second).
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {address}\r\nUser-Agent: service-registry/{}\r\nConnection: close\r\n\r\n",
        crate::VERSION
    );
    stream.write_all(request.as_bytes()).map_err(describe)?;
    let mut buf = [0u8; MAX_READ];
    // Peeked, not read: when the head is in the first bytes to arrive (it is, from servers that
    // write head and body at once), the answer stays unread, and a socket closed with unread
    // data is reset (RST) rather than left in TIME_WAIT for a minute. At 10,000 endpoints the
    // checker opens 2,000 connections a second: TIME_WAIT would hold 120,000 sockets (the
    // kernel's cap is often 131,072) and make every connect search past them for a port.
    // HAProxy closes its checks with RST for this reason.
    stream.set_read_timeout(Some(remaining(deadline)?)).map_err(describe)?;
    let peeked = stream.peek(&mut buf).map_err(describe)?;
    if peeked == 0 {
        return Err("connection closed before an answer".into());
    }
    if head_complete(&buf[..peeked]) || peeked == buf.len() {
        return parse_head(&buf[..peeked]);
    }
    // The head comes in pieces: read until it is whole, the buffer is full or the answer ends.
    // Once the status line is in, a stall is judged on what arrived (as an answer without the
    // instance header), not failed.
    let mut len = 0;
    while !head_complete(&buf[..len]) && len < buf.len() {
        let has_status_line = buf[..len].contains(&b'\n');
        let wait = match remaining(deadline) {
            Ok(wait) => wait,
            Err(_) if has_status_line => break,
            Err(why) => return Err(why),
        };
        stream.set_read_timeout(Some(wait)).map_err(describe)?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) if has_status_line => break,
            Err(e) => return Err(describe(e)),
        }
    }
    if len == 0 {
        return Err("connection closed before an answer".into());
    }
    if !buf[..len].contains(&b'\n') {
        return Err(if len == buf.len() {
            "answer has no status line in its first 1024 bytes".into()
        } else {
            "connection closed before an answer".into()
        });
    }
    parse_head(&buf[..len])
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

    /// Sockets in TIME_WAIT whose remote end is `port` on 127.0.0.1 (Linux's /proc/net/tcp).
    fn time_wait_towards(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let remote = format!("0100007F:{port:04X}");
        table
            .lines()
            .filter(|line| {
                line.split_whitespace().nth(2) == Some(&remote[..]) && line.split_whitespace().nth(3) == Some("06")
            })
            .count()
    }

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
