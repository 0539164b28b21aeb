//! The measurements: registration and read throughput, memory, the health-check round and
//! detection, the server's start and stop, sizes. Each starts what it needs and stops it
//! before the next, so one measurement's processes never compete with another's for the two
//! cores.

use crate::procs::{self, Fleet, GoRegistry, Proc, Registry};
use crate::report::{self, Report, Verdict};
use crate::Options;
use bench::http::{self, Client};
use bench::stats::{human, median_max, size, thousands};
use common::duration;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The registry's defaults (`-check-interval=5s -check-timeout=2s -failures-before-critical=2`):
/// detection and round targets are computed from them.
const INTERVAL: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(2);
const FAILURES: u32 = 2;
/// The check interval and timeout of the `--quick` detection runs: a fifth and a quarter of
/// the defaults, so that both detection runs fit in `--quick`'s minute.
const QUICK_INTERVAL: Duration = Duration::from_secs(1);
const QUICK_TIMEOUT: Duration = Duration::from_millis(500);
/// Endpoints for registration, memory and the round.
const FLEET: usize = 10_000;
/// Endpoints for reads and detection.
const SMALL_FLEET: usize = 1_000;
/// Hung endpoints registered before the second detection run.
const HUNG: usize = 100;
/// Clients of the read and the many-client registration runs.
const CLIENTS: usize = 32;
/// How often the driver asks whether a state change has happened: fine enough for the
/// millisecond figures, coarse enough not to load the registry it measures.
const FAST_POLL: Duration = Duration::from_millis(1);
const DETECT_POLL: Duration = Duration::from_millis(2);
/// One request of the driver's own; the registry answers in well under a millisecond.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Figures not measured in the run, in the table's words: where they come from. They were
/// given with the project's brief when the benchmark was written (commit d2bf8e4); no run
/// here measured them.
const QUOTED_NOTE: &str = "\"quoted\": a figure given with the project's brief when the benchmark was written \
     (commit d2bf8e4), not measured in this run nor on this machine; only figures marked \"measured\" in the Go \
     column come from this run (`--go-seed`).";

/// A figure this run did not measure.
fn quoted(figure: &str) -> String {
    format!("quoted: {figure}")
}

/// The manifest whose memory limit and caps the "as deployed" row measures.
const MANIFEST: &str = "deployments/service-registry.yaml";
/// How long the manifest row reads and checks: 60 s of checks at the default interval.
const SOAK: Duration = Duration::from_secs(60);

/// Sections of the table, in print order.
const REGISTRATION: u8 = 1;
const READS: u8 = 2;
const MEMORY: u8 = 3;
const CHECKS: u8 = 4;
const SERVER: u8 = 5;
const SIZES: u8 = 6;

/// How long and how often: the default run and `--quick`.
struct Plan {
    quick: bool,
    load_window: Duration,
    /// Request caps of the 1-client and 32-client registration runs and of each read run.
    cap_one: u64,
    cap_many: u64,
    cap_read: u64,
    read_window: Duration,
    idle_settle: Duration,
    /// Intervals observed after all 10,000 endpoints pass (the window adds one second).
    round_intervals: u32,
    /// How long the 10,000-endpoint RSS row reads the JSON and the page, once a second each.
    rss_window: Duration,
    /// Registry flags of the detection runs, and the interval and timeout they mean.
    detect_flags: Vec<String>,
    detect_interval: Duration,
    detect_timeout: Duration,
    kills: usize,
    server_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                load_window: Duration::from_millis(1500),
                cap_one: 150_000,
                cap_many: 300_000,
                cap_read: 300_000,
                read_window: Duration::from_millis(1200),
                idle_settle: Duration::from_millis(300),
                round_intervals: 1,
                rss_window: Duration::from_secs(10),
                detect_flags: vec![
                    format!("-check-interval={}", duration::format(QUICK_INTERVAL)),
                    format!("-check-timeout={}", duration::format(QUICK_TIMEOUT)),
                ],
                detect_interval: QUICK_INTERVAL,
                detect_timeout: QUICK_TIMEOUT,
                kills: 5,
                server_runs: 5,
            }
        } else {
            Plan {
                quick,
                load_window: Duration::from_secs(5),
                cap_one: 500_000,
                cap_many: 1_000_000,
                cap_read: 1_000_000,
                read_window: Duration::from_secs(4),
                idle_settle: Duration::from_secs(1),
                round_intervals: 2,
                rss_window: SOAK,
                detect_flags: Vec::new(),
                detect_interval: INTERVAL,
                detect_timeout: TIMEOUT,
                kills: 8,
                server_runs: 15,
            }
        }
    }

    fn detect_target(&self) -> Duration {
        self.detect_interval * FAILURES + self.detect_timeout
    }
}

/// One load generator run.
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    body_bytes: u64,
    /// Wall time of the loadgen process, start to exit.
    wall: Duration,
    loadgen_cpu: Duration,
    /// CPU the measured server used over the same wall time, when it is ours to measure.
    server_cpu: Option<Duration>,
    /// CPU the rest of the machine used meanwhile: other people's work on a shared machine.
    others_cpu: Duration,
    /// CPU the hypervisor took for other guests meanwhile (not part of `others_cpu`).
    stolen: Duration,
}

impl Load {
    fn summary(&self) -> String {
        let errors = if self.errors > 0 { format!(", **{} errors**", self.errors) } else { String::new() };
        format!("{} req/s{errors}", thousands(self.rps))
    }

    fn cpu_share(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9) * 100.0
    }

    /// CPU microseconds per request.
    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.requests.max(1)) as f64
    }
}

/// Detection of one killed endpoint.
struct Kill {
    detected: Option<Duration>,
    /// When the registry's schedule says it should have seen it: the failures still needed,
    /// one interval apart, counted from the endpoint's last probe before the kill.
    expected: Option<Duration>,
}

struct Bench<'a> {
    options: &'a Options,
    tmp: &'a Path,
    plan: Plan,
    fleet: Fleet,
    /// The fleet's live ports: [0, 10,000) for registration; slices of them for the rest.
    ports: Vec<u16>,
    report: Report,
    /// Labelled loads kept for the notes on the load generator.
    loads: Vec<(String, Load)>,
    rng: u64,
}

/// The Go original's memory with 10,000 Names, before and after its first check pass, and the
/// endpoints probed in that pass, for the memory row; `None` without `--go-seed`.
type GoMemory = Option<(Result<procs::Memory, String>, Result<procs::Memory, String>, u64)>;

/// The Go original's figures, measured in this run with the same load as ours.
struct GoFigures {
    new_one: Load,
    new_many: Load,
    renew_one: Load,
    renew_many: Load,
    /// RSS with the 10,000 Names, before its first health-check pass.
    registered: Result<procs::Memory, String>,
    /// RSS after its first pass over them, and how many it probed (bounded wait).
    checked: Result<procs::Memory, String>,
    probed: u64,
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The Go column of a load row: the Go figures and ours ÷ Go.
fn go_load_text(ours: &Load, go: &Load) -> String {
    format!(
        "measured: {}, p50 {:.3} ms, p99 {:.3} ms; throughput {}, p99 {}",
        go.summary(),
        go.p50_ms,
        go.p99_ms,
        ratio_text(ours.rps, go.rps),
        ratio_text(ours.p99_ms, go.p99_ms)
    )
}

/// `ours / go`.
fn ratio_text(ours: f64, go: f64) -> String {
    if go > 0.0 {
        format!("ours/Go = {:.2}", ours / go)
    } else {
        "ours/Go: n/a".into()
    }
}

/// Runs every measurement; returns the report.
pub fn run(options: &Options, tmp: &Path) -> Result<String, String> {
    let started = Instant::now();
    let nofile = bench::sys::raise_nofile().map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if nofile < (FLEET + HUNG + 2_000) as u64 {
        return Err(format!(
            "the open-file limit is {nofile}: the fleet needs {} (run under `ulimit -n 20000`)",
            FLEET + HUNG + 2_000
        ));
    }
    let mut fleet = Fleet::start(&options.fleet, &tmp.join("fleet.log"))?;
    eprintln!("bench: fleet: opening {FLEET} live endpoints on 127.0.0.1");
    let ports = fleet.endpoints("live", FLEET)?;
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut bench = Bench {
        options,
        tmp,
        plan: Plan::new(options.quick),
        fleet,
        ports,
        report: Report::default(),
        loads: Vec::new(),
        rng: seed,
    };
    bench.sizes();
    bench.idle_memory()?;
    bench.registration()?;
    bench.manifest_memory()?;
    bench.reads()?;
    bench.server()?;
    bench.detection()?;
    bench.loadgen_notes();
    bench.report.note(QUOTED_NOTE.into());
    let mut header = vec![report::machine(), format!("date: {}", report::now_utc())];
    let driver: Vec<String> = std::env::args().skip(1).collect();
    header.push(format!(
        "command: `scripts/bench.sh{}{}` (driver: `bench {}`), run time {:.0} s",
        if options.quick { " --quick" } else { "" },
        if options.go_registry.is_some() { " --go-seed DIR" } else { "" },
        driver.join(" "),
        started.elapsed().as_secs_f64()
    ));
    header.push(format!(
        "measured: {} and {} (static musl release builds), all traffic on 127.0.0.1, load generator on the same 2 cores",
        options.registry.display(),
        options.server.display()
    ));
    if let Some(go) = &options.go_registry {
        header.push(format!(
            "Go original measured in this run: {} (built by /work/shared/anchors/go-seed/build.sh), same fleet, same load generator, same loads",
            go.display()
        ));
    }
    header.push(bench.others());
    if options.quick {
        header.push(format!(
            "quick mode: shorter windows; detection runs use {} (target scaled to match); the round uses the default 5 s interval over one interval",
            bench.plan.detect_flags.join(" ")
        ));
    }
    Ok(bench.report.render("dynamic-ports benchmark", &header))
}

impl Bench<'_> {
    fn random(&mut self) -> u64 {
        // xorshift64: enough to place kills at random points of the check cycle.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn registry(&self, flags: &[String], label: &str) -> Result<Registry, String> {
        Registry::start(&self.options.registry, flags, &self.tmp.join(format!("registry-{label}.log")))
    }

