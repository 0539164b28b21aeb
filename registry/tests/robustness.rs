//! Holding under attack and failure: hostile and broken clients, the write token,
//! the probe allow-list, connection and size limits, and the eviction guard, all over real
//! sockets on 127.0.0.1.
//!
//! Most tests start the registry in-process with `service_registry::start` on port 0; the slowloris test
//! runs the real binary so that it can count the registry's own threads in `/proc/PID/task`.
//! Requests are written as raw bytes, because the attacks are about bytes no well-behaved client
//! would send. Endpoints the checker probes are loopback listeners owned by the test. Every wait
//! is bounded, every socket is closed and every thread joined before a test returns.
//!
//! The tests run one at a time ([`one_at_a_time`]): several measure time or count threads on a
//! two-core machine, and one test's load must not become another's latency.

mod support;

use serde_json::Value;
use service_registry::{CheckConfig, Cidr, Config, GuardConfig, ProbePolicy, Thresholds, WriteToken};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::{config, eventually, exchange, first_line, http, http_raw, read_answer, Answer, Registry};

// ---------------------------------------------------------------------------------------------
// Helpers: one test at a time, the registry's answers, endpoints to probe, captured warnings.
// ---------------------------------------------------------------------------------------------

/// Serializes the tests of this file (see the file's doc).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long one request may take before a test calls it lost. Far above a loopback round trip
/// (a millisecond), far below the registry's own 10 s read deadlines, so a hang shows as a
/// failure in seconds rather than as a stuck test.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// How often `eventually` looks again.
const POLL: Duration = Duration::from_millis(10);

/// Requests written as raw bytes, to the registry under test.
impl Registry {
    /// Sends raw `request` to the API listener; panics if nothing answers.
    fn call(&self, request: &[u8]) -> Answer {
        exchange(self.api, request, ANSWER_WITHIN).unwrap_or_else(|e| panic!("{}: {e}", first_line(request)))
    }

    fn get(&self, path: &str) -> Answer {
        self.call(&http("GET", path, &[], b""))
    }

    /// Registers `name` at `address`, insisting on 200.
    fn register(&self, name: &str, address: SocketAddr, tags: &[&str]) {
        let body = serde_json::json!({"Name": name, "Address": address.to_string(), "Tags": tags}).to_string();
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let auth: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let answer = self.call(&http("POST", "/register", &auth, body.as_bytes()));
        assert_eq!(answer.status, 200, "registering {name}: {}", answer.text());
    }

    /// `GET /endpoints` without each record's `LastCheck`, which every check refreshes: what
    /// no request may change unless it is a write that succeeded.
    fn snapshot(&self) -> Value {
        let answer = self.get("/endpoints");
        assert_eq!(answer.status, 200, "GET /endpoints: {}", answer.text());
        let mut list = answer.json().unwrap_or_else(|| panic!("GET /endpoints is JSON: {}", answer.text()));
        for record in list.as_array_mut().expect("GET /endpoints is an array") {
            record.as_object_mut().expect("each record is an object").remove("LastCheck");
        }
        list
    }

    /// The records, as JSON values.
    fn records(&self) -> Vec<Value> {
        self.snapshot().as_array().cloned().unwrap_or_default()
    }

    /// Waits until `name` has `status`.
    fn wait_for(&self, name: &str, status: &str, within: Duration) {
        eventually(POLL, &format!("{name} to be {status}"), within, || {
            let answer = self.get(&format!("/endpoints/{name}"));
            (answer.status == 200 && answer.json()?["Status"] == status).then_some(())
        })
    }

    /// `evictionHold` of `GET /healthz`.
    fn holding(&self) -> bool {
        let answer = self.get("/healthz");
        assert_eq!(answer.status, 200, "GET /healthz: {}", answer.text());
        answer.json().and_then(|v| v["evictionHold"].as_bool()).expect("GET /healthz carries evictionHold")
    }
}

/// Loopback endpoints that answer `GET /healthz` with 200, all served by one thread. Any of
/// them can be taken down (its listener is closed, so probes are refused at once) and brought
/// back on the same port. Stopped and joined on drop.
struct Fleet {
    addrs: Vec<SocketAddr>,
    up: Arc<Vec<AtomicBool>>,
    sweeps: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    fn start(size: usize) -> Fleet {
        let listeners: Vec<TcpListener> = (0..size)
            .map(|_| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback endpoint");
                listener.set_nonblocking(true).expect("non-blocking listener");
                listener
            })
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("bound address")).collect();
        let up = Arc::new((0..size).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
        let sweeps = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (addrs, up, sweeps, stop) = (addrs.clone(), up.clone(), sweeps.clone(), stop.clone());
            thread::spawn(move || serve_fleet(listeners, &addrs, &up, &sweeps, &stop))
        };
        Fleet { addrs, up, sweeps, stop, thread: Some(thread) }
    }

    /// Takes the endpoints in `range` down or brings them back; returns once that is in force.
    fn set(&self, range: Range<usize>, up: bool) {
        for i in range {
            self.up[i].store(up, Ordering::SeqCst);
        }
        // Two full sweeps of the serving thread after the change: every listener has seen it.
        let seen = self.sweeps.load(Ordering::SeqCst);
        eventually(POLL, "the fleet to apply a change", Duration::from_secs(2), || {
            (self.sweeps.load(Ordering::SeqCst) >= seen + 2).then_some(())
        });
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_fleet(
    listeners: Vec<TcpListener>,
    addrs: &[SocketAddr],
    up: &[AtomicBool],
    sweeps: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut listeners: Vec<Option<TcpListener>> = listeners.into_iter().map(Some).collect();
    while !stop.load(Ordering::SeqCst) {
        for (i, slot) in listeners.iter_mut().enumerate() {
            match (up[i].load(Ordering::SeqCst), slot.is_some()) {
                (false, true) => *slot = None,
                (true, false) => {
                    // Same port again; std sets SO_REUSEADDR, so recent connections do not block it.
                    *slot = TcpListener::bind(addrs[i]).ok().filter(|l| l.set_nonblocking(true).is_ok());
                }
                _ => {}
            }
            if let Some(listener) = slot {
                while let Ok((stream, _)) = listener.accept() {
                    answer_healthz(stream);
                }
            }
        }
        sweeps.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(1));
    }
}

