//! The little URL handling the API needs: split path from query, percent-decode, read pairs.

/// Splits `/path?query` into the path and the (possibly empty) query.
pub fn split(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// Percent-decodes `text`; `+` becomes a space when `plus_is_space` (query strings). `None`
/// when an escape is malformed or the result is not UTF-8.
pub fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes `text` for a query value: everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The decoded `key=value` pairs of a query string, in order; `None` if one is malformed.
pub fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k, true)?, decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_paths_and_queries() {
        assert_eq!(split("/endpoints?tag=a"), ("/endpoints", "tag=a"));
        assert_eq!(split("/endpoints"), ("/endpoints", ""));
        assert_eq!(decode("a%2Fb", false).as_deref(), Some("a/b"));
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(decode("%00", false).as_deref(), Some("\0"));
        assert_eq!(decode("%zz", false), None);
        assert_eq!(decode("%f", false), None);
        assert_eq!(decode("%ff", false), None, "not UTF-8");
        assert_eq!(encode("a b/é~"), "a%20b%2F%C3%A9~");
        assert_eq!(decode(&encode("web, eu/%"), true).as_deref(), Some("web, eu/%"));
        assert_eq!(
            query_pairs("status=passing&tag=a&tag=b%20c&flag").unwrap(),
            [("status", "passing"), ("tag", "a"), ("tag", "b c"), ("flag", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
