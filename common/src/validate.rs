//! The rules a registration must meet before it reaches the store. Each refusal is a sentence
//! that tells the caller what to fix.

use crate::duration;
use crate::wire::Registration;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest Name: a DNS name's limit, since Names are usually pod names.
pub const MAX_NAME_BYTES: usize = 253;
/// Most tags on one endpoint: enough for any real use, small enough that a tag filter over
/// 10,000 endpoints stays cheap.
pub const MAX_TAGS: usize = 64;
/// Longest tag: tags are labels, not documents.
pub const MAX_TAG_BYTES: usize = 255;

/// Shortest lease: a renewal must be able to cross the network and be answered within it.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest lease: a day. Past that a lease no longer bounds how long a stranger can be listed
/// on a dead instance's port, which is what it is for.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// A registration that passed every rule, with its address and lease parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    pub name: String,
    pub address: SocketAddr,
    pub tags: Vec<String>,
    /// The lease, if the registration asked for one.
    pub ttl: Option<Duration>,
}

/// Checks a Name (from a body or a URL path).
pub fn name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Name is required: give each instance a unique name, such as its pod name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("Name is {} bytes long; the limit is {MAX_NAME_BYTES}", name.len()));
    }
    if name == "." || name == ".." {
        // URLs resolve these as path segments, so /endpoints/.. could never be read or deleted.
        return Err(format!("Name cannot be {name:?}: it is a path segment in URLs"));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!("Name may contain only letters, digits, '.', '_' and '-', not {bad:?}"));
    }
    Ok(())
}

/// Whether a Name may contain `c`: letters, digits, '.', '_' and '-'.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks an Address: `IP:PORT` with a port from 1 to 65535 and an IP a check can reach.
pub fn address(address: &str) -> Result<SocketAddr, String> {
    if address.is_empty() {
        return Err("Address is required: IP:PORT, like 10.240.0.2:52238".into());
    }
    let parsed: SocketAddr = address.parse().map_err(|_| {
        format!("Address must be IP:PORT, like 10.240.0.2:52238 or [fd00::1]:52238, not {:?}", clip(address))
    })?;
    if parsed.port() == 0 {
        return Err("Address port must be from 1 to 65535, not 0".into());
    }
    let ip = parsed.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!("Address {ip} cannot be health-checked: advertise the instance's own IP"));
    }
    Ok(parsed)
}

/// Checks the tags: at most [`MAX_TAGS`], each 1 to [`MAX_TAG_BYTES`] bytes with no control
/// characters.
pub fn tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("Tags has {} entries; the limit is {MAX_TAGS}", tags.len()));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(format!("each tag must be 1 to {MAX_TAG_BYTES} bytes, not {}", tag.len()));
        }
        if tag.chars().any(char::is_control) {
            return Err(format!("tag {:?} contains a control character", clip(tag)));
        }
    }
    Ok(())
}

/// Checks a `TTL`: a Go duration from [`MIN_TTL`] to [`MAX_TTL`].
pub fn ttl(text: &str) -> Result<Duration, String> {
    let bounds = || format!("from {} to {}", duration::format(MIN_TTL), duration::format(MAX_TTL));
    let ttl = duration::parse(text).map_err(|e| format!("TTL must be a duration {}, like \"30s\": {e}", bounds()))?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(format!("TTL must be {}, not {}", bounds(), clip(text)));
    }
    Ok(ttl)
}

/// Checks a whole registration.
pub fn registration(reg: Registration) -> Result<Valid, String> {
    name(&reg.name)?;
    let address = address(&reg.address)?;
    tags(&reg.tags)?;
    let ttl = reg.ttl.as_deref().map(ttl).transpose()?;
    Ok(Valid { name: reg.name, address, tags: reg.tags, ttl })
}

/// Shortens user input quoted back in an error, so a 60 KiB value does not come back whole.
pub fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, address: &str, tags: &[&str]) -> Registration {
        Registration {
            name: name.into(),
            address: address.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ttl: None,
        }
    }

    fn leased(ttl: &str) -> Registration {
        Registration { ttl: Some(ttl.into()), ..reg("a", "1.2.3.4:5", &[]) }
    }

    #[test]
    fn a_ttl_is_a_lease_within_its_bounds() {
        assert_eq!(registration(reg("a", "1.2.3.4:5", &[])).unwrap().ttl, None, "no TTL, no lease");
        for (text, secs) in [("1s", 1), ("30s", 30), ("1m30s", 90), ("24h", 86_400)] {
            assert_eq!(registration(leased(text)).unwrap().ttl, Some(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn accepts_what_instances_send() {
        for (n, a) in [
            ("dynamic-port-server-507527175-5bphp", "10.240.0.2:52238"),
            ("a", "127.0.0.1:1"),
            ("A.b_c-9", "[::1]:65535"),
            (&"x".repeat(253), "192.168.1.1:8080"),
        ] {
            assert!(registration(reg(n, a, &["web"])).is_ok(), "{n} {a}");
        }
    }

    #[test]
    fn refuses_with_a_sentence_naming_the_problem() {
        let long_name = "x".repeat(254);
        let many_tags: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        let long_tag = "t".repeat(256);
        let cases: Vec<(Registration, &str)> = vec![
            (reg("", "1.2.3.4:5", &[]), "Name is required"),
            (reg(&long_name, "1.2.3.4:5", &[]), "254 bytes long"),
            (reg("a/b", "1.2.3.4:5", &[]), "not '/'"),
            (reg("a b", "1.2.3.4:5", &[]), "not ' '"),
            (reg("..%00", "1.2.3.4:5", &[]), "not '%'"),
            (reg("é", "1.2.3.4:5", &[]), "not 'é'"),
            (reg("..", "1.2.3.4:5", &[]), "path segment"),
            (reg(".", "1.2.3.4:5", &[]), "path segment"),
            (reg("a", "", &[]), "Address is required"),
            (reg("a", "localhost:80", &[]), "must be IP:PORT"),
            (reg("a", "1.2.3.4", &[]), "must be IP:PORT"),
            (reg("a", "1.2.3.4:0", &[]), "not 0"),
            (reg("a", "1.2.3.4:65536", &[]), "must be IP:PORT"),
            (reg("a", "0.0.0.0:80", &[]), "cannot be health-checked"),
            (reg("a", "224.0.0.1:80", &[]), "cannot be health-checked"),
            (Registration { tags: many_tags, ..reg("a", "1.2.3.4:5", &[]) }, "65 entries"),
            (reg("a", "1.2.3.4:5", &[&long_tag]), "1 to 255 bytes"),
            (reg("a", "1.2.3.4:5", &[""]), "1 to 255 bytes"),
            (reg("a", "1.2.3.4:5", &["a\nb"]), "control character"),
            (leased("30"), "TTL must be a duration"),
            (leased("thirty seconds"), "TTL must be a duration"),
            (leased("0s"), "TTL must be from 1s to 24h0m0s, not 0s"),
            (leased("999ms"), "TTL must be from 1s"),
            (leased("25h"), "not 25h"),
            (leased("-5s"), "TTL must be"),
        ];
        for (input, want) in cases {
            let err = registration(input.clone()).expect_err(&format!("{input:?}"));
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
    }
}
