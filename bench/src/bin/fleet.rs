//! `fleet`: thousands of stand-in servers in one process. Each live endpoint is a loopback
//! listener answering any GET (and so `GET /healthz`) with `200 OK`; a hung endpoint accepts and
//! never answers; a refusing port was bound and closed again. Every probe of a live endpoint is
//! counted with its time, so the driver can tell how long a health-check round takes.
//!
//! Controlled through stdin, one command a line, one answer a line on stdout:
//!
//! | command      | answer                                                                  |
//! |--------------|-------------------------------------------------------------------------|
//! | `live N`     | `ports P1 P2 ...`: N new listeners answering 200                        |
//! | `hung N`     | `ports ...`: N listeners that accept and never answer                   |
//! | `refusing N` | `ports ...`: N ports bound and closed again, so they refuse             |
//! | `ports`      | `ports ...`: the live endpoints still open                              |
//! | `kill PORT`  | `ok MS`: listener and connections closed; MS since its last probe or -1 |
//! | `reset`      | `ok`: probe counts and times start again from now                       |
//! | `stats`      | one JSON object (see [`Fleet::stats`])                                  |
//! | `quit`       | `ok`, then exits; so does the end of stdin                              |
//!
//! It listens on 127.0.0.1, or on the loopback address given with `--ip 127.0.0.X` (any
//! 127.0.0.0/8 address): ports are per address, so several fleets on as many addresses hold
//! more endpoints than one address's ephemeral range, or one process's open-file limit, allows.
//! Its ports are the kernel's ephemeral range, or `--ports LOW-HIGH`: a port any listener holds
//! is one `connect` cannot take as its source port, whatever the address, and with tens of
//! thousands of them held the kernel's search for a free source port costs the prober
//! hundreds of microseconds per connection (measured with 100,000: see BENCHMARKS.md).

#![forbid(unsafe_code)]
use bench::args::Args;
use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const STDIN: Token = Token(usize::MAX);
/// A request head larger than this is not a probe: the connection is closed.
const MAX_HEAD: usize = 16 * 1024;
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
const ANSWER_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Live,
    Hung,
}

/// One simulated server and its probe record since the last `reset`.
struct Endpoint {
    kind: Kind,
    alive: bool,
    slot: usize,
    /// Time of the last probe ever, untouched by `reset`.
    last_seen: Option<u64>,
    probes: u64,
    first: Option<u64>,
    last: u64,
    max_gap: u64,
}

struct Conn {
    stream: TcpStream,
    endpoint: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    close_after: bool,
}

enum Slot {
    Free,
    Listener(TcpListener, usize),
    Conn(Conn),
}

struct Fleet {
    poll: Poll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    endpoints: Vec<Endpoint>,
    by_port: HashMap<u16, usize>,
    epoch: Instant,
    reset_at: u64,
    probes: u64,
    hung_accepts: u64,
    /// Connections accepted since the last `reset`: with probes that keep their connection,
    /// fewer than the probes.
    accepts: u64,
    /// Listeners whose accept failed for lack of descriptors: retried on every turn.
    backlogged: Vec<usize>,
    /// The next port to try: see [`Fleet::bind`].
    next_port: u16,
    ports: (u16, u16),
    /// The loopback address every listener is bound to (`--ip`).
    ip: Ipv4Addr,
}

const USAGE: &str = "usage: fleet [--ip 127.0.0.X] [--ports LOW-HIGH] (commands on stdin: see bench/src/bin/fleet.rs)";

/// What the fleet is told on its command line.
#[derive(Debug, PartialEq)]
struct Flags {
    /// `--ip`: the loopback address to listen on; 127.0.0.1 without it.
    ip: Ipv4Addr,
    /// `--ports LOW-HIGH`: the ports to listen on; the kernel's ephemeral range without it.
    ports: Option<(u16, u16)>,
}

