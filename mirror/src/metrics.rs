//! What the mirror counts, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub slices_written: AtomicU64,
    pub slices_deleted: AtomicU64,
    pub conflicts: AtomicU64,
    pub errors: AtomicU64,
    pub syncs: AtomicU64,
    /// From the registry's answer to the last slice written for it, in microseconds.
    pub last_lag_micros: AtomicU64,
    /// When the last sync completed, in milliseconds after the mirror started (0: none yet),
    /// for `/healthz`: the monotonic clock, so a step of the wall clock changes nothing.
    pub last_sync_ms: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let counters = [
            ("endpointslice_mirror_slices_written_total", "EndpointSlices created or updated.", &self.slices_written),
            ("endpointslice_mirror_slices_deleted_total", "EndpointSlices deleted.", &self.slices_deleted),
            (
                "endpointslice_mirror_conflicts_total",
                "Writes refused for a stale resourceVersion (retried).",
                &self.conflicts,
            ),
            ("endpointslice_mirror_errors_total", "Failed calls to the registry or the Kubernetes API.", &self.errors),
            ("endpointslice_mirror_syncs_total", "Completed passes over every opted-in Service.", &self.syncs),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        }
        let lag = self.last_lag_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP endpointslice_mirror_lag_seconds From the registry's answer to its slices written, last sync.\n\
             # TYPE endpointslice_mirror_lag_seconds gauge\nendpointslice_mirror_lag_seconds {lag}"
        );
        out
    }
}