    fn ports_file(&self, ports: &[u16], label: &str) -> Result<PathBuf, String> {
        let path = self.tmp.join(format!("ports-{label}.txt"));
        let text: Vec<String> = ports.iter().map(u16::to_string).collect();
        std::fs::write(&path, text.join("\n")).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// Registers the 10,000 fleet Names, each once, with `clients` connections, against a
    /// registry (`pid`) that has none of them yet: bounded at one registration each, 60 s.
    fn new_names(
        &self,
        label: &str,
        pid: i32,
        api: SocketAddr,
        clients: usize,
        mode: &[String],
    ) -> Result<Load, String> {
        self.load(label, Some(pid), api, clients, (FLEET as u64, Duration::from_secs(60)), mode)
    }

    /// Runs the load generator against `target` and measures `server_pid`'s CPU meanwhile
    /// (a negative one is a process group).
    fn load(
        &self,
        label: &str,
        server_pid: Option<i32>,
        target: SocketAddr,
        clients: usize,
        (cap, window): (u64, Duration),
        mode: &[String],
    ) -> Result<Load, String> {
        eprintln!("bench: {label}: {clients} clients, up to {} s", window.as_secs_f64());
        let log = self.tmp.join(format!("loadgen-{}.log", label.replace(|c: char| !c.is_ascii_alphanumeric(), "-")));
        let mut command = Command::new(&self.options.loadgen);
        command
            .arg("--target")
            .arg(target.to_string())
            .args(["--clients", &clients.to_string(), "--requests", &cap.to_string()])
            .args(["--duration", &duration::format(window), "--timeout", "10s"])
            .args(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?);
        let cpu_before = server_pid.map(procs::cpu_time);
        let busy_before = procs::machine_busy();
        let steal_before = procs::machine_steal();
        let start = Instant::now();
        let mut proc = Proc::spawn("loadgen", &mut command, false)?;
        let mut stdout = proc.child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        let status = proc.wait_for(window + Duration::from_secs(60));
        let wall = start.elapsed();
        let server_cpu = server_pid.zip(cpu_before).map(|(pid, before)| procs::cpu_time(pid).saturating_sub(before));
        let busy = procs::machine_busy().saturating_sub(busy_before);
        let stolen = procs::machine_steal().saturating_sub(steal_before);
        drop(proc);
        let text = reader.join().unwrap_or_default();
        if !status.is_some_and(|s| s.success()) {
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("loadgen ({label}) failed: {}", why.trim()));
        }
        let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("loadgen said {text:?}: {e}"))?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Ok(Load {
            rps: f("rps"),
            p50_ms: f("p50_ms"),
            p99_ms: f("p99_ms"),
            requests: f("requests") as u64,
            errors: f("errors") as u64,
            body_bytes: f("body_bytes") as u64,
            wall,
            loadgen_cpu: Duration::from_secs_f64(f("cpu_s")),
            server_cpu,
            others_cpu: busy
                .saturating_sub(stolen)
                .saturating_sub(server_cpu.unwrap_or_default())
                .saturating_sub(Duration::from_secs_f64(f("cpu_s"))),
            stolen,
        })
    }

    // ---- sizes ----------------------------------------------------------------------------

    fn sizes(&mut self) {
        eprintln!("bench: binary and image sizes");
        let version = procs::output(
            "service-registry --version",
            Command::new(&self.options.registry).arg("--version"),
            Duration::from_secs(5),
        )
        .and_then(|v| v.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| "0.1.0".into());
        let binaries =
            [("service-registry", self.options.registry.clone()), ("dynamic-port-server", self.options.server.clone())];
        let go_dir = self.options.go_registry.as_ref().and_then(|p| p.parent().map(Path::to_path_buf));
        for (name, path) in &binaries {
            let go = match &go_dir {
                Some(dir) => {
                    let go_path = dir.join(name);
                    let go_bytes = std::fs::metadata(&go_path).map_or(0, |m| m.len());
                    let go_stripped = self.stripped_size(&go_path).unwrap_or(go_bytes);
                    format!("measured: {} stripped ({} as built)", size(go_stripped), size(go_bytes))
                }
                None => quoted("6.6 MB (9.5 MB unstripped)"),
            };
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            let stripped = self.stripped_size(path).unwrap_or(bytes);
            let kind = match static_elf(path) {
                Some(true) => "static",
                Some(false) => "**dynamic**",
                None => "not ELF",
            };
            let value = if stripped == bytes {
                format!("{} ({kind}, stripped)", size(stripped))
            } else {
                format!("{} stripped ({} as built, {kind})", size(stripped), size(bytes))
            };
            let metric = format!("{name} binary, stripped");
            self.report.row(SIZES, &metric, value, "≤ 1 MiB", &go, Verdict::of(stripped <= 1 << 20));
        }
        for (name, path) in &binaries {
            let metric = format!("{name}:{version} image");
            match image_size(name, &version) {
                Some((bytes, created)) => {
                    let built = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    let built = built.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
                    let mut value = size(bytes);
                    if created < built {
                        value += " (built before the binary above: `make images` refreshes it)";
                    }
                    self.report.row(SIZES, &metric, value, "≤ 1 MiB", "", Verdict::of(bytes <= 1 << 20))
                }
                None => {
                    self.report.row(SIZES, &metric, "not built (`make images`)".into(), "≤ 1 MiB", "", Verdict::Info)
                }
            }
        }
    }

    fn stripped_size(&self, path: &Path) -> Option<u64> {
        let copy = self.tmp.join("stripped");
        std::fs::copy(path, &copy).ok()?;
        let mut command = Command::new("strip");
        command.arg("--strip-all").arg(&copy);
        procs::output("strip", &mut command, Duration::from_secs(20))?;
        let bytes = std::fs::metadata(&copy).ok()?.len();
        let _ = std::fs::remove_file(&copy);
        Some(bytes)
    }

    // ---- memory ---------------------------------------------------------------------------

    fn idle_memory(&mut self) -> Result<(), String> {
        eprintln!("bench: idle registry memory");
        let registry = self.registry(&[], "idle")?;
        sleep(self.plan.idle_settle);
        let memory = procs::memory(registry.pid());
        let ours = memory.as_ref().map(|m| m.rss).unwrap_or(0);
        let (value, verdict) = rss_figure(memory, 2 << 20, |m| size(m.rss));
        drop(registry);
        let go = match &self.options.go_registry {
            Some(binary) => {
                let go = GoRegistry::start(binary, &self.tmp.join("go-registry-idle.log"))?;
                sleep(self.plan.idle_settle);
                match procs::memory(go.pid()) {
                    Ok(m) => format!("measured: {}; {}", size(m.rss), ratio_text(ours as f64, m.rss as f64)),
                    Err(e) => format!("not measured: {e}"),
                }
            }
            None => quoted("6.6 MiB"),
        };
        self.report.row(MEMORY, "registry RSS, idle", value, "≤ 2 MiB", &go, verdict);
        Ok(())
    }

    // ---- registration, the round, memory with 10,000 --------------------------------------

    /// The load generator's `register` mode over the 10,000 fleet ports.
    fn register_mode(&self) -> Result<Vec<String>, String> {
        let file = self.ports_file(&self.ports, "10000")?;
        Ok(vec![
            "register".into(),
            "--ports-file".into(),
            file.display().to_string(),
            "--names".into(),
            FLEET.to_string(),
        ])
    }

    /// Registration, the same loads for ours and (with `--go-seed`) the Go original:
    /// 10,000 new Names with 1 client (a registry of its own) and with 32 (each Name probed at
    /// once by ours; the Go original does not probe on registration), then renewals of the
    /// same 10,000 Names with 1 and 32 clients, as a fleet renewing its registrations does,
    /// while ours keeps checking all of them. Then the round and memory with 10,000.
    fn registration(&mut self) -> Result<(), String> {
        let mode = self.register_mode()?;
        let go = match self.options.go_registry.clone() {
            Some(binary) => Some(self.go_registration(&binary, &mode)?),
            None => None,
        };

        let one_shot = self.registry(&[], "register-new-1")?;
        let new_one =
            self.new_names("registration of 10,000 new Names, 1 client", one_shot.pid(), one_shot.api, 1, &mode)?;
        drop(one_shot);
        let registry = self.registry(&[], "register")?;
        self.fleet.reset()?;
        let new_many = self.new_names(
            "registration of 10,000 new Names, 32 clients",
            registry.pid(),
            registry.api,
            CLIENTS,
            &mode,
        )?;
        for (clients, load, go_load) in
            [(1, new_one, go.as_ref().map(|g| &g.new_one)), (CLIENTS, new_many, go.as_ref().map(|g| &g.new_many))]
        {
            let label = format!("registration of 10,000 new Names, {clients} client{}", plural(clients));
            let metric = format!("{label} (ours probes each at once; Go does not): throughput, p50 / p99");
            let value = format!("{}, p50 {:.3} ms, p99 {:.3} ms", load.summary(), load.p50_ms, load.p99_ms);
            let go_text = go_load.map_or_else(|| "not measured (--go-seed DIR)".into(), |g| go_load_text(&load, g));
            // Against the Go original in the same run only: no quoted figure stands in.
            let verdict = go_load.map_or(Verdict::Info, |g| {
                Verdict::of(load.rps >= g.rps && load.p99_ms <= g.p99_ms && load.errors == 0)
            });
            self.report.row(
                REGISTRATION,
                &metric,
                value,
                "≥ 1.0× Go's throughput, p99 ≤ Go's (same run)",
                &go_text,
                verdict,
            );
            self.loads.push((label, load));
        }
        self.first_checks(&registry)?;

        for (clients, cap, target, quoted_go) in
            [(1, self.plan.cap_one, 27_000.0, "27,000 req/s"), (CLIENTS, self.plan.cap_many, 52_000.0, "52,000 req/s")]
        {
            let label = format!("renewal of the same 10,000 Names, {clients} keep-alive client{}", plural(clients));
            let load =
                self.load(&label, Some(registry.pid()), registry.api, clients, (cap, self.plan.load_window), &mode)?;
            let metric = format!("{label}, while ours checks them: throughput");
            let value = format!("{} ({} requests)", load.summary(), thousands(load.requests as f64));
            let go_load = go.as_ref().map(|g| if clients == 1 { &g.renew_one } else { &g.renew_many });
            let go_text = go_load.map_or_else(|| quoted(quoted_go), |g| go_load_text(&load, g));
            // Twice the Go original's rate in the same run; twice the quoted figure without it.
            let (pass, target_text) = match go_load {
                Some(g) => (load.rps >= 2.0 * g.rps, "≥ 2× Go's throughput (same run)".to_string()),
                None => (load.rps >= 2.0 * target, format!("≥ 2 × {} (the quoted Go figure)", thousands(target))),
            };
            let pass = pass && load.errors == 0;
            self.report.row(REGISTRATION, &metric, value, &target_text, &go_text, Verdict::of(pass));
            let metric = format!("{label}: latency p50 / p99");
            let value = format!("{:.3} ms / {:.3} ms", load.p50_ms, load.p99_ms);
            let go_text = match go_load {
                Some(g) => format!(
                    "measured: {:.3} ms / {:.3} ms; p99 {}",
                    g.p50_ms,
                    g.p99_ms,
                    ratio_text(load.p99_ms, g.p99_ms)
                ),
                None if clients > 1 => quoted("p99 15 ms"),
                None => String::new(),
            };
            self.report.row(REGISTRATION, &metric, value, "", &go_text, Verdict::Info);
            self.loads.push((label, load));
        }
        let go_memory = go.map(|go| {
            for (label, load) in [
                ("Go: registration of 10,000 new Names, 1 client", go.new_one),
                ("Go: registration of 10,000 new Names, 32 clients", go.new_many),
                ("Go: renewal, 1 client", go.renew_one),
                ("Go: renewal, 32 clients", go.renew_many),
            ] {
                self.loads.push((label.into(), load));
            }
            (go.registered, go.checked, go.probed)
        });
        self.round(&registry, go_memory)?;
        // Stopped first: the fleet counts every probe, and only the next registry's may count.
        drop(registry);
        self.cpu_all_kept()
    }

    /// The Go original under the same loads as ours: new Names with 1 client (a registry of
    /// its own), new Names with 32, renewals with 1 and 32; its memory with the 10,000 Names
    /// before and after its first health-check pass over them (it sleeps 10 s between passes
    /// and probes one endpoint at a time, leaving each probe's connection open).
    fn go_registration(&mut self, binary: &Path, mode: &[String]) -> Result<GoFigures, String> {
        eprintln!("bench: the Go original, same loads");
        let one_shot = GoRegistry::start(binary, &self.tmp.join("go-registry-new-1.log"))?;
        let new_one =
            self.new_names("Go: registration of 10,000 new Names, 1 client", one_shot.pid(), one_shot.api, 1, mode)?;
        drop(one_shot);
        let go = GoRegistry::start(binary, &self.tmp.join("go-registry.log"))?;
        let started = Instant::now();
        self.fleet.reset()?;
        let new_many =
            self.new_names("Go: registration of 10,000 new Names, 32 clients", go.pid(), go.api, CLIENTS, mode)?;
        let (cap_one, cap_many, window) = (self.plan.cap_one, self.plan.cap_many, self.plan.load_window);
        let renew_one = self.load("Go: renewal, 1 client", Some(go.pid()), go.api, 1, (cap_one, window), mode)?;
        let renew_many =
            self.load("Go: renewal, 32 clients", Some(go.pid()), go.api, CLIENTS, (cap_many, window), mode)?;
        let registered = procs::memory(go.pid());
        // Its first pass starts 10 s after it started (its map was empty then) and probes the
        // 10,000 one after another: waited for at most 40 s more.
        let deadline = started + Duration::from_secs(50);
        self.fleet.reset()?;
        let mut probed = 0;
        while Instant::now() < deadline {
            probed = self.fleet.stats()?["probed"].as_u64().unwrap_or(0);
            if probed >= FLEET as u64 {
                break;
            }
            sleep(Duration::from_millis(200));
        }
        let checked = procs::memory(go.pid());
        drop(go);
        Ok(GoFigures { new_one, new_many, renew_one, renew_many, registered, checked, probed })
    }

    /// Waits for the first check of each of the 10,000 new endpoints, and for all to pass.
    fn first_checks(&mut self, registry: &Registry) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            let stats = self.fleet.stats()?;
            if stats["probed"].as_u64().unwrap_or(0) >= FLEET as u64 || Instant::now() > deadline {
                break stats;
            }
            sleep(Duration::from_millis(100));
        };
        let probed = first["probed"].as_u64().unwrap_or(0);
        let first_ms = first["max_first_ms"].as_f64().unwrap_or(0.0);
        let value = format!(
            "{} of {FLEET} probed, the last {} after the first registration",
            thousands(probed as f64),
            human(Duration::from_secs_f64(first_ms / 1000.0))
        );
        let metric = "first check of 10,000 new endpoints registered at full speed";
        self.report.row(CHECKS, metric, value, "", "", Verdict::Info);
        // All passing, asked without rendering the 10,000-record listing (a cached rendering
        // would be counted in the registry's memory below).
        let mut client = Client::new(registry.api, REQUEST_TIMEOUT);
        wait_all_passing(&mut client, registry.api, &format!("the {FLEET} endpoints"))
    }

    /// The steady round over the 10,000 endpoints, the checker's CPU, and memory.
    /// `go_memory`: the Go original's RSS with the same Names, before and after its first
    /// check pass, and how many it had probed, for the memory row's Go column.
    fn round(&mut self, registry: &Registry, go_memory: GoMemory) -> Result<(), String> {
        eprintln!("bench: health checks of {FLEET} endpoints");

        let (stats, wall, cpu) = self.checks_window(registry)?;
        let memory = procs::memory(registry.pid());

        let ms = |k: &str| Duration::from_secs_f64(stats[k].as_f64().unwrap_or(0.0) / 1000.0);
        let probes = stats["probes"].as_u64().unwrap_or(0);
        let round = ms("max_gap_ms").max(ms("max_stale_ms"));
        let value = format!(
            "{} (longest gap between two probes of one endpoint; median endpoint {}), {} probes/s over {}",
            human(round),
            human(ms("p50_gap_ms")),
            thousands(probes as f64 / wall.as_secs_f64()),
            human(wall)
        );
        let pass = round <= INTERVAL + INTERVAL / 100 && stats["probed"].as_u64() == Some(FLEET as u64);
        self.report.row(
            CHECKS,
            "health-check round, 10,000 live endpoints",
            value,
            "≤ 5 s (one interval, +1% timer slack)",
            "",
            Verdict::of(pass),
        );
        let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
        let per_probe = cpu.as_secs_f64() * 1e6 / probes.max(1) as f64;
        let value = format!("{share:.1}% of one core ({per_probe:.1} µs CPU per probe)");
        let metric = "registry CPU while checking 10,000 endpoints, defaults (1,024 connections kept between checks)";
        self.report.row(CHECKS, metric, value, CPU_PER_PROBE_TARGET, "", Verdict::of(per_probe <= CPU_PER_PROBE));
        // Memory as a user sees it: with readers. The JSON and the page each read once a second
        // while the checks go on; the peak (VmHWM) counts, so a rendering that comes and goes
        // between two samples is not missed.
        let before = memory.as_ref().map(|m| size(m.rss)).unwrap_or_else(|e| format!("not measured: {e}"));
        let window = self.plan.rss_window;
        eprintln!("bench: RSS with 10,000 endpoints, JSON and page read every second for {} s", window.as_secs());
        let reads = read_every_second(registry, window);
        let memory = procs::memory(registry.pid());
        let ours = memory.as_ref().map(|m| m.peak).unwrap_or(0);
        let (value, verdict) = match (memory, reads) {
            (Ok(m), Ok(r)) => (
                format!(
                    "peak (VmHWM) {}, most sampled {}, {} at the end, {before} before the first read; {} reads of {} KB \
                     (JSON) and {} KB (page) over {} s",
                    size(m.peak),
                    size(r.most.max(m.rss)),
                    size(m.rss),
                    r.reads,
                    r.listing / 1000,
                    r.page / 1000,
                    window.as_secs()
                ),
                Verdict::of(m.peak <= 8 << 20),
            ),
            (Err(e), _) | (_, Err(e)) => (format!("not measured: {e}"), Verdict::Miss),
        };
        let go = match go_memory {
            Some((registered, checked, probed)) => {
                let text = |m: &Result<procs::Memory, String>| {
                    m.as_ref().map_or_else(|e| format!("not measured ({e})"), |m| size(m.rss))
                };
                format!(
                    "measured, no reads: {} after registering and renewing; {} after its first check pass \
                     ({} of {FLEET} probed by then); ours (peak, under reads)/Go = {:.2} (after its check pass)",
                    text(&registered),
                    text(&checked),
                    thousands(probed as f64),
                    ours as f64 / checked.as_ref().map_or(0.0, |m| m.rss as f64).max(1.0)
                )
            }
            None => quoted("15 MiB"),
        };
        let metric = format!(
            "registry RSS, 10,000 live endpoints checked every 5 s, GET /endpoints and GET / each read every second \
             for {} s{}",
            window.as_secs(),
            if self.plan.quick { " (quick: 60 s in the full run)" } else { "" }
        );
        self.report.row(MEMORY, &metric, value, "≤ 8 MiB (peak, under reads)", &go, verdict);
        Ok(())
    }

    /// Watches `registry` check the fleet for the plan's intervals and a second: the fleet's
    /// probe statistics over the window, its wall time, and the registry's CPU in it.
    fn checks_window(&mut self, registry: &Registry) -> Result<(Value, Duration, Duration), String> {
        self.fleet.reset()?;
        let cpu_before = procs::cpu_time(registry.pid());
        let start = Instant::now();
        sleep(INTERVAL * self.plan.round_intervals + Duration::from_secs(1));
        let stats = self.fleet.stats()?;
        let wall = start.elapsed();
        Ok((stats, wall, procs::cpu_time(registry.pid()).saturating_sub(cpu_before)))
    }

    /// The checker's CPU per probe at 10,000 endpoints with every connection kept between
    /// checks (`-check-keep-alive=10000`): no probe pays a connect and a close. What that costs
    /// instead is kernel memory, one idle socket at each end of each connection: the growth of
    /// the kernel's slab while they are open says how much.
    fn cpu_all_kept(&mut self) -> Result<(), String> {
        eprintln!("bench: health checks of {FLEET} endpoints, every connection kept");
        let slab_before = slab_bytes();
        let flags = [format!("-check-keep-alive={FLEET}")];
        let registry = self.registry(&flags, "keep-all")?;
        let mut client = Client::new(registry.api, REQUEST_TIMEOUT);
        register_all(&mut client, registry.api, "kept-", &self.ports)?;
        wait_all_passing(&mut client, registry.api, "the endpoints checked on kept connections")?;
        // The second checks are spread over one interval; from then on every check is steady.
        sleep(INTERVAL);
        let (stats, wall, cpu) = self.checks_window(&registry)?;
        let slab = slab_bytes().zip(slab_before).map(|(after, before)| after.saturating_sub(before));
        let probes = stats["probes"].as_u64().unwrap_or(0);
        let connections = stats["accepts"].as_u64();
        let per_probe = cpu.as_secs_f64() * 1e6 / probes.max(1) as f64;
        let value = format!(
            "{:.1}% of one core ({per_probe:.1} µs CPU per probe), {} probes/s; {} connections accepted by the fleet over \
             the window; kernel slab {} while the 10,000 connections are open (both ends, ≈ {} per endpoint)",
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
            thousands(probes as f64 / wall.as_secs_f64()),
            connections.map_or_else(|| "?".into(), |n| thousands(n as f64)),
            slab.map_or_else(|| "not measured".into(), |b| format!("+{}", size(b))),
            slab.map_or_else(|| "?".into(), |b| size(b / FLEET as u64)),
        );
        let metric = "registry CPU while checking 10,000 endpoints, every connection kept (-check-keep-alive=10000)";
        self.report.row(CHECKS, metric, value, CPU_PER_PROBE_TARGET, "", Verdict::of(per_probe <= CPU_PER_PROBE));
        Ok(())
    }

    // ---- memory as deployed -----------------------------------------------------------------

    /// The registry with the manifest's caps, full (`-max-endpoints=10000`, all of them live
    /// fleet ports), checked at the default interval for [`SOAK`] while `GET /endpoints` and
    /// the page are each read once a second: its RSS, peak included (VmHWM), against the
    /// manifest's `limits: memory`.
    fn manifest_memory(&mut self) -> Result<(), String> {
        eprintln!("bench: RSS at the manifest's cap, {} s of checks and reads", SOAK.as_secs());
        let flags = manifest_flags(Path::new(MANIFEST));
        // Full: as many endpoints as its cap allows, up to the fleet's 10,000.
        let cap = flags
            .iter()
            .find_map(|f| f.strip_prefix("-max-endpoints=")?.parse::<usize>().ok())
            .unwrap_or(FLEET)
            .min(FLEET);
        let registry = self.registry(&flags, "manifest")?;
        let mut client = Client::new(registry.api, REQUEST_TIMEOUT);
        register_all(&mut client, registry.api, "cap-", &self.ports[..cap])?;
        // All passing, asked without rendering the listing (that would be a read).
        wait_all_passing(&mut client, registry.api, &format!("the {cap} endpoints at the manifest's cap"))?;
        let before_reads = procs::memory(registry.pid())?.peak;
        let Reads { most, reads, listing, page } = read_every_second(&registry, SOAK)?;
        let passing = client
            .send_retry(&http::get(registry.api, "/endpoints?status=passing"), true)
            .map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).map_or(0, |v| v.len()))
            .unwrap_or(0);
        let end = procs::memory(registry.pid());
        let limit = manifest_memory_limit(Path::new(MANIFEST));
        let (target, limit_bytes) = match limit {
            Some((text, bytes)) => (format!("peak ≤ limits: memory = {text} ({MANIFEST})"), bytes),
            None => (format!("limits: memory not found in {MANIFEST}"), u64::MAX),
        };
        let (value, verdict) = match end {
            Ok(m) => (
                format!(
                    "peak (VmHWM) {} ({} before the first read), most sampled {}, {} at the end; {} of {cap} passing \
                     at the end; {reads} reads of {} KB (JSON) and {} KB (page)",
                    size(m.peak),
                    size(before_reads),
                    size(most.max(m.rss)),
                    size(m.rss),
                    thousands(passing as f64),
                    listing / 1000,
                    page / 1000
                ),
                Verdict::of(m.peak <= limit_bytes),
            ),
            Err(e) => (format!("not measured: {e}"), Verdict::Miss),
        };
        let metric = format!(
            "registry RSS as deployed ({MANIFEST}: {}), full: {} endpoints checked every 5 s, JSON and page each read \
             every second, {} s",
            flags.join(" "),
            thousands(cap as f64),
            SOAK.as_secs()
        );
        self.report.row(MEMORY, &metric, value, &target, "", verdict);
        Ok(())
    }

    // ---- reads ----------------------------------------------------------------------------

    fn reads(&mut self) -> Result<(), String> {
        let registry = self.registry(&[], "reads")?;
        let mut client = Client::new(registry.api, REQUEST_TIMEOUT);
        register_all(&mut client, registry.api, "read-", &self.ports[..SMALL_FLEET])?;
        wait_passing(&mut client, registry.api, SMALL_FLEET, Duration::from_secs(30))?;
        let listing = client
            .send_retry(&http::get(registry.api, "/endpoints"), true)
            .map_err(|e| format!("GET /endpoints: {e}"))?
            .body;
        drop(client);
        // nginx's ceiling for the page is a file of the page's bytes, as for the JSON.
        let mut ui = Client::new(registry.ui, REQUEST_TIMEOUT);
        let page = ui.send_retry(&http::get(registry.ui, "/"), true).map_err(|e| format!("GET /: {e}"))?.body;
        drop(ui);
        let (cap, window) = (self.plan.cap_read, self.plan.read_window);
        let mut rates = Vec::new();
        for (label, addr, path) in [
            ("GET /endpoints", registry.api, "/endpoints"),
            ("GET /endpoints?status=passing", registry.api, "/endpoints?status=passing"),
            ("GET / (HTML page, UI listener)", registry.ui, "/"),
        ] {
            let load =
                self.load(label, Some(registry.pid()), addr, CLIENTS, (cap, window), &["get".into(), path.into()])?;
            rates.push((label, load));
        }
        drop(registry);
        let go_page = match self.options.go_registry.clone() {
            Some(binary) => {
                let go = GoRegistry::start(&binary, &self.tmp.join("go-registry-reads.log"))?;
                let mut client = Client::new(go.api, REQUEST_TIMEOUT);
                register_all(&mut client, go.api, "read-", &self.ports[..SMALL_FLEET])?;
                drop(client);
                let load = self.load(
                    "Go: GET / (its page)",
                    Some(go.pid()),
                    go.ui,
                    CLIENTS,
                    (cap, window),
                    &["get".into(), "/".into()],
                )?;
                Some(load)
            }
            None => None,
        };

        let nginx = match &self.options.nginx {
            // Without its ceiling the table is still worth having: say why, and go on.
            Some(binary) => match self.nginx(binary, &listing, &page) {
                Ok(rates) => Some(rates),
                Err(e) => {
                    self.report.note(format!("nginx: {e}"));
                    None
                }
            },
            None => None,
        };
        for (label, load) in rates {
            let metric = format!("{label}, 1,000 endpoints, {CLIENTS} clients");
            let ceiling = match label {
                "GET /endpoints" => nginx.as_ref().map(|n| n.same.rps),
                "GET / (HTML page, UI listener)" => nginx.as_ref().map(|n| n.page.rps),
                _ => None,
            };
            let ratio = ceiling.map_or_else(String::new, |n| format!(", {:.2}× nginx", load.rps / n.max(1e-9)));
            let value =
                format!("{}{ratio} ({} KB each, p99 {:.2} ms)", load.summary(), load.body_bytes / 1000, load.p99_ms);
            let (target, go, verdict) = match (label, ceiling) {
                ("GET /endpoints?status=passing", _) => (String::new(), "", Verdict::Info),
                (_, Some(n)) => (
                    format!("≥ 0.9× nginx = {}", thousands(n * 0.9)),
                    "",
                    Verdict::of(load.rps >= n * 0.9 && load.errors == 0),
                ),
                (_, None) => ("≥ 0.9× nginx (not measured)".to_string(), "", Verdict::Info),
            };
            // The page's row also keeps its old yardstick, the quoted Go figure, as information.
            let go = match label {
                "GET / (HTML page, UI listener)" if go_page.is_none() => {
                    format!("quoted: 126 req/s; ours/Go = {:.0}", load.rps / 126.0)
                }
                _ => go.to_string(),
            };
            let go = match (&go_page, label) {
                (Some(g), "GET / (HTML page, UI listener)") => format!(
                    "measured, its page, same 1,000 Names, 32 clients: {} ({} KB each, p99 {:.2} ms); {}",
                    g.summary(),
                    g.body_bytes / 1000,
                    g.p99_ms,
                    ratio_text(load.rps, g.rps)
                ),
                _ => go,
            };
            self.report.row(READS, &metric, value, &target, &go, verdict);
            self.loads.push((label.to_string(), load));
        }
        if let Some(g) = go_page {
            self.loads.push(("Go: GET / (its page)".into(), g));
        }
        match nginx {
            Some(Nginx { same, page, tiny }) => {
                let value = format!("{} ({} KB each)", same.summary(), same.body_bytes / 1000);
                self.report.row(
                    READS,
                    "nginx, a file of the same bytes as GET /endpoints",
                    value,
                    "ceiling",
                    "quoted: ≈ 49,000 req/s (100 KB file)",
                    Verdict::Info,
                );
                let value = format!("{} ({} KB each)", page.summary(), page.body_bytes / 1000);
                self.report.row(READS, "nginx, a file of the same bytes as GET /", value, "ceiling", "", Verdict::Info);
                self.loads.push(("nginx, page bytes".into(), page));
                self.report.row(
                    READS,
                    "nginx, a 3-byte file",
                    tiny.summary(),
                    "loopback ceiling",
                    "quoted: ≈ 100,000 req/s",
                    Verdict::Info,
                );
                self.loads.push(("nginx, same bytes".into(), same));
                self.loads.push(("nginx, tiny file".into(), tiny));
            }
            None => self.report.row(
                READS,
                "nginx, a file of the same bytes as GET /endpoints",
                if self.options.nginx.is_some() {
                    "nginx failed (see the notes)".into()
                } else {
                    "nginx not installed (BENCH_INSTALL_NGINX=1 installs it)".into()
                },
                "ceiling",
                "quoted: ≈ 49,000 req/s (100 KB file)",
                Verdict::Info,
            ),
        }
        // The load generator against the simplest server there is (one thread, a 3-byte
        // answer): the most requests it can send with 1 and with 32 clients on this machine.
        let target: SocketAddr = ([127, 0, 0, 1], self.ports[FLEET - 1]).into();
        for clients in [1, CLIENTS] {
            let label = format!("loadgen ceiling, {clients} client{}", if clients > 1 { "s" } else { "" });
            let mode = ["get".to_string(), "/".to_string()];
            let load = self.load(&label, Some(self.fleet.pid()), target, clients, (cap, window), &mode)?;
            let metric = format!("{label}: the fleet simulator (one thread, 3-byte answer)");
            let value = format!("{}, p50 {:.3} ms", load.summary(), load.p50_ms);
            self.report.row(READS, &metric, value, "", "", Verdict::Info);
            self.loads.push((label, load));
        }
        Ok(())
    }

    /// nginx on a loopback port of its own, serving `listing`, `page` and a tiny file.
    fn nginx(&mut self, binary: &Path, listing: &[u8], page: &[u8]) -> Result<Nginx, String> {
        let dir = self.tmp.join("nginx");
        let www = dir.join("www");
        for d in [&www, &dir.join("logs"), &dir.join("temp")] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(www.join("endpoints.json"), listing).map_err(|e| e.to_string())?;
        std::fs::write(www.join("tiny.txt"), b"ok\n").map_err(|e| e.to_string())?;
        std::fs::write(www.join("page.html"), page).map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let d = dir.display();
        let conf = format!(
            "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
             keepalive_requests 100000000;\n  keepalive_timeout 60s;\n\
             types {{ application/json json; text/plain txt; text/html html; }}\n\
             client_body_temp_path {d}/temp/body;\n  proxy_temp_path {d}/temp/proxy;\n\
             fastcgi_temp_path {d}/temp/fastcgi;\n  uwsgi_temp_path {d}/temp/uwsgi;\n  scgi_temp_path {d}/temp/scgi;\n\
             server {{ listen 127.0.0.1:{port} reuseport; root {}; }}\n}}\n",
            www.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        // The master starts workers, which would outlive a driver killed with SIGKILL (the
        // master dies with the driver, its workers do not). In a PID namespace of its own, the
        // master is the namespace's init: when it dies, the kernel kills the workers too.
        let mut probe = Command::new("unshare");
        probe.args(["--pid", "--fork", "--kill-child", "true"]);
        let mut command = if procs::output("unshare", &mut probe, Duration::from_secs(5)).is_some() {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--kill-child"]).arg(binary);
            c
        } else {
            self.report.note(
                "nginx ran without a PID namespace of its own (unshare failed): had the driver been \
                killed with SIGKILL, its workers would have outlived it"
                    .into(),
            );
            Command::new(binary)
        };
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("logs/stderr.log")).map_err(|e| e.to_string())?);
        // Its own process group, too: stopping it stops the workers with the master.
        let mut nginx = Proc::spawn("nginx", &mut command, true)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline || nginx.wait_for(Duration::ZERO).is_some() {
                let log = std::fs::read_to_string(dir.join("logs/stderr.log")).unwrap_or_default();
                return Err(format!("nginx did not start: {}", log.trim()));
            }
            sleep(Duration::from_millis(10));
        }
        let (cap, window) = (self.plan.cap_read, self.plan.read_window);
        let group = Some(-nginx.pid());
        let get = |label: &str, path: &str| {
            self.load(label, group, addr, CLIENTS, (cap, window), &["get".into(), path.into()])
        };
        let same = get("nginx, same bytes", "/endpoints.json")?;
        let page = get("nginx, page bytes", "/page.html")?;
        let tiny = get("nginx, tiny file", "/tiny.txt")?;
        nginx.stop(Duration::from_secs(2));
        Ok(Nginx { same, page, tiny })
    }

    // ---- the real server ------------------------------------------------------------------

    fn server(&mut self) -> Result<(), String> {
        eprintln!("bench: dynamic-port-server start and stop, {} runs", self.plan.server_runs);
        let registry = self.registry(&[], "server")?;
        let mut client = Client::new(registry.api, REQUEST_TIMEOUT);
        let (mut starts, mut stops, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..self.plan.server_runs {
            let name = format!("bench-server-{run}");
            let mut command = Command::new(&self.options.server);
            command
                .arg(format!("-service-registry={}", registry.api))
                .arg(format!("-service-instance-name={name}"))
                .arg("-advertised-ip=127.0.0.1")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.tmp.join(format!("server-{run}.log"))).map_err(|e| e.to_string())?);
            let started = Instant::now();
            let mut server = Proc::spawn("dynamic-port-server", &mut command, false)?;
            let passing = poll_until(Duration::from_secs(5), FAST_POLL, || {
                Ok(status_of(&mut client, registry.api, &name)?.as_deref() == Some("passing"))
            })?;
            let Some(passing) = passing else {
                failures.push(format!("run {run}: not passing within 5 s"));
                continue;
            };
            starts.push(passing.duration_since(started));
            let stopping = Instant::now();
            server.signal(libc::SIGTERM);
            let gone = poll_until(Duration::from_secs(5), FAST_POLL, || {
                Ok(status_of(&mut client, registry.api, &name)?.is_none())
            })?;
            match gone {
                Some(gone) => stops.push(gone.duration_since(stopping)),
                None => failures.push(format!("run {run}: still listed 5 s after SIGTERM")),
            }
            match server.wait_for(Duration::from_secs(3)) {
                Some(status) if status.success() => {}
                other => failures.push(format!("run {run}: after SIGTERM the server ended with {other:?}")),
            }
        }
        let runs = self.plan.server_runs;
        for (metric, times, limit, go) in [
            ("dynamic-port-server start → passing", &starts, Duration::from_millis(20), "quoted: ≈ 90 ms (to listed)"),
            ("dynamic-port-server SIGTERM → gone from the listing", &stops, Duration::from_millis(50), ""),
        ] {
            let target = format!("≤ {} (median)", human(limit));
            match median_max(times) {
                Some((median, max)) => {
                    let value =
                        format!("median {}, max {} ({} of {runs} runs)", human(median), human(max), times.len());
                    self.report.row(
                        SERVER,
                        metric,
                        value,
                        &target,
                        go,
                        Verdict::of(median <= limit && times.len() == runs),
                    );
                }
                None => self.report.row(SERVER, metric, "never happened".into(), &target, go, Verdict::Miss),
            }
        }
        for f in failures {
            self.report.note(format!("dynamic-port-server {f}"));
        }
        Ok(())
    }

    // ---- detection ------------------------------------------------------------------------

    fn detection(&mut self) -> Result<(), String> {
        let base = self.detect(0, SMALL_FLEET..2 * SMALL_FLEET, "detect")?;
        let hung = self.detect(HUNG, 2 * SMALL_FLEET..3 * SMALL_FLEET, "detect-hung")?;
        let target = self.plan.detect_target();
        let settings = if self.plan.quick {
            format!("quick settings: {}", self.plan.detect_flags.join(" "))
        } else {
            "default settings".to_string()
        };
        let target_text = format!(
            "≤ {} ({} × {FAILURES} + {})",
            human(target),
            human(self.plan.detect_interval),
            human(self.plan.detect_timeout)
        );
        let base_ratio = ratio(&base);
        let hung_ratio = ratio(&hung);
        for (kills, metric, go) in [
            (&base, "detection of a killed endpoint (refused), 1,000 live endpoints", "quoted: 12–20 s"),
            (&hung, "the same with 100 hung endpoints registered first", "quoted: > 480 s (never seen)"),
        ] {
            let detected: Vec<Duration> = kills.iter().filter_map(|k| k.detected).collect();
            let lateness: Vec<f64> =
                kills.iter().filter_map(|k| Some(k.detected?.as_secs_f64() - k.expected?.as_secs_f64())).collect();
            let metric = format!("{metric} ({settings})");
            let Some((median, max)) = median_max(&detected) else {
                self.report.row(CHECKS, &metric, "never detected".into(), &target_text, go, Verdict::Miss);
                continue;
            };
            let mut value = format!(
                "median {}, max {} ({} of {} kills detected",
                human(median),
                human(max),
                detected.len(),
                kills.len()
            );
            if let Some(late) = median_f64(&lateness) {
                value += &format!("; median {:+.0} ms after the checker's schedule", late * 1000.0);
            }
            value += ")";
            let mut pass = max <= target && detected.len() == kills.len();
            let mut target_here = target_text.clone();
            if std::ptr::eq(kills, &hung) {
                target_here += ", ≤ 10% slower";
                if let (Some(b), Some(h)) = (base_ratio, hung_ratio) {
                    let slower = (h / b - 1.0) * 100.0;
                    value += &format!(", {slower:+.1}% vs without");
                    pass &= slower <= 10.0;
                }
            }
            self.report.row(CHECKS, &metric, value, &target_here, go, Verdict::of(pass));
        }
        self.report.note(
            "detection: each kill closes a live fleet listener at a random point of the check cycle; the time is from the kill \
             until `GET /endpoints/NAME` no longer says passing (polled every 2 ms), checked afterwards against \
             `GET /endpoints?status=passing`. \"After the checker's schedule\" is that time minus (failures × interval − time \
             since the endpoint's last probe): how late the checker was. \"% vs without\" compares detection ÷ schedule, \
             which removes the random phase."
                .into(),
        );
        Ok(())
    }

    /// One detection run: `hung` hung endpoints registered first, then live ones on the given
    /// slice of fleet ports; `kills` of them killed at random points of one interval.
    fn detect(&mut self, hung: usize, slice: std::ops::Range<usize>, label: &str) -> Result<Vec<Kill>, String> {
        let flags = self.plan.detect_flags.clone();
        let (interval, target) = (self.plan.detect_interval, self.plan.detect_target());
        eprintln!("bench: detection ({label}), {} kills", self.plan.kills);
        let registry = self.registry(&flags, label)?;
        let api = registry.api;
        let mut client = Client::new(api, REQUEST_TIMEOUT);
        if hung > 0 {
            let hung_ports = self.fleet.endpoints("hung", hung)?;
            register_all(&mut client, api, "hung-", &hung_ports)?;
        }
        let live = self.ports[slice].to_vec();
        register_all(&mut client, api, "live-", &live)?;
        wait_passing(&mut client, api, live.len(), interval * 4 + Duration::from_secs(10))?;
        // Past every endpoint's immediate first check, the hung ones' first timeouts included.
        sleep(interval + self.plan.detect_timeout);

        struct Victim {
            name: String,
            port: u16,
            at: Instant,
            killed: Option<(Instant, Option<Duration>)>,
            detected: Option<Duration>,
        }
        let start = Instant::now();
        let mut victims: Vec<Victim> = Vec::new();
        while victims.len() < self.plan.kills {
            let i = (self.random() % live.len() as u64) as usize;
            if victims.iter().any(|v| v.port == live[i]) {
                continue;
            }
            let offset = interval.mul_f64((self.random() % 1_000_000) as f64 / 1e6);
            victims.push(Victim {
                name: bench::endpoint_name("live-", i),
                port: live[i],
                at: start + offset,
                killed: None,
                detected: None,
            });
        }
        let deadline = start + interval + target * 3;
        while Instant::now() < deadline && victims.iter().any(|v| v.detected.is_none()) {
            for v in victims.iter_mut().filter(|v| v.killed.is_none() && Instant::now() >= v.at) {
                let killed = Instant::now();
                let ago = self.fleet.kill(v.port)?;
                v.killed = Some((killed, ago));
            }
            for v in victims.iter_mut().filter(|v| v.detected.is_none()) {
                let Some((killed, _)) = v.killed else { continue };
                if status_of(&mut client, api, &v.name)?.as_deref() != Some("passing") {
                    v.detected = Some(killed.elapsed());
                }
            }
            sleep(DETECT_POLL);
        }
        // The same fact, read as the target states it: no longer in ?status=passing.
        let passing = client
            .send_retry(&http::get(api, "/endpoints?status=passing"), true)
            .map_err(|e| format!("GET /endpoints?status=passing: {e}"))?;
        let listed = String::from_utf8_lossy(&passing.body);
        for v in victims.iter().filter(|v| v.detected.is_some()) {
            if listed.contains(&format!("\"{}\"", v.name)) {
                self.report
                    .note(format!("{label}: {} was seen not passing but is listed in ?status=passing again", v.name));
            }
        }
        Ok(victims
            .iter()
            .map(|v| Kill {
                detected: v.detected,
                expected: v.killed.and_then(|(_, ago)| ago).map(|ago| (interval * FAILURES).saturating_sub(ago)),
            })
            .collect())
    }

    // ---- the load generator is not the bottleneck -----------------------------------------

    fn loadgen_notes(&mut self) {
        self.report.note(
            "load generator and server, CPU per run in % of one core (200% = both cores), from getrusage (loadgen), \
             /proc/PID/stat (server; nginx with its workers) and /proc/stat (everything else on the machine, and \
             \"stolen\": time the hypervisor gave other guests while this one wanted it), over the run's wall \
             time. \"Bound\" is the rate the server's own CPU cost allows on 2 cores even with a \
             load generator that cost nothing:"
                .into(),
        );
        let mut lines = Vec::new();
        for (label, load) in &self.loads {
            let server = match load.server_cpu {
                Some(cpu) => format!(
                    "server {:.0}% ({:.1} µs/request, bound {} req/s)",
                    load.cpu_share(cpu),
                    load.per_request(cpu),
                    thousands(2e6 / load.per_request(cpu).max(1e-3))
                ),
                None => "server not measured".into(),
            };
            lines.push(format!(
                "  - {label}: {} req/s; {server}; loadgen {:.0}% ({:.1} µs/request); others {:.0}%; stolen {:.0}%",
                thousands(load.rps),
                load.cpu_share(load.loadgen_cpu),
                load.per_request(load.loadgen_cpu),
                load.cpu_share(load.others_cpu),
                load.cpu_share(load.stolen)
            ));
        }
        for line in lines {
            self.report.note(line);
        }
    }

    /// How busy other processes kept the machine during the load runs: median and max.
    fn others(&self) -> String {
        let mut shares: Vec<f64> = self.loads.iter().map(|(_, l)| l.cpu_share(l.others_cpu)).collect();
        shares.sort_by(f64::total_cmp);
        let mut stolen: Vec<f64> = self.loads.iter().map(|(_, l)| l.cpu_share(l.stolen)).collect();
        stolen.sort_by(f64::total_cmp);
        match (bench::stats::percentile(&shares, 50.0), shares.last(), stolen.last()) {
            (Some(median), Some(max), Some(most_stolen)) => format!(
                "other processes used a median {median:.0}% (max {max:.0}%) of the 200% CPU during the load runs, \
                 and the hypervisor took up to {most_stolen:.0}% for other guests (steal); load average {} at the end",
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            _ => String::new(),
        }
    }
}

