//! The registry's metrics in the Prometheus text format: counters kept in atomics on the hot
//! paths, rendered on demand. Label values are fixed sets (routes, codes, results), so the
//! number of series cannot grow with what clients send.

use crate::route::{Listener, Route};
use common::wire::Status;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the probe-duration histogram, in seconds: loopback answers in well under a
/// millisecond, a hung endpoint takes the whole timeout (2 s by default).
const PROBE_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 2.5];

/// A histogram of durations with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// Count of observations at or under each bound, not cumulative (made so when rendered).
    buckets: [AtomicU64; PROBE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = PROBE_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (bound, count) in PROBE_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the registry counts.
pub struct Metrics {
    started: SystemTime,
    pub registrations: AtomicU64,
    pub deregistrations: AtomicU64,
    pub removals: AtomicU64,
    /// Endpoints removed because their lease ran out.
    pub lease_expiries: AtomicU64,
    pub probes_passed: AtomicU64,
    pub probes_failed: AtomicU64,
    pub probe_duration: Histogram,
    /// Blocking queries waiting now.
    pub waiters: AtomicU64,
    /// Requests answered by listener, route and code: plain atomics, since every request
    /// counts and a shared map under a mutex was contended by every connection thread.
    requests: [[[AtomicU64; CODES.len()]; Route::ALL.len()]; Listener::ALL.len()],
}

/// The status codes the registry's handlers answer with; anything else is counted as "other".
/// (tiny_http answers 408, 413, 417, 431, 505 and the connection cap's 503 before a request
/// reaches a handler, so those are not counted here.)
const CODES: [u16; 10] = [200, 400, 401, 403, 404, 405, 413, 429, 503, 0];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: SystemTime::now(),
            registrations: AtomicU64::new(0),
            deregistrations: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            lease_expiries: AtomicU64::new(0),
            probes_passed: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            probe_duration: Histogram::default(),
            waiters: AtomicU64::new(0),
            requests: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, listener: Listener, route: Route, code: u16) {
        let c = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len() - 1);
        self.requests[listener.index()][route.index()][c].fetch_add(1, Relaxed);
    }

    /// Counts one probe.
    pub fn probe(&self, passed: bool, took: Duration) {
        if passed { &self.probes_passed } else { &self.probes_failed }.fetch_add(1, Relaxed);
        self.probe_duration.observe(took);
    }

    /// Renders every metric; `by_status` is the current endpoint count per status.
    pub fn render(&self, by_status: [usize; 3]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP service_registry_endpoints Endpoints registered, by health status.\n# TYPE service_registry_endpoints gauge"
        );
        for (status, count) in Status::ALL.iter().zip(by_status) {
            let _ = writeln!(out, "service_registry_endpoints{{status=\"{status}\"}} {count}");
        }
        let counters = [
            (
                "service_registry_registrations_total",
                "Successful POST /register calls, renewals included.",
                &self.registrations,
            ),
            (
                "service_registry_deregistrations_total",
                "Endpoints removed by POST /deregister or DELETE.",
                &self.deregistrations,
            ),
            ("service_registry_removals_total", "Endpoints removed after staying critical too long.", &self.removals),
            (
                "service_registry_lease_expiries_total",
                "Endpoints removed because they were not registered again within their TTL.",
                &self.lease_expiries,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP service_registry_probes_total Health probes, by result.\n# TYPE service_registry_probes_total counter");
        let _ = writeln!(out, "service_registry_probes_total{{result=\"pass\"}} {}", self.probes_passed.load(Relaxed));
        let _ = writeln!(out, "service_registry_probes_total{{result=\"fail\"}} {}", self.probes_failed.load(Relaxed));
        let _ = writeln!(out, "# HELP service_registry_probe_duration_seconds Time one health probe took.\n# TYPE service_registry_probe_duration_seconds histogram");
        self.probe_duration.render(&mut out, "service_registry_probe_duration_seconds");
        let _ = writeln!(out, "# HELP service_registry_http_requests_total HTTP requests answered, by listener, route and status code.\n# TYPE service_registry_http_requests_total counter");
        for (listener, routes) in Listener::ALL.iter().zip(&self.requests) {
            let listener = listener.as_str();
            for (route, codes) in Route::ALL.iter().zip(routes) {
                let route = route.label();
                for (code, count) in CODES.iter().zip(codes) {
                    let count = count.load(Relaxed);
                    if count > 0 {
                        let code = if *code == 0 { "other".to_string() } else { code.to_string() };
                        let _ = writeln!(
                            out,
                            "service_registry_http_requests_total{{listener=\"{listener}\",route=\"{route}\",code=\"{code}\"}} {count}"
                        );
                    }
                }
            }
        }
        let _ = writeln!(out, "# HELP service_registry_watchers Blocking queries waiting for a change.\n# TYPE service_registry_watchers gauge\nservice_registry_watchers {}", self.waiters.load(Relaxed));
        let start = self.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start:.3}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.registrations.fetch_add(3, Relaxed);
        m.probe(true, Duration::from_micros(300));
        m.probe(false, Duration::from_millis(2000));
        m.request(Listener::Api, Route::Register, 200);
        m.request(Listener::Api, Route::Register, 200);
        m.request(Listener::Ui, Route::Page, 200);
        m.request(Listener::Ui, Route::OneEndpoint, 404);
        let text = m.render([2, 1, 0]);
        for line in [
            "service_registry_endpoints{status=\"passing\"} 2",
            "service_registry_endpoints{status=\"pending\"} 1",
            "service_registry_registrations_total 3",
            "service_registry_probes_total{result=\"pass\"} 1",
            "service_registry_probes_total{result=\"fail\"} 1",
            "service_registry_probe_duration_seconds_bucket{le=\"0.0005\"} 1",
            "service_registry_probe_duration_seconds_bucket{le=\"1\"} 1",
            "service_registry_probe_duration_seconds_bucket{le=\"2.5\"} 2",
            "service_registry_probe_duration_seconds_bucket{le=\"+Inf\"} 2",
            "service_registry_probe_duration_seconds_count 2",
            "service_registry_http_requests_total{listener=\"api\",route=\"/register\",code=\"200\"} 2",
            "service_registry_http_requests_total{listener=\"ui\",route=\"/endpoints/NAME\",code=\"404\"} 1",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
