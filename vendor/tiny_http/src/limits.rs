//! dynamic-ports patch: limits that keep slow or hostile clients from holding the server.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