/// Reads a request head (at most 1 KiB, at most 200 ms) and answers 200.
fn answer_healthz(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Warnings the registry logs, captured for the tests that check them.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureWarnings;

impl log::Log for CaptureWarnings {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            WARNINGS.lock().unwrap_or_else(|p| p.into_inner()).push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Installs the capturing logger (once) and returns how many warnings were logged so far.
fn warnings_mark() -> usize {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&CaptureWarnings).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
    WARNINGS.lock().unwrap_or_else(|p| p.into_inner()).len()
}

fn warnings_since(mark: usize) -> Vec<String> {
    WARNINGS.lock().unwrap_or_else(|p| p.into_inner())[mark..].to_vec()
}

// ---------------------------------------------------------------------------------------------
// Bad input: every malformed request gets the right 4xx and a JSON error, and changes nothing.
// ---------------------------------------------------------------------------------------------

/// Which listener a case is sent to.
#[derive(Debug, Clone, Copy)]
enum To {
    Api,
    Ui,
}

struct Case {
    what: String,
    to: To,
    request: Vec<u8>,
    status: u16,
}

fn case(what: impl Into<String>, request: Vec<u8>, status: u16) -> Case {
    Case { what: what.into(), to: To::Api, request, status }
}

fn register_body(what: impl Into<String>, body: &[u8], status: u16) -> Case {
    case(what, http("POST", "/register", &[], body), status)
}

/// The bad requests, with the status each must get. Names that exist are `web-1`, `web-2` and
/// `db.main_1`: several cases try to reach `web-1` through an encoding.
fn bad_requests() -> Vec<Case> {
    let huge = "x".repeat(60_000);
    let mut cases = vec![
        // Malformed and truncated JSON.
        register_body("empty body", b"", 400),
        register_body("truncated in a value", br#"{"Name": "evil", "Address": "127.0.0.1:"#, 400),
        register_body("truncated after a key", br#"{"Name""#, 400),
        register_body("a lone brace", b"{", 400),
        register_body("not JSON", b"Name=evil&Address=127.0.0.1:9", 400),
        register_body("trailing garbage", br#"{"Name": "evil", "Address": "127.0.0.1:9"} x"#, 400),
        register_body("two objects", br#"{"Name": "evil", "Address": "127.0.0.1:9"}{}"#, 400),
        register_body("trailing comma", br#"{"Name": "evil", "Address": "127.0.0.1:9",}"#, 400),
        register_body("single quotes", b"{'Name': 'evil', 'Address': '127.0.0.1:9'}", 400),
        register_body("unquoted key", br#"{Name: "evil", "Address": "127.0.0.1:9"}"#, 400),
        register_body("null", b"null", 400),
        register_body("an array", br#"["evil", "127.0.0.1:9"]"#, 400),
        register_body("a string", br#""web-1""#, 400),
        register_body("a number", b"42", 400),
        register_body("a lone surrogate", br#"{"Name": "ev\ud800", "Address": "127.0.0.1:9"}"#, 400),
        register_body("a bad escape", br#"{"Name": "ev\x41", "Address": "127.0.0.1:9"}"#, 400),
        // Wrong types.
        register_body("Name a number", br#"{"Name": 5, "Address": "127.0.0.1:9"}"#, 400),
        register_body("Name an array", br#"{"Name": ["evil"], "Address": "127.0.0.1:9"}"#, 400),
        register_body("Name an object", br#"{"Name": {"a": 1}, "Address": "127.0.0.1:9"}"#, 400),
        register_body("Name a boolean", br#"{"Name": true, "Address": "127.0.0.1:9"}"#, 400),
        register_body("Address a number", br#"{"Name": "evil", "Address": 9}"#, 400),
        register_body("Address an object", br#"{"Name": "evil", "Address": {"ip": "127.0.0.1"}}"#, 400),
        register_body("Tags a string", br#"{"Name": "evil", "Address": "127.0.0.1:9", "Tags": "web"}"#, 400),
        register_body("Tags of numbers", br#"{"Name": "evil", "Address": "127.0.0.1:9", "Tags": [1]}"#, 400),
        register_body("Tags holding null", br#"{"Name": "evil", "Address": "127.0.0.1:9", "Tags": [null]}"#, 400),
        register_body("Tags an object", br#"{"Name": "evil", "Address": "127.0.0.1:9", "Tags": {"a": 1}}"#, 400),
        register_body("Name missing", br#"{"Address": "127.0.0.1:9"}"#, 400),
        register_body("Address missing", br#"{"Name": "evil"}"#, 400),
        // Huge and deep JSON, under and over the 64 KiB body limit.
        register_body("a 60 KB Name", format!(r#"{{"Name": "{huge}", "Address": "127.0.0.1:9"}}"#).as_bytes(), 400),
        register_body("a 60 KB Address", format!(r#"{{"Name": "evil", "Address": "{huge}"}}"#).as_bytes(), 400),
        register_body(
            "a 60 KB tag",
            format!(r#"{{"Name": "evil", "Address": "127.0.0.1:9", "Tags": ["{huge}"]}}"#).as_bytes(),
            400,
        ),
        register_body("60,000 [", "[".repeat(60_000).as_bytes(), 400),
        register_body("100,000 [ (over 64 KiB)", "[".repeat(100_000).as_bytes(), 413),
        register_body(
            "30,000 nested arrays under an ignored key",
            format!(r#"{{"Name": "evil", "X": {}{}}}"#, "[".repeat(30_000), "]".repeat(30_000)).as_bytes(),
            400,
        ),
        register_body(
            "10,000 nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)).as_bytes(),
            400,
        ),
        register_body("70,000 bytes of spaces (over 64 KiB)", " ".repeat(70_000).as_bytes(), 413),
        // Invalid UTF-8 and control characters where it matters.
        register_body("invalid UTF-8 in Name", b"{\"Name\": \"ev\xff\xfeil\", \"Address\": \"127.0.0.1:9\"}", 400),
        register_body("overlong '/' in Name", b"{\"Name\": \"web-1\xc0\xafx\", \"Address\": \"127.0.0.1:9\"}", 400),
        register_body("invalid UTF-8 in Address", b"{\"Name\": \"evil\", \"Address\": \"127.0.0.1:\xff\"}", 400),
        register_body(
            "invalid UTF-8 in a tag",
            b"{\"Name\": \"evil\", \"Address\": \"127.0.0.1:9\", \"Tags\": [\"\xc3\x28\"]}",
            400,
        ),
        case("invalid UTF-8 in the request line", http_raw(b"GET /endpoints/\xff HTTP/1.1", &[], b""), 400),
        case(
            "invalid UTF-8 in a header",
            b"GET /endpoints HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        case("bytes that are no request", b"\x00\x01\x02\x03\r\n\r\n".to_vec(), 400),
        case("an HTTP/0.9 request", b"GET /\r\n\r\n".to_vec(), 400),
        case("a space in the method", http_raw(b"G ET /healthz HTTP/1.1", &[], b""), 400),
        case("an unknown HTTP version", http_raw(b"GET /healthz HTTP/7.1", &[], b""), 400),
        // Odd methods.
        case("PATCH /register", http("PATCH", "/register", &[], b"{}"), 405),
        case("PUT /register", http("PUT", "/register", &[], b"{}"), 405),
        case("GET /register", http("GET", "/register", &[], b""), 405),
        case("DELETE /register", http("DELETE", "/register", &[], b""), 405),
        case("GET /deregister", http("GET", "/deregister", &[], b""), 405),
        case("OPTIONS /endpoints", http("OPTIONS", "/endpoints", &[], b""), 405),
        case("TRACE /", http("TRACE", "/", &[], b""), 405),
        case("BREW /endpoints (made up)", http("BREW", "/endpoints", &[], b""), 405),
        case("get /endpoints (lower case)", http("get", "/endpoints", &[], b""), 405),
        case("PROPFIND /endpoints/web-1", http("PROPFIND", "/endpoints/web-1", &[], b""), 405),
        case("PUT /endpoints/web-1", http("PUT", "/endpoints/web-1", &[], b"{}"), 405),
        case("POST /endpoints/web-1", http("POST", "/endpoints/web-1", &[], b"{}"), 405),
        case("DELETE /endpoints", http("DELETE", "/endpoints", &[], b""), 405),
        case("POST /healthz", http("POST", "/healthz", &[], b"{}"), 405),
        case("CONNECT", http("CONNECT", "127.0.0.1:9", &[], b""), 404),
        case("an unknown path", http("GET", "/v2/endpoints", &[], b""), 404),
        case("a dot-dot path", http("GET", "/../endpoints", &[], b""), 404),
        // Absurd headers.
        case("a 20 KB header", http("GET", "/endpoints", &[("X-Big", &"a".repeat(20_000))], b""), 431),
        case(
            "5,000 tiny headers",
            {
                let mut request = b"GET /endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
                request.extend_from_slice(&b"X-a: b\r\n".repeat(5_000));
                request.extend_from_slice(b"\r\n");
                request
            },
            431,
        ),
        case("a 20 KB URL", http("GET", &format!("/endpoints?tag={}", "a".repeat(20_000)), &[], b""), 431),
        case("a header without a colon", b"GET /endpoints HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n".to_vec(), 400),
        case(
            "an unknown Expect",
            http("POST", "/register", &[("Expect", "banana")], br#"{"Name": "evil", "Address": "127.0.0.1:9"}"#),
            417,
        ),
        case(
            "a malformed chunked body",
            b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        case("a request line claiming HTTP/2.0", http_raw(b"GET /endpoints HTTP/2.0", &[], b""), 505),
        // Queries.
        case("an unknown status filter", http("GET", "/endpoints?status=dead", &[], b""), 400),
        case("a query that is not UTF-8", http("GET", "/endpoints?tag=%ff%fe", &[], b""), 400),
        case("a broken escape in a query", http("GET", "/endpoints?tag=%zz", &[], b""), 400),
        case("a negative index", http("GET", "/endpoints?index=-1", &[], b""), 400),
        case("an index that is no number", http("GET", "/endpoints?index=abc", &[], b""), 400),
        case("a wait that is no duration", http("GET", "/endpoints?index=1&wait=forever", &[], b""), 400),
        case("a negative wait", http("GET", "/endpoints?index=1&wait=-5s", &[], b""), 400),
        case(
            "a wait that overflows",
            http("GET", "/endpoints?index=1&wait=94522879700260684295381835.9999999999999h", &[], b""),
            400,
        ),
        // The UI listener never writes.
        Case {
            to: To::Ui,
            ..register_body("POST /register on the UI", br#"{"Name": "evil", "Address": "127.0.0.1:9"}"#, 405)
        },
        Case {
            to: To::Ui,
            ..case("POST /deregister on the UI", http("POST", "/deregister", &[], br#"{"Name": "web-1"}"#), 405)
        },
        Case {
            to: To::Ui,
            ..case("DELETE /endpoints/web-1 on the UI", http("DELETE", "/endpoints/web-1", &[], b""), 405)
        },
    ];
    // Names that try to reach web-1, or a path, through an encoding, in the path of a DELETE.
    for (path, status) in [
        ("web-1%00", 400),
        ("web-1%2F..", 400),
        ("..%2Fweb-1", 400),
        ("%2e%2e", 400),
        ("..", 400),
        (".", 400),
        ("web-1/", 400),
        ("web-1/..", 400),
        ("../endpoints/web-1", 400),
        ("web-1%20", 400),
        ("web-1%0d%0aX-Injected:%201", 400),
        ("web-1%2", 400),
        ("web-1%zz", 400),
        ("%ff", 400),
        ("%2F", 400),
        ("%00", 400),
        ("", 400),
        ("WEB-1", 404),
        ("web-1?x=%ff", 400),
    ] {
        cases.push(case(
            format!("DELETE /endpoints/{path}"),
            http("DELETE", &format!("/endpoints/{path}"), &[], b""),
            status,
        ));
        if status == 400 {
            cases.push(case(
                format!("GET /endpoints/{path}"),
                http("GET", &format!("/endpoints/{path}"), &[], b""),
                status,
            ));
        }
    }
    // The same names in bodies.
    for name in [
        "a/b",
        "..",
        ".",
        "web-1/..",
        "../web-1",
        "web-1\u{0}",
        "web-1%00",
        "web 1",
        "web-1\n",
        "ωεβ-1",
        &"n".repeat(254),
    ] {
        let body = serde_json::json!({"Name": name, "Address": "127.0.0.1:9"}).to_string();
        cases.push(register_body(format!("register Name {:?}", clip(name)), body.as_bytes(), 400));
        let body = serde_json::json!({ "Name": name }).to_string();
        cases.push(case(
            format!("deregister Name {:?}", clip(name)),
            http("POST", "/deregister", &[], body.as_bytes()),
            400,
        ));
    }
    for (body, status) in
        [(r#"{"Name": "WEB-1"}"#, 404), (r#"{"Name": ""}"#, 400), (r#"{"Name": null}"#, 400), ("{}", 400)]
    {
        cases.push(case(format!("deregister {body}"), http("POST", "/deregister", &[], body.as_bytes()), status));
    }
    // Addresses the checker must never be pointed at, or cannot check.
    for (address, status) in [
        ("localhost:80", 400),
        ("127.0.0.1", 400),
        ("127.0.0.1:0", 400),
        ("127.0.0.1:65536", 400),
        ("127.0.0.1:-1", 400),
        ("0.0.0.0:80", 400),
        ("[::]:80", 400),
        ("255.255.255.255:80", 400),
        ("224.0.0.1:80", 400),
        ("127.0.0.1:80/x", 400),
        ("http://127.0.0.1:80", 400),
        (" 127.0.0.1:80", 400),
        ("169.254.169.254:80", 403),
        ("[::ffff:169.254.169.254]:80", 403),
        ("[fe80::1]:80", 403),
    ] {
        let body = serde_json::json!({"Name": "evil", "Address": address}).to_string();
        cases.push(register_body(format!("register Address {address:?}"), body.as_bytes(), status));
    }
    // Tags beyond the limits.
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    for (what, tags) in [
        ("65 tags", serde_json::json!(many)),
        ("an empty tag", serde_json::json!([""])),
        ("a 256-byte tag", serde_json::json!(["t".repeat(256)])),
        ("a tag with a newline", serde_json::json!(["a\nb"])),
    ] {
        let body = serde_json::json!({"Name": "evil", "Address": "127.0.0.1:9", "Tags": tags}).to_string();
        cases.push(register_body(what, body.as_bytes(), 400));
    }
    cases
}

fn clip(text: &str) -> String {
    text.chars().take(20).collect()
}

/// Three passing records on live loopback endpoints.
fn seeded(config: Config) -> (Registry, Fleet) {
    seeded_as(config, None)
}

/// [`seeded`], writing with `token`.
fn seeded_as(config: Config, token: Option<&str>) -> (Registry, Fleet) {
    let fleet = Fleet::start(3);
    let mut registry = Registry::start(config);
    registry.token = token.map(str::to_string);
    registry.register("web-1", fleet.addrs[0], &["web", "eu"]);
    registry.register("web-2", fleet.addrs[1], &["web"]);
    registry.register("db.main_1", fleet.addrs[2], &["db"]);
    for name in ["web-1", "web-2", "db.main_1"] {
        registry.wait_for(name, "passing", Duration::from_secs(5));
    }
    (registry, fleet)
}

#[test]
fn bad_requests_get_the_right_4xx_and_a_json_error_and_change_nothing() {
    let _serial = one_at_a_time();
    let (registry, _fleet) = seeded(config());
    let before = registry.snapshot();
    let cases = bad_requests();
    let mut problems = Vec::new();
    let t0 = Instant::now();
    for case in &cases {
        let addr = match case.to {
            To::Api => registry.api,
            To::Ui => registry.ui,
        };
        match exchange(addr, &case.request, ANSWER_WITHIN) {
            Err(e) => problems.push(format!("{}: wanted {}, got no answer: {e}", case.what, case.status)),
            Ok(answer) if answer.status != case.status => problems.push(format!(
                "{}: wanted {}, got {} {}",
                case.what,
                case.status,
                answer.status,
                clip(&answer.text())
            )),
            Ok(answer) if answer.error().is_none() => problems.push(format!(
                "{}: {} without a JSON {{\"error\": \"...\"}} body: {:?}",
                case.what,
                answer.status,
                answer.text()
            )),
            Ok(answer) if answer.status == 405 && answer.header("Allow").is_none() => {
                problems.push(format!("{}: 405 without an Allow header", case.what))
            }
            Ok(_) => {}
        }
        let after = registry.snapshot();
        if after != before {
            problems.push(format!("{}: the records changed:\nbefore {before}\nafter  {after}", case.what));
        }
    }
    eprintln!("{} bad requests in {:?}", cases.len(), t0.elapsed());
    assert!(problems.is_empty(), "{} of {} cases went wrong:\n{}", problems.len(), cases.len(), problems.join("\n"));
}

#[test]
fn what_lies_within_the_limits_still_works() {
    let _serial = one_at_a_time();
    let (registry, fleet) = seeded(config());
    // A thousand small headers fit in 16 KiB.
    let mut request = b"GET /endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".to_vec();
    request.extend_from_slice(&b"X-a: b\r\n".repeat(1_000));
    request.extend_from_slice(b"\r\n");
    assert_eq!(registry.call(&request).status, 200);
    // Percent-encoded names and queries are decoded before use.
    let one = registry.get("/endpoints/web%2D1");
    assert_eq!((one.status, one.json().map(|v| v["Name"].clone())), (200, Some("web-1".into())), "{}", one.text());
    let tagged = registry.get("/endpoints?tag=%65u");
    assert_eq!(tagged.json().map(|v| v.as_array().map(Vec::len)), Some(Some(1)), "{}", tagged.text());
    // Unknown keys are ignored, however large, as Go's decoder does.
    let body = format!(r#"{{"Name": "big-extra", "Address": "{}", "Junk": "{}"}}"#, fleet.addrs[0], "x".repeat(60_000));
    let answer = registry.call(&http("POST", "/register", &[], body.as_bytes()));
    assert_eq!(answer.status, 200, "{}", answer.text());
    // The largest Name and the most and longest tags, and a body of exactly 64 KiB.
    let tags: Vec<String> = (0..64).map(|i| format!("{i:0>255}")).collect();
    let mut body = serde_json::json!({"Name": "n".repeat(253), "Address": fleet.addrs[1].to_string(), "Tags": tags})
        .to_string()
        .into_bytes();
    body.resize(64 * 1024, b' ');
    let answer = registry.call(&http("POST", "/register", &[], &body));
    assert_eq!(answer.status, 200, "{}", clip(&answer.text()));
    body.push(b' ');
    assert_eq!(registry.call(&http("POST", "/register", &[], &body)).status, 413);
    for name in ["big-extra".to_string(), "n".repeat(253)] {
        assert_eq!(registry.call(&http("DELETE", &format!("/endpoints/{name}"), &[], b"")).status, 200);
    }
    assert_eq!(registry.records().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// The write token and the probe allow-list.
// ---------------------------------------------------------------------------------------------

#[test]
fn writes_need_the_token_in_any_of_its_headers_and_reads_stay_open() {
    let _serial = one_at_a_time();
    let (registry, fleet) = seeded_as(Config { token: WriteToken::new(Some("secret")), ..config() }, Some("secret"));
    let before = registry.snapshot();
    let body = |name: &str| format!(r#"{{"Name": "{name}", "Address": "{}"}}"#, fleet.addrs[0]).into_bytes();
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("no token", http("POST", "/register", &[], &body("t"))),
        ("a wrong Bearer", http("POST", "/register", &[("Authorization", "Bearer secreT")], &body("t"))),
        ("a prefix of the token", http("POST", "/register", &[("Authorization", "Bearer secre")], &body("t"))),
        ("the token and more", http("POST", "/register", &[("Authorization", "Bearer secret2")], &body("t"))),
        ("Basic auth", http("POST", "/register", &[("Authorization", "Basic c2VjcmV0")], &body("t"))),
        ("an empty Bearer", http("POST", "/register", &[("Authorization", "Bearer ")], &body("t"))),
        ("a wrong X-Consul-Token", http("POST", "/register", &[("X-Consul-Token", "nope")], &body("t"))),
        ("the token in the query", http("POST", "/register?token=secret", &[], &body("t"))),
        ("garbage, unauthenticated", http("POST", "/register", &[], b"{not json")),
        ("deregister without", http("POST", "/deregister", &[], br#"{"Name": "web-1"}"#)),
        ("DELETE without", http("DELETE", "/endpoints/web-1", &[], b"")),
        ("DELETE with a wrong token", http("DELETE", "/endpoints/web-1", &[("X-Registry-Token", "secre")], b"")),
    ];
    for (what, request) in &refused {
        let answer = registry.call(request);
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        assert!(answer.error().is_some(), "{what}: {}", answer.text());
        assert!(
            answer.header("WWW-Authenticate").is_some_and(|v| v.starts_with("Bearer")),
            "{what}: {:?}",
            answer.headers
        );
        assert_eq!(registry.snapshot(), before, "{what} changed the records");
    }
    // Reads need no token, on either listener.
    for path in ["/endpoints", "/endpoints/web-1", "/healthz", "/", "/metrics", "/v1/sd"] {
        for addr in [registry.api, registry.ui] {
            let answer = exchange(addr, &http("GET", path, &[], b""), ANSWER_WITHIN).expect(path);
            assert_eq!(answer.status, 200, "GET {path} on {addr}: {}", answer.text());
        }
    }
    // The token is accepted in each of its headers.
    for (i, header) in [
        ("Authorization", "Bearer secret"),
        ("Authorization", "bearer secret"),
        ("X-Consul-Token", "secret"),
        ("X-Registry-Token", "secret"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("token-{i}");
        let answer = registry.call(&http("POST", "/register", &[header], &body(&name)));
        assert_eq!(answer.status, 200, "{header:?}: {}", answer.text());
        let answer = registry.call(&http("DELETE", &format!("/endpoints/{name}"), &[header], b""));
        assert_eq!(answer.status, 200, "{header:?}: {}", answer.text());
    }
    let answer = registry.call(&http("POST", "/deregister", &[("X-Consul-Token", "secret")], br#"{"Name": "web-2"}"#));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(registry.records().len(), 2);
}

#[test]
fn the_allow_list_refuses_addresses_outside_it_naming_the_ranges() {
    let _serial = one_at_a_time();
    let fleet = Fleet::start(1);
    let allow: Vec<Cidr> = ["127.0.0.0/8", "10.0.0.0/8"].iter().map(|c| c.parse().expect("a CIDR")).collect();
    let registry = Registry::start(Config { probe_policy: ProbePolicy { allow }, ..config() });
    let post = |name: &str, address: &str| {
        let body = serde_json::json!({"Name": name, "Address": address}).to_string();
        registry.call(&http("POST", "/register", &[], body.as_bytes()))
    };
    for address in ["192.168.1.10:80", "172.16.0.1:80", "[::1]:80", "[fd00::1]:80", "[::ffff:192.168.1.10]:80"] {
        let answer = post("outside", address);
        assert_eq!(answer.status, 403, "{address}: {}", answer.text());
        let error = answer.error().unwrap_or_default();
        assert!(error.contains("127.0.0.0/8, 10.0.0.0/8"), "{address}: the 403 names the ranges: {error}");
    }
    for address in ["169.254.169.254:80", "[::ffff:169.254.169.254]:80", "[fe80::1]:80"] {
        let answer = post("metadata", address);
        assert_eq!(answer.status, 403, "{address}: {}", answer.text());
        assert!(answer.error().unwrap_or_default().contains("link-local"), "{address}: {}", answer.text());
    }
    assert_eq!(registry.get("/endpoints").json(), Some(serde_json::json!([])), "nothing refused was stored");
    // Inside a range: accepted (only loopback, so the checker probes nothing else).
    let answer = post("inside", &fleet.addrs[0].to_string());
    assert_eq!(answer.status, 200, "{}", answer.text());
    registry.wait_for("inside", "passing", Duration::from_secs(5));
}

#[test]
fn link_local_is_refused_by_default_and_allowed_only_inside_an_explicit_range() {
    let _serial = one_at_a_time();
    let registry = Registry::start(config());
    for address in ["169.254.169.254:80", "169.254.0.1:8080", "[::ffff:169.254.169.254]:80", "[fe80::1]:80"] {
        let body = serde_json::json!({"Name": "metadata", "Address": address}).to_string();
        let answer = registry.call(&http("POST", "/register", &[], body.as_bytes()));
        assert_eq!(answer.status, 403, "{address}: {}", answer.text());
        let error = answer.error().unwrap_or_default();
        assert!(error.contains("169.254.0.0/16") || error.contains("fe80::/10"), "{address}: {error}");
    }
    assert_eq!(registry.get("/endpoints/metadata").status, 404);
    // An explicit range inside link-local allows that range and nothing else of it. Checked on
    // the policy itself: a registration accepted over HTTP would be probed, and the tests send
    // nothing beyond loopback.
    let policy = |allow: &[&str]| ProbePolicy { allow: allow.iter().map(|c| c.parse().expect("a CIDR")).collect() };
    let inside = policy(&["169.254.10.0/24"]);
    assert!(inside.check("169.254.10.5".parse().expect("an IP")).is_ok());
    assert!(inside.check("169.254.169.254".parse().expect("an IP")).is_err());
    assert!(
        policy(&["0.0.0.0/0"]).check("169.254.169.254".parse().expect("an IP")).is_err(),
        "0.0.0.0/0 is not explicit"
    );
}

// ---------------------------------------------------------------------------------------------
// Limits: slow clients, large bodies, connection floods, watchers.
// ---------------------------------------------------------------------------------------------

/// The real `service-registry` binary; killed and reaped on drop.
struct Binary {
    child: Child,
    api: SocketAddr,
    reader: Option<JoinHandle<()>>,
}

impl Binary {
    fn start(extra: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_service-registry"))
            .args(["-api=127.0.0.1:0", "-http=127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start service-registry");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("API listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut binary = Binary { child, api: SocketAddr::from(([127, 0, 0, 1], 0)), reader: Some(reader) };
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("the registry logs its API address");
        binary.api = addr.parse().expect("an address");
        binary
    }

    /// The registry's threads, as the kernel counts them.
    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A helper thread that is told to stop and joined when dropped, also when a test fails midway.
struct Joined {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A normal client's work: register, then list; each on a new connection. Returns the time.
fn round_trip(api: SocketAddr, name: &str) -> Duration {
    let t0 = Instant::now();
    let body = format!(r#"{{"Name": "{name}", "Address": "127.0.0.1:9"}}"#);
    let answer = exchange(api, &http("POST", "/register", &[], body.as_bytes()), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = exchange(api, &http("GET", "/endpoints", &[], b""), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("list after {name}: {e}"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    t0.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The registry's head and body deadline (service.rs `limits`).
const READ_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn slowloris_does_not_delay_a_normal_client_and_threads_stay_bounded() {
    let _serial = one_at_a_time();
    const HEADS: usize = 180;
    const BODIES: usize = 20;
    let registry = Binary::start(&["-check-interval=1s", "-check-concurrency=4"]);
    // Warm up (the first connections start tiny_http's pool), then measure the calm.
    for i in 0..3 {
        round_trip(registry.api, &format!("warm-{i}"));
    }
    let calm_threads = registry.threads();
    let calm: Vec<Duration> = (0..7).map(|i| round_trip(registry.api, &format!("calm-{i}"))).collect();

    // 180 connections trickle a request head, 20 a body after a complete head: one byte a
    // second each, from one thread, for at most 14 s.
    let head = b"GET /endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n";
    let body_head = b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n";
    let slow: Vec<TcpStream> =
        (0..HEADS + BODIES).map(|_| TcpStream::connect(registry.api).expect("a slow connection")).collect();
    let writers: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().expect("clone")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let trickle = Joined {
        stop: stop.clone(),
        thread: Some(thread::spawn({
            let stop = stop.clone();
            move || {
                let mut writers = writers;
                for w in writers.iter_mut().skip(HEADS) {
                    let _ = w.write_all(body_head);
                }
                for k in 0..14 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    for (i, w) in writers.iter_mut().enumerate() {
                        let byte = if i < HEADS { head[k % head.len()] } else { b'x' };
                        let _ = w.write_all(&[byte]);
                    }
                    let next = started + Duration::from_secs(k as u64 + 1);
                    while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })),
    };

    thread::sleep(Duration::from_millis(1500));
    let mut attacked = Vec::new();
    let mut most_threads = 0;
    for i in 0..7 {
        attacked.push(round_trip(registry.api, &format!("attacked-{i}")));
        most_threads = most_threads.max(registry.threads());
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "round trip calm: median {:?} max {:?}; under 200 slow connections: median {:?} max {:?}",
        median(calm.clone()),
        calm.iter().max().copied().unwrap_or_default(),
        median(attacked.clone()),
        attacked.iter().max().copied().unwrap_or_default()
    );
    eprintln!("threads calm {calm_threads}, under attack at most {most_threads}");

    // When is each slow connection answered (408) or closed? Watched until 2.5 s past the deadline.
    let mut answered: Vec<Option<(Duration, String)>> = vec![None; slow.len()];
    for s in &slow {
        s.set_nonblocking(true).expect("non-blocking");
    }
    let give_up = started + READ_DEADLINE + Duration::from_millis(2500);
    while answered.iter().any(Option::is_none) && Instant::now() < give_up {
        for (s, seen) in slow.iter().zip(answered.iter_mut()).filter(|(_, seen)| seen.is_none()) {
            let mut buf = [0u8; 64];
            match (&*s).read(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).chars().take(12).collect();
                    *seen = Some((started.elapsed(), if n == 0 { "closed".into() } else { text }));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => *seen = Some((started.elapsed(), e.to_string())),
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    drop(trickle);
    drop(slow);

    let latest = answered.iter().flatten().map(|(at, _)| *at).max().unwrap_or_default();
    let not_408 = answered.iter().flatten().filter(|(_, what)| !what.starts_with("HTTP/1.1 408")).count();
    let unanswered = answered.iter().filter(|a| a.is_none()).count();
    eprintln!("slow connections: the last answered after {latest:?}; {not_408} not with 408; {unanswered} unanswered");

    assert!(
        median(attacked.clone()) <= median(calm.clone()) + Duration::from_millis(100),
        "a normal client's median round trip went from {:?} to {:?}",
        median(calm),
        median(attacked)
    );
    assert!(
        attacked.iter().all(|t| *t < Duration::from_millis(500)),
        "a normal client waited {attacked:?}: queued behind slow connections?"
    );
    assert!(
        most_threads <= calm_threads + HEADS + BODIES + 8,
        "{most_threads} threads with {} slow connections (calm: {calm_threads}): more than one each",
        HEADS + BODIES
    );
    assert_eq!(
        unanswered,
        0,
        "{unanswered} of {} slow connections were neither answered 408 nor closed within {:?} of their first byte \
         (the head and body deadline is {READ_DEADLINE:?})",
        HEADS + BODIES,
        give_up - started
    );
    assert_eq!(not_408, 0, "every slow connection is told why: {answered:?}");
}

#[test]
fn a_burst_of_new_connections_is_served_at_once() {
    let _serial = one_at_a_time();
    // 100 clients that each send a complete request the moment they connect and then keep the
    // connection open, as HTTP/1.1 clients do: a fleet renewing after a registry restart looks
    // like this. Every one must be answered promptly; none may wait for another client's
    // connection to end. Three times, each on a fresh registry (whose connection threads are
    // all idle, the state in which a burst is hardest to hand out).
    let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut late = Vec::new();
    for round in 0..3 {
        let registry = Registry::start(config());
        let t0 = Instant::now();
        let mut streams: Vec<TcpStream> = (0..100)
            .map(|_| {
                let mut s = TcpStream::connect(registry.api).expect("connect");
                s.write_all(request).expect("send");
                s
            })
            .collect();
        let mut unanswered = 0;
        for s in &mut streams {
            let answer = read_answer(s, t0 + Duration::from_secs(2));
            unanswered += usize::from(!matches!(answer, Ok(ref a) if a.status == 200));
        }
        if unanswered > 0 {
            late.push(format!("round {round}: {unanswered} of 100 clients not answered within 2 s"));
        }
        // Closing them ends their connections (and frees whatever waited behind them).
        drop(streams);
    }
    assert!(late.is_empty(), "{}", late.join("\n"));
}

/// Sends headers declaring `head`, then streams up to 10 MB of `chunk`s while reading the
/// answer. Returns the answer, the bytes the server let in, and whether the writes ended
/// because the server closed the connection.
///
/// A chunk goes out every millisecond (16 MB/s for 16 KiB chunks): on loopback an unpaced
/// sender fills the kernel's socket buffers (several MB) faster than any server can decide to
/// refuse, so what it "let in" would measure the buffers, not the server.
fn stream_10_mb(api: SocketAddr, head: &[u8], chunk: Vec<u8>) -> (Result<Answer, String>, usize, bool) {
    let mut stream = TcpStream::connect(api).expect("connect");
    stream.write_all(head).expect("send the head");
    let mut writer = stream.try_clone().expect("clone");
    // A server that stopped reading without closing would block the writer: 2 s per write.
    writer.set_write_timeout(Some(Duration::from_secs(2))).expect("write timeout");
    let sending = thread::spawn(move || {
        let (mut sent, t0) = (0usize, Instant::now());
        while sent < 10_000_000 && t0.elapsed() < Duration::from_secs(10) {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => return (sent, matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)),
            }
            thread::sleep(Duration::from_millis(1));
        }
        (sent, false)
    });
    let answer = read_answer(&mut stream, Instant::now() + Duration::from_secs(5));
    let (sent, closed) = sending.join().expect("the sender finishes");
    (answer, sent, closed)
}

#[test]
fn a_10_mb_body_is_cut_off_at_the_limit_without_being_read() {
    let _serial = one_at_a_time();
    let (registry, _fleet) = seeded(config());
    let before = registry.snapshot();

    let head = b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n";
    let t0 = Instant::now();
    let (answer, sent, closed) = stream_10_mb(registry.api, head, vec![b'x'; 16 * 1024]);
    eprintln!("Content-Length 10 MB: {sent} bytes let in, closed: {closed}, in {:?}", t0.elapsed());
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.error().is_some(), "{}", answer.text());
    assert!(closed, "the registry closes the connection rather than read 10 MB ({sent} bytes sent)");
    // It refuses on the head; what got in meanwhile is what the sender wrote while the registry
    // was being scheduled: typically 16 KB. 2 MB leaves 120 ms for a loaded machine.
    assert!(sent < 2_000_000, "{sent} bytes were let in before the registry closed the connection");

    let head = b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
    chunk.extend_from_slice(&[b'x'; 16 * 1024]);
    chunk.extend_from_slice(b"\r\n");
    let t0 = Instant::now();
    let (answer, sent, closed) = stream_10_mb(registry.api, head, chunk);
    eprintln!("chunked 10 MB: {sent} bytes let in, closed: {closed}, in {:?}", t0.elapsed());
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(closed, "the registry closes the connection rather than read 10 MB ({sent} bytes sent)");
    // It reads 64 KiB and refuses (typically 80 KB get in); the rest sits in socket buffers.
    assert!(sent < 2_000_000, "{sent} bytes were let in before the registry closed the connection");

    assert_eq!(registry.snapshot(), before);
    assert_eq!(registry.get("/healthz").status, 200, "still serving");
}

#[test]
fn a_connection_flood_beyond_the_cap_is_refused_at_once_and_service_resumes() {
    let _serial = one_at_a_time();
    let (registry, _fleet) = seeded(Config { max_connections: 8, ..config() });
    let before = registry.snapshot();
    // Eight idle connections hold every slot of the API listener (for up to its 60 s idle timeout).
    let holders: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(registry.api).expect("connect")).collect();
    thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let t0 = Instant::now();
        let answer = exchange(registry.api, &http("GET", "/endpoints", &[], b""), Duration::from_secs(2));
        let took = t0.elapsed();
        slowest = slowest.max(took);
        match answer {
            Ok(a) => {
                assert_eq!(a.status, 503, "extra connection {i}: {}", a.text());
                assert!(a.error().is_some() && a.header("Retry-After").is_some(), "{:?} {}", a.headers, a.text());
            }
            Err(e) => assert!(e.contains("closed") || e.contains("reset"), "extra connection {i}: {e}"),
        }
        assert!(took < Duration::from_millis(500), "extra connection {i} waited {took:?}: queued, not refused");
    }
    eprintln!("40 connections over the cap of 8: each refused within {slowest:?}");
    // The cap is per listener: the UI still answers.
    let ui = exchange(registry.ui, &http("GET", "/endpoints", &[], b""), ANSWER_WITHIN).expect("the UI answers");
    assert_eq!(ui.status, 200);
    drop(holders);
    let t0 = Instant::now();
    eventually(POLL, "the API to serve again", Duration::from_secs(3), || {
        exchange(registry.api, &http("GET", "/healthz", &[], b""), Duration::from_secs(1))
            .ok()
            .filter(|a| a.status == 200)
    });
    eprintln!("served again {:?} after the holders left", t0.elapsed());
    assert_eq!(registry.snapshot(), before);
}

#[test]
fn http2_requests_do_not_hold_a_connection_slot_forever() {
    let _serial = one_at_a_time();
    let registry = Registry::start(Config { max_connections: 4, ..config() });
    let mut problems = Vec::new();
    // What an h2c client with prior knowledge sends first (curl --http2-prior-knowledge).
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for i in 0..4 {
        match exchange(registry.api, &preface, Duration::from_secs(2)) {
            Ok(a) if a.status >= 400 && a.error().is_some() => {}
            Ok(a) => problems.push(format!("preface {i}: answered {} {:?}", a.status, a.text())),
            Err(e) => problems.push(format!("preface {i}: {e}")),
        }
    }
    // The four connections above are closed by now: their slots must be free again.
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(2) {
        match exchange(registry.api, &http("GET", "/healthz", &[], b""), Duration::from_secs(1)) {
            Ok(a) if a.status == 200 => break,
            Ok(a) => last = format!("{} {}", a.status, a.text()),
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(50));
    }
    if t0.elapsed() >= Duration::from_secs(2) {
        problems.push(format!("after 4 HTTP/2 prefaces, closed, the API (max 4 connections) still answers: {last}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn upgrade_requests_cannot_stall_the_handlers() {
    let _serial = one_at_a_time();
    let registry = Registry::start(config());
    // A complete registration that asks for `Connection: upgrade`, from more clients than the
    // registry has handler threads (4). They send everything and then wait.
    let body = br#"{"Name": "upgrader", "Address": "127.0.0.1:9"}"#;
    let mut request = format!(
        "POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let stallers: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(registry.api).expect("connect");
            s.write_all(&request).expect("send");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut took = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let answer = exchange(registry.api, &http("GET", "/healthz", &[], b""), Duration::from_secs(2));
        took.push((t0.elapsed(), answer.map(|a| a.status)));
    }
    // Closing them frees whatever they hold before the registry stops.
    drop(stallers);
    eprintln!("GET /healthz next to 8 upgrade requests: {took:?}");
    assert!(
        took.iter().all(|(t, status)| *t < Duration::from_millis(500) && *status == Ok(200)),
        "a normal client was held up by 8 clients asking for an upgrade: {took:?}"
    );
}

#[test]
fn a_request_that_overflows_a_duration_does_not_take_the_api_down() {
    let _serial = one_at_a_time();
    let registry = Registry::start(config());
    let path = "/endpoints?index=1&wait=94522879700260684295381835.9999999999999h";
    let mut statuses = Vec::new();
    // More than the four handler threads.
    for _ in 0..6 {
        statuses.push(exchange(registry.api, &http("GET", path, &[], b""), Duration::from_secs(2)).map(|a| a.status));
    }
    let after = exchange(registry.api, &http("GET", "/healthz", &[], b""), Duration::from_secs(2)).map(|a| a.status);
    assert!(statuses.iter().all(|s| *s == Ok(400)), "?wait= near the u128 limit answered {statuses:?}");
    assert_eq!(after, Ok(200), "the API after six of them");
}

#[test]
fn blocking_queries_beyond_the_cap_get_429_and_the_others_still_answer() {
    let _serial = one_at_a_time();
    let (registry, fleet) = seeded(Config { max_waiters: 3, ..config() });
    let index: u64 =
        registry.get("/endpoints").header("X-Registry-Index").and_then(|i| i.parse().ok()).expect("an index");
    let path = format!("/endpoints?index={index}&wait=5s");
    let waiters: Vec<JoinHandle<Result<Answer, String>>> = (0..3)
        .map(|_| {
            let (api, request) = (registry.api, http("GET", &path, &[], b""));
            thread::spawn(move || exchange(api, &request, Duration::from_secs(8)))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let refused = registry.get(&path);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.error().is_some() && t0.elapsed() < Duration::from_secs(1), "{}", refused.text());
    // A change wakes the three.
    registry.register("wake", fleet.addrs[0], &[]);
    for waiter in waiters {
        let answer = waiter.join().expect("waiter thread").expect("an answer");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "the waiters answered on the change, not at the end of their wait");
}

// ---------------------------------------------------------------------------------------------
// The eviction guard.
// ---------------------------------------------------------------------------------------------

/// Settings for the guard tests: checks every 100 ms, critical after 2 failures, removed after
/// 500 ms critical, removals held when more than half of the passing fail, for at most `max_hold`.
fn guard_config(max_hold: Duration) -> Config {
    Config {
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            concurrency: 16,
            ..CheckConfig::default()
        },
        thresholds: Thresholds { failures_before_critical: 2, deregister_critical_after: Duration::from_millis(500) },
        guard: GuardConfig { share: 0.5, max_hold, ..GuardConfig::default() },
        ..config()
    }
}

/// A fleet of 100 passing endpoints named `ep-000` to `ep-099`.
fn hundred(config: Config) -> (Registry, Fleet) {
    let fleet = Fleet::start(100);
    let registry = Registry::start(config);
    for (i, addr) in fleet.addrs.iter().enumerate() {
        registry.register(&format!("ep-{i:03}"), *addr, &[]);
    }
    eventually(POLL, "100 passing endpoints", Duration::from_secs(5), || {
        let records = registry.records();
        (records.len() == 100 && records.iter().all(|r| r["Status"] == "passing")).then_some(())
    });
    // Let the guard's windows fill with passes.
    thread::sleep(Duration::from_millis(300));
    (registry, fleet)
}

fn count(records: &[Value], status: &str) -> usize {
    records.iter().filter(|r| r["Status"] == status).count()
}

#[test]
fn sixty_of_a_hundred_stopping_at_once_are_held_then_released_by_time_then_removed() {
    let _serial = one_at_a_time();
    let mark = warnings_mark();
    let max_hold = Duration::from_secs(2);
    let (registry, fleet) = hundred(guard_config(max_hold));
    assert!(!registry.holding());

    let stopped = Instant::now();
    fleet.set(0..60, false);
    let held = eventually(POLL, "the hold", Duration::from_secs(2), || registry.holding().then(Instant::now));
    eprintln!("held {:?} after 60 of 100 stopped", held - stopped);
    let page = registry.get("/");
    assert!(page.text().contains(r#"class="banner""#), "the page shows the hold: {}", page.text());

    // While held: all 100 listed, each sample; the 60 go critical and stay.
    let mut samples = 0;
    let mut most_critical = 0;
    let released = loop {
        // A sample counts if the hold was in force both before and after it was taken.
        let before = registry.holding();
        let records = registry.records();
        if !registry.holding() {
            break Instant::now();
        }
        if before {
            assert_eq!(records.len(), 100, "{:?} into the hold, an endpoint was removed", held.elapsed());
            most_critical = most_critical.max(count(&records, "critical"));
            samples += 1;
        }
        assert!(held.elapsed() < max_hold + Duration::from_secs(2), "the hold outlasts its limit of {max_hold:?}");
        thread::sleep(Duration::from_millis(20));
    };
    let lasted = released - held;
    eprintln!("hold released after {lasted:?}; {samples} samples, all 100 listed, at most {most_critical} critical");
    // With 60 of 100 still failing, no interval sees most checks pass: only the limit ends it.
    assert!(
        lasted >= max_hold - Duration::from_millis(300),
        "released after {lasted:?}, before its limit of {max_hold:?}, with 60 of 100 still down; the registry \
         warned: {:#?}",
        warnings_since(mark)
    );
    assert_eq!(most_critical, 60, "the 60 stopped went critical during the hold");
    assert!(!registry.get("/").text().contains(r#"class="banner""#), "the banner is gone");

    // Released: the dead go at their next check; the living stay passing.
    eventually(POLL, "the 60 stopped to be removed", Duration::from_secs(3), || {
        (registry.records().len() == 40).then_some(())
    });
    eprintln!("60 removed {:?} after the release", released.elapsed());
    let records = registry.records();
    let names: Vec<&str> = records.iter().filter_map(|r| r["Name"].as_str()).collect();
    let living: Vec<String> = (60..100).map(|i| format!("ep-{i:03}")).collect();
    assert_eq!(names, living, "exactly the living remain");
    assert_eq!(count(&records, "passing"), 40);
    thread::sleep(Duration::from_millis(300));
    assert!(!registry.holding(), "no new hold: the dead were critical, not passing");

    let warnings = warnings_since(mark);
    let holds = warnings.iter().filter(|w| w.starts_with("Holding removals")).count();
    let releases = warnings.iter().filter(|w| w.starts_with("Releasing the removal hold")).count();
    assert_eq!((holds, releases), (1, 1), "one warning for the hold and one for its end: {warnings:#?}");
}

#[test]
fn a_hold_releases_as_soon_as_most_pass_again_and_nothing_is_removed() {
    let _serial = one_at_a_time();
    let (registry, fleet) = hundred(guard_config(Duration::from_secs(30)));
    fleet.set(0..60, false);
    let held = eventually(POLL, "the hold", Duration::from_secs(2), || registry.holding().then(Instant::now));
    // Past the 500 ms after which a critical endpoint would be removed.
    thread::sleep(Duration::from_millis(800));
    let records = registry.records();
    assert_eq!((records.len(), count(&records, "critical")), (100, 60), "held: all listed, the 60 critical");
    fleet.set(0..60, true);
    let back = Instant::now();
    eventually(POLL, "the hold to release", Duration::from_secs(2), || (!registry.holding()).then_some(()));
    eprintln!("held {:?}; released {:?} after the 60 came back", back - held, back.elapsed());
    eventually(POLL, "all 100 passing again", Duration::from_secs(2), || {
        let records = registry.records();
        (records.len() == 100 && count(&records, "passing") == 100).then_some(())
    });
}

/// A client that keeps moving one Name between addresses that accept and never answer must
/// not hold up the checks of everyone else: probes of an address the Name has left no longer
/// count, so they are skipped rather than waited out.
#[test]
fn moving_a_name_between_hung_addresses_does_not_stall_other_checks() {
    let _serial = one_at_a_time();
    let config = Config {
        check: CheckConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            concurrency: 2,
            ..CheckConfig::default()
        },
        ..config()
    };
    let registry = Registry::start(config);
    // Two listeners that accept (the kernel does) and never answer.
    let hung: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    for i in 0..40 {
        registry.register("mover", hung[i % 2].local_addr().expect("address"), &[]);
    }
    let fleet = Fleet::start(1);
    let t0 = Instant::now();
    registry.register("good", fleet.addrs[0], &[]);
    // With 40 queued probes of 1 s each, 2 in flight at once, waiting them out would take 20 s.
    registry.wait_for("good", "passing", Duration::from_secs(4));
    eprintln!("good passed {:?} after 40 moves of a hung Name", t0.elapsed());
}
