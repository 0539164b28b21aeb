//! The process's open-file limit, and what of it the checker may keep for idle connections.
//! Every kept connection holds a descriptor until the endpoint's next check; kept past the
//! limit, they would leave a new probe or a client's connection without one (`EMFILE`), and a
//! probe that cannot open a socket fails an endpoint that did nothing wrong.

use std::fs;

/// Descriptors the registry needs besides its probes and connections: listeners, the poll,
/// the waker, the log, and room to spare.
const SPARE: usize = 64;

/// The soft limit on open files, from `/proc/self/limits`; `None` where it cannot be read or
/// is unlimited.
pub fn open_file_limit() -> Option<usize> {
    soft_limit(&fs::read_to_string("/proc/self/limits").ok()?)
}

fn soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// How many idle connections the checker may keep: `wanted`, unless the limit leaves less
/// once every probe in flight and every client connection (two listeners) has its descriptor.
pub fn keep_alive_within(limit: Option<usize>, wanted: usize, in_flight: usize, connections: usize) -> usize {
    match limit {
        Some(limit) => wanted.min(limit.saturating_sub(in_flight + 2 * connections + SPARE)),
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            4096                 20000                files     \n";
        assert_eq!(soft_limit(limits), Some(4096));
        assert_eq!(soft_limit("Max open files            unlimited            unlimited            files"), None);
        assert!(open_file_limit().is_some_and(|n| n > 0), "this process's own limit is read");
    }

    #[test]
    fn keeps_what_the_limit_leaves() {
        assert_eq!(keep_alive_within(Some(4096), 1024, 1024, 512), 1024);
        assert_eq!(keep_alive_within(Some(4096), 10_000, 1024, 512), 4096 - 1024 - 1024 - SPARE);
        assert_eq!(keep_alive_within(Some(1024), 1024, 1024, 512), 0, "nothing left: nothing kept");
        assert_eq!(keep_alive_within(None, 10_000, 1024, 512), 10_000);
    }
}
