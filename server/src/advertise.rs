//! Working out what to register: the advertised address and the instance name, when neither
//! flags nor the Kubernetes environment say.

use common::validate;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

/// The local IP the kernel would use to reach the registry. Connecting a UDP socket sends no
/// packet; it only asks the routing table.
pub fn route_to(registry: &str) -> io::Result<IpAddr> {
    let target: SocketAddr = registry
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{registry} resolves to no address")))?;
    let unspecified: IpAddr = if target.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let socket = UdpSocket::bind((unspecified, 0))?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

/// `HOSTNAME-PORT`, cleaned to the registry's Name alphabet: unique per host and port, which
/// is what two instances on one host need.
pub fn default_name(hostname: Option<String>, port: u16) -> String {
    let host = hostname
        .map(|h| h.trim().chars().map(|c| if validate::is_name_char(c) { c } else { '-' }).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "dynamic-port-server".into());
    let host: String = host.chars().take(200).collect();
    format!("{host}-{port}")
}

/// The machine's hostname, from the environment or the kernel.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registry_is_reached_from_loopback() {
        assert_eq!(route_to("127.0.0.1:10080").unwrap(), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn names_are_valid_registry_names() {
        assert_eq!(default_name(Some("node-1\n".into()), 4380), "node-1-4380");
        assert_eq!(default_name(Some("weird host!".into()), 1), "weird-host--1");
        assert_eq!(default_name(None, 1), "dynamic-port-server-1");
        assert!(common::validate::name(&default_name(Some("x".repeat(400)), 65535)).is_ok());
    }
}
