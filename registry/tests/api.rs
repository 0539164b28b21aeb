//! The registry's external contract, as users and the seed's Go client see it (the API, its
//! records and errors, health, the page), checked over real sockets.
//!
//! Every test starts its own registry in-process with `service_registry::start` on `127.0.0.1:0` and
//! talks to it as a user would: with an HTTP client (`ureq`), or with raw bytes where the exact
//! request matters. Endpoints the checker probes are loopback listeners owned by the test, so
//! nothing outside this machine is ever contacted. Every wait is a poll with a deadline.

mod support;

use common::wire::{Endpoint, Status};
use serde_json::Value;
use service_registry::{CheckConfig, Config, Thresholds, WriteToken};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::{agent, eventually, exchange, first_line, Answer, Registry};

/// How often `eventually` looks again: well under the 100 ms check interval the tests use, so
/// a state that lasts one interval is seen.
const POLL: Duration = Duration::from_millis(5);

/// The fields of a record, as the contract names them.
const RECORD_FIELDS: [&str; 8] =
    ["Address", "ConsecutiveFailures", "LastCheck", "LastError", "Name", "RegisteredAt", "Status", "Tags"];

// ---------------------------------------------------------------------------------------------
// Helpers: the registry under test, its answers, endpoints to probe, polling.
// ---------------------------------------------------------------------------------------------

/// Test settings: the shared ones (fast checks, the contract's default thresholds) with a 1 s
/// check timeout and no practical cap.
fn config() -> Config {
    let mut config = support::config();
    config.check.timeout = Duration::from_secs(1);
    config.max_endpoints = 100_000;
    config
}

/// Requests through the registry's HTTP client ([`support::agent`]).
impl Registry {
    fn request(&self, method: &str, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> Answer {
        request(&self.agent, method, addr, path, body)
    }

    fn get(&self, path: &str) -> Answer {
        self.request("GET", self.api, path, None)
    }

    fn post(&self, path: &str, body: &[u8]) -> Answer {
        self.request("POST", self.api, path, Some(body))
    }

    fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", self.api, path, None)
    }

    /// Registers and insists on 200; returns the record the registry answered with.
    fn register(&self, name: &str, address: SocketAddr, tags: &[&str]) -> Endpoint {
        let body = serde_json::json!({"Name": name, "Address": address.to_string(), "Tags": tags});
        let answer = self.post("/register", body.to_string().as_bytes());
        assert_eq!(answer.status, 200, "registering {name}: {}", answer.text());
        answer.endpoint()
    }

    /// `GET /endpoints` (with `query`), insisting on 200.
    fn list(&self, query: &str) -> Vec<Endpoint> {
        let answer = self.get(&format!("/endpoints{query}"));
        assert_eq!(answer.status, 200, "GET /endpoints{query}: {}", answer.text());
        serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("GET /endpoints{query}: {e}: {}", answer.text()))
    }

    fn names(&self, query: &str) -> Vec<String> {
        self.list(query).into_iter().map(|e| e.name).collect()
    }

    /// `GET /endpoints/NAME`: the record, or `None` on 404.
    fn record(&self, name: &str) -> Option<Endpoint> {
        let answer = self.get(&format!("/endpoints/{name}"));
        match answer.status {
            200 => Some(answer.endpoint()),
            404 => None,
            other => panic!("GET /endpoints/{name} answered {other}: {}", answer.text()),
        }
    }

    /// Waits until `name` has `status`; returns the record then.
    fn wait_for(&self, name: &str, status: Status, within: Duration) -> Endpoint {
        eventually(POLL, &format!("{name} to be {status}"), within, || self.record(name).filter(|e| e.status == status))
    }

    /// The watch index of `GET /endpoints`.
    fn index(&self) -> u64 {
        let answer = self.get("/endpoints");
        let index = answer.header("X-Registry-Index").expect("GET /endpoints carries X-Registry-Index");
        index.parse().unwrap_or_else(|_| panic!("X-Registry-Index is a number, not {index:?}"))
    }
}

