//! dynamic-ports patch: limits that keep slow or hostile clients from holding the server.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::StatusCode;

/// dynamic-ports patch: builds the body of an answer the server writes on its own, for an
/// error the connection cannot recover from (`400`, `408`, `413`, `417`, `431`, `505`, and the
/// `503` of a connection over [`Limits::max_connections`]). It gets the status and a message
/// in English saying what went wrong, and returns the body and its `Content-Type`, which must
/// be a valid header value. The server adds `Content-Length` and `Connection: close`.
///
/// A plain function, not a closure with state, so that `Limits` stays `Clone` and `Debug` and
/// calling it costs nothing; closures that capture nothing coerce to it.
///
/// ```
/// let limits = tiny_http::Limits {
///     error_body: |status, message| {
///         let page = format!("<h1>{}</h1><p>{}</p>", status.0, message); // escape in real code
///         (page.into_bytes(), "text/html; charset=utf-8")
///     },
///     ..tiny_http::Limits::default()
/// };
/// # let _ = limits;
/// ```
pub type ErrorBody = fn(status: StatusCode, message: &str) -> (Vec<u8>, &'static str);

/// dynamic-ports patch: the default [`ErrorBody`]: the message as `text/plain; charset=utf-8`.
pub fn plain_text_error_body(_status: StatusCode, message: &str) -> (Vec<u8>, &'static str) {
    (message.as_bytes().to_vec(), "text/plain; charset=utf-8")
}

/// Bounds on what one client connection may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once. The next one is answered `503` and closed at once, so a
    /// flood costs a write, not a thread.
    pub max_connections: usize,
    /// How long a kept-alive connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// How long a request line and its headers may take once their first byte has arrived.
    /// A client trickling one byte a second is cut off here (408).
    pub header_timeout: Duration,
    /// How long a request body may take to arrive (408 after that).
    pub body_timeout: Duration,
    /// How long writing a response may block on a client that does not read.
    pub write_timeout: Duration,
    /// Largest request line plus headers (431 beyond it).
    pub max_header_bytes: usize,
    /// Largest request body. Bodies are read in full before the request is handed over, so
    /// handlers never wait on the network; a larger declared body is refused with 413 before
    /// any of it is read, a larger chunked one as soon as it passes the limit.
    pub max_body_bytes: usize,
    /// dynamic-ports patch: the body of the answers the server writes itself when it refuses
    /// a request or a connection; [`plain_text_error_body`] by default.
    pub error_body: ErrorBody,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            error_body: plain_text_error_body,
        }
    }
}

impl Limits {
    /// The socket read timeout: how often a blocked read wakes to look at its deadline, and so
    /// the most a deadline can be overshot. Set once per connection, never per request.
    pub(crate) fn tick(&self) -> Duration {
        let shortest = self.idle_timeout.min(self.header_timeout).min(self.body_timeout);
        shortest.min(Duration::from_secs(1)).max(Duration::from_millis(1))
    }
}

/// A deadline shared by a connection's reader and the code that sets it: reads fail with
/// `TimedOut` once it has passed, however slowly the bytes arrive.
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    at: Mutex<Option<Instant>>,
}

impl Deadline {
    pub(crate) fn set(&self, at: Option<Instant>) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub(crate) fn get(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn passed(&self) -> bool {
        self.get().map_or(false, |at| Instant::now() >= at)
    }
}

/// dynamic-ports patch: the answers the server writes itself carry the body `error_body` makes.
#[cfg(test)]
mod tests {
    use super::{ErrorBody, Limits};
    use crate::{Server, StatusCode};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Sends `request` to a server bounded by `limits` and returns everything it answers
    /// before it closes the connection.
    fn answer_to(limits: Limits, request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = Server::from_listener_with_limits(listener, None, limits).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client.write_all(request).unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        answer
    }

    fn tagged(status: StatusCode, message: &str) -> (Vec<u8>, &'static str) {
        (format!("<{}|{}>", status.0, message).into_bytes(), "application/x-test")
    }

    fn with_body(error_body: ErrorBody) -> Limits {
        Limits { error_body, ..Limits::default() }
    }

    fn assert_answer(answer: &str, status_line: &str, content_type: &str, body: &str) {
        assert!(answer.starts_with(status_line), "{:?}", answer);
        let (head, got) = answer.split_once("\r\n\r\n").expect(answer);
        assert!(head.contains(&format!("\r\nContent-Type: {content_type}\r\n")), "{:?}", answer);
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{:?}", answer);
        assert!(head.contains("\r\nConnection: close"), "{:?}", answer);
        assert_eq!(got, body);
    }

    #[test]
    fn the_default_body_is_the_message_as_plain_text() {
        let answer = answer_to(Limits::default(), b"nonsense\r\n\r\n");
        assert_answer(
            &answer,
            "HTTP/1.1 400 Bad Request\r\n",
            "text/plain; charset=utf-8",
            "malformed HTTP request line",
        );
    }

    #[test]
    fn a_custom_body_answers_a_malformed_request() {
        let answer = answer_to(with_body(tagged), b"nonsense\r\n\r\n");
        assert_answer(
            &answer,
            "HTTP/1.1 400 Bad Request\r\n",
            "application/x-test",
            "<400|malformed HTTP request line>",
        );
    }

    #[test]
    fn a_custom_body_answers_headers_too_large() {
        let limits = Limits { max_header_bytes: 64, ..with_body(tagged) };
        let request = format!("GET / HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(100));
        let answer = answer_to(limits, request.as_bytes());
        assert_answer(
            &answer,
            "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            "application/x-test",
            "<431|the request line and headers are larger than 64 bytes>",
        );
    }

    #[test]
    fn a_custom_body_answers_a_request_that_takes_too_long() {
        let limits = Limits { header_timeout: Duration::from_millis(200), ..with_body(tagged) };
        let answer = answer_to(limits, b"GET / HTTP/1.1\r\n");
        assert_answer(
            &answer,
            "HTTP/1.1 408 Request Timeout\r\n",
            "application/x-test",
            "<408|the request took too long to arrive>",
        );
    }

    #[test]
    fn a_custom_body_answers_a_connection_over_the_limit() {
        let limits = Limits { max_connections: 0, ..with_body(tagged) };
        let answer = answer_to(limits, b"");
        assert_answer(
            &answer,
            "HTTP/1.1 503 Service Unavailable\r\n",
            "application/x-test",
            "<503|the server is serving its limit of 0 connections; retry shortly>",
        );
        assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{:?}", answer);
    }
}
