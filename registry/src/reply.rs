//! Answers: what to send ([`Reply`]) and how it goes out on the wire, counted and logged.

use crate::metrics::Metrics;
use crate::route::{Listener, Route};
use crate::text;
use common::wire::ErrorBody;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::SystemTime;
use tiny_http::{Method, Request};

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format.
pub const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A body written as it is rendered, for answers too large to hold whole (see `stream`).
pub trait Render: Send + Sync {
    /// Writes the whole body to `out`, a piece at a time.
    fn render(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// A reply body: fresh bytes, a cached rendering shared between replies, or one rendered as
/// it is sent (with chunked transfer encoding).
#[derive(Clone)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    Streamed(Arc<dyn Render>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Body::Shared(a) => write!(f, "Shared({} bytes)", a.len()),
            Body::Streamed(_) => f.write_str("Streamed"),
        }
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        // A record is about 200 bytes: one allocation instead of a growing vector.
        let mut body = Vec::with_capacity(256);
        if serde_json::to_writer(&mut body, value).is_err() {
            body = b"{}".to_vec();
        }
        Reply { status, content_type: JSON, headers: Vec::new(), body: Body::Owned(body) }
    }

    /// An error answer: `{"error": "..."}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &ErrorBody { error: message.into() })
    }

    /// A cached rendering.
    pub fn shared(content_type: &'static str, body: Arc<[u8]>) -> Reply {
        Reply { status: 200, content_type, headers: Vec::new(), body: Body::Shared(body) }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Sends a reply, logs it at debug and counts it.
pub fn respond(metrics: &Metrics, request: Request, listener: Listener, route: Route, reply: Reply) {
    log::debug!(
        "{} {} {} {}",
        request.remote_addr().map_or_else(|| "-".to_string(), |a| a.to_string()),
        request.method(),
        request.url(),
        reply.status
    );
    metrics.request(listener, route, reply.status);
    let head_only = *request.method() == Method::Head;
    let close = wants_close(&request);
    let chunked = *request.http_version() >= (1, 1);
    // A client that hung up before its answer is not the registry's problem.
    let _ = write_reply(&mut request.into_writer(), reply, Framing { head_only, close, chunked });
}

/// Whether the client will not send another request on this connection.
fn wants_close(request: &Request) -> bool {
    let connection = request.headers().iter().find(|h| h.field.equiv("Connection")).map(|h| h.value.as_str());
    match connection {
        Some(value) if value.to_ascii_lowercase().contains("close") => true,
        Some(value) if value.to_ascii_lowercase().contains("keep-alive") => false,
        _ => *request.http_version() == (1, 0),
    }
}

/// Bodies up to this size go out in the same write as the head: one system call.
const COALESCE: usize = 16 * 1024;

/// How a streamed body is cut into chunks: each is written with one system call, and this is
/// all the memory an answer of any size holds while it is sent.
pub const PIECE: usize = 64 * 1024;

/// How an answer goes on the wire, from what the request said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// A `HEAD`: the head alone.
    pub head_only: bool,
    /// Say `Connection: close`.
    pub close: bool,
    /// The client speaks HTTP/1.1, so a streamed body may be sent chunked; an HTTP/1.0 client
    /// gets it rendered whole, with a `Content-Length`.
    pub chunked: bool,
}

/// Writes a reply: the head built in one buffer, then the body, so that a small answer is one
/// system call, a large cached one is one vectored write of the head and the shared buffer
/// (neither copied nor chunked), and a streamed one is one write per [`PIECE`], the head going
/// with the first.
pub fn write_reply(out: &mut impl Write, reply: Reply, framing: Framing) -> io::Result<()> {
    let body = match reply.body {
        Body::Streamed(render) if !framing.chunked && !framing.head_only => {
            let mut whole = Vec::new();
            render.render(&mut whole)?;
            Body::Owned(whole)
        }
        body => body,
    };
    let bytes: &[u8] = match &body {
        Body::Owned(v) => v,
        Body::Shared(a) => a,
        Body::Streamed(render) => {
            let mut head = head(reply.status, reply.content_type, &reply.headers, None, framing.close, PIECE + 64);
            if framing.head_only {
                out.write_all(&head)?;
            } else {
                let data = head.len();
                head.extend_from_slice(CHUNK_PREFIX);
                let mut chunks = Chunks { out, buf: head, data };
                render.render(&mut chunks)?;
                chunks.finish()?;
            }
            return out.flush();
        }
    };
    let inline = !framing.head_only && bytes.len() <= COALESCE;
    let extra = if inline { bytes.len() } else { 0 };
    let mut head = head(reply.status, reply.content_type, &reply.headers, Some(bytes.len()), framing.close, extra);
    if inline {
        head.extend_from_slice(bytes);
        out.write_all(&head)?;
    } else if framing.head_only {
        out.write_all(&head)?;
    } else {
        // Head and body in one system call: written apart, the head went out as a packet of
        // its own and woke the client once more per answer.
        write_all_vectored(out, &mut [IoSlice::new(&head), IoSlice::new(bytes)])?;
    }
    out.flush()
}

