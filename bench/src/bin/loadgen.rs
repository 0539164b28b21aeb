//! `loadgen`: a keep-alive HTTP/1.1 load generator. N threads, one connection each, send
//! requests back to back; every latency is recorded. Stops at `--requests` or `--duration`,
//! whichever comes first, and prints one JSON line: req/s, p50, p99, and its own CPU time, so
//! the driver can show it is not the bottleneck.
//!
//! ```text
//! loadgen --target 127.0.0.1:PORT --clients 32 --requests 200000 --duration 5s get /endpoints
//! loadgen --target 127.0.0.1:PORT --clients 1 register --ports-file ports.txt --names 10000
//! ```
//! `register` cycles over `--names` distinct names (`bench-00000`, ...), name i at
//! `127.0.0.1:PORT[i % ports]`, so every registered address is a live fleet port.

#![forbid(unsafe_code)]
use bench::http::{self, Client};
use bench::stats::percentile;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: loadgen --target 127.0.0.1:PORT [--clients N] [--requests N] [--duration 5s] \
[--timeout 10s] (get PATH | register --ports-file FILE [--names N] [--prefix bench-])";

/// More failed requests than this and a client gives up: the target is broken, not slow.
const MAX_ERRORS: u64 = 1000;

struct Args {
    target: SocketAddr,
    clients: usize,
    requests: u64,
    duration: Duration,
    timeout: Duration,
    mode: Mode,
}

enum Mode {
    Get(String),
    Register { ports: Vec<u16>, names: usize, prefix: String },
}

struct ClientResult {
    latencies: Vec<u32>,
    errors: u64,
    statuses: Vec<(u16, u64)>,
    body_bytes: u64,
    finished: Instant,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut it = argv.into_iter();
    let (mut target, mut clients, mut requests) = (None, 1usize, 1_000_000u64);
    let (mut duration, mut timeout) = (Duration::from_secs(5), Duration::from_secs(10));
    let (mut ports_file, mut names, mut prefix) = (None, 10_000usize, "bench-".to_string());
    let mut mode = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--target" => target = Some(bench::loopback(&value("--target")?)?),
            "--clients" => clients = value("--clients")?.parse().map_err(|_| "bad --clients")?,
            "--requests" => requests = value("--requests")?.parse().map_err(|_| "bad --requests")?,
            "--duration" => duration = bench::parse_duration(&value("--duration")?)?,
            "--timeout" => timeout = bench::parse_duration(&value("--timeout")?)?,
            "--ports-file" => ports_file = Some(value("--ports-file")?),
            "--names" => names = value("--names")?.parse().map_err(|_| "bad --names")?,
            "--prefix" => prefix = value("--prefix")?,
            "get" => mode = Some(("get", Some(value("get")?))),
            "register" => mode = Some(("register", None)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let target = target.ok_or("--target is required")?;
    if !(1..=1024).contains(&clients) || names == 0 || requests == 0 {
        return Err("--clients must be 1 to 1024, --names and --requests at least 1".into());
    }
    let mode = match mode {
        Some(("get", Some(path))) => Mode::Get(path),
        Some(("register", _)) => {
            let file = ports_file.ok_or("register needs --ports-file")?;
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
            let ports = text
                .split_whitespace()
                .map(|p| p.parse::<u16>().map_err(|_| format!("{file}: {p:?} is not a port")))
                .collect::<Result<Vec<_>, _>>()?;
            if ports.is_empty() {
                return Err(format!("{file} lists no ports"));
            }
            Mode::Register { ports, names, prefix }
        }
        _ => return Err("say get PATH or register".into()),
    };
    Ok(Args { target, clients, requests, duration, timeout, mode })
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(match &args.mode {
        Mode::Get(path) => vec![http::get(args.target, path)],
        Mode::Register { ports, names, prefix } => (0..*names)
            .map(|i| {
                let body = format!(
                    r#"{{"Name":"{prefix}{i:05}","Address":"127.0.0.1:{}","Tags":["bench"]}}"#,
                    ports[i % ports.len()]
                );
                http::post_json(args.target, "/register", &body)
            })
            .collect(),
    });
    let next = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let mut threads = Vec::new();
    for _ in 0..args.clients {
        let (requests, next, barrier) = (requests.clone(), next.clone(), barrier.clone());
        let mut client = Client::new(args.target, args.timeout);
        let (limit, duration) = (args.requests, args.duration);
        threads.push(thread::spawn(move || {
            let connected = client.connect();
            barrier.wait();
            connected.map_err(|e| e.to_string())?;
            Ok::<_, String>(drive(&mut client, &requests, &next, limit, Instant::now() + duration))
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut results = Vec::new();
    for t in threads {
        results.push(t.join().map_err(|_| "a client thread panicked")??);
    }
    let finished = results.iter().map(|r| r.finished).max().unwrap_or(start);
    let seconds = finished.duration_since(start).as_secs_f64().max(1e-9);
    let mut latencies: Vec<u32> = results.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let mut statuses = std::collections::BTreeMap::new();
    for (status, n) in results.iter().flat_map(|r| r.statuses.iter()) {
        *statuses.entry(status.to_string()).or_insert(0u64) += n;
    }
    let ms = |us: Option<u32>| us.map_or(0.0, |us| f64::from(us) / 1000.0);
    let body_bytes: u64 = results.iter().map(|r| r.body_bytes).sum();
    let report = serde_json::json!({
        "requests": ok,
        "errors": errors,
        "statuses": statuses,
        "clients": args.clients,
        "seconds": seconds,
        "rps": ok as f64 / seconds,
        "p50_ms": ms(percentile(&latencies, 50.0)),
        "p99_ms": ms(percentile(&latencies, 99.0)),
        "max_ms": ms(latencies.last().copied()),
        "body_bytes": body_bytes.checked_div(ok).unwrap_or(0),
        "cpu_s": bench::sys::own_cpu_time().as_secs_f64(),
    });
    eprintln!(
        "loadgen: {} clients, {ok} requests in {seconds:.2} s: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {errors} errors",
        args.clients,
        ok as f64 / seconds,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
    Ok(report)
}

/// One client's loop: take the next request number, send, time, until the count or the
/// deadline is reached.
fn drive(client: &mut Client, requests: &[Vec<u8>], next: &AtomicU64, limit: u64, deadline: Instant) -> ClientResult {
    let mut result = ClientResult {
        latencies: Vec::with_capacity(65536),
        errors: 0,
        statuses: Vec::new(),
        body_bytes: 0,
        finished: Instant::now(),
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        if i >= limit || sent >= deadline || result.errors > MAX_ERRORS {
            break;
        }
        let request = &requests[(i % requests.len() as u64) as usize];
        match client.send(request, false) {
            Ok(response) => {
                let took = sent.elapsed();
                result.finished = sent + took;
                count(&mut result.statuses, response.status);
                if (200..300).contains(&response.status) {
                    result.latencies.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                    result.body_bytes += response.body_len as u64;
                } else {
                    result.errors += 1;
                }
            }
            Err(_) => result.errors += 1,
        }
    }
    result
}

fn count(statuses: &mut Vec<(u16, u64)>, status: u16) {
    match statuses.iter_mut().find(|(s, _)| *s == status) {
        Some((_, n)) => *n += 1,
        None => statuses.push((status, 1)),
    }
}