/// Registers `prefix00000`... at 127.0.0.1 and each port, one request at a time.
fn register_all(client: &mut Client, api: SocketAddr, prefix: &str, ports: &[u16]) -> Result<(), String> {
    for (i, port) in ports.iter().enumerate() {
        register(client, api, &bench::registration(prefix, i, *port))?;
    }
    Ok(())
}

/// The target for the checker's cost.
const CPU_PER_PROBE: f64 = 20.0;
const CPU_PER_PROBE_TARGET: &str = "≤ 20 µs CPU per probe";

/// The kernel's slab memory (`Slab` in /proc/meminfo), where sockets live.
fn slab_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("Slab:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Sends one registration `body` and insists on 200.
pub fn register(client: &mut Client, api: SocketAddr, body: &str) -> Result<(), String> {
    let response = client
        .send_retry(&http::post_json(api, "/register", body), true)
        .map_err(|e| format!("POST /register: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "POST /register {body} answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    Ok(())
}

/// Waits until `GET /endpoints?status=passing` lists at least `expected` endpoints.
fn wait_passing(client: &mut Client, api: SocketAddr, expected: usize, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let response = client
            .send_retry(&http::get(api, "/endpoints?status=passing"), true)
            .map_err(|e| format!("GET /endpoints?status=passing: {e}"))?;
        let listed: Vec<Value> =
            serde_json::from_slice(&response.body).map_err(|e| format!("GET /endpoints?status=passing: {e}"))?;
        if listed.len() >= expected {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("only {} of {expected} endpoints passing after {}", listed.len(), human(limit)));
        }
        sleep(Duration::from_millis(100));
    }
}

/// The `Status` of one endpoint, or `None` when it is not registered.
fn status_of(client: &mut Client, api: SocketAddr, name: &str) -> Result<Option<String>, String> {
    let response = client
        .send_retry(&http::get(api, &format!("/endpoints/{name}")), true)
        .map_err(|e| format!("GET /endpoints/{name}: {e}"))?;
    match response.status {
        404 => Ok(None),
        200 => {
            let record: Value =
                serde_json::from_slice(&response.body).map_err(|e| format!("GET /endpoints/{name}: {e}"))?;
            Ok(Some(record["Status"].as_str().unwrap_or_default().to_string()))
        }
        status => Err(format!("GET /endpoints/{name} answered {status}")),
    }
}

/// Calls `done` every `every` until it says yes (returning when) or `limit` passes (`None`).
fn poll_until(
    limit: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<bool, String>,
) -> Result<Option<Instant>, String> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(Some(Instant::now()));
        }
        if start.elapsed() > limit {
            return Ok(None);
        }
        sleep(every);
    }
}

