//! One health probe: `GET http://ADDRESS/healthz`, any 2xx passes. Written on a bare
//! `TcpStream` because the checker needs exactly one thing from the answer, its status line,
//! and must bound every step by one deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Why it failed, in words for `LastError`.
    Fail(String),
}

/// The most of an answer a probe reads: a status line fits many times over, and a hostile
/// endpoint cannot make the checker read more.
const MAX_READ: usize = 1024;

/// Probes `address` within `timeout` (connect, send and read together).
pub fn probe(address: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    match exchange(address, deadline) {
        Ok(status) if (200..300).contains(&status) => Outcome::Pass,
        Ok(status) => Outcome::Fail(format!("GET /healthz answered {status}")),
        Err(why) => Outcome::Fail(why),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| "timed out".to_string())
}

fn exchange(address: SocketAddr, deadline: Instant) -> Result<u16, String> {
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
    // Peeked, not read: when the status line is in the first bytes to arrive, the answer stays
    // unread, and a socket closed with unread data is reset (RST) rather than left in
    // TIME_WAIT for a minute. At 10,000 endpoints the checker opens 2,000 connections a second:
    // TIME_WAIT would hold 120,000 sockets (the kernel's cap is often 131,072) and make every
    // connect search past them for a port. HAProxy closes its checks with RST for this reason.
    stream.set_read_timeout(Some(remaining(deadline)?)).map_err(describe)?;
    let peeked = stream.peek(&mut buf).map_err(describe)?;
    if peeked == 0 {
        return Err("connection closed before an answer".into());
    }
    if buf[..peeked].contains(&b'\n') {
        return parse_status_line(&buf[..peeked]);
    }
    let mut len = 0;
    while !buf[..len].contains(&b'\n') {
        if len == buf.len() {
            return Err("answer has no status line in its first 1024 bytes".into());
        }
        stream.set_read_timeout(Some(remaining(deadline)?)).map_err(describe)?;
        match stream.read(&mut buf[len..]).map_err(describe)? {
            0 => return Err("connection closed before an answer".into()),
            n => len += n,
        }
    }
    parse_status_line(&buf[..len])
}

/// Reads the status code from `HTTP/1.x NNN ...`.
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
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
            let outcome = probe(answer_once(reply), Duration::from_secs(2));
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
            assert_eq!(probe(addr, Duration::from_secs(2)), Outcome::Pass);
        }
        server.join().unwrap();
        assert_eq!(time_wait_towards(addr.port()), 0, "the prober's sockets are reset, not left in TIME_WAIT");
    }

    #[test]
    fn a_status_line_in_pieces_is_still_read() {
        let addr = answer_in_pieces(vec![b"HTTP/1.1 20", b"4 No Content\r\n\r\n"]);
        assert_eq!(probe(addr, Duration::from_secs(2)), Outcome::Pass);
    }

    #[test]
    fn a_refused_connection_fails_at_once() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t0 = Instant::now();
        assert!(matches!(probe(addr, Duration::from_secs(2)), Outcome::Fail(_)));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_silent_endpoint_fails_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let outcome = probe(listener.local_addr().unwrap(), Duration::from_millis(200));
        assert_eq!(outcome, Outcome::Fail("timed out".into()));
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
