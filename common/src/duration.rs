//! Durations written as Go writes them (`200ms`, `5s`, `1m30s`), because the seed's users do.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// The longest duration accepted: longer than any sensible interval or timeout, and short
/// enough that adding it to the clock can never overflow (which would abort the process).
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a Go duration: one or more `NUMBER UNIT` pairs, units `ns us µs ms s m h`, decimals
/// allowed (`1.5s`); `0` alone is zero. Negative durations are refused: nothing here waits
/// backwards; so are durations over [`MAX`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let bad =
        |why: &str| DurationError(format!("invalid duration {text:?}: {why} (write it as in Go: 200ms, 5s, 1m30s)"));
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| bad("missing unit"))?;
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad("expected a number"));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad("unknown unit")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("number too large"))? };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(|| bad("too large"))?;
        // Fractions: scale digit by digit so `1.5s` is exact and `0.000000001s` is 1ns.
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * scale).ok_or_else(|| bad("too large"))?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(|| bad("too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad("too large"))?;
    let parsed = Duration::new(secs, (total_nanos % 1_000_000_000) as u32);
    if parsed > MAX {
        return Err(bad("longer than a year"));
    }
    Ok(parsed)
}

/// Parses a duration that must be more than zero: an interval or a timeout.
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    match parse(text)? {
        d if d.is_zero() => Err(DurationError(format!("invalid duration {text:?}: must be more than 0"))),
        d => Ok(d),
    }
}

/// Writes a duration as Go's `Duration.String()` does for the values we print: `1m30s`,
/// `200ms`, `1.5s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return trim(format!("{}.{:03}", nanos / 1_000, nanos % 1_000)) + "µs";
    }
    if nanos < 1_000_000_000 {
        return trim(format!("{}.{:06}", nanos / 1_000_000, nanos % 1_000_000)) + "ms";
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let seconds = trim(format!("{}.{:09}", s, d.subsec_nanos())) + "s";
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

fn trim(number: String) -> String {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("200ms", Duration::from_millis(200)),
            ("5s", Duration::from_secs(5)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("2h", Duration::from_secs(7200)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in [
            "",
            "5",
            "s",
            "-5s",
            "5x",
            "1..5s",
            "5 s",
            "1e3s",
            "99999999999999999999h",
            "94522879700260684295381835.9999999999999h",
            "5000000000000000h",
            "8785h",
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains("invalid duration"), "{text}: {err}");
        }
    }

    #[test]
    fn intervals_must_be_more_than_zero() {
        assert_eq!(parse_positive("5s"), Ok(Duration::from_secs(5)));
        for text in ["0", "0s", "0ms"] {
            assert!(parse_positive(text).unwrap_err().to_string().contains("must be more than 0"), "{text}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_micros(1500), "1.5ms"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want);
            assert_eq!(parse(want), Ok(d), "round trip {want}");
        }
    }
}
