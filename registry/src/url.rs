//! The little URL handling the API needs: split path from query, percent-decode, read pairs.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Splits `/path?query` into the path and the (possibly empty) query.
pub fn split(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// Percent-decodes `text`; `+` becomes a space when `plus_is_space` (query strings). `None`
/// when an escape is malformed (`%` not followed by two hex digits) or the result is not UTF-8:
/// a client that sent either is told so rather than having it read as something else.
pub fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let well_formed = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return None;
    }
    let decoded: Vec<u8> = if plus_is_space {
        // A literal plus arrives as %2B, so every raw one is a space.
        percent_decode(text.replace('+', " ").as_bytes()).collect()
    } else {
        percent_decode(bytes).collect()
    };
    String::from_utf8(decoded).ok()
}

/// Everything but RFC 3986's unreserved characters.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes `text` for a query value: everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, RESERVED).to_string()
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
    use proptest::prelude::*;

    fn encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #[test]
        fn decoding_never_panics_and_round_trips(text in ".{0,40}", raw in "[%+a-zA-Z0-9&=]{0,40}") {
            let _ = decode(&raw, true);
            let _ = decode(&raw, false);
            let _ = query_pairs(&raw);
            let _ = split(&raw);
            prop_assert_eq!(decode(&encode_all(&text), false), Some(text.clone()));
            prop_assert_eq!(decode(&encode_all(&text), true), Some(text.clone()));
            prop_assert_eq!(decode(&encode(&text), true), Some(text));
        }

        #[test]
        fn an_escape_without_two_hex_digits_is_malformed(
            before in "[a-z]{0,4}", bad in "[^0-9a-fA-F]", digit in "[0-9a-fA-F]", after in "[a-z]{0,4}",
        ) {
            // `%+1` and `%-f` among them: a sign is not a digit, whatever `from_str_radix` says.
            for escape in [format!("%{bad}{digit}"), format!("%{digit}{bad}"), format!("%{bad}")] {
                let text = format!("{before}{escape}{after}");
                prop_assert_eq!(decode(&text, false), None, "{}", text);
                prop_assert_eq!(decode(&text, true), None, "{}", text);
            }
        }

        #[test]
        fn query_pairs_round_trip(pairs in prop::collection::vec((".{0,8}", ".{0,8}"), 0..6)) {
            let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode_all(k), encode_all(v))).collect();
            prop_assert_eq!(query_pairs(&query.join("&")), Some(pairs.clone()));
            let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            prop_assert_eq!(query_pairs(&encoded.join("&")), Some(pairs));
        }
    }

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
        // A sign is not a hex digit: `%+1` and `%-1` are malformed, not bytes 0x01 and 0xff.
        assert_eq!(decode("%+1", false), None);
        assert_eq!(decode("%+1", true), None);
        assert_eq!(decode("a%-1", false), None);
        assert_eq!(decode("100%", false), None);
        assert_eq!(encode("a b/é~"), "a%20b%2F%C3%A9~");
        assert_eq!(decode(&encode("web, eu/%"), true).as_deref(), Some("web, eu/%"));
        assert_eq!(
            query_pairs("status=passing&tag=a&tag=b%20c&flag").unwrap(),
            [("status", "passing"), ("tag", "a"), ("tag", "b c"), ("flag", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