/// Median of detection time ÷ the time the schedule allowed, over the kills where both are known.
fn ratio(kills: &[Kill]) -> Option<f64> {
    let ratios: Vec<f64> = kills
        .iter()
        .filter_map(|k| {
            let (expected, detected) = (k.expected?.as_secs_f64(), k.detected?.as_secs_f64());
            (expected > 0.0).then_some(detected / expected)
        })
        .collect();
    median_f64(&ratios)
}

/// nginx's loads: files of the same bytes as `GET /endpoints` and as `GET /`, and a tiny one.
struct Nginx {
    same: Load,
    page: Load,
    tiny: Load,
}

/// What [`read_every_second`] saw.
struct Reads {
    /// The most RSS sampled, after each second's reads.
    most: u64,
    reads: usize,
    /// Body sizes of the last `GET /endpoints` and `GET /`.
    listing: usize,
    page: usize,
}

/// `GET /endpoints` (API listener) and `GET /` (UI listener), each once a second for `window`.
fn read_every_second(registry: &Registry, window: Duration) -> Result<Reads, String> {
    let mut api = Client::new(registry.api, REQUEST_TIMEOUT);
    let mut ui = Client::new(registry.ui, REQUEST_TIMEOUT);
    let start = Instant::now();
    let mut reads = Reads { most: 0, reads: 0, listing: 0, page: 0 };
    for second in 1..=window.as_secs() as u32 {
        reads.listing = api
            .send_retry(&http::get(registry.api, "/endpoints"), false)
            .map_err(|e| format!("GET /endpoints: {e}"))?
            .body_len;
        reads.page = ui.send_retry(&http::get(registry.ui, "/"), false).map_err(|e| format!("GET /: {e}"))?.body_len;
        reads.reads += 2;
        reads.most = reads.most.max(procs::memory(registry.pid())?.rss);
        let next = start + Duration::from_secs(second.into());
        sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(reads)
}

/// A memory row's value and verdict: RSS at most `limit` bytes passes. Memory that could not
/// be read (the registry has exited) is a miss, never a pass.
fn rss_figure(
    memory: Result<procs::Memory, String>,
    limit: u64,
    describe: impl FnOnce(&procs::Memory) -> String,
) -> (String, Verdict) {
    match memory {
        Ok(m) => (describe(&m), Verdict::of(m.rss <= limit)),
        Err(e) => (format!("not measured: {e}"), Verdict::Miss),
    }
}

fn median_f64(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    bench::stats::percentile(&sorted, 50.0)
}

/// The registry's caps in a manifest's args (`- -max-...=N`, `- -check-...=N`): the flags
/// that bound its memory, to start a registry as deployed.
fn manifest_flags(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|f| f.starts_with("-max-") || f.starts_with("-check-"))
        .map(|f| f.trim().to_string())
        .collect()
}