/// `--ip` and `--ports`, read by the suite's one argument reader (`--flag VALUE` or
/// `--flag=VALUE`).
fn parse_flags(argv: &[String]) -> Result<Flags, String> {
    let mut flags = Flags { ip: Ipv4Addr::LOCALHOST, ports: None };
    let mut args = Args::new(argv.to_vec());
    while let Some(name) = args.next_name() {
        match name.as_str() {
            "--ip" => {
                let value = args.value()?;
                match value.parse::<Ipv4Addr>() {
                    Ok(ip) if ip.is_loopback() => flags.ip = ip,
                    _ => {
                        return Err(format!(
                            "--ip {value:?}: not a 127.0.0.0/8 address (the fleet listens on loopback only)"
                        ))
                    }
                }
            }
            "--ports" => {
                let value = args.value()?;
                let range =
                    value.split_once('-').and_then(|(l, h)| Some((l.parse::<u16>().ok()?, h.parse::<u16>().ok()?)));
                match range {
                    Some((low, high)) if 1024 <= low && low < high => flags.ports = Some((low, high)),
                    _ => return Err(format!("--ports {value:?}: not LOW-HIGH with 1024 <= LOW < HIGH")),
                }
            }
            _ => return Err(args.unknown()),
        }
    }
    Ok(flags)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flags = match parse_flags(&argv) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("fleet: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let limit = bench::sys::raise_nofile();
    let started = Poll::new().and_then(|poll| {
        // Commands arrive on stdin, read without blocking by the same poller as the sockets.
        // (A thread and mio's Waker would do too, but an eventfd woken again before it is read
        // loses edges on some kernels: the fleet then misses commands.)
        let mut stdin = pipe::Receiver::from(io::stdin().as_fd().try_clone_to_owned()?);
        stdin.set_nonblocking(true)?;
        poll.registry().register(&mut stdin, STDIN, Interest::READABLE)?;
        Ok((poll, stdin))
    });
    let (poll, stdin) = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fleet: cannot start polling: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(n) = limit {
        eprintln!("fleet: up to {n} open files");
    }
    let mut fleet = Fleet {
        poll,
        slots: Vec::new(),
        free: Vec::new(),
        endpoints: Vec::new(),
        by_port: HashMap::new(),
        epoch: Instant::now(),
        reset_at: 0,
        probes: 0,
        hung_accepts: 0,
        accepts: 0,
        backlogged: Vec::new(),
        next_port: 0,
        ports: flags.ports.unwrap_or_else(bench::sys::ephemeral_ports),
        ip: flags.ip,
    };
    // A random start, so that two fleets (or two runs) do not walk the same ports.
    let (low, high) = fleet.ports;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    fleet.next_port = low + (seed % u32::from(high - low + 1)) as u16;
    if let Err(e) = fleet.run(stdin) {
        eprintln!("fleet: {e}");
        std::process::exit(1);
    }
}

impl Fleet {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn run(&mut self, mut stdin: pipe::Receiver) -> io::Result<()> {
        let mut events = Events::with_capacity(4096);
        let mut out = io::BufWriter::new(io::stdout().lock());
        let mut input = Vec::new();
        let mut closed = false;
        loop {
            let timeout = if self.backlogged.is_empty() { None } else { Some(Duration::from_millis(10)) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                if event.token() == STDIN {
                    closed |= read_available(&mut stdin, &mut input)?;
                } else {
                    self.ready(event.token().0);
                }
            }
            for slot in std::mem::take(&mut self.backlogged) {
                self.ready(slot);
            }
            while let Some(end) = input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = input.drain(..=end).collect();
                let (answer, quit) = self.command(String::from_utf8_lossy(&line).trim());
                writeln!(out, "{answer}")?;
                out.flush()?;
                if quit {
                    return Ok(());
                }
            }
            if closed {
                // The driver is gone: so is the fleet.
                return Ok(());
            }
        }
    }

    fn command(&mut self, line: &str) -> (String, bool) {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let arg = words.next().and_then(|w| w.parse::<usize>().ok());
        let answer = match (verb, arg) {
            ("live", Some(n)) => self.listen(n, Kind::Live),
            ("hung", Some(n)) => self.listen(n, Kind::Hung),
            ("refusing", Some(n)) => refusing(self.ip, n),
            ("kill", Some(port)) => self.kill(port),
            ("ports", None) => Ok(self.live_ports()),
            ("reset", None) => {
                self.reset();
                Ok("ok".into())
            }
            ("stats", None) => Ok(self.stats().to_string()),
            ("quit", None) => return ("ok".into(), true),
            _ => Err(format!("unknown command {line:?}")),
        };
        (answer.unwrap_or_else(|e| format!("error {e}")), false)
    }

    fn insert(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) {
        match std::mem::replace(&mut self.slots[i], Slot::Free) {
            Slot::Listener(mut l, _) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
            Slot::Conn(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            Slot::Free => return,
        }
        self.free.push(i);
    }

    fn listen(&mut self, n: usize, kind: Kind) -> Result<String, String> {
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut listener, port) = self.bind().map_err(|e| format!("after {} listeners: {e}", ports.len()))?;
            let endpoint = self.endpoints.len();
            let slot = self.insert(Slot::Free);
            self.poll.registry().register(&mut listener, Token(slot), Interest::READABLE).map_err(|e| e.to_string())?;
            self.slots[slot] = Slot::Listener(listener, endpoint);
            self.endpoints.push(Endpoint {
                kind,
                alive: true,
                slot,
                last_seen: None,
                probes: 0,
                first: None,
                last: 0,
                max_gap: 0,
            });
            self.by_port.insert(port, endpoint);
            ports.push(port.to_string());
        }
        Ok(format!("ports {}", ports.join(" ")))
    }

    /// A listener on the fleet's address at the next free port of the ephemeral range, tried in turn.
    /// Not port 0: with thousands of ports bound and as many connections in TIME_WAIT, the
    /// kernel's search for a free port takes milliseconds per bind (20 s for 10,000 was seen
    /// here), where trying ports in order takes microseconds. Inside the ephemeral range, so
    /// that no program that listens on a fixed port finds it taken.
    fn bind(&mut self) -> io::Result<(TcpListener, u16)> {
        let (low, high) = self.ports;
        for _ in low..=high {
            let port = self.next_port;
            self.next_port = if port >= high { low } else { port + 1 };
            match TcpListener::bind((self.ip, port).into()) {
                Ok(listener) => return Ok((listener, port)),
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(ErrorKind::AddrInUse, format!("no free port left in {low}-{high}")))
    }

    fn kill(&mut self, port: usize) -> Result<String, String> {
        let endpoint = u16::try_from(port)
            .ok()
            .and_then(|p| self.by_port.get(&p).copied())
            .filter(|&e| self.endpoints[e].alive)
            .ok_or_else(|| format!("no open listener on port {port}"))?;
        let now = self.now();
        self.endpoints[endpoint].alive = false;
        self.remove(self.endpoints[endpoint].slot);
        let conns: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(&self.slots[i], Slot::Conn(c) if c.endpoint == endpoint))
            .collect();
        for i in conns {
            self.remove(i);
        }
        // How long ago it was last probed tells the driver when the prober will next come.
        let ago = self.endpoints[endpoint].last_seen.map_or(-1.0, |t| (now - t) as f64 / 1e6);
        Ok(format!("ok {ago:.3}"))
    }

    fn live_ports(&self) -> String {
        let mut ports: Vec<String> = self
            .by_port
            .iter()
            .filter(|(_, &e)| self.endpoints[e].alive && self.endpoints[e].kind == Kind::Live)
            .map(|(p, _)| p.to_string())
            .collect();
        ports.sort();
        format!("ports {}", ports.join(" "))
    }

    fn reset(&mut self) {
        self.reset_at = self.now();
        self.probes = 0;
        self.hung_accepts = 0;
        self.accepts = 0;
        for e in &mut self.endpoints {
            e.probes = 0;
            e.first = None;
            e.last = 0;
            e.max_gap = 0;
        }
    }

    /// Probe statistics of the live endpoints since the last `reset`, times in milliseconds:
    /// `window_ms`, `probes`, `live`, `probed` (at least one probe), `probed_twice`,
    /// `max_gap_ms` / `p50_gap_ms` / `p99_gap_ms` (over each endpoint's longest gap between two
    /// probes), `max_first_ms` (the last endpoint's first probe), `max_stale_ms` (the longest any
    /// live endpoint has now gone unprobed), `hung_accepts`, `accepts`, `open_connections`.
    fn stats(&self) -> serde_json::Value {
        let now = self.now();
        let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
        let live: Vec<&Endpoint> = self.endpoints.iter().filter(|e| e.alive && e.kind == Kind::Live).collect();
        let mut gaps: Vec<u64> = live.iter().filter(|e| e.probes >= 2).map(|e| e.max_gap).collect();
        gaps.sort_unstable();
        let max_first = live.iter().filter_map(|e| e.first).max().map_or(0, |f| f - self.reset_at);
        let max_stale = live.iter().map(|e| now - if e.probes > 0 { e.last } else { self.reset_at }).max();
        serde_json::json!({
            "window_ms": ms(now - self.reset_at),
            "probes": self.probes,
            "live": live.len(),
            "probed": live.iter().filter(|e| e.probes >= 1).count(),
            "probed_twice": gaps.len(),
            "max_gap_ms": ms(gaps.last().copied().unwrap_or(0)),
            "p50_gap_ms": ms(bench::stats::percentile(&gaps, 50.0).unwrap_or(0)),
            "p99_gap_ms": ms(bench::stats::percentile(&gaps, 99.0).unwrap_or(0)),
            "max_first_ms": ms(max_first),
            "max_stale_ms": ms(max_stale.unwrap_or(0)),
            "hung_accepts": self.hung_accepts,
            "accepts": self.accepts,
            "open_connections": self.slots.iter().filter(|s| matches!(s, Slot::Conn(_))).count(),
        })
    }

    fn ready(&mut self, slot: usize) {
        let (listener, conn) = match self.slots.get(slot) {
            Some(Slot::Listener(..)) => (true, false),
            Some(Slot::Conn(_)) => (false, true),
            _ => (false, false),
        };
        if listener {
            self.accept(slot);
        } else if conn && !self.serve(slot) {
            self.remove(slot);
        }
    }

    fn accept(&mut self, slot: usize) {
        loop {
            let Slot::Listener(listener, endpoint) = &self.slots[slot] else { return };
            let endpoint = *endpoint;
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let i = self.insert(Slot::Free);
                    if self.poll.registry().register(&mut stream, Token(i), Interest::READABLE).is_err() {
                        self.free.push(i);
                        continue;
                    }
                    self.accepts += 1;
                    if self.endpoints[endpoint].kind == Kind::Hung {
                        self.hung_accepts += 1;
                    }
                    let conn =
                        Conn { stream, endpoint, input: Vec::new(), output: Vec::new(), sent: 0, close_after: false };
                    self.slots[i] = Slot::Conn(conn);
                    // Data may already be waiting; edge-triggered polling would not say so again.
                    if !self.serve(i) {
                        self.remove(i);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors: the pending connections wait in the backlog.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        self.backlogged.push(slot);
                    }
                    return;
                }
            }
        }
    }

    /// Reads what has arrived, answers complete requests, writes what it can. Returns false
    /// when the connection is finished.
    fn serve(&mut self, slot: usize) -> bool {
        let now = self.now();
        let Slot::Conn(conn) = &mut self.slots[slot] else { return false };
        let kind = self.endpoints[conn.endpoint].kind;
        let mut buf = [0u8; 4096];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) if kind == Kind::Hung => {
                    // Hung: swallow everything, answer nothing, until the prober gives up.
                    let _ = n;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if kind == Kind::Hung {
            return true;
        }
        let mut answered = 0;
        while let Some(end) = conn.input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&conn.input[..end]).to_ascii_lowercase();
            conn.input.drain(..end + 4);
            let first = head.lines().next().unwrap_or_default();
            let close = head.contains("\nconnection: close") || first.ends_with("http/1.0");
            answered += usize::from(first.starts_with("get /healthz"));
            conn.output.extend_from_slice(if close { ANSWER_CLOSE } else { ANSWER });
            if close {
                conn.close_after = true;
                conn.input.clear();
                break;
            }
        }
        if conn.input.len() > MAX_HEAD {
            return false;
        }
        let endpoint = conn.endpoint;
        let alive = flush(conn, &self.poll, slot);
        for _ in 0..answered {
            self.record(endpoint, now);
        }
        alive
    }

    fn record(&mut self, endpoint: usize, now: u64) {
        self.probes += 1;
        let e = &mut self.endpoints[endpoint];
        if e.first.is_some() {
            e.max_gap = e.max_gap.max(now - e.last);
        } else {
            e.first = Some(now);
        }
        e.last = now;
        e.last_seen = Some(now);
        e.probes += 1;
    }
}

