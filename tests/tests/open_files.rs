//! The registry under a small open-file limit: connections kept between checks must never
//! leave a probe without a descriptor, which would fail an endpoint that did nothing wrong.

use end_to_end::shared::poll;
use end_to_end::{binary, get_json, outside_program, post_json, Endpoint, Process, Registry};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// More endpoints than the limit leaves descriptors for, were every connection kept.
const ENDPOINTS: usize = 150;
/// The registry's open-file limit (soft and hard), set by prlimit(1) before it starts.
const FILES: usize = 128;

/// `ENDPOINTS` loopback endpoints that answer `GET /healthz` with 200 on connections they keep
/// open, as most HTTP servers do, until dropped.
struct Endpoints {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoints {
    fn start() -> Endpoints {
        let listeners: Vec<TcpListener> = (0..ENDPOINTS).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let stop = stop.clone();
            move || {
                for listener in &listeners {
                    listener.set_nonblocking(true).unwrap();
                }
                let t0 = Instant::now();
                // Bounded: a test that forgets to stop it is over by then.
                while !stop.load(SeqCst) && t0.elapsed() < Duration::from_secs(120) {
                    for listener in &listeners {
                        while let Ok((stream, _)) = listener.accept() {
                            let stop = stop.clone();
                            thread::spawn(move || answer_each_request(stream, &stop));
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Endpoints { addrs, stop, thread: Some(thread) }
    }
}

/// Answers every request on `stream` until the prober closes it or the test ends.
fn answer_each_request(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1024];
    while !stop.load(SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            // One read is one request: the prober sends one, then waits for the answer.
            Ok(_) => {
                if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn kept_connections_never_leave_a_check_without_a_descriptor() {
    let prlimit = outside_program("/usr/bin/prlimit", "util-linux");
    let endpoints = Endpoints::start();
    let args: Vec<String> = [
        format!("--nofile={FILES}:{FILES}"),
        binary("service-registry").display().to_string(),
        "-api=127.0.0.1:0".into(),
        "-http=127.0.0.1:0".into(),
        "-check-interval=200ms".into(),
        "-check-concurrency=16".into(),
        "-max-connections=16".into(),
        "-warm-up=0s".into(),
    ]
    .into();
    let registry = Registry::from_process(Process::start_program(&prlimit, &args, &[("RUST_LOG", "info".into())]));
    // 128 files, less 16 probes in flight, 2 × 16 connections and 64 to spare: 16 kept.
    registry.process.wait_for_line("keeping at most 16 connections between checks, not 1024", Duration::from_secs(1));

    for (i, addr) in endpoints.addrs.iter().enumerate() {
        let body = serde_json::json!({"Name": format!("web-{i}"), "Address": addr.to_string()});
        let answer = post_json(&format!("http://{}/register", registry.api), &body).map(|a| a.status);
        assert_eq!(answer, Some(200), "web-{i} registered");
    }
    // Every endpoint checked five times over: a second at 200 ms, bounded at 10 s.
    let passes = poll(Duration::from_millis(100), Duration::from_secs(10), || {
        registry.metric("service_registry_probes_total{result=\"pass\"}").filter(|&n| n >= 5 * ENDPOINTS as u64)
    });
    let failed = registry.metric("service_registry_probes_total{result=\"fail\"}");
    assert!(passes.is_some(), "checks went on: {passes:?} passes, {failed:?} failures");
    let log = registry.process.log().join("\n");
    assert_eq!(failed, Some(0), "no check failed for the registry's want of a descriptor:\n{log}");
    let passing: Vec<Endpoint> =
        get_json(&format!("http://{}/endpoints?status=passing", registry.api)).expect("the listing");
    assert_eq!(passing.len(), ENDPOINTS, "every endpoint passing");
}
