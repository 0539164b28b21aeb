//! Binding the listening port: any free one (port 0, the kernel picks), or the first free one
//! of a range, so that one firewall rule can cover every instance.

use std::fmt;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::ops::RangeInclusive;

/// Why no port could be bound.
#[derive(Debug)]
pub enum BindError {
    /// Binding failed for a reason other than the port being taken.
    Io { addr: String, source: io::Error },
    /// Every port of the range is taken.
    RangeFull { range: RangeInclusive<u16> },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Io { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            BindError::RangeFull { range } => write!(
                f,
                "no free port in -port-range {}-{}: all {} are in use; widen the range or run fewer instances per host",
                range.start(),
                range.end(),
                usize::from(*range.end() - *range.start()) + 1
            ),
        }
    }
}

impl std::error::Error for BindError {}

/// Binds `ip` on a port from `range`, or on any free port when there is no range.
pub fn bind(ip: IpAddr, range: Option<&RangeInclusive<u16>>) -> Result<TcpListener, BindError> {
    let Some(range) = range else {
        return TcpListener::bind((ip, 0)).map_err(|source| BindError::Io { addr: format!("{ip}:0"), source });
    };
    for port in range.clone() {
        match TcpListener::bind((ip, port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(source) => return Err(BindError::Io { addr: format!("{ip}:{port}"), source }),
        }
    }
    Err(BindError::RangeFull { range: range.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn takes_the_first_free_port_of_a_range_and_says_when_it_is_full() {
        // Find two adjacent free ports by holding a kernel-chosen one and trying its neighbour.
        let (held, next) = (0..50)
            .find_map(|_| {
                let held = TcpListener::bind((LOOPBACK, 0)).ok()?;
                let port = held.local_addr().ok()?.port();
                let next = port.checked_add(1)?;
                TcpListener::bind((LOOPBACK, next)).ok().map(drop)?;
                Some((held, next))
            })
            .expect("two adjacent free ports");
        let low = held.local_addr().unwrap().port();
        let got = bind(LOOPBACK, Some(&(low..=next))).unwrap();
        assert_eq!(got.local_addr().unwrap().port(), next, "skips the taken port");
        let err = bind(LOOPBACK, Some(&(low..=next))).unwrap_err();
        assert!(matches!(err, BindError::RangeFull { .. }), "{err}");
        assert!(err.to_string().contains("all 2 are in use"), "{err}");
    }

    #[test]
    fn without_a_range_the_kernel_picks() {
        let listener = bind(LOOPBACK, None).unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), 0);
    }
}