/// The head of an answer: with `Content-Length: length`, or chunked without one; `extra`
/// bytes of room are left for what the caller adds after it.
fn head(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    length: Option<usize>,
    close: bool,
    extra: usize,
) -> Vec<u8> {
    // Built by hand rather than with `write!`: this is every answer's path, and the
    // formatting machinery cost more than the rest of the head.
    let mut head = Vec::with_capacity(256 + extra);
    head.extend_from_slice(b"HTTP/1.1 ");
    text::push_decimal(&mut head, u64::from(status));
    head.push(b' ');
    head.extend_from_slice(tiny_http::StatusCode(status).default_reason_phrase().as_bytes());
    head.extend_from_slice(b"\r\nServer: service-registry\r\nDate: ");
    push_http_date(&mut head);
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(content_type.as_bytes());
    match length {
        Some(length) => {
            head.extend_from_slice(b"\r\nContent-Length: ");
            text::push_decimal(&mut head, length as u64);
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\n"),
    }
    for (name, value) in headers {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    if close {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `write_all` for several buffers: `Write::write_all_vectored` is not stable yet.
fn write_all_vectored(out: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A chunk's size line, written before its data is known and filled in when it is: eight hex
/// digits (leading zeros are allowed) hold any [`PIECE`].
const CHUNK_PREFIX: &[u8] = b"00000000\r\n";

/// Chunked transfer encoding over `out`: what is written is gathered in `buf` and sent a
/// [`PIECE`] at a time, each chunk with its size line and end in the same system call.
struct Chunks<'a, W: Write> {
    out: &'a mut W,
    /// What goes out next: anything before `data` (the head, for the first chunk), the size
    /// line, then the chunk's data.
    buf: Vec<u8>,
    /// Where the size line starts.
    data: usize,
}

impl<W: Write> Chunks<'_, W> {
    /// Fills in the size line of the chunk in `buf` and ends it.
    fn seal(&mut self) {
        let len = self.buf.len() - self.data - CHUNK_PREFIX.len();
        for (i, byte) in self.buf[self.data..self.data + 8].iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[(len >> (4 * (7 - i))) & 0xf];
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    fn send(&mut self) -> io::Result<()> {
        self.seal();
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.data = 0;
        self.buf.extend_from_slice(CHUNK_PREFIX);
        Ok(())
    }

    /// Sends what is left, and the last chunk.
    fn finish(mut self) -> io::Result<()> {
        if self.buf.len() > self.data + CHUNK_PREFIX.len() {
            self.seal();
        } else {
            self.buf.truncate(self.data);
        }
        self.buf.extend_from_slice(b"0\r\n\r\n");
        self.out.write_all(&self.buf)
    }
}

impl<W: Write> Write for Chunks<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() - self.data >= PIECE {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends the `Date` header's value, formatted once a second per thread rather than once per
/// answer.
fn push_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn reply(body: &[u8]) -> Reply {
        Reply {
            status: 404,
            content_type: JSON,
            headers: vec![("X-Registry-Index", "7".into())],
            body: Body::Owned(body.to_vec()),
        }
    }

    fn framing(head_only: bool, close: bool) -> Framing {
        Framing { head_only, close, chunked: true }
    }

    /// A body that writes `pieces` pieces of `size` bytes, as a streamed listing does.
    struct Repeat {
        pieces: usize,
        size: usize,
    }

    impl Render for Repeat {
        fn render(&self, out: &mut dyn Write) -> io::Result<()> {
            for i in 0..self.pieces {
                out.write_all(&vec![b'a' + (i % 26) as u8; self.size])?;
            }
            Ok(())
        }
    }

    fn streamed(pieces: usize, size: usize) -> Reply {
        Reply { body: Body::Streamed(Arc::new(Repeat { pieces, size })), status: 200, ..reply(b"") }
    }

    /// Undoes chunked transfer encoding, checking its framing on the way.
    fn dechunk(mut rest: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("a size line");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                assert_eq!(rest, b"\r\n", "nothing after the last chunk");
                return body;
            }
            body.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
    }

    /// Counts the writes a reply takes.
    #[derive(Default)]
    struct Counted {
        bytes: Vec<u8>,
        writes: usize,
    }

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.writes += 1;
            bufs.iter().for_each(|b| self.bytes.extend_from_slice(b));
            Ok(bufs.iter().map(|b| b.len()).sum())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_streamed_body_goes_out_chunked_a_piece_per_write_with_the_head_in_the_first() {
        let mut out = Counted::default();
        // 3.5 pieces' worth, in writes smaller than a piece.
        write_reply(&mut out, streamed(7, PIECE / 2), framing(false, false)).unwrap();
        let (head, rest) = out.bytes.split_at(out.bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
        let head = String::from_utf8(head.to_vec()).unwrap();
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        let body = dechunk(rest);
        assert_eq!(body.len(), 7 * PIECE / 2);
        assert!(body.starts_with(&[b'a'; 10]) && body.ends_with(&[b'g'; 10]));
        assert_eq!(out.writes, 4, "three full pieces, then the rest with the last chunk");
    }

    #[test]
    fn a_streamed_body_is_sent_whole_to_http_1_0_and_not_at_all_to_head() {
        let mut out = Vec::new();
        write_reply(&mut out, streamed(3, 1000), Framing { head_only: false, close: true, chunked: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 3000\r\n") && !text.contains("chunked"));
        assert!(text.ends_with(&"c".repeat(1000)));
        let mut out = Vec::new();
        write_reply(&mut out, streamed(3, 1000), framing(true, false)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Transfer-Encoding: chunked\r\nX-Registry-Index: 7\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_large_body_goes_out_with_its_head_in_one_write() {
        let mut out = Counted::default();
        write_reply(&mut out, reply(&vec![b'x'; 200_000]), framing(false, false)).unwrap();
        assert_eq!(out.writes, 1);
        assert!(out.bytes.ends_with(&[b'x'; 100]) && out.bytes.starts_with(b"HTTP/1.1 404"));
    }

    #[test]
    fn writes_a_complete_http_answer() {
        let mut out = Vec::new();
        write_reply(&mut out, reply(b"{\"error\":\"x\"}"), framing(false, true)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "HTTP/1.1 404 Not Found");
        assert!(lines.contains(&"Content-Type: application/json"));
        assert!(lines.contains(&"Content-Length: 13"));
        assert!(lines.contains(&"X-Registry-Index: 7"));
        assert!(lines.contains(&"Connection: close"));
        assert!(lines.iter().any(|l| l.starts_with("Date: ") && l.ends_with(" GMT")));
        assert_eq!(body, "{\"error\":\"x\"}");
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let mut out = Vec::new();
        push_http_date(&mut out);
        let now = String::from_utf8(out).unwrap();
        assert_eq!(now.len(), "Fri, 03 Feb 2017 20:37:38 GMT".len(), "{now}");
        let t = UNIX_EPOCH + Duration::from_secs(1_486_154_258);
        assert_eq!(httpdate::fmt_http_date(t), "Fri, 03 Feb 2017 20:37:38 GMT");
    }

    #[test]
    fn head_answers_carry_the_length_but_no_body_large_or_small() {
        for size in [10, COALESCE + 1] {
            let mut out = Vec::new();
            write_reply(&mut out, reply(&vec![b'x'; size]), framing(true, false)).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "no body after the head");
            assert!(text.contains(&format!("Content-Length: {size}\r\n")));
            assert!(!text.contains("Connection: close"));
        }
        let mut out = Vec::new();
        write_reply(&mut out, reply(&vec![b'x'; COALESCE + 1]), framing(false, false)).unwrap();
        assert!(out.ends_with(&[b'x'; 64]) && out.len() > COALESCE);
    }
}
