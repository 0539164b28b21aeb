//! Who may write, and what the checker may be told to probe. A registry that probes any
//! address it is told is an SSRF tool; one that anybody can write to decides where anybody's
//! traffic goes.

use crate::cidr::Cidr;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Link-local ranges, cloud metadata services among them (169.254.169.254): refused unless a
/// range inside them is allowed explicitly. Parsed once: every registration is checked.
static LINK_LOCAL: LazyLock<Vec<Cidr>> =
    LazyLock::new(|| ["169.254.0.0/16", "fe80::/10"].iter().filter_map(|r| r.parse().ok()).collect());

/// The addresses registrations may point the checker at.
#[derive(Debug, Clone, Default)]
pub struct ProbePolicy {
    /// `-allow-cidr`: when not empty, every Address must lie in one of these.
    pub allow: Vec<Cidr>,
}

impl ProbePolicy {
    /// Whether the checker may probe `ip`; the error is the sentence for a 403.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let listed = |cidrs: &[Cidr]| cidrs.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ");
        for range in LINK_LOCAL.iter() {
            if range.contains(ip) && !self.allow.iter().any(|a| a.within(range) && a.contains(ip)) {
                return Err(format!(
                    "Address {ip} is link-local ({range}, where cloud metadata services live); the registry \
                     refuses to probe it unless -allow-cidr names a range inside {range}"
                ));
            }
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a.contains(ip)) {
            return Err(format!(
                "Address {ip} is outside the ranges this registry may probe (-allow-cidr): {}",
                listed(&self.allow)
            ));
        }
        Ok(())
    }
}

/// The write token, when one is configured.
#[derive(Clone, Default)]
pub struct WriteToken(Option<Vec<u8>>);

impl std::fmt::Debug for WriteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "WriteToken(set)" } else { "WriteToken(none)" })
    }
}

/// Headers a write token may arrive in: the standard one, Consul's, and our own alias for
/// clients that cannot set `Authorization`.
const TOKEN_HEADERS: [&str; 2] = ["X-Consul-Token", "X-Registry-Token"];

impl WriteToken {
    /// A token required on every write; `None` leaves writes open.
    pub fn new(token: Option<&str>) -> WriteToken {
        WriteToken(token.map(|t| t.trim().as_bytes().to_vec()).filter(|t| !t.is_empty()))
    }

    /// Whether a token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Checks a request's headers, given as (name, value) pairs; the error is the sentence for
    /// a 401.
    pub fn check<'a>(&self, headers: impl Iterator<Item = (&'a str, &'a str)>) -> Result<(), String> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let mut presented = None;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("Authorization") {
                let value = value.trim();
                if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
                    presented = Some(value[7..].trim());
                }
            } else if TOKEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                presented = Some(value.trim());
            }
        }
        match presented {
            None => Err("this registry requires a write token: send Authorization: Bearer TOKEN".into()),
            Some(token) if constant_time_eq(token.as_bytes(), expected) => Ok(()),
            Some(_) => Err("the write token is wrong".into()),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths, so the answer's
/// timing does not tell an attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> ProbePolicy {
        ProbePolicy { allow: allow.iter().map(|a| a.parse().unwrap()).collect() }
    }

    #[test]
    fn probe_policy_table() {
        let table: &[(&[&str], &str, bool)] = &[
            (&[], "10.240.0.2", true),
            (&[], "127.0.0.1", true),
            (&[], "169.254.169.254", false),
            (&[], "fe80::1", false),
            (&["10.0.0.0/8"], "10.240.0.2", true),
            (&["10.0.0.0/8"], "192.168.1.1", false),
            (&["0.0.0.0/0"], "169.254.169.254", false),
            (&["169.254.10.0/24"], "169.254.10.5", true),
            (&["169.254.10.0/24"], "169.254.169.254", false),
            (&["10.0.0.0/8", "fd00::/8"], "fd00::5", true),
        ];
        for (allow, ip, ok) in table {
            let result = policy(allow).check(ip.parse().unwrap());
            assert_eq!(result.is_ok(), *ok, "{ip} with {allow:?}: {result:?}");
        }
        let err = policy(&["10.0.0.0/8", "fd00::/8"]).check("1.2.3.4".parse().unwrap()).unwrap_err();
        assert!(err.contains("10.0.0.0/8, fd00::/8"), "{err}");
    }

    #[test]
    fn token_headers() {
        let token = WriteToken::new(Some("s3cret\n"));
        let check = |headers: &[(&str, &str)]| token.check(headers.iter().copied());
        assert!(check(&[("Authorization", "Bearer s3cret")]).is_ok());
        assert!(check(&[("authorization", "bearer s3cret")]).is_ok());
        assert!(check(&[("X-Consul-Token", "s3cret")]).is_ok());
        assert!(check(&[("X-Registry-Token", "s3cret")]).is_ok());
        assert!(check(&[]).unwrap_err().contains("requires a write token"));
        assert!(check(&[("Authorization", "Bearer s3cre")]).unwrap_err().contains("wrong"));
        assert!(check(&[("Authorization", "Bearer s3cret2")]).is_err());
        assert!(check(&[("Authorization", "Basic czNjcmV0")]).is_err());
        assert!(WriteToken::new(None).check(std::iter::empty()).is_ok());
        // A blank token sets none: token::read_file refuses a blank file, so that never passes
        // for "writes need a token" silently.
        assert!(!WriteToken::new(Some("  ")).is_set());
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
