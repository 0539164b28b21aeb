//! A minimal blocking HTTP/1.1 client over one keep-alive connection, for the driver's requests
//! and polling (the load generator drives its connections with `drive`), and the response-head
//! parsing both share.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Bodies not kept are discarded in the kernel from this many bytes on (see [`crate::sys::discard`]).
const DISCARD_FROM: usize = 4096;
/// Read size while looking for a response head: a typical head and small body in one read.
const HEAD_READ: usize = 4096;
/// Read buffer: large enough that a 250 KB listing takes a handful of reads.
const BUFFER: usize = 256 * 1024;

/// A response: its status and, when asked for, its body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Body length in bytes (after de-chunking).
    pub body_len: usize,
    /// The body, or empty when the caller asked to discard it.
    pub body: Vec<u8>,
}

/// One keep-alive connection to one loopback address, reconnected when the server closes it.
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Client {
    /// A client for `addr`; each connect, read and write is bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client { addr, timeout, stream: None, buf: vec![0; BUFFER], start: 0, end: 0 }
    }

    /// Opens the connection if it is not open.
    fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(stream);
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    /// Sends one complete request and reads its response. On any error the connection is
    /// dropped, and the next call opens a new one.
    pub fn send(&mut self, request: &[u8], keep_body: bool) -> io::Result<Response> {
        self.connect()?;
        let result = self.exchange(request, keep_body);
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(response, _)| response)
    }

    /// `send`, retried once on a fresh connection: for polling, where a server closing an idle
    /// keep-alive connection is not a failure.
    pub fn send_retry(&mut self, request: &[u8], keep_body: bool) -> io::Result<Response> {
        self.send(request, keep_body).or_else(|_| self.send(request, keep_body))
    }

    /// Returns the response and whether the connection may be used again.
    fn exchange(&mut self, request: &[u8], keep_body: bool) -> io::Result<(Response, bool)> {
        let stream = self.stream.as_mut().expect("connect() ran");
        stream.write_all(request)?;
        let head_len = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break i + 4;
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(invalid("response head over 64 KiB"));
            }
            // Small reads while looking for the head: what follows it may be discarded
            // without a copy (see `take`).
            self.fill(if keep_body { BUFFER } else { HEAD_READ })?;
        };
        let head = Head::parse(&self.buf[self.start..self.start + head_len])?;
        self.start += head_len;
        let mut body = Vec::new();
        let sink = if keep_body { Some(&mut body) } else { None };
        let body_len = match head.length {
            Length::Fixed(n) => self.take(n, sink)?,
            Length::Chunked => self.chunked(sink)?,
            Length::None => 0,
        };
        Ok((Response { status: head.status, body_len, body }, head.keep_alive))
    }

    /// Reads at most `max` more bytes into the buffer, making room first.
    fn fill(&mut self, max: usize) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let stream = self.stream.as_mut().expect("connect() ran");
        let end = self.buf.len().min(self.end + max);
        match stream.read(&mut self.buf[self.end..end])? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Consumes exactly `n` body bytes.
    fn take(&mut self, n: usize, mut sink: Option<&mut Vec<u8>>) -> io::Result<usize> {
        let mut left = n;
        while left > 0 {
            if self.start == self.end {
                if sink.is_none() && left >= DISCARD_FROM {
                    let stream = self.stream.as_ref().expect("connect() ran");
                    match crate::sys::discard(stream, left)? {
                        0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")),
                        k => left -= k,
                    }
                    continue;
                }
                self.fill(BUFFER)?;
            }
            let k = left.min(self.end - self.start);
            if let Some(sink) = sink.as_deref_mut() {
                sink.extend_from_slice(&self.buf[self.start..self.start + k]);
            }
            self.start += k;
            left -= k;
        }
        Ok(n)
    }

    /// Consumes one CRLF-terminated line and returns it without the CRLF.
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(invalid("chunk line over 64 KiB"));
            }
            self.fill(HEAD_READ)?;
        }
    }

    fn chunked(&mut self, mut sink: Option<&mut Vec<u8>>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                return Ok(total);
            }
            total += self.take(size, sink.as_deref_mut())?;
            if !self.line()?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }
}

/// How a response's body is delimited.
pub enum Length {
    Fixed(usize),
    Chunked,
    None,
}

/// A parsed response head.
pub struct Head {
    pub status: u16,
    pub length: Length,
    pub keep_alive: bool,
}

impl Head {
    /// Parses a response head, up to and including its blank line.
    pub fn parse(head: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split(' ');
        let version = parts.next().unwrap_or_default();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| invalid(format!("not an HTTP/1.x status line: {status_line:?}")))?;
        let mut length = Length::None;
        let mut keep_alive = version == "HTTP/1.1";
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Length::Fixed(value.parse().map_err(|_| invalid("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                length = Length::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        if matches!(length, Length::None) && !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // A body delimited by the end of the connection: not worth supporting here.
            return Err(invalid("response has neither Content-Length nor chunked encoding"));
        }
        Ok(Head { status, length, keep_alive })
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A GET request for `path`.
pub fn get(host: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dynamic-ports-bench\r\n\r\n").into_bytes()
}

/// A POST request carrying a JSON body.
pub fn post_json(host: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dynamic-ports-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Serves the given raw answers, one per request, on one connection.
    fn serve(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            for answer in answers {
                let mut seen = Vec::new();
                while find(&seen, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer).unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_fixed_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ]);
        let mut client = Client::new(addr, Duration::from_secs(5));
        let r = client.send(&get(addr, "/a"), true).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = client.send(&get(addr, "/b"), true).unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.body_len), (404, &b"abcde"[..], 5));
        let r = client.send(&get(addr, "/c"), false).unwrap();
        assert_eq!((r.status, r.body_len), (200, 0));
    }

    #[test]
    fn large_bodies_are_discarded_without_losing_the_next_answer() {
        const BIG: &[u8] = &[b'x'; 300_000];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            for _ in 0..3 {
                let _ = s.read(&mut buf).unwrap();
                s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", BIG.len()).as_bytes()).unwrap();
                s.write_all(BIG).unwrap();
            }
        });
        let mut client = Client::new(addr, Duration::from_secs(5));
        for keep in [false, true, false] {
            let r = client.send(&get(addr, "/"), keep).unwrap();
            assert_eq!((r.status, r.body_len), (200, BIG.len()));
            assert_eq!(r.body.len(), if keep { BIG.len() } else { 0 });
        }
    }

    #[test]
    fn a_closed_connection_is_an_error_then_reopened() {
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"]);
        let mut client = Client::new(addr, Duration::from_secs(5));
        assert_eq!(client.send(&get(addr, "/"), false).unwrap().status, 200);
        assert!(client.stream.is_none(), "Connection: close drops the connection");
    }
}