/// Writes pending output; asks for a writable event when the socket is full. Returns false
/// when the connection is finished.
fn flush(conn: &mut Conn, poll: &Poll, slot: usize) -> bool {
    while conn.sent < conn.output.len() {
        match conn.stream.write(&conn.output[conn.sent..]) {
            Ok(0) => return false,
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                return poll.registry().reregister(&mut conn.stream, Token(slot), interest).is_ok();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    conn.output.clear();
    conn.sent = 0;
    !conn.close_after
}

/// Reads all that stdin holds now into `input`; true at its end.
fn read_available(stdin: &mut pipe::Receiver, input: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Ports that refuse connections: bound, read, and closed again at once.
fn refusing(ip: Ipv4Addr, n: usize) -> Result<String, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind((ip, 0)).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: Vec<String> =
        listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.port().to_string()).collect();
    Ok(format!("ports {}", ports.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_loopback_only() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_flags(&[]), Ok(Flags { ip: Ipv4Addr::LOCALHOST, ports: None }));
        assert_eq!(
            parse_flags(&args(&["--ip", "127.0.0.7", "--ports", "10000-32767"])),
            Ok(Flags { ip: Ipv4Addr::new(127, 0, 0, 7), ports: Some((10000, 32767)) })
        );
        assert!(parse_flags(&args(&["--ip", "10.0.0.1"])).is_err());
        assert!(parse_flags(&args(&["--ip", "0.0.0.0"])).is_err());
        assert!(parse_flags(&args(&["--ip"])).is_err());
        assert!(parse_flags(&args(&["--ports", "80-90"])).is_err());
        assert!(parse_flags(&args(&["--ports", "2000-1999"])).is_err());
        assert!(parse_flags(&args(&["--port", "1"])).is_err());
        assert_eq!(parse_flags(&args(&["--ip=127.0.0.3"])).map(|f| f.ip), Ok(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
