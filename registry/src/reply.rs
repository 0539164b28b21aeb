//! Answers: what to send ([`Reply`]) and how it goes out on the wire, counted and logged.

use crate::metrics::Metrics;
use crate::route::{Listener, Route};
use crate::text;
use common::wire::ErrorBody;
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;
use tiny_http::{Method, Request};

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format.
pub const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A reply body: fresh bytes, or a cached rendering shared between replies.
#[derive(Debug, Clone)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(a) => a,
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
    // A client that hung up before its answer is not the registry's problem.
    let _ = write_reply(&mut request.into_writer(), &reply, head_only, close);
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

/// Writes a reply: the head built in one buffer, then the body, so that a small answer is one
/// system call and a large cached one is written straight from the shared buffer, neither
/// copied nor chunked.
pub fn write_reply(out: &mut impl Write, reply: &Reply, head_only: bool, close: bool) -> std::io::Result<()> {
    let body = reply.body.as_ref();
    // Built by hand rather than with `write!`: this is every answer's path, and the
    // formatting machinery cost more than the rest of the head.
    let mut head = Vec::with_capacity(256 + if body.len() <= COALESCE { body.len() } else { 0 });
    head.extend_from_slice(b"HTTP/1.1 ");
    text::push_decimal(&mut head, u64::from(reply.status));
    head.push(b' ');
    head.extend_from_slice(tiny_http::StatusCode(reply.status).default_reason_phrase().as_bytes());
    head.extend_from_slice(b"\r\nServer: service-registry\r\nDate: ");
    push_http_date(&mut head);
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(reply.content_type.as_bytes());
    head.extend_from_slice(b"\r\nContent-Length: ");
    text::push_decimal(&mut head, body.len() as u64);
    head.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    if close {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if !head_only && body.len() <= COALESCE {
        head.extend_from_slice(body);
        out.write_all(&head)?;
    } else {
        out.write_all(&head)?;
        if !head_only {
            out.write_all(body)?;
        }
    }
    out.flush()
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

    #[test]
    fn writes_a_complete_http_answer() {
        let mut out = Vec::new();
        write_reply(&mut out, &reply(b"{\"error\":\"x\"}"), false, true).unwrap();
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
            write_reply(&mut out, &reply(&vec![b'x'; size]), true, false).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "no body after the head");
            assert!(text.contains(&format!("Content-Length: {size}\r\n")));
            assert!(!text.contains("Connection: close"));
        }
        let mut out = Vec::new();
        write_reply(&mut out, &reply(&vec![b'x'; COALESCE + 1]), false, false).unwrap();
        assert!(out.ends_with(&[b'x'; 64]) && out.len() > COALESCE);
    }
}
