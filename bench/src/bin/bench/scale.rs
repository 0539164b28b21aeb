//! `bench --scale`: 100,000 live endpoints, checked at the default interval and timeout for
//! [`WINDOW`] while `GET /endpoints` and the page are each read once a second.
//!
//! One process may hold at most the hard open-file limit (20,000 here), so the endpoints are
//! spread over [`FLEETS`] fleet processes, each listening on a loopback address of its own
//! (127.0.0.2 ... 127.0.0.7: ports are per address, so each has the whole ephemeral range). The
//! fleets listen on ports below the kernel's ephemeral range ([`procs::below_ephemeral_ports`]), all six on the
//! same ones: a port a listener holds, on any address, is one `connect` cannot take as its
//! source port, and with the fleets in the ephemeral range the kernel's search for a free one
//! cost the registry about 340 µs of CPU per probe (the first run of this measurement). The
//! registry needs descriptors only for its probes in flight (`-check-concurrency`, 1,024 by
//! default) and its connections.
//!
//! Figures, each against its target: the longest gap between two probes of one endpoint
//! (≤ interval + 1%), the registry's CPU over the window (≤ 0.5 core), critical records (none:
//! every endpoint is live), and the registry's peak RSS (VmHWM) under the reads (≤ 64 MiB).

use crate::measure::{register, wait_all_passing_within};
use crate::procs::{self, Fleet, Registry};
use crate::report::{self, Report, Verdict};
use crate::Options;
use bench::http::{self, Client};
use bench::stats::{human, size, thousands};
use common::duration;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Live endpoints, all registered.
const ENDPOINTS: usize = 100_000;
/// Fleet processes, one loopback address each: 16,667 listeners apiece, under 20,000 files.
const FLEETS: usize = 6;
/// The registry's defaults, given explicitly.
const INTERVAL: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long the checks are watched while the listing and the page are read.
const WINDOW: Duration = Duration::from_secs(60);
/// Descriptors a fleet needs beyond its listeners: probes being answered, stdin and the rest.
const FLEET_SPARE: usize = 1_500;
/// Targets.
const CPU_TARGET: f64 = 0.5;
const RSS_TARGET: u64 = 64 << 20;
/// One request of the driver's; a 100,000-record listing takes far less than this to render.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds of the setup: registering and the first check of every endpoint.
const REGISTER_LIMIT: Duration = Duration::from_secs(120);
const PASSING_LIMIT: Duration = Duration::from_secs(90);

/// Sections of the table.
const SETUP: u8 = 1;
const CHECKS: u8 = 2;
const MEMORY: u8 = 3;

/// The loopback address of fleet `i`: 127.0.0.2 onwards (127.0.0.1 is left to the registry's
/// own listeners and the probes' source ports).
fn fleet_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + i as u8)
}

/// How many endpoints fleet `i` of `fleets` holds: `total` spread as evenly as it goes.
fn share(total: usize, fleets: usize, i: usize) -> usize {
    total / fleets + usize::from(i < total % fleets)
}

/// The figures of the fleets' `stats`, over all of them.
#[derive(Debug, Default, PartialEq)]
struct Probes {
    live: u64,
    probed: u64,
    probes: u64,
    /// The longest gap between two probes of one endpoint, in any fleet.
    max_gap_ms: f64,
    /// The longest any live endpoint had gone unprobed when asked.
    max_stale_ms: f64,
    /// The highest of the fleets' 99th percentiles and medians of the per-endpoint longest gap.
    p99_gap_ms: f64,
    p50_gap_ms: f64,
    window_ms: f64,
}

impl Probes {
    fn add(&mut self, stats: &Value) {
        let f = |k: &str| stats[k].as_f64().unwrap_or(0.0);
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        self.live += n("live");
        self.probed += n("probed");
        self.probes += n("probes");
        self.max_gap_ms = self.max_gap_ms.max(f("max_gap_ms"));
        self.max_stale_ms = self.max_stale_ms.max(f("max_stale_ms"));
        self.p99_gap_ms = self.p99_gap_ms.max(f("p99_gap_ms"));
        self.p50_gap_ms = self.p50_gap_ms.max(f("p50_gap_ms"));
        self.window_ms = self.window_ms.max(f("window_ms"));
    }

