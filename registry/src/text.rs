//! Numbers and addresses as text, written digit by digit: every answer's head and every
//! record carry some, and `format!` cost more than the rest of the answer.

use std::net::SocketAddr;

/// Appends `value` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `a.b.c.d:port` for IPv4, as `to_string` writes it; IPv6 the standard way.
pub fn address(address: SocketAddr) -> String {
    let SocketAddr::V4(v4) = address else { return address.to_string() };
    let mut text = Vec::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        push_decimal(&mut text, u64::from(octet));
    }
    text.push(b':');
    push_decimal(&mut text, u64::from(v4.port()));
    String::from_utf8(text).unwrap_or_else(|_| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_whole() {
        for value in [0, 7, 10, 4096, u64::MAX] {
            let mut out = b"n=".to_vec();
            push_decimal(&mut out, value);
            assert_eq!(out, format!("n={value}").into_bytes());
        }
    }

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for text in ["127.0.0.1:8080", "0.0.0.0:0", "255.255.255.255:65535", "10.0.10.1:1", "[::1]:80", "[fe80::1]:9"] {
            let parsed: SocketAddr = text.parse().unwrap();
            assert_eq!(address(parsed), parsed.to_string());
            assert_eq!(address(parsed), text);
        }
    }
}
