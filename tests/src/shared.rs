//! Test helpers that need nothing but `std`, shared by the tests of every crate in the
//! workspace: polling with a deadline, running a command line to completion, and counting
//! sockets left in TIME_WAIT.
//!
//! One copy, reached from several crates. The end-to-end crate has it as its module `shared`;
//! the registry's, the server's and `common`'s tests include this very file with `#[path]`,
//! because test crates should not depend on one another: a dev-dependency on the end-to-end
//! crate would pull its HTTP client and JSON into every crate's tests to run one command.
//! Hence the rule for this file: `std` only.

use std::ffi::OsStr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Some`, for at most `within`: that value, or
/// `None` when `within` passed first. The last call is made at or after the deadline.
pub fn poll<T>(every: Duration, within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

/// Runs `program` with `args` to its end, as a user at a shell would: the exit code (`None`
/// when a signal ended it), stdout and stderr.
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> (Option<i32>, String, String) {
    let program = program.as_ref();
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Sockets in TIME_WAIT whose remote end is `port` on 127.0.0.1 (Linux's /proc/net/tcp): what a
/// prober that closes with FIN instead of RST leaves behind.
pub fn time_wait_towards(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter(|line| {
            let mut fields = line.split_whitespace();
            fields.nth(2) == Some(&remote[..]) && fields.next() == Some("06")
        })
        .count()
}