    /// The round as the target reads it: the longest gap, or a longer wait still running.
    fn round(&self) -> Duration {
        Duration::from_secs_f64(self.max_gap_ms.max(self.max_stale_ms) / 1000.0)
    }
}

/// A counter or gauge of the registry's `/metrics`, by its full name with labels.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics(client: &mut Client, addr: SocketAddr) -> Result<String, String> {
    let response = client.send_retry(&http::get(addr, "/metrics"), true).map_err(|e| format!("GET /metrics: {e}"))?;
    if response.status != 200 {
        return Err(format!("GET /metrics answered {}", response.status));
    }
    Ok(String::from_utf8_lossy(&response.body).into_owned())
}

/// Probes the registry has made, passed and failed, by its `/metrics`.
fn probe_count(text: &str) -> f64 {
    ["pass", "fail"]
        .iter()
        .filter_map(|r| metric(text, &format!("service_registry_probes_total{{result=\"{r}\"}}")))
        .sum()
}

/// The names `GET /endpoints?status=critical` lists now.
fn criticals(client: &mut Client, api: SocketAddr) -> Result<Vec<String>, String> {
    let path = "/endpoints?status=critical";
    let response = client.send_retry(&http::get(api, path), true).map_err(|e| format!("GET {path}: {e}"))?;
    if response.body.trim_ascii() == b"[]" {
        return Ok(Vec::new());
    }
    let listed: Vec<Value> = serde_json::from_slice(&response.body).map_err(|e| format!("GET {path}: {e}"))?;
    Ok(listed.iter().map(|r| r["Name"].as_str().unwrap_or_default().to_string()).collect())
}

