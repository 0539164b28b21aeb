//! The table: one row per figure, with its target, the Go original's figure and a verdict;
//! a header saying what machine it ran on; notes below.

use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a figure meets its target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Pass,
    Miss,
    /// No target: a figure for context.
    Info,
}

impl Verdict {
    pub fn of(pass: bool) -> Verdict {
        if pass {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
}

pub struct Row {
    /// Rows are printed by section (registration, reads, memory, checks, server, sizes),
    /// whatever order they were measured in.
    pub section: u8,
    pub metric: String,
    pub value: String,
    pub target: String,
    pub go: String,
    pub verdict: Verdict,
}

/// The report being built.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, section: u8, metric: &str, value: String, target: &str, go: &str, verdict: Verdict) {
        eprintln!("bench: {metric}: {value}");
        let row = Row { section, metric: metric.into(), value, target: target.into(), go: go.into(), verdict };
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The whole markdown under `title`: header, table, notes.
    pub fn render(&self, title: &str, header: &[String]) -> String {
        let mut out = format!("## {title}\n\n");
        for line in header {
            out += &format!("- {line}\n");
        }
        out += "\n| metric | value | target | Go reference | result |\n|---|---|---|---|---|\n";
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| r.section);
        for r in rows {
            let verdict = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Miss => "**miss**",
                Verdict::Info => "",
            };
            out += &format!("| {} | {} | {} | {} | {} |\n", r.metric, r.value, r.target, r.go, verdict);
        }
        let (pass, miss) = self.rows.iter().fold((0, 0), |(p, m), r| match r.verdict {
            Verdict::Pass => (p + 1, m),
            Verdict::Miss => (p, m + 1),
            Verdict::Info => (p, m),
        });
        out += &format!("\n{pass} targets met, {miss} missed.\n");
        if !self.notes.is_empty() {
            out += "\nNotes:\n";
            for n in &self.notes {
                if n.starts_with("  - ") {
                    out += &format!("{n}\n");
                } else {
                    out += &format!("- {n}\n");
                }
            }
        }
        out
    }
}

/// The machine, as the header states it: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    format!(
        "machine: {cores} cores (nproc), {model}, {:.1} GiB RAM, Linux {} ({os})",
        mem_kib as f64 / 1048576.0,
        kernel.trim()
    )
}

/// Now, in UTC, as `2026-05-01 12:34 UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86400);
    let t = secs % 86400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", t / 3600, t / 60 % 60)
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }
}
