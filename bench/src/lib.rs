//! The benchmark suite of dynamic-ports (`make bench`): shared pieces of its three binaries.
//!
//! - `fleet` answers `GET /healthz` on thousands of loopback ports in one process, some of them
//!   refusing or hung, and counts the probes it gets;
//! - `loadgen` sends keep-alive HTTP/1.1 requests back to back and reports req/s and latency;
//! - `bench` starts the registry, the fleet and the load generator, measures, and prints one table.
//!
//! Every address the suite talks to is on loopback: [`loopback`] refuses anything else.
#![deny(unsafe_code)]

pub mod args;
pub mod drive;
pub mod http;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;

use common::wire::Registration;
use std::net::SocketAddr;

/// The name the benchmark gives endpoint `i`: `PREFIX00042`.
pub fn endpoint_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// The registration body of endpoint `i` at `127.0.0.1:port`, tagged `bench`: the registry's
/// own wire type, serialized. (The load generator builds all its requests before its clock
/// starts, so serializing here costs the measured run nothing.)
pub fn registration(prefix: &str, i: usize, port: u16) -> String {
    registration_at(prefix, i, std::net::Ipv4Addr::LOCALHOST, port)
}

/// As [`registration`], at `ip:port` (a fleet on another loopback address).
pub fn registration_at(prefix: &str, i: usize, ip: std::net::Ipv4Addr, port: u16) -> String {
    let body = Registration {
        name: endpoint_name(prefix, i),
        address: format!("{ip}:{port}"),
        tags: vec!["bench".into()],
        // The seed's body, as the Go original takes it: no lease.
        ttl: None,
    };
    serde_json::to_string(&body).expect("a struct of strings always serializes")
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
    fn registrations_are_the_seeds_body() {
        assert_eq!(
            registration("bench-", 42, 40001),
            r#"{"Name":"bench-00042","Address":"127.0.0.1:40001","Tags":["bench"]}"#
        );
        assert_eq!(
            registration_at("scale-", 99_999, std::net::Ipv4Addr::new(127, 0, 0, 7), 40001),
            r#"{"Name":"scale-99999","Address":"127.0.0.7:40001","Tags":["bench"]}"#
        );
    }
}
