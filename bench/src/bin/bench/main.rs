//! `bench`: the driver of the benchmark suite behind `make bench`. Given the release binaries,
//! it starts the fleet simulator, registries, servers, the load generator and (when installed)
//! nginx, all on loopback; measures registration and read throughput, memory, health-check rounds
//! and detection, and the server's start and stop; and prints one markdown table.
//! Every process it starts is stopped on every way out, and every wait is bounded.
//!
//! ```text
//! bench [--quick | --scale] [--registry PATH] [--server PATH] [--fleet PATH] [--loadgen PATH]
//!       [--nginx PATH|none] [--go-seed DIR] [--keep-logs]
//! ```
//!
//! `--scale`: instead of the default run, the scale run (about 75 s): 100,000 live endpoints
//! over six fleet processes on 127.0.0.2-7, checked at the default interval for 60 s while the
//! listing and the page are read every second (see `scale.rs`).
//!
//! `--go-seed DIR`: the Go original's `service-registry` and `dynamic-port-server`, as
//! `/work/shared/anchors/go-seed/build.sh` builds them; its registration, memory and page
//! figures are then measured in the same run, with the same load, and set beside ours.

#![forbid(unsafe_code)]
mod measure;
mod procs;
mod report;
mod scale;

use bench::args::{self, Args};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str =
    "usage: bench [--quick | --scale] [--registry PATH] [--server PATH] [--fleet PATH] [--loadgen PATH] \
[--nginx PATH|none] [--go-seed DIR] [--keep-logs]";

/// What the driver is told.
pub struct Options {
    pub quick: bool,
    /// The scale run (100,000 endpoints) instead of the default run.
    pub scale: bool,
    pub registry: PathBuf,
    pub server: PathBuf,
    pub fleet: PathBuf,
    pub loadgen: PathBuf,
    /// `None`: nginx is not installed or not wanted.
    pub nginx: Option<PathBuf>,
    /// The Go original's `service-registry`, when it is to be measured beside ours.
    pub go_registry: Option<PathBuf>,
    pub keep_logs: bool,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return args::refuse("bench", &e, USAGE),
    };
    let tmp = std::env::temp_dir().join(format!("dynamic-ports-bench-{}", std::process::id()));
    stop_everything_on_signals((!options.keep_logs).then(|| tmp.clone()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("bench: cannot create {}: {e}", tmp.display());
        return ExitCode::FAILURE;
    }
    let result = if options.scale { scale::run(&options, &tmp) } else { measure::run(&options, &tmp) };
    // Every process is stopped by now: their guards were dropped on the way out of run().
    match result {
        Ok(table) => {
            println!("{table}");
            if options.keep_logs {
                eprintln!("bench: logs kept in {}", tmp.display());
            } else {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}\nbench: logs kept in {}", tmp.display());
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: Vec<String>) -> Result<Option<Options>, String> {
    let here = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let release = PathBuf::from("target/x86_64-unknown-linux-musl/release");
    let mut options = Options {
        quick: false,
        scale: false,
        registry: release.join("service-registry"),
        server: release.join("dynamic-port-server"),
        fleet: here.join("fleet"),
        loadgen: here.join("loadgen"),
        nginx: find_nginx(),
        go_registry: None,
        keep_logs: false,
    };
    let mut args = Args::new(argv);
    while let Some(name) = args.next_name() {
        match name.as_str() {
            "--quick" => options.quick = args.switch()?,
            "--scale" => options.scale = args.switch()?,
            "--keep-logs" => options.keep_logs = args.switch()?,
            "--registry" => options.registry = args.value()?.into(),
            "--server" => options.server = args.value()?.into(),
            "--fleet" => options.fleet = args.value()?.into(),
            "--loadgen" => options.loadgen = args.value()?.into(),
            "--nginx" => options.nginx = Some(args.value()?).filter(|v| v != "none").map(PathBuf::from),
            "--go-seed" => {
                let dir = PathBuf::from(args.value()?);
                for binary in ["service-registry", "dynamic-port-server"] {
                    if !dir.join(binary).is_file() {
                        return Err(format!(
                            "--go-seed: no {binary} in {} (build it: OUT={0} ../shared/anchors/go-seed/build.sh, next to the repo)",
                            dir.display()
                        ));
                    }
                }
                options.go_registry = Some(dir.join("service-registry"));
            }
            "-h" | "--help" => return Ok(None),
            _ => return Err(args.unknown()),
        }
    }
    if options.scale && (options.quick || options.go_registry.is_some()) {
        return Err("--scale is a run of its own: without --quick or --go-seed".into());
    }
    for (what, path) in [
        ("--registry", &options.registry),
        ("--server", &options.server),
        ("--fleet", &options.fleet),
        ("--loadgen", &options.loadgen),
    ] {
        // The scale run starts only the registry and the fleets.
        let needed = !options.scale || matches!(what, "--registry" | "--fleet");
        if needed && !path.is_file() {
            return Err(format!("{what}: {} does not exist (build it first: scripts/bench.sh does)", path.display()));
        }
    }
    Ok(Some(options))
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// On SIGINT, SIGTERM or SIGHUP: kill every child, remove `tmp`, and leave. (SIGKILL needs no
/// handler: the children get SIGKILL from the kernel when the driver dies, see
/// `bench::sys::die_with_parent`.)
fn stop_everything_on_signals(tmp: Option<PathBuf>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    eprintln!("bench: interrupted (signal {signal}): stopping every process it started");
                    procs::kill_all();
                    if let Some(tmp) = &tmp {
                        let _ = std::fs::remove_dir_all(tmp);
                    }
                    std::process::exit(128 + signal);
                }
            });
        }
        Err(e) => eprintln!("bench: cannot handle signals ({e}); children still die with the driver"),
    }
}
