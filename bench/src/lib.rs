//! The benchmark suite of dynamic-ports (`make bench`): shared pieces of its three binaries.
//!
//! - `fleet` answers `GET /healthz` on thousands of loopback ports in one process, some of them
//!   refusing or hung, and counts the probes it gets;
//! - `loadgen` sends keep-alive HTTP/1.1 requests back to back and reports req/s and latency;
//! - `bench` starts the registry, the fleet and the load generator, measures, and prints one table.
//!
//! Every address the suite talks to is on loopback: [`loopback`] refuses anything else.
#![deny(unsafe_code)]

pub mod drive;
pub mod http;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;

use std::net::SocketAddr;
use std::time::Duration;

/// The name the benchmark gives endpoint `i`: `PREFIX00042`.
pub fn endpoint_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// The registration body of endpoint `i` at `127.0.0.1:port`.
pub fn registration(prefix: &str, i: usize, port: u16) -> String {
    format!(r#"{{"Name":"{}","Address":"127.0.0.1:{port}","Tags":["bench"]}}"#, endpoint_name(prefix, i))
}

/// Refuses an address that is not on the loopback network (127.0.0.0/8, ::1): the benchmark
/// sends traffic to nothing else.
pub fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr.parse().map_err(|_| format!("{addr:?} is not IP:PORT"))?;
    if parsed.ip().is_loopback() {
        Ok(parsed)
    } else {
        Err(format!("{addr} is not a loopback address: the benchmark only talks to 127.0.0.0/8"))
    }
}

/// Parses a Go-style duration as the binaries take it: `1500ms`, `5s`, `2m`, or a combination.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 500ms, 5s or 1m30s");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(loopback("127.0.0.1:80").is_ok());
        assert!(loopback("127.3.2.1:80").is_ok());
        assert!(loopback("[::1]:80").is_ok());
        assert!(loopback("10.0.0.1:80").is_err());
        assert!(loopback("0.0.0.0:80").is_err());
        assert!(loopback("localhost:80").is_err());
    }

    #[test]
    fn durations_parse_as_in_go() {
        let cases = [("5s", 5_000), ("200ms", 200), ("1m30s", 90_000), ("1.5s", 1_500)];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
