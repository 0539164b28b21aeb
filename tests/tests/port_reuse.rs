//! Never list a stranger. With dynamic ports the kernel hands a dead server's port to the next
//! process that binds one; two mechanisms keep the registry from vouching for whoever holds it
//! now: the lease (`TTL`) ends a record its instance stopped renewing, and every answer of
//! `dynamic-port-server` names its instance, so a probe answered by another one fails at once.
//! Real binaries on loopback; every process and thread started here is stopped on every path.

use common::wire::INSTANCE_HEADER;
use end_to_end::{eventually, free_port, get_answer, Registry, Server, Status};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The registry's `-check-interval` in these tests.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// The servers' `-register-interval`; their TTL is three of these.
const REGISTER_INTERVAL: &str = "1s";
const TTL: Duration = Duration::from_secs(3);
/// Scheduling room on two cores for several processes and the test's own polling.
const MARGIN: Duration = Duration::from_millis(700);

/// A registry that never removes for being critical within a test's time, so that whatever
/// removes a record here is its lease.
fn registry() -> Registry {
    Registry::start(REGISTRY_FLAGS)
}

/// The flags of [`registry`]: `CHECK_INTERVAL`, and no removal for being critical.
const REGISTRY_FLAGS: &[&str] = &["-check-interval=500ms", "-deregister-critical-after=10m"];

