//! Helpers shared by the registry's integration tests (`mod support;` in each test binary): the
//! registry started in-process on loopback, HTTP answers read whole, requests written and read
//! as raw bytes, polling with a deadline, and running a command line.
//!
//! Each test file adds the methods it needs to [`Registry`] and [`Answer`] in its own
//! `impl` block, next to the tests that rely on them.

// Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]

// The std-only helpers every crate's tests share (polling, running a command); see that file
// for why it is included by path.
#[path = "../../../tests/src/shared.rs"]
pub mod shared;

use serde_json::Value;
use service_registry::{CheckConfig, Config, Running, StartError, Thresholds};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it gives a value, or panics after `within`, naming `what`
/// it waited for.
pub fn eventually<T>(every: Duration, what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    shared::poll(every, within, check).unwrap_or_else(|| panic!("waited {within:?} for {what}"))
}

/// Test settings: both listeners on `127.0.0.1:0`, checks every 100 ms with a 500 ms timeout,
/// the contract's default thresholds (critical after 2 failures, removed after 30 s); anything
/// else as the registry's defaults.
pub fn config() -> Config {
    Config {
        api: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            concurrency: 8,
            ..CheckConfig::default()
        },
        thresholds: Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_secs(30) },
        // Tests that remove things start removing at once; the warm-up has its own tests.
        warm_up: Duration::ZERO,
        ..Config::default()
    }
}

/// A registry running in this process, and a client for it; stopped on drop, even when a test
/// fails.
pub struct Registry {
    running: Option<Running>,
    pub api: SocketAddr,
    pub ui: SocketAddr,
    /// An HTTP client for the tests that speak through one (see [`agent`]).
    pub agent: ureq::Agent,
    /// The write token that the tests writing raw requests send, if the registry wants one.
    pub token: Option<String>,
}

impl Registry {
    /// Starts a registry with `config`; panics if it cannot.
    pub fn start(config: Config) -> Registry {
        Registry::try_start(&config).expect("the registry starts on 127.0.0.1:0")
    }

    pub fn try_start(config: &Config) -> Result<Registry, StartError> {
        let running = service_registry::start(config)?;
        let (api, ui) = (running.api_addr, running.ui_addr);
        Ok(Registry { running: Some(running), api, ui, agent: agent(), token: None })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

/// A client that treats every status code as data and never waits long.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The sentence of an error answer: `Some` only for a JSON body `{"error": "..."}` with a
    /// JSON content type, as the contract wants every error.
    pub fn error(&self) -> Option<String> {
        let json_type = self.header("Content-Type").is_some_and(|t| t.starts_with("application/json"));
        let sentence = self.json()?.get("error")?.as_str()?.to_string();
        (json_type && !sentence.is_empty()).then_some(sentence)
    }
}

/// A request: `METHOD PATH HTTP/1.1`, a Host, `Connection: close`, `headers`, and the body
/// with its `Content-Length` (always given for POST, so an empty body is explicit).
pub fn http(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    http_raw(format!("{method} {path} HTTP/1.1").as_bytes(), headers, body)
}

/// Like [`http`], with a request line of arbitrary bytes.
pub fn http_raw(line: &[u8], headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || line.starts_with(b"POST") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The request line of `request`, at most 100 bytes of it, for messages.
pub fn first_line(request: &[u8]) -> String {
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(100)]).trim_end().to_string()
}

/// Sends `request` on a new connection and reads one answer within `within`.
pub fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> Result<Answer, String> {
    let deadline = Instant::now() + within;
    let mut stream = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_write_timeout(Some(within));
    // The server may answer and close before it has read everything (413, 431): a failed
    // write is not the end of the exchange, the answer is.
    let _ = stream.write_all(request);
    read_answer(&mut stream, deadline)
}

/// Reads one answer from `stream` by `deadline`, skipping `100 Continue`.
pub fn read_answer(stream: &mut TcpStream, deadline: Instant) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(answer) = parse_answer(&mut buf, false) {
            return Ok(answer);
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Err(format!("no complete answer in time; got {:?}", String::from_utf8_lossy(&buf)));
        };
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_answer(&mut buf, true).ok_or_else(|| {
                    format!("closed without a complete answer; got {:?}", String::from_utf8_lossy(&buf))
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                return parse_answer(&mut buf, true)
                    .ok_or_else(|| format!("{e} before a complete answer; got {:?}", String::from_utf8_lossy(&buf)))
            }
        }
    }
}

/// A complete answer at the start of `buf`, if there is one; at `eof`, a body without a
/// Content-Length ends there.
fn parse_answer(buf: &mut Vec<u8>, eof: bool) -> Option<Answer> {
    loop {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            buf.drain(..end);
            continue;
        }
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
            .collect();
        let answer = Answer { status, headers, body: Vec::new() };
        let length = answer.header("Content-Length").and_then(|l| l.parse::<usize>().ok());
        let body = &buf[end..];
        return match length {
            Some(n) if body.len() >= n => Some(Answer { body: body[..n].to_vec(), ..answer }),
            None if eof => Some(Answer { body: body.to_vec(), ..answer }),
            _ => None,
        };
    }
}
