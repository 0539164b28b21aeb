use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, IoSlice, Write};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::common::{close_answer, HTTPVersion, Method};
use crate::connection::Connection;
use crate::limits::{Deadline, Limits};
use crate::util::RefinedTcpStream;
use crate::util::SequentialWriterBuilder;
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // dynamic-ports patch: the one reader of the stream. Bodies are read whole before a
    // request is handed out (see `new_request`), so requests need no sequence of readers.
    reader: BufReader<RefinedTcpStream>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<Sink>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // dynamic-ports patch: the limits, and the deadline every read of this connection honours.
    limits: Limits,
    deadline: Arc<Deadline>,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader,
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed,
    /// dynamic-ports patch: the request's framing cannot be trusted (400).
    Malformed(&'static str),
    ReadIoError(IoError),
    /// dynamic-ports patch: nothing arrived within the idle timeout; close quietly.
    Idle,
    /// dynamic-ports patch: the request line and headers passed `max_header_bytes`.
    HeadersTooLarge,
    /// dynamic-ports patch: the body is larger than `max_body_bytes`.
    BodyTooLarge,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    /// dynamic-ports patch: bounded by `limits`; `control` is a second handle on the socket,
    /// used to set its read timeout to the limits' tick, once.
    pub(crate) fn with_limits(
        write_socket: RefinedTcpStream,
        read_socket: RefinedTcpStream,
        limits: Limits,
        control: Option<Arc<Connection>>,
    ) -> ClientConnection {
        if let Some(control) = &control {
            let _ = control.set_read_timeout(Some(limits.tick()));
        }
        let deadline = Arc::new(Deadline::default());
        let mut read_socket = read_socket.with_deadline(deadline.clone());
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        ClientConnection {
            reader: BufReader::with_capacity(1024, read_socket),
            sink: SequentialWriterBuilder::new(Sink(BufWriter::with_capacity(1024, write_socket))),
            remote_addr,
            no_more_requests: false,
            secure,
            limits,
            deadline,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// dynamic-ports patch: bounds every read from now on. Only the shared deadline moves: the
    /// socket's own timeout stays at the limits' tick, so a request costs no `setsockopt`.
    fn expect_within(&self, timeout: std::time::Duration) {
        self.deadline.set(Some(Instant::now() + timeout));
    }

    /// Reads the next line from self.reader.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    /// at the first byte of the new line. `budget` is what is left of `max_header_bytes`.
    fn read_next_line(&mut self, budget: &mut usize) -> Result<AsciiString, ReadError> {
        // dynamic-ports patch: scans the buffered bytes for the line's end instead of reading
        // them one at a time through three layers of `Read` (a quarter of a request's CPU).
        let reader = &mut self.reader;
        let mut line = Vec::with_capacity(64);
        loop {
            let available = reader.fill_buf().map_err(ReadError::ReadIoError)?;
            if available.is_empty() {
                return Err(ReadError::ReadIoError(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF")));
            }
            if *budget == 0 {
                return Err(ReadError::HeadersTooLarge);
            }
            let window = &available[..available.len().min(*budget)];
            let (taken, found) = match window.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (window.len(), false),
            };
            line.extend_from_slice(&window[..taken]);
            reader.consume(taken);
            *budget -= taken;
            // A line ends at CRLF; a bare LF is part of the line, as it always was here.
            if found && line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                return AsciiString::from_ascii(line)
                    .map_err(|_| ReadError::Malformed("the request line and headers must be ASCII"));
            }
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // Idle: wait for the first byte of the next request, then give the whole head
        // `header_timeout` from there.
        self.expect_within(self.limits.idle_timeout);
        let first = self.reader.fill_buf().map(|b| !b.is_empty());
        match first {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::ReadIoError(IoError::new(ErrorKind::ConnectionAborted, "closed"))),
            Err(e) if e.kind() == ErrorKind::TimedOut => return Err(ReadError::Idle),
            Err(e) => return Err(ReadError::ReadIoError(e)),
        }
        self.expect_within(self.limits.header_timeout);
        let mut budget = self.limits.max_header_bytes;

        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(&mut budget)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(&mut budget)?;

                    if line.is_empty() {
                        break;
                    };
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // building the next reader
        self.expect_within(self.limits.body_timeout);
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            &mut self.reader,
            writer,
            self.limits.max_body_bytes,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e)
                    if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::InvalidData) =>
                {
                    ReadError::Malformed("malformed chunked request body")
                }
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => ReadError::ExpectationFailed,
                request::RequestCreationError::ConflictingLengths => {
                    ReadError::Malformed("the request has conflicting Content-Length headers")
                }
                request::RequestCreationError::BodyTooLarge => ReadError::BodyTooLarge,
            }
        })?;
        // The body, if any, is in memory now; the socket is not read again until the next
        // request, which sets its own deadline.
        self.deadline.set(None);

        // return the request
        Ok(request)
    }

    /// dynamic-ports patch: answers an error the connection cannot recover from, with the body
    /// `Limits::error_body` makes of `message`, and closes the connection.
    fn refuse(&mut self, status: u16, message: &str) {
        let mut writer = self.sink.next().unwrap();
        let _ = writer.write_all(&close_answer(status, message, "", self.limits.error_body));
        let _ = writer.flush();
        self.no_more_requests = true;
    }
}

impl Iterator for ClientConnection {
    type Item = Request;
    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    self.refuse(400, "malformed HTTP request line");
                    return None; // we don't know where the next request would start,
                }

                Err(ReadError::WrongHeader) => {
                    self.refuse(400, "malformed HTTP header");
                    return None; // we don't know where the next request would start,
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    self.refuse(408, "the request took too long to arrive");
                    return None; // closing the connection
                }

                Err(ReadError::Idle) => return None,

                Err(ReadError::HeadersTooLarge) => {
                    let message = format!(
                        "the request line and headers are larger than {} bytes",
                        self.limits.max_header_bytes
                    );
                    self.refuse(431, &message);
                    return None;
                }

                Err(ReadError::BodyTooLarge) => {
                    let message =
                        format!("request body is larger than the {}-byte limit", self.limits.max_body_bytes);
                    self.refuse(413, &message);
                    return None;
                }

                Err(ReadError::ExpectationFailed) => {
                    self.refuse(417, "the only Expect value understood is 100-continue");
                    return None;
                }

                Err(ReadError::Malformed(message)) => {
                    self.refuse(400, message);
                    return None;
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                // dynamic-ports patch: answer through the request's own writer and close; taking
                // a second writer while the request holds the first deadlocked the connection.
                let mut writer = rq.into_writer();
                let message = "this server speaks HTTP/1.0 and HTTP/1.1 only";
                let _ = writer.write_all(&close_answer(505, message, "", self.limits.error_body));
                let _ = writer.flush();
                return None;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}

/// dynamic-ports patch: the connection's writer. A `BufWriter` alone sends a vectored write
/// one buffer at a time (it cannot know its socket takes `writev`: `is_write_vectored` is not
/// stable), so an answer's head went out as a packet of its own before its body. A vectored
/// write at least as large as the buffer goes to the socket whole, after what was buffered.
pub(crate) struct Sink(BufWriter<RefinedTcpStream>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let total = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
        if total >= self.0.capacity() {
            self.0.flush()?;
            self.0.get_mut().write_vectored(bufs)
        } else {
            self.0.write_vectored(bufs)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