fn request(agent: &ureq::Agent, method: &str, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> Answer {
    request_with(agent, method, addr, path, body, &[])
}

fn with_headers<B>(mut builder: ureq::RequestBuilder<B>, headers: &[(&str, &str)]) -> ureq::RequestBuilder<B> {
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
}

fn request_with(
    agent: &ureq::Agent,
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Answer {
    let url = format!("http://{addr}{path}");
    let json = "application/json";
    let result = match (method, body) {
        ("GET", None) => with_headers(agent.get(&url), headers).call(),
        ("DELETE", None) => with_headers(agent.delete(&url), headers).call(),
        ("POST", Some(body)) => with_headers(agent.post(&url), headers).header("Content-Type", json).send(body),
        ("POST", None) => with_headers(agent.post(&url), headers).send_empty(),
        ("PUT", Some(body)) => with_headers(agent.put(&url), headers).header("Content-Type", json).send(body),
        ("PUT", None) => with_headers(agent.put(&url), headers).send_empty(),
        _ => panic!("the tests do not send {method} with {body:?}"),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.body_mut().read_to_vec().unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
    Answer { status: response.status().as_u16(), headers, body }
}

/// The contract's checks of an answer; each panics, naming what is wrong.
impl Answer {
    /// The body as JSON, after checking the Content-Type says so.
    fn expect_json(&self) -> Value {
        let content_type = self.header("Content-Type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "Content-Type {content_type:?}: {}", self.text());
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The record in a 200 answer, after checking it has exactly the contract's fields.
    fn endpoint(&self) -> Endpoint {
        let value = self.expect_json();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap_or_else(|| panic!("a record is an object: {value}"))
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, RECORD_FIELDS, "record fields: {value}");
        let record: Endpoint = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"));
        assert!(is_rfc3339_utc(&record.registered_at), "RegisteredAt is RFC 3339 UTC: {value}");
        if let Some(last_check) = &record.last_check {
            assert!(is_rfc3339_utc(last_check), "LastCheck is RFC 3339 UTC: {value}");
        }
        record
    }

    /// The sentence of an error answer, after checking the body is exactly `{"error": "..."}`.
    fn expect_error(&self) -> String {
        let value = self.expect_json();
        let object = value.as_object().unwrap_or_else(|| panic!("an error body is an object: {value}"));
        assert_eq!(object.len(), 1, "an error body has one key: {value}");
        let sentence =
            object.get("error").and_then(Value::as_str).unwrap_or_else(|| panic!("no error string: {value}"));
        assert!(sentence.len() >= 10, "an error is a sentence, not {sentence:?}");
        sentence.to_string()
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_rfc3339_utc(text: &str) -> bool {
    let Some(body) = text.strip_suffix('Z') else { return false };
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, "0"));
    let shape = seconds.len() == 19
        && seconds.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    shape && !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// A loopback HTTP endpoint that answers each connection with `reply(request line)`, one at a
/// time. Stopping it (or dropping it) closes its socket, so the port then refuses.
struct Responder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a healthy instance answers: 200 to `GET /healthz`, 404 to anything else, so a
/// checker probing the wrong path fails.
fn healthz(request_line: &str) -> Vec<u8> {
    if request_line.starts_with("GET /healthz HTTP/1.") {
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    }
}

impl Responder {
    fn healthy() -> Responder {
        Responder::on(0, healthz)
    }

    fn on(port: u16, reply: fn(&str) -> Vec<u8>) -> Responder {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind a loopback endpoint");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, reply),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Responder { addr, stop, thread: Some(thread) }
    }

    /// Closes the socket: from now on the port refuses connections.
    fn stop(self) {
        drop(self);
    }
}

fn answer(mut stream: TcpStream, reply: fn(&str) -> Vec<u8>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let _ = stream.write_all(&reply(text.lines().next().unwrap_or_default()));
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback endpoint that accepts every connection and never answers, until dropped.
struct Holder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Holder {
    fn start() -> Holder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Holder { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback address nothing listens on: connections are refused at once.
fn refused_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Sends `request` as raw bytes and reads one answer, which must carry a Content-Length.
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let answer = exchange(addr, request, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{}: no whole answer within 5s: {e}", first_line(request)));
    assert!(answer.header("Content-Length").is_some(), "the registry answers with a Content-Length: {answer:?}");
    answer
}

/// The JSON of a listing with every `LastCheck` value blanked: the only field a passing check
/// may change.
fn without_last_check(json: &str) -> String {
    let key = "\"LastCheck\":";
    let mut out = String::new();
    let mut rest = json;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let skip = if rest.starts_with("null") {
            4
        } else {
            assert!(rest.starts_with('"'), "LastCheck is a string or null: {json}");
            rest[1..].find('"').expect("a closed string") + 2
        };
        out.push('_');
        rest = &rest[skip..];
    }
    out.push_str(rest);
    out
}

fn registration(name: &str, address: SocketAddr, tags: &[&str]) -> Vec<u8> {
    serde_json::json!({"Name": name, "Address": address.to_string(), "Tags": tags}).to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

#[test]
fn the_go_clients_exact_request_registers() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    // The seed's Go client sends exactly this. Its address was 10.240.0.2:52238; tests must not
    // probe anything off this machine, so the Address is a loopback listener of ours (same
    // `IP:PORT` shape) and every other byte of the body, the trailing newline included, is as sent.
    let body = format!(
        "{{\"Name\":\"dynamic-port-server-507527175-5bphp\",\"Address\":\"{}\",\"Tags\":null}}\n",
        instance.addr
    );
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        registry.api,
        body.len()
    );
    let started = Instant::now();
    let answer = raw(registry.api, request.as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let record = answer.endpoint();
    assert_eq!(record.name, "dynamic-port-server-507527175-5bphp");
    assert_eq!(record.address, instance.addr.to_string());
    assert_eq!(record.tags, Vec::<String>::new(), "Tags null is stored as []");
    assert_eq!(record.status, Status::Pending, "not checked yet when the answer was written");
    assert_eq!((record.last_check, record.last_error, record.consecutive_failures), (None, None, 0));
    assert!(answer.text().contains(r#""Tags":[]"#), "Tags is an empty array, not null: {}", answer.text());

    let listed = registry.list("");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "dynamic-port-server-507527175-5bphp");
    assert_eq!(listed[0].tags, Vec::<String>::new());
    assert!(matches!(listed[0].status, Status::Pending | Status::Passing), "{:?}", listed[0]);

    let passing = registry.wait_for("dynamic-port-server-507527175-5bphp", Status::Passing, Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(1), "a new endpoint is checked at once");
    assert_eq!(passing.registered_at, record.registered_at);
    assert!(passing.last_check.is_some());
}

#[test]
fn keys_match_in_any_case_and_tags_may_be_absent_or_null() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    let at = instance.addr;
    let cases = [
        (format!(r#"{{"name":"lower","address":"{at}"}}"#), "lower", vec![]),
        (format!(r#"{{"NAME":"upper","ADDRESS":"{at}","TAGS":["x","y"]}}"#), "upper", vec!["x", "y"]),
        (format!(r#"{{"nAmE":"mixed","aDdReSs":"{at}","Tags":null}}"#), "mixed", vec![]),
        (format!(r#"{{"Name":"extra","Address":"{at}","Meta":{{"deep":[1,null]}},"Port":5}}"#), "extra", vec![]),
    ];
    for (body, name, tags) in &cases {
        let answer = registry.post("/register", body.as_bytes());
        assert_eq!(answer.status, 200, "{body}: {}", answer.text());
        let record = answer.endpoint();
        assert_eq!((record.name.as_str(), record.address.as_str()), (*name, at.to_string().as_str()), "{body}");
        assert_eq!(record.tags, *tags, "{body}");
        assert_eq!(registry.record(name).expect("listed").tags, *tags, "{body}");
    }
    assert_eq!(registry.names(""), ["extra", "lower", "mixed", "upper"]);
}

#[test]
fn re_registering_replaces_address_and_tags_and_keeps_health_at_the_same_address() {
    let first = Responder::healthy();
    let second = Responder::healthy();
    let registry = Registry::start(config());
    let created = registry.register("mover", first.addr, &["a"]);
    assert_eq!(created.status, Status::Pending);
    let passing = registry.wait_for("mover", Status::Passing, Duration::from_secs(2));

    // Same address, new tags: the tags are replaced and the health is kept.
    let renewed = registry.register("mover", first.addr, &["b", "c"]);
    assert_eq!(renewed.tags, ["b", "c"]);
    assert_eq!(renewed.address, first.addr.to_string());
    assert_eq!(renewed.status, Status::Passing, "a renewal at the same address keeps its health");
    let stored = registry.record("mover").unwrap();
    assert_eq!((stored.tags.clone(), stored.status), (renewed.tags.clone(), Status::Passing));
    assert_eq!(stored.registered_at, passing.registered_at);

    // A new address: replaced, checked at once (the old one is gone, so only a check of the new
    // address can make it pass).
    first.stop();
    let body = format!(r#"{{"Name":"mover","Address":"{}","Tags":null}}"#, second.addr);
    let answer = registry.post("/register", body.as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.text());
    let moved = answer.endpoint();
    assert_eq!(moved.address, second.addr.to_string());
    assert_eq!(moved.tags, Vec::<String>::new(), "Tags null replaces the old tags");
    let stored = registry.wait_for("mover", Status::Passing, Duration::from_secs(1));
    assert_eq!((stored.address, stored.tags), (second.addr.to_string(), vec![]));
    assert_eq!(registry.names(""), ["mover"], "one record per Name");
}

#[test]
fn deregistering_answers_the_record_then_404() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    for name in ["by-body", "by-lowercase-body", "by-delete", "stays"] {
        registry.register(name, instance.addr, &["web"]);
    }

    let answer = registry.post("/deregister", br#"{"Name":"by-body"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let record = answer.endpoint();
    assert_eq!((record.name.as_str(), record.tags.clone()), ("by-body", vec!["web".to_string()]));
    assert_eq!(record.address, instance.addr.to_string());
    let again = registry.post("/deregister", br#"{"Name":"by-body"}"#);
    assert_eq!(again.status, 404, "{}", again.text());
    assert!(again.expect_error().contains("by-body"), "{}", again.text());

    let answer = registry.post("/deregister", br#"{"name":"by-lowercase-body"}"#);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.endpoint().name, "by-lowercase-body");

    let answer = registry.delete("/endpoints/by-delete");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.endpoint().name, "by-delete");
    assert!(registry.record("by-delete").is_none());
    let again = registry.delete("/endpoints/by-delete");
    assert_eq!(again.status, 404, "{}", again.text());
    assert!(again.expect_error().contains("by-delete"), "{}", again.text());

    for answer in [
        registry.post("/deregister", br#"{"Name":"never-registered"}"#),
        registry.delete("/endpoints/never-registered"),
        registry.get("/endpoints/never-registered"),
    ] {
        assert_eq!(answer.status, 404, "{}", answer.text());
        assert!(
            answer.expect_error().contains("never-registered"),
            "the error names what was not found: {}",
            answer.text()
        );
    }
    assert_eq!(registry.names(""), ["stays"]);
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

#[test]
fn listing_is_sorted_filtered_and_indexed() {
    let healthy = Responder::healthy();
    // Accepts the probe and never answers: the endpoint stays pending for the whole test.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = Registry::start(Config {
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            ..CheckConfig::default()
        },
        ..config()
    });
    let dead = refused_address();
    registry.register("b-ab", healthy.addr, &["a", "b"]);
    registry.register("A-upper", healthy.addr, &["a"]);
    registry.register("c-abc", dead, &["a", "b", "c"]);
    registry.register("a.1", silent.local_addr().unwrap(), &["b", "a"]);
    registry.register("a-0", healthy.addr, &["b"]);

    // Sorted by Name, bytewise as Go's sort.Strings does.
    assert_eq!(registry.names(""), ["A-upper", "a-0", "a.1", "b-ab", "c-abc"]);

    registry.wait_for("c-abc", Status::Critical, Duration::from_secs(2));
    for name in ["b-ab", "A-upper", "a-0"] {
        registry.wait_for(name, Status::Passing, Duration::from_secs(2));
    }
    assert_eq!(registry.record("a.1").unwrap().status, Status::Pending);

    assert_eq!(registry.names("?status=passing"), ["A-upper", "a-0", "b-ab"]);
    assert_eq!(registry.names("?status=pending"), ["a.1"]);
    assert_eq!(registry.names("?status=critical"), ["c-abc"]);
    assert_eq!(registry.names("?tag=a"), ["A-upper", "a.1", "b-ab", "c-abc"]);
    assert_eq!(registry.names("?tag=a&tag=b"), ["a.1", "b-ab", "c-abc"], "every tag must match");
    assert_eq!(registry.names("?tag=b&tag=a&tag=c"), ["c-abc"]);
    assert_eq!(registry.names("?tag=a&tag=b&status=passing"), ["b-ab"]);
    assert_eq!(registry.names("?tag=nope"), Vec::<String>::new());
    assert_eq!(registry.get("/endpoints?tag=nope").text(), "[]", "an empty listing is an empty array");

    for query in ["?status=bogus", "?tag=web&status=bogus"] {
        let answer = registry.get(&format!("/endpoints{query}"));
        assert_eq!(answer.status, 400, "{query}: {}", answer.text());
        assert!(answer.expect_error().contains("status"), "{query}: {}", answer.text());
    }

    // One record: the same as in the listing.
    let listed = registry.list("").into_iter().find(|e| e.name == "b-ab").unwrap();
    let one = registry.record("b-ab").unwrap();
    assert_eq!((one.address, one.tags, one.status), (listed.address, listed.tags, listed.status));
    assert!(registry.record("b-ac").is_none());
    assert_eq!(registry.record("b%2Dab").map(|e| e.name), Some("b-ab".into()), "a percent-encoded Name");

    // The watch index: present, and growing with each change.
    let before = registry.index();
    registry.register("d-new", healthy.addr, &[]);
    let after_register = registry.index();
    assert!(after_register > before, "registering moves X-Registry-Index ({before} -> {after_register})");
    registry.delete("/endpoints/d-new");
    let after_delete = registry.index();
    assert!(after_delete > after_register, "deregistering moves X-Registry-Index");
}

#[test]
fn the_ui_listener_reads_and_never_writes() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    registry.register("ui-a", instance.addr, &["web"]);
    registry.wait_for("ui-a", Status::Passing, Duration::from_secs(2));
    let ui = registry.ui;

    let page = registry.request("GET", ui, "/", None);
    assert_eq!(page.status, 200);
    assert!(page.header("Content-Type").unwrap_or_default().starts_with("text/html"), "{:?}", page.headers);
    assert!(page.text().contains("ui-a"));
    let list = registry.request("GET", ui, "/endpoints", None);
    assert_eq!(list.status, 200);
    let names: Vec<String> =
        serde_json::from_value::<Vec<Endpoint>>(list.expect_json()).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["ui-a"]);
    let passing = registry.request("GET", ui, "/endpoints?status=passing&tag=web", None);
    assert_eq!(passing.expect_json().as_array().map(Vec::len), Some(1));
    let one = registry.request("GET", ui, "/endpoints/ui-a", None);
    assert_eq!((one.status, one.endpoint().name), (200, "ui-a".to_string()));
    assert_eq!(registry.request("GET", ui, "/endpoints/ui-b", None).status, 404);
    assert_eq!(registry.request("GET", ui, "/healthz", None).status, 200);

    let before = without_last_check(&registry.get("/endpoints").text());
    let index = registry.index();
    let writes: [(&str, &str, Option<Vec<u8>>); 4] = [
        ("POST", "/register", Some(registration("ui-b", instance.addr, &[]))),
        ("POST", "/register", Some(registration("ui-a", instance.addr, &["changed"]))),
        ("POST", "/deregister", Some(br#"{"Name":"ui-a"}"#.to_vec())),
        ("DELETE", "/endpoints/ui-a", None),
    ];
    for (method, path, body) in &writes {
        let answer = registry.request(method, ui, path, body.as_deref());
        assert_eq!(answer.status, 405, "{method} {path} on the UI listener: {}", answer.text());
        let allow = answer.header("Allow").unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
        assert!(!allow.contains(method), "{method} {path}: Allow {allow:?} must not offer the refused method");
        assert!(allow.contains("GET"), "{method} {path}: Allow {allow:?}");
        answer.expect_error();
    }
    assert_eq!(without_last_check(&registry.get("/endpoints").text()), before, "the UI listener changed the registry");
    assert_eq!(registry.index(), index);

    // The API listener serves the reads too.
    assert_eq!(registry.get("/").status, 200);
    assert_eq!(registry.get("/healthz").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_bodies_are_400_and_leave_every_record_untouched() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    registry.register("keep-a", instance.addr, &["web", "eu"]);
    registry.register("keep-b", instance.addr, &[]);
    registry.wait_for("keep-a", Status::Passing, Duration::from_secs(2));
    registry.wait_for("keep-b", Status::Passing, Duration::from_secs(2));
    let before = without_last_check(&registry.get("/endpoints").text());
    let index = registry.index();

    let at = instance.addr;
    let long_name = "x".repeat(254);
    let many_tags = serde_json::to_string(&(0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()).unwrap();
    let long_tag = "t".repeat(256);
    let mut invalid_utf8 = format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":["#).into_bytes();
    invalid_utf8.extend_from_slice(b"\"w\xffb\"]}");
    // Bodies that name an existing record ("keep-a") with one bad field must not touch it.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{Name: keep-a}".to_vec(), "JSON"),
        (br#"{"Name":"keep-a","Address":"#.to_vec(), "JSON"),
        (br#"{"Name":"keep-a"} trailing"#.to_vec(), "JSON"),
        (Vec::new(), "empty"),
        (b"null".to_vec(), "JSON"),
        (format!(r#"[{{"Name":"keep-a","Address":"{at}"}}]"#).into_bytes(), "JSON"),
        (format!(r#""Name keep-a Address {at}""#).into_bytes(), "JSON"),
        (format!(r#"{{"Name":5,"Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":["keep-a"],"Address":"{at}"}}"#).into_bytes(), "Name"),
        (r#"{"Name":"keep-a","Address":80}"#.to_string().into_bytes(), "Address"),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":"x"}}"#).into_bytes(), "Tags"),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":[1]}}"#).into_bytes(), "Tags"),
        (format!(r#"{{"Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"","Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":null,"Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"{long_name}","Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"keep-a/x","Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"keep a","Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"keep-a%00","Address":"{at}"}}"#).into_bytes(), "Name"),
        (format!(r#"{{"Name":"keep-a\u0000","Address":"{at}"}}"#).into_bytes(), "Name"),
        (br#"{"Name":"keep-a"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"localhost:80"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"1.2.3.4"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"1.2.3.4:0"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"1.2.3.4:70000"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"1.2.3.4:-1"}"#.to_vec(), "Address"),
        (br#"{"Name":"keep-a","Address":"http://1.2.3.4:80/"}"#.to_vec(), "Address"),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":{many_tags}}}"#).into_bytes(), "Tags"),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":["{long_tag}"]}}"#).into_bytes(), "tag"),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":[""]}}"#).into_bytes(), "tag"),
        (invalid_utf8, "Tags"),
        // A key given twice, in any case: a proxy that checked one Name must not register another.
        (format!(r#"{{"Name":"keep-a","name":"keep-b","Address":"{at}"}}"#).into_bytes(), "Name is given twice"),
        (
            format!(r#"{{"Name":"keep-a","Address":"{at}","ADDRESS":"127.0.0.1:9"}}"#).into_bytes(),
            "Address is given twice",
        ),
        (format!(r#"{{"Name":"keep-a","Address":"{at}","Tags":[],"tags":["x"]}}"#).into_bytes(), "Tags is given twice"),
    ];
    for (body, topic) in &cases {
        let shown = String::from_utf8_lossy(body);
        let shown = shown.get(..120).unwrap_or(&shown);
        let answer = registry.post("/register", body);
        assert_eq!(answer.status, 400, "{shown}: {}", answer.text());
        let sentence = answer.expect_error();
        assert!(
            sentence.to_lowercase().contains(&topic.to_lowercase()),
            "{shown}: the error should mention {topic:?}: {sentence:?}"
        );
        assert!(sentence.len() < 1024, "{shown}: the error quotes too much back: {} bytes", sentence.len());
    }

    let deregistrations: [(&[u8], &str); 6] = [
        (b"{", "JSON"),
        (b"", "empty"),
        (br#"{"Name":""}"#, "Name"),
        (br#"{"Name":"keep-a/../keep-b"}"#, "Name"),
        (br#"{"Name":7}"#, "Name"),
        (br#"{"Name":"keep-a","NAME":"keep-b"}"#, "Name is given twice"),
    ];
    for (body, topic) in deregistrations {
        let answer = registry.post("/deregister", body);
        assert_eq!(answer.status, 400, "{}: {}", String::from_utf8_lossy(body), answer.text());
        assert!(answer.expect_error().contains(topic), "{}: {}", String::from_utf8_lossy(body), answer.text());
    }

    assert_eq!(without_last_check(&registry.get("/endpoints").text()), before, "a refused request changed a record");
    assert_eq!(registry.index(), index, "a refused request moved the watch index");
}

#[test]
fn the_limits_themselves_are_accepted() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    let longest_name = "n".repeat(253);
    let longest_tag = "t".repeat(255);
    let most_tags: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    let most_tags: Vec<&str> = most_tags.iter().map(String::as_str).collect();
    assert_eq!(registry.register(&longest_name, instance.addr, &[&longest_tag]).tags, [longest_tag.as_str()]);
    assert_eq!(registry.register("most-tags", instance.addr, &most_tags).tags, most_tags);
    // Ports 1 and 65535, on loopback so nothing else is probed.
    for (name, port) in [("port-1", 1), ("port-65535", 65535)] {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(registry.register(name, address, &[]).address, address.to_string());
    }
    assert_eq!(registry.record(&longest_name).expect("a 253-byte Name is addressable").name, longest_name);
    assert_eq!(registry.list("").len(), 4);
}

/// `.` and `..` pass the `[A-Za-z0-9._-]` rule, but as the last segment of `/endpoints/NAME`
/// they are dot-segments: curl, browsers and URL libraries resolve `/endpoints/..` to `/` before
/// sending (RFC 3986, 5.2.4), so such a record could never be read or deleted by Name. Go's
/// `net/http` ServeMux redirects them away too. A Name must not be one of them.
#[test]
fn dot_segment_names_are_refused() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    for name in ["..", "."] {
        let answer = registry.post("/register", &registration(name, instance.addr, &[]));
        assert_eq!(answer.status, 400, "Name {name:?}: {}", answer.text());
        assert!(answer.expect_error().contains("Name"), "Name {name:?}: {}", answer.text());
    }
    assert_eq!(registry.names(""), Vec::<String>::new());
    // Names that merely contain dots are fine.
    registry.register("a..b", instance.addr, &[]);
    registry.register(".hidden", instance.addr, &[]);
    assert_eq!(registry.names(""), [".hidden", "a..b"]);
}

#[test]
fn bodies_over_64_kib_are_413() {
    let instance = Responder::healthy();
    let registry = Registry::start(config());
    let limit = 64 * 1024;
    let padded = |name: &str, size: usize| {
        let mut body = registration(name, instance.addr, &[]);
        body.resize(size, b' ');
        body
    };

    let at_limit = registry.post("/register", &padded("exactly-64-kib", limit));
    assert_eq!(at_limit.status, 200, "a body of exactly 64 KiB is allowed: {}", at_limit.text());

    let over = registry.post("/register", &padded("over-64-kib", limit + 1));
    assert_eq!(over.status, 413, "{}", over.text());
    assert!(over.expect_error().contains(&limit.to_string()), "the error says the limit: {}", over.text());

    // Without a Content-Length the limit holds too.
    let body = padded("chunked-over", 100 * 1024);
    let mut request = format!(
        "POST /register HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
        registry.api
    )
    .into_bytes();
    for chunk in body.chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let chunked = raw(registry.api, &request);
    assert_eq!(chunked.status, 413, "{}", chunked.text());
    chunked.expect_error();

    assert_eq!(registry.names(""), ["exactly-64-kib"]);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let registry = Registry::start(config());
    for path in ["/nope", "/endpoint", "/register/extra", "/v1/agent/service/register"] {
        let answer = registry.get(path);
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.text());
        answer.expect_error();
    }
    let cases = [
        ("GET", "/register", "POST"),
        ("PUT", "/register", "POST"),
        ("GET", "/deregister", "POST"),
        ("POST", "/endpoints", "GET"),
        ("PUT", "/endpoints/some-name", "DELETE"),
        ("POST", "/endpoints/some-name", "GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/endpoints", "GET"),
    ];
    for (method, path, allowed) in cases {
        let body = (method != "GET" && method != "DELETE").then_some(&b"{}"[..]);
        let answer = registry.request(method, registry.api, path, body);
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.text());
        let allow = answer.header("Allow").unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
        assert!(allow.contains(allowed), "{method} {path}: Allow {allow:?} lacks {allowed}");
        assert!(!allow.contains(method), "{method} {path}: Allow {allow:?} offers {method}");
        answer.expect_error();
    }
    assert_eq!(registry.names(""), Vec::<String>::new());
}

#[test]
fn writes_need_the_token_when_one_is_configured() {
    let instance = Responder::healthy();
    let registry = Registry::start(Config { token: WriteToken::new(Some("s3cret")), ..config() });
    let (api, ui) = (registry.api, registry.ui);
    let body = registration("guarded", instance.addr, &[]);
    let refused: [&[(&str, &str)]; 3] =
        [&[], &[("Authorization", "Bearer wrong")], &[("Authorization", "Bearer s3cret-and-more")]];
    for headers in refused {
        let answer = request_with(&registry.agent, "POST", api, "/register", Some(&body), headers);
        assert_eq!(answer.status, 401, "{headers:?}: {}", answer.text());
        assert!(answer.expect_error().to_lowercase().contains("token"), "{headers:?}: {}", answer.text());
    }
    assert!(registry.names("").is_empty(), "a refused write registered something");

    let good = [("Authorization", "Bearer s3cret")];
    let answer = request_with(&registry.agent, "POST", api, "/register", Some(&body), &good);
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Reads need no token, on either listener.
    assert_eq!(registry.names(""), ["guarded"]);
    assert_eq!(registry.request("GET", ui, "/endpoints/guarded", None).status, 200);
    assert_eq!(registry.request("GET", ui, "/", None).status, 200);

    for (method, path, body) in
        [("POST", "/deregister", Some(&br#"{"Name":"guarded"}"#[..])), ("DELETE", "/endpoints/guarded", None)]
    {
        let answer = registry.request(method, api, path, body);
        assert_eq!(answer.status, 401, "{method} {path} without the token: {}", answer.text());
        answer.expect_error();
    }
    assert_eq!(registry.names(""), ["guarded"]);
    let answer = request_with(&registry.agent, "DELETE", api, "/endpoints/guarded", None, &good);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(registry.names("").is_empty());
}

#[test]
fn the_capacity_cap_refuses_new_names_only() {
    let instance = Responder::healthy();
    let other = Responder::healthy();
    let registry = Registry::start(Config { max_endpoints: 3, ..config() });
    for name in ["cap-1", "cap-2", "cap-3"] {
        registry.register(name, instance.addr, &[]);
    }
    let refused = registry.post("/register", &registration("cap-4", instance.addr, &[]));
    assert!(matches!(refused.status, 429 | 503), "a full registry answers 429 or 503, not {}", refused.status);
    let sentence = refused.expect_error();
    assert!(sentence.contains('3') && sentence.contains("limit"), "the error says the limit: {sentence:?}");
    assert!(registry.record("cap-4").is_none());

    // Known Names still renew and move.
    assert_eq!(registry.register("cap-2", instance.addr, &["renewed"]).tags, ["renewed"]);
    assert_eq!(registry.register("cap-3", other.addr, &[]).address, other.addr.to_string());
    assert_eq!(registry.names(""), ["cap-1", "cap-2", "cap-3"]);

    // Room again after a deregistration.
    assert_eq!(registry.delete("/endpoints/cap-1").status, 200);
    registry.register("cap-4", instance.addr, &[]);
    assert_eq!(registry.names(""), ["cap-2", "cap-3", "cap-4"]);
}

// ---------------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------------

#[test]
fn health_passes_fails_heals_and_expires() {
    let failures = 3;
    let expire = Duration::from_millis(600);
    let registry = Registry::start(Config {
        thresholds: Thresholds { failures_before_critical: failures, deregister_critical_after: expire },
        ..config()
    });
    let instance = Responder::healthy();
    let port = instance.addr.port();

    // Healthy: pending, then passing within a second.
    let registered = Instant::now();
    assert_eq!(registry.register("flaky", instance.addr, &[]).status, Status::Pending);
    let passing = registry.wait_for("flaky", Status::Passing, Duration::from_secs(1));
    assert!(registered.elapsed() < Duration::from_secs(1));
    assert_eq!((passing.last_error, passing.consecutive_failures), (None, 0));
    assert!(passing.last_check.is_some(), "a checked endpoint has a LastCheck");

    // It stops answering: still passing below the threshold, with the failures counted and the
    // error given; critical at the threshold.
    instance.stop();
    let mut seen_failing_but_passing = false;
    let critical = eventually(POLL, "flaky to go critical", Duration::from_secs(3), || {
        let record = registry.record("flaky").expect("not removed before it was critical");
        match record.status {
            Status::Passing if record.consecutive_failures > 0 => {
                assert!(record.consecutive_failures < failures, "passing with too many failures: {record:?}");
                assert!(
                    record.last_error.as_deref().is_some_and(|e| !e.is_empty()),
                    "LastError when failing: {record:?}"
                );
                seen_failing_but_passing = true;
                None
            }
            Status::Passing => None,
            Status::Critical => Some(record),
            Status::Pending => panic!("a checked endpoint is never pending again: {record:?}"),
        }
    });
    assert!(seen_failing_but_passing, "a failure below the threshold must not make it critical");
    assert!(critical.consecutive_failures >= failures, "critical too early: {critical:?}");
    assert!(critical.last_error.as_deref().is_some_and(|e| !e.is_empty()), "LastError when critical: {critical:?}");

    // It answers again: one pass makes it passing, the count and the error cleared.
    let instance = Responder::on(port, healthz);
    let healed = registry.wait_for("flaky", Status::Passing, Duration::from_millis(450));
    assert_eq!((healed.last_error, healed.consecutive_failures), (None, 0));

    // It stops for good: critical, counting, then removed after deregister-critical-after.
    instance.stop();
    let critical = registry.wait_for("flaky", Status::Critical, Duration::from_secs(3));
    let critical_at = Instant::now();
    let mut counts = vec![critical.consecutive_failures];
    let index = registry.index();
    eventually(POLL, "flaky to be removed", Duration::from_secs(3), || match registry.record("flaky") {
        Some(record) => {
            assert_eq!(record.status, Status::Critical, "{record:?}");
            counts.push(record.consecutive_failures);
            None
        }
        None => Some(()),
    });
    let lasted = critical_at.elapsed();
    assert!(lasted + Duration::from_millis(150) >= expire, "removed after {lasted:?}, before {expire:?}");
    assert!(lasted < expire + Duration::from_secs(1), "removed only after {lasted:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "ConsecutiveFailures never goes down: {counts:?}");
    assert!(counts.last() > Some(&(failures + 1)), "ConsecutiveFailures counts every failure: {counts:?}");
    assert!(registry.names("").is_empty());
    assert!(registry.index() > index, "a removal moves the watch index");
}

/// `Running::stop` hands both ports back before it returns, so a registry restarted in the same
/// process (an end-to-end test, or an embedding program) can listen on them again at once.
/// Several rounds, since a port released a moment late is a race.
#[test]
fn a_stopped_registry_can_be_restarted_on_the_same_ports() {
    let first = Registry::start(config());
    let (api, ui) = (first.api, first.ui);
    let same_ports = Config { api: api.to_string(), http: ui.to_string(), ..config() };
    let mut registry = first;
    for round in 0..10 {
        assert_eq!(registry.get("/healthz").status, 200);
        let started = Instant::now();
        drop(registry);
        assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
        registry = Registry::try_start(&same_ports)
            .unwrap_or_else(|e| panic!("round {round}: restarting on {api} and {ui} right after stop: {e}"));
    }
    assert_eq!((registry.api, registry.ui), (api, ui));
    assert_eq!(registry.request("GET", ui, "/healthz", None).status, 200);
}

#[test]
fn a_hung_endpoint_does_not_delay_a_dead_ones_detection() {
    // One that completes the handshake but is never accepted, one that is accepted and held.
    let never_accepted = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = Holder::start();
    let registry = Registry::start(Config {
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            concurrency: 3,
            ..CheckConfig::default()
        },
        ..config()
    });
    registry.register("hung-1", never_accepted.local_addr().unwrap(), &[]);
    registry.register("hung-2", held.addr, &[]);
    let registered = Instant::now();
    registry.register("dead", refused_address(), &[]);

    registry.wait_for("dead", Status::Critical, Duration::from_secs(1));
    let detected = registered.elapsed();
    assert!(detected < Duration::from_millis(500), "the dead endpoint took {detected:?} to go critical");

    // And it keeps being checked every interval while the hung probes wait for their timeout.
    let rechecked = eventually(POLL, "dead to be checked again and again", Duration::from_millis(1500), || {
        registry.record("dead").filter(|e| e.consecutive_failures >= 4)
    });
    assert_eq!(rechecked.status, Status::Critical);
    assert!(registered.elapsed() < Duration::from_millis(1900), "re-checks were held up: {:?}", registered.elapsed());
    for name in ["hung-1", "hung-2"] {
        assert_eq!(registry.record(name).unwrap().status, Status::Pending, "{name}'s probe is still waiting");
    }
    drop(registry);
}

#[test]
fn a_thousand_endpoints_from_sixteen_threads_are_all_listed() {
    let instances: Vec<Responder> = (0..4).map(|_| Responder::healthy()).collect();
    let registry = Registry::start(Config {
        check: CheckConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            concurrency: 64,
            ..CheckConfig::default()
        },
        ..config()
    });
    let (api, total, threads) = (registry.api, 1000, 16);
    let name = |i: usize| format!("bulk-{i:04}");
    let address = |i: usize| instances[i % instances.len()].addr;
    thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let agent = agent();
                for i in (t..total).step_by(threads) {
                    let answer =
                        request(&agent, "POST", api, "/register", Some(&registration(&name(i), address(i), &["bulk"])));
                    assert_eq!(answer.status, 200, "{}: {}", name(i), answer.text());
                }
            });
        }
    });

    let listed = registry.list("");
    assert_eq!(listed.len(), total);
    for (i, record) in listed.iter().enumerate() {
        assert_eq!((record.name.clone(), record.address.clone()), (name(i), address(i).to_string()));
        assert_eq!(record.tags, ["bulk"]);
    }
    let distinct: BTreeSet<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(distinct.len(), total);
    // Each was checked at once on registration: all pass well within one interval.
    eventually(POLL, "all 1000 to pass", Duration::from_secs(5), || {
        (registry.list("?status=passing").len() == total).then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

/// A hostile endpoint: its "status line" is markup, which the registry quotes in LastError.
fn markup_reply(_: &str) -> Vec<u8> {
    b"<img src=x onerror=alert(2)>\r\n\r\n".to_vec()
}

#[test]
fn the_page_escapes_what_clients_sent_and_counts_statuses() {
    let healthy = Responder::healthy();
    let hostile = Responder::on(0, markup_reply);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = Registry::start(Config {
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            ..CheckConfig::default()
        },
        ..config()
    });
    let script = "<script>alert(1)</script>";
    registry.register("page-ok", healthy.addr, &[script, "web"]);
    registry.register("page-hostile", hostile.addr, &[]);
    registry.register("page-wait", silent.local_addr().unwrap(), &[]);
    registry.wait_for("page-ok", Status::Passing, Duration::from_secs(2));
    let critical = registry.wait_for("page-hostile", Status::Critical, Duration::from_secs(2));
    assert!(critical.last_error.unwrap_or_default().contains("<img src=x"), "the probe quotes what it got");

    let page = registry.request("GET", registry.ui, "/", None);
    assert_eq!(page.status, 200);
    assert!(page.header("Content-Type").unwrap_or_default().starts_with("text/html"));
    let html = page.text();
    assert!(!html.contains(script), "the tag reached the page unescaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the tag is shown, escaped");
    assert!(!html.contains("<img src=x"), "LastError reached the page unescaped");
    assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"), "LastError is shown, escaped");
    for name in ["page-ok", "page-hostile", "page-wait"] {
        assert!(html.contains(name), "the page lists {name}");
    }
    assert!(html.contains(&format!("http://{}", healthy.addr)), "the Address is a link");
    for count in ["1 passing", "1 pending", "1 critical"] {
        assert!(html.contains(count), "the page counts {count:?}");
    }
    assert!(html.contains(service_registry::VERSION), "the page shows the version");
    // Readable without JavaScript and current: the page asks the browser to reload it.
    assert!(
        html.contains(r#"http-equiv="refresh""#) || page.header("Refresh").is_some(),
        "the page does not refresh itself"
    );
}

#[test]
fn a_started_registry_says_it_is_warming_up_and_removes_nothing_until_it_is_over() {
    let warm_up = Duration::from_millis(1500);
    let registry = Registry::start(Config {
        warm_up,
        thresholds: Thresholds { failures_before_critical: 1, deregister_critical_after: Duration::from_millis(100) },
        ..config()
    });
    let started = Instant::now();
    registry.register("dead", refused_address(), &[]);
    registry.wait_for("dead", Status::Critical, Duration::from_secs(1));

    let health = registry.get("/healthz").json().expect("JSON");
    assert_eq!(health["warming"], true, "{health}");
    let listing = registry.get("/endpoints");
    let left = listing.header("X-Registry-Warming").expect("a listing says the registry is warming up");
    assert!(left.ends_with('s'), "the warm-up left, as a duration: {left:?}");
    assert!(registry.get("/endpoints/dead").header("X-Registry-Warming").is_some());
    assert!(registry.get("/v1/sd").header("X-Registry-Warming").is_some());
    let page = registry.get("/").text();
    assert!(page.contains(r#"class="banner""#) && page.contains("Warming up"), "the page shows a banner");
    let index = registry.index();

    // Critical for far longer than -deregister-critical-after, but listed until the warm-up ends.
    while started.elapsed() + Duration::from_millis(300) < warm_up {
        assert!(registry.record("dead").is_some(), "removed {:?} into the warm-up", started.elapsed());
        thread::sleep(Duration::from_millis(50));
    }
    eventually(POLL, "the warm-up to end and dead to be removed", Duration::from_secs(3), || {
        registry.record("dead").is_none().then_some(())
    });
    assert!(started.elapsed() >= warm_up, "removed before the warm-up ended");
    let health = registry.get("/healthz").json().expect("JSON");
    assert_eq!(health["warming"], false, "{health}");
    let listing = registry.get("/endpoints");
    assert_eq!(listing.header("X-Registry-Warming"), None);
    assert!(!registry.get("/").text().contains("Warming up"), "the banner is gone");
    assert!(registry.index() > index, "watchers are woken when the warm-up ends");
}
