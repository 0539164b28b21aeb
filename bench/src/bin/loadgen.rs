//! `loadgen`: a keep-alive HTTP/1.1 load generator. N connections, each with one request in
//! flight, sending back to back, driven by `--threads` threads through epoll (by default one
//! per core, at most one per connection: see `bench::drive`); every latency is recorded. Stops at `--requests` or `--duration`,
//! whichever comes first, and prints one JSON line: req/s, p50, p99, and its own CPU time, so
//! the driver can show it is not the bottleneck.
//!
//! ```text
//! loadgen --target 127.0.0.1:PORT --clients 32 --requests 200000 --duration 5s get /endpoints
//! loadgen --target 127.0.0.1:PORT --clients 64 --threads 2 get /
//! loadgen --target 127.0.0.1:PORT --clients 1 register --ports-file ports.txt --names 10000
//! ```
//! `register` cycles over `--names` distinct names (`bench-00000`, ...), name i at
//! `127.0.0.1:PORT[i % ports]`, so every registered address is a live fleet port.

#![forbid(unsafe_code)]
use bench::args::{self, Args};
use bench::drive::{self, Plan};
use bench::http;
use bench::stats::percentile;
use common::duration;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: loadgen --target 127.0.0.1:PORT [--clients N] [--threads N] [--requests N] \
[--duration 5s] [--timeout 10s] (get PATH | register --ports-file FILE [--names N] [--prefix bench-])";

/// What the load generator is told.
struct Options {
    target: SocketAddr,
    clients: usize,
    threads: usize,
    requests: u64,
    duration: Duration,
    timeout: Duration,
    mode: Mode,
}

enum Mode {
    Get(String),
    Register { ports: Vec<u16>, names: usize, prefix: String },
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => return args::refuse("loadgen", &e, USAGE),
    };
    match run(&options) {
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

fn parse(argv: Vec<String>) -> Result<Options, String> {
    let mut args = Args::new(argv);
    let (mut target, mut clients, mut threads, mut requests) = (None, 1usize, None, 1_000_000u64);
    let (mut duration, mut timeout) = (Duration::from_secs(5), Duration::from_secs(10));
    let (mut ports_file, mut names, mut prefix) = (None, 10_000usize, "bench-".to_string());
    let mut mode = None;
    let positive = |text: String| duration::parse_positive(&text).map_err(|e| e.to_string());
    while let Some(name) = args.next_name() {
        match name.as_str() {
            "--target" => target = Some(bench::loopback(&args.value()?)?),
            "--clients" => clients = args.parse()?,
            "--threads" => threads = Some(args.parse()?),
            "--requests" => requests = args.parse()?,
            "--duration" => duration = positive(args.value()?)?,
            "--timeout" => timeout = positive(args.value()?)?,
            "--ports-file" => ports_file = Some(args.value()?),
            "--names" => names = args.parse()?,
            "--prefix" => prefix = args.value()?,
            "get" => mode = Some(("get", Some(args.value()?))),
            "register" => mode = Some(("register", None)),
            _ => return Err(args.unknown()),
        }
    }
    let target = target.ok_or("--target is required")?;
    // One thread per core keeps both cores busy: with one thread, the cores sat idle a fifth
    // of the time while it waited for its turn behind 32 server threads.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or(cores.min(clients.max(1)));
    if !(1..=1024).contains(&clients) || names == 0 || requests == 0 || !(1..=clients).contains(&threads) {
        return Err("--clients must be 1 to 1024, --threads 1 to --clients, --names and --requests at least 1".into());
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
    Ok(Options { target, clients, threads, requests, duration, timeout, mode })
}

fn run(options: &Options) -> Result<serde_json::Value, String> {
    // Every request's bytes are built here, before the clock starts (the registration bodies
    // serialized from the registry's wire type): the timed loop only writes them.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(match &options.mode {
        Mode::Get(path) => vec![http::get(options.target, path)],
        Mode::Register { ports, names, prefix } => (0..*names)
            .map(|i| {
                http::post_json(options.target, "/register", &bench::registration(prefix, i, ports[i % ports.len()]))
            })
            .collect(),
    });
    let next = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(options.threads + 1));
    let mut threads = Vec::new();
    for t in 0..options.threads {
        // Connections split evenly over the threads.
        let connections = options.clients / options.threads + usize::from(t < options.clients % options.threads);
        let (requests, next, barrier) = (requests.clone(), next.clone(), barrier.clone());
        let (target, limit, duration, timeout) = (options.target, options.requests, options.duration, options.timeout);
        threads.push(thread::spawn(move || {
            let plan = Plan { target, requests: &requests, next: &next, limit, duration, timeout };
            drive::run(&plan, connections, || {
                barrier.wait();
            })
            .map_err(|e| format!("cannot drive {connections} connections to {target}: {e}"))
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut results = Vec::new();
    for t in threads {
        results.push(t.join().map_err(|_| "a load thread panicked")??);
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
        "clients": options.clients,
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
        options.clients,
        ok as f64 / seconds,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
    Ok(report)
}