/// Runs the scale measurement; returns the report.
pub fn run(options: &Options, tmp: &Path) -> Result<String, String> {
    let started = Instant::now();
    let per_fleet = share(ENDPOINTS, FLEETS, 0);
    let nofile = bench::sys::raise_nofile().map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if nofile < (per_fleet + FLEET_SPARE) as u64 {
        return Err(format!(
            "the open-file limit is {nofile}: each of the {FLEETS} fleets needs {} (run under `ulimit -n 20000`)",
            per_fleet + FLEET_SPARE
        ));
    }
    let mut report = Report::default();

    // The fleets: FLEETS processes, one loopback address each, all on the same ports.
    let ports = procs::below_ephemeral_ports();
    let mut fleets = Vec::with_capacity(FLEETS);
    let mut addresses: Vec<(Ipv4Addr, u16)> = Vec::with_capacity(ENDPOINTS);
    for i in 0..FLEETS {
        let ip = fleet_ip(i);
        let count = share(ENDPOINTS, FLEETS, i);
        eprintln!("bench: fleet {}: opening {count} live endpoints on {ip}, ports {}-{}", i + 1, ports.0, ports.1);
        let mut fleet = Fleet::start_at(&options.fleet, &tmp.join(format!("fleet-{ip}.log")), Some(ip), ports)?;
        addresses.extend(fleet.endpoints("live", count)?.into_iter().map(|port| (ip, port)));
        fleets.push(fleet);
    }

    let flags = vec![
        format!("-max-endpoints={ENDPOINTS}"),
        format!("-check-interval={}", duration::format(INTERVAL)),
        format!("-check-timeout={}", duration::format(TIMEOUT)),
    ];
    let registry = Registry::start(&options.registry, &flags, &tmp.join("registry-scale.log"))?;
    let mut client = Client::new(registry.api, REQUEST_TIMEOUT);

    // Registration, one keep-alive connection; each new Name is probed at once.
    eprintln!("bench: registering {} Names", thousands(ENDPOINTS as f64));
    let register_start = Instant::now();
    for (i, (ip, port)) in addresses.iter().enumerate() {
        register(&mut client, registry.api, &bench::registration_at("scale-", i, *ip, *port))?;
        if register_start.elapsed() > REGISTER_LIMIT {
            return Err(format!("only {i} Names registered in {}", human(REGISTER_LIMIT)));
        }
    }
    let registering = register_start.elapsed();
    let what = format!("the {} endpoints", thousands(ENDPOINTS as f64));
    let settling = wait_all_passing_within(&mut client, registry.api, &what, PASSING_LIMIT)?;
    report.row(
        SETUP,
        "registration of 100,000 Names over one keep-alive connection, then all passing",
        format!(
            "registered in {} ({} req/s); all passing {} later (filtered reads ?status=pending and ?status=critical \
             answering [])",
            human(registering),
            thousands(ENDPOINTS as f64 / registering.as_secs_f64()),
            human(settling)
        ),
        "",
        "",
        Verdict::Info,
    );

    // One interval of checks alone, no reads: the checker's own CPU.
    eprintln!("bench: one interval of checks, no reads");
    let quiet_probes_before = probe_count(&metrics(&mut client, registry.api)?);
    let quiet_cpu_before = procs::cpu_time(registry.pid());
    let quiet_start = Instant::now();
    sleep(INTERVAL);
    let quiet_cpu = procs::cpu_time(registry.pid()).saturating_sub(quiet_cpu_before);
    let quiet_wall = quiet_start.elapsed();
    let quiet_probes = probe_count(&metrics(&mut client, registry.api)?) - quiet_probes_before;
    let quiet_share = quiet_cpu.as_secs_f64() / quiet_wall.as_secs_f64();
    let quiet_per_probe = quiet_cpu.as_secs_f64() * 1e6 / quiet_probes.max(1.0);
    let before_reads = procs::memory(registry.pid())?;

    // The window: checks at the default interval; the listing, the page and the critical
    // records read once a second each.
    eprintln!("bench: {} s of checks while GET /endpoints and GET / are read every second", WINDOW.as_secs());
    let mut ui = Client::new(registry.ui, REQUEST_TIMEOUT);
    let metrics_before = metrics(&mut client, registry.api)?;
    for fleet in &mut fleets {
        fleet.reset()?;
    }
    let cpu_before = procs::cpu_time(registry.pid());
    let busy_before = procs::machine_busy();
    let steal_before = procs::machine_steal();
    let fleets_cpu_before: Duration = fleets.iter().map(|f| procs::cpu_time(f.pid())).sum();
    let start = Instant::now();
    let (mut listing, mut page, mut reads, mut slowest_read) = (0, 0, 0u32, Duration::ZERO);
    let mut critical_seen: BTreeSet<String> = BTreeSet::new();
    let mut most_rss = 0;
    for second in 1..=WINDOW.as_secs() as u32 {
        let read = Instant::now();
        listing = client
            .send_retry(&http::get(registry.api, "/endpoints"), false)
            .map_err(|e| format!("GET /endpoints: {e}"))?
            .body_len;
        page = ui.send_retry(&http::get(registry.ui, "/"), false).map_err(|e| format!("GET /: {e}"))?.body_len;
        slowest_read = slowest_read.max(read.elapsed());
        reads += 2;
        critical_seen.extend(criticals(&mut client, registry.api)?);
        most_rss = most_rss.max(procs::memory(registry.pid())?.rss);
        let next = start + Duration::from_secs(second.into());
        sleep(next.saturating_duration_since(Instant::now()));
    }
    let mut probes = Probes::default();
    for fleet in &mut fleets {
        probes.add(&fleet.stats()?);
    }
    let wall = start.elapsed();
    let cpu = procs::cpu_time(registry.pid()).saturating_sub(cpu_before);
    let fleets_cpu =
        fleets.iter().map(|f| procs::cpu_time(f.pid())).sum::<Duration>().saturating_sub(fleets_cpu_before);
    let busy = procs::machine_busy().saturating_sub(busy_before);
    let stolen = procs::machine_steal().saturating_sub(steal_before);
    let memory = procs::memory(registry.pid());
    let metrics_after = metrics(&mut client, registry.api)?;
    critical_seen.extend(criticals(&mut client, registry.api)?);
    let failed_probes = metric(&metrics_after, "service_registry_probes_total{result=\"fail\"}").unwrap_or(0.0)
        - metric(&metrics_before, "service_registry_probes_total{result=\"fail\"}").unwrap_or(0.0);
    let critical_gauge = metric(&metrics_after, "service_registry_endpoints{status=\"critical\"}");
    let passing_gauge = metric(&metrics_after, "service_registry_endpoints{status=\"passing\"}");

    // The rows.
    let round = probes.round();
    let round_target = INTERVAL + INTERVAL / 100;
    let all_probed = probes.probed == ENDPOINTS as u64 && probes.live == ENDPOINTS as u64;
    report.row(
        CHECKS,
        "health-check round, 100,000 live endpoints (6 fleets on 127.0.0.2-7), default -check-interval=5s \
         -check-timeout=2s, 60 s, listing and page each read every second",
        format!(
            "{} (longest gap between two probes of one endpoint, or longest unprobed at the end; p99 endpoint {}, \
             median {}); {} of {} live endpoints probed; {} probes/s over {}",
            human(round),
            human(Duration::from_secs_f64(probes.p99_gap_ms / 1000.0)),
            human(Duration::from_secs_f64(probes.p50_gap_ms / 1000.0)),
            thousands(probes.probed as f64),
            thousands(probes.live as f64),
            thousands(probes.probes as f64 / wall.as_secs_f64()),
            human(wall)
        ),
        "≤ 5.05 s (one interval +1%), every endpoint probed",
        "",
        Verdict::of(round <= round_target && all_probed),
    );
    let cpu_share = cpu.as_secs_f64() / wall.as_secs_f64();
    report.row(
        CHECKS,
        "registry CPU over the 60 s (checks and the reads)",
        format!(
            "{:.2} core ({:.1}% of one core; {:.1} µs per probe, reads included); checks alone, one interval before \
             the reads: {:.2} core, {} probes/s, {:.1} µs per probe, so {} probes/s fit in 0.5 core where 100,000 \
             every 5 s is 20,000/s",
            cpu_share,
            cpu_share * 100.0,
            cpu.as_secs_f64() * 1e6 / probes.probes.max(1) as f64,
            quiet_share,
            thousands(quiet_probes / quiet_wall.as_secs_f64()),
            quiet_per_probe,
            thousands(CPU_TARGET * 1e6 / quiet_per_probe.max(1e-3))
        ),
        "≤ 0.5 core",
        "",
        Verdict::of(cpu_share <= CPU_TARGET),
    );
    let criticals_text = match critical_gauge {
        Some(gauge) => format!(
            "{} distinct records seen critical (?status=critical read every second and at the end); \
             /metrics at the end: {gauge:.0} critical, {} passing; {failed_probes:.0} failed probes in the window",
            critical_seen.len(),
            thousands(passing_gauge.unwrap_or(0.0))
        ),
        None => format!(
            "{} distinct records seen critical (?status=critical read every second and at the end); \
             no critical gauge in /metrics",
            critical_seen.len()
        ),
    };
    let no_criticals = critical_seen.is_empty() && critical_gauge.unwrap_or(0.0) == 0.0;
    report.row(CHECKS, "false criticals (every endpoint is live)", criticals_text, "0", "", Verdict::of(no_criticals));
    let (value, verdict) = match memory {
        Ok(m) => (
            format!(
                "peak (VmHWM) {} (before the first read: {}, peak {}), most sampled {}, {} at the end; {reads} reads \
                 of {} KB (JSON) and {} KB (page), slowest pair {}",
                size(m.peak),
                size(before_reads.rss),
                size(before_reads.peak),
                size(most_rss.max(m.rss)),
                size(m.rss),
                listing / 1000,
                page / 1000,
                human(slowest_read)
            ),
            Verdict::of(m.peak <= RSS_TARGET),
        ),
        Err(e) => (format!("not measured: {e}"), Verdict::Miss),
    };
    report.row(
        MEMORY,
        "registry RSS, 100,000 endpoints checked every 5 s, JSON and page each read every second, 60 s",
        value,
        "peak ≤ 64 MiB",
        "",
        verdict,
    );
    let share = |d: Duration| d.as_secs_f64() / wall.as_secs_f64() * 100.0;
    report.note(format!(
        "CPU over the window, in % of one core (200% = both cores): registry {:.0}%, the {FLEETS} fleets {:.0}%, \
         everything else on the machine {:.0}%, stolen by the hypervisor {:.0}%",
        share(cpu),
        share(fleets_cpu),
        share(busy.saturating_sub(stolen).saturating_sub(cpu).saturating_sub(fleets_cpu)),
        share(stolen)
    ));
    let ephemeral = bench::sys::ephemeral_ports();
    report.note(format!(
        "the fleets listened on ports {}-{}, below the ephemeral range ({}-{}), which stays whole for the registry's \
         probes' source ports",
        ports.0, ports.1, ephemeral.0, ephemeral.1
    ));
    report.note(format!(
        "the registry ran with {}; its open-file limit was the driver's ({nofile}); probes in flight are capped by \
         -check-concurrency (default 1,024)",
        flags.join(" ")
    ));
    drop(registry);
    drop(fleets);

    let driver: Vec<String> = std::env::args().skip(1).collect();
    let header = vec![
        report::machine(),
        format!("date: {}", report::now_utc()),
        format!(
            "command: `scripts/bench.sh --scale` (driver: `bench {}`), run time {:.0} s",
            driver.join(" "),
            started.elapsed().as_secs_f64()
        ),
        format!("measured: {}, all traffic on loopback", options.registry.display()),
    ];
    Ok(report.render("dynamic-ports benchmark: scale run", &header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_are_spread_over_the_fleets_within_the_file_limit() {
        let shares: Vec<usize> = (0..FLEETS).map(|i| share(ENDPOINTS, FLEETS, i)).collect();
        assert_eq!(shares.iter().sum::<usize>(), ENDPOINTS);
        assert!(shares.iter().all(|&n| n + FLEET_SPARE <= 20_000), "{shares:?}");
        assert_eq!(fleet_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(fleet_ip(FLEETS - 1), Ipv4Addr::new(127, 0, 0, 7));
        assert!(usize::from(procs::PORT_SPAN) > share(ENDPOINTS, FLEETS, 0));
    }

    #[test]
    fn metrics_and_fleet_stats_are_read() {
        let text = "# HELP x\nservice_registry_endpoints{status=\"critical\"} 3\n\
                    service_registry_probes_total{result=\"fail\"} 12\n";
        assert_eq!(metric(text, "service_registry_endpoints{status=\"critical\"}"), Some(3.0));
        assert_eq!(metric(text, "service_registry_probes_total{result=\"fail\"}"), Some(12.0));
        assert_eq!(metric(text, "service_registry_endpoints{status=\"passing\"}"), None);
        assert_eq!(probe_count(text), 12.0);
        let mut probes = Probes::default();
        probes.add(
            &serde_json::json!({"live": 2, "probed": 2, "probes": 30, "max_gap_ms": 5001.5, "max_stale_ms": 10.0}),
        );
        probes.add(
            &serde_json::json!({"live": 3, "probed": 2, "probes": 40, "max_gap_ms": 4999.0, "max_stale_ms": 6000.0}),
        );
        assert_eq!((probes.live, probes.probed, probes.probes), (5, 4, 70));
        assert_eq!(probes.round(), Duration::from_secs(6));
    }
}
