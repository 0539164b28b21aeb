//! Log lines in the seed's shape: Go's `2017/02/03 20:37:34 message` for lifecycle lines, the
//! level spelled out for warnings and worse, and access-log lines printed as they are.

use crate::clock;
use std::io::Write;
use std::time::SystemTime;

/// The `log` target of access-log lines, printed without a prefix.
pub const ACCESS: &str = "access";

/// Installs the logger once, at the start of `main`. `RUST_LOG` filters as usual; the default
/// is `info`.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            if record.target() == ACCESS {
                return writeln!(out, "{}", record.args());
            }
            let when = clock::go_log_prefix(SystemTime::now());
            match record.level() {
                log::Level::Info => writeln!(out, "{when} {}", record.args()),
                level => writeln!(out, "{when} {level} {}", record.args()),
            }
        })
        .init();
}