/// An HTTP server that is not ours: it answers every request `200 ok` with no instance header,
/// as any process that happens to bind the port would.
struct Stranger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stranger {
    fn listen(addr: SocketAddr) -> Stranger {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            // Bounded: the test stops it, and it gives up by itself after a minute.
            let until = Instant::now() + Duration::from_secs(60);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut request = [0u8; 1024];
                        let _ = stream.read(&mut request);
                        let _ =
                            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Stranger { stop, thread: Some(thread) }
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server on exactly `port`, renewing every [`REGISTER_INTERVAL`].
fn server_on(registry: &Registry, name: &str, port: u16, extra: &[&str]) -> Server {
    let range = format!("-port-range={port}-{port}");
    let mut args = vec![range.as_str(), "-bind-ip=127.0.0.1"];
    args.extend_from_slice(extra);
    let server = Server::start(registry.api, name, REGISTER_INTERVAL, &args);
    assert_eq!(server.port, port);
    server
}

/// Kills a server without letting it deregister, as a crash or OOM kill would.
fn crash(mut server: Server) -> Instant {
    server.process.signal("KILL");
    server.process.wait_exit(Duration::from_secs(5)).expect("a SIGKILLed server exits");
    Instant::now()
}

#[test]
fn a_dead_instance_whose_port_a_stranger_took_is_gone_within_its_ttl() {
    let registry = registry();
    let port = free_port();
    let server = server_on(&registry, "web-1", port, &["-tags=web"]);
    let before = registry.wait_for("web-1", Status::Passing, Duration::from_secs(5));
    assert!(before.expires_at.is_some(), "a server's record carries its lease: {before:?}");
    let line = registry.process.wait_for_line("Registered web-1 at", Duration::from_secs(1));
    assert!(line.ends_with("(from 127.0.0.1)"), "the log says where the registration came from: {line}");

    let killed = crash(server);
    let _stranger = Stranger::listen(SocketAddr::from(([127, 0, 0, 1], port)));
    // The stranger answers 200: by its checks alone web-1 would pass for ever.
    let gone = eventually(TTL + CHECK_INTERVAL + MARGIN, || {
        registry.endpoints().filter(|list| list.iter().all(|e| e.name != "web-1")).map(|_| killed.elapsed())
    });
    let gone = gone.unwrap_or_else(|| {
        panic!("web-1 still listed {:?} after the kill: {:?}", killed.elapsed(), registry.endpoint("web-1"))
    });
    eprintln!("web-1 removed {gone:?} after the kill (TTL {TTL:?}, check interval {CHECK_INTERVAL:?})");
    registry.process.wait_for_line("Removed web-1 at 127.0.0.1", Duration::from_secs(1));
    assert!(registry.process.log().iter().any(|l| l.contains("Removed web-1") && l.contains("TTL of 3s")));
    assert_eq!(registry.metric("service_registry_lease_expiries_total"), Some(1));
    assert_eq!(registry.metric("service_registry_removals_total"), Some(0), "removed by its lease, not its checks");
}

#[test]
fn a_second_server_on_the_dead_port_makes_the_first_critical_at_its_first_check() {
    let registry = registry();
    let port = free_port();
    // A lease far longer than the test: only the instance header can catch the stranger.
    let first = server_on(&registry, "web-1", port, &["-register-ttl=10m"]);
    registry.wait_for("web-1", Status::Passing, Duration::from_secs(5));
    crash(first);

    let _second = server_on(&registry, "web-2", port, &[]);
    let started = Instant::now();
    // One check interval, from the moment web-2 listens, reaches web-1's next check.
    let critical =
        eventually(CHECK_INTERVAL + MARGIN, || registry.endpoint("web-1").filter(|e| e.status == Status::Critical));
    let critical = critical.unwrap_or_else(|| {
        panic!("web-1 not critical {:?} after web-2 took its port: {:?}", started.elapsed(), registry.endpoint("web-1"))
    });
    let error = critical.last_error.clone().unwrap_or_default();
    assert!(error.contains("\"web-2\""), "LastError names who holds the address now: {error:?}");
    let second = registry.wait_for("web-2", Status::Passing, Duration::from_secs(2));
    assert_eq!(second.address, format!("127.0.0.1:{port}"));
    let listed: Vec<_> =
        registry.endpoints().unwrap_or_default().into_iter().filter(|e| e.status == Status::Passing).collect();
    assert!(listed.iter().all(|e| e.name != "web-1"), "web-1 is never listed as passing again: {listed:?}");
}

#[test]
fn every_answer_of_the_server_names_its_instance() {
    let registry = registry();
    let server = Server::start(registry.api, "named-1", REGISTER_INTERVAL, &["-bind-ip=127.0.0.1"]);
    for path in ["/", "/healthz", "/metrics", "/no-such-page"] {
        let answer = get_answer(&format!("http://{}{path}", server.local()), Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{path} answers"));
        assert_eq!(answer.header(INSTANCE_HEADER), Some("named-1"), "{path}: {:?}", answer.headers);
    }
}

/// Sends `request` as it is and returns the answer's status code.
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("the registry accepts");
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn the_seeds_body_without_ttl_keeps_a_server_without_the_header_passing() {
    let registry = registry();
    let port = free_port();
    let _plain = Stranger::listen(SocketAddr::from(([127, 0, 0, 1], port)));
    // The Go client's exact bytes: json.Marshal's body with its newline, Go's headers.
    let body = format!("{{\"Name\":\"seed-1\",\"Address\":\"127.0.0.1:{port}\",\"Tags\":null}}\n");
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: {api}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        body.len(),
        api = registry.api
    );
    assert_eq!(raw_status(registry.api, request.as_bytes()), 200);
    let record = registry.wait_for("seed-1", Status::Passing, Duration::from_secs(3));
    assert_eq!(record.expires_at, None, "no TTL, no lease");

    // Past any lease a server would have had (three of its intervals) and several checks.
    let watch_until = Instant::now() + TTL + 2 * CHECK_INTERVAL;
    while Instant::now() < watch_until {
        let now = registry.endpoint("seed-1").unwrap_or_else(|| panic!("seed-1 was removed"));
        assert_eq!(now.status, Status::Passing, "{now:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restarted_registry_gets_every_server_back_and_no_interrupted_lease_removes_one() {
    let registry = registry();
    let api = registry.api;
    let servers: Vec<Server> =
        (0..3).map(|i| Server::start(api, &format!("lease-{i}"), REGISTER_INTERVAL, &["-bind-ip=127.0.0.1"])).collect();
    let all_passing = |r: &Registry| {
        r.endpoints().filter(|list| list.len() == servers.len() && list.iter().all(|e| e.status == Status::Passing))
    };
    eventually(Duration::from_secs(5), || all_passing(&registry)).expect("all three pass");

    registry.process.signal("KILL");
    drop(registry);
    let restarted = Registry::start_at(&api.to_string(), REGISTRY_FLAGS);
    eventually(Duration::from_secs(1) + MARGIN, || all_passing(&restarted)).expect("all three back within an interval");
    // Renewals within the TTL keep every record, through and past the first lease's end.
    let watch_until = Instant::now() + TTL + 2 * CHECK_INTERVAL;
    while Instant::now() < watch_until {
        let listed = restarted.endpoints().unwrap_or_default();
        assert_eq!(listed.len(), servers.len(), "a record went missing: {listed:?}");
        assert!(listed.iter().all(|e| e.expires_at.is_some()), "each came back with its lease: {listed:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(restarted.metric("service_registry_lease_expiries_total"), Some(0));
}