/// The `limits: memory` of a Kubernetes manifest, as written and in bytes (`Mi`, `Gi`, `M`
/// or plain bytes); the first container's.
fn manifest_memory_limit(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().map(str::trim).skip_while(|l| *l != "limits:");
    let value = lines.find_map(|l| l.strip_prefix("memory:"))?.trim().to_string();
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let scale = match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "M" => 1_000_000,
        "" => 1,
        _ => return None,
    };
    Some((value.clone(), number.parse::<u64>().ok()? * scale))
}

/// Whether an ELF file has no program interpreter (a static binary); `None` if not ELF64.
fn static_elf(path: &Path) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(bytes.get(0x20..0x28)?.try_into().ok()?) as usize;
    let (entsize, count) = (u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    const PT_INTERP: u32 = 3;
    let has_interp = (0..count).any(|i| {
        let o = phoff + i * entsize;
        bytes.get(o..o + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes) == Some(PT_INTERP)
    });
    Some(!has_interp)
}

/// The size of `name:version` and when it was built (Unix seconds), as podman (or docker)
/// reports them; `None` when neither has it.
fn image_size(name: &str, version: &str) -> Option<(u64, u64)> {
    for engine in ["podman", "docker"] {
        let mut command = Command::new(engine);
        command.args(["image", "inspect", "--format", "{{.Size}} {{.Created.Unix}}", &format!("{name}:{version}")]);
        if engine == "podman" && std::env::var_os("CONTAINERS_CONF").is_none() {
            let conf = PathBuf::from("scripts/containers.conf");
            if conf.is_file() {
                command.env("CONTAINERS_CONF", conf);
            }
        }
        let answer = procs::output(engine, &mut command, Duration::from_secs(30)).unwrap_or_default();
        let mut words = answer.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(bytes)), Some(Ok(created))) = (words.next(), words.next()) {
            return Some((bytes, created));
        }
    }
    None
}

/// Waits, at most 60 s, until nothing registered is pending or critical, asking with filters
/// that match nothing once all pass: the whole listing is never rendered, so the wait reads
/// nothing that would count in the registry's memory.
fn wait_all_passing(client: &mut Client, api: SocketAddr, what: &str) -> Result<(), String> {
    wait_all_passing_within(client, api, what, Duration::from_secs(60)).map(drop)
}

/// [`wait_all_passing`], at most `limit`; returns how long it waited.
pub(crate) fn wait_all_passing_within(
    client: &mut Client,
    api: SocketAddr,
    what: &str,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let settled = poll_until(limit, Duration::from_millis(100), || {
        let mut empty = true;
        for path in ["/endpoints?status=pending", "/endpoints?status=critical"] {
            let response = client.send_retry(&http::get(api, path), true).map_err(|e| format!("GET {path}: {e}"))?;
            empty &= response.body.trim_ascii() == b"[]";
        }
        Ok(empty)
    })?;
    settled.map(|_| start.elapsed()).ok_or_else(|| format!("{what} were not all passing within {}", human(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_memory_limit_is_read() {
        let dir = std::env::temp_dir().join(format!("bench-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.yaml");
        std::fs::write(
            &path,
            "resources:\n  requests:\n    memory: 10Mi\n  limits:\n    cpu: 250m\n    memory: 24Mi\n",
        )
        .unwrap();
        assert_eq!(manifest_memory_limit(&path), Some(("24Mi".into(), 24 << 20)));
        std::fs::write(&path, "limits:\n  memory: lots\n").unwrap();
        assert_eq!(manifest_memory_limit(&path), None);
        std::fs::write(
            &path,
            "args:\n  - -api=0.0.0.0:1\n  # note\n  - -max-endpoints=8000\n  - -check-concurrency=256\n",
        )
        .unwrap();
        assert_eq!(manifest_flags(&path), ["-max-endpoints=8000", "-check-concurrency=256"]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(manifest_memory_limit(Path::new("../deployments/service-registry.yaml")).is_some());
    }

    #[test]
    fn memory_that_cannot_be_read_misses_its_target() {
        // A registry that has exited: no /proc/PID/status. It used to read as 0 bytes, a pass.
        let (value, verdict) = rss_figure(procs::memory(i32::MAX), 2 << 20, |m| size(m.rss));
        assert_eq!(verdict, Verdict::Miss);
        assert!(value.starts_with("not measured: cannot read /proc/"), "{value}");
        let small = procs::Memory { rss: 1 << 20, peak: 1 << 20 };
        assert_eq!(rss_figure(Ok(small), 2 << 20, |m| size(m.rss)), ("1.00 MiB".to_string(), Verdict::Pass));
        let large = procs::Memory { rss: 3 << 20, peak: 3 << 20 };
        assert_eq!(rss_figure(Ok(large), 2 << 20, |m| size(m.rss)).1, Verdict::Miss);
    }
}
