//! Wall-clock formatting without a date crate: RFC 3339 for the JSON, RFC 1123 for the
//! seed's access-log line and Go's `log` prefix for ours.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC calendar time, broken down from a `SystemTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl Civil {
    /// Breaks a time down in UTC. Times before 1970 are clamped to the epoch: nothing here
    /// records them.
    pub fn from_system_time(t: SystemTime) -> Civil {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs() as i64;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: since.subsec_millis(),
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `2017-02-03T20:37:38.123Z`: what the JSON records carry. Written digit by digit: every
/// registration's answer carries two, and `format!` made them a tenth of its CPU.
pub fn rfc3339(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    if !(0..=9999).contains(&c.year) {
        return format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
        );
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, c.year as u32),
        (5, 2, c.month),
        (8, 2, c.day),
        (11, 2, c.hour),
        (14, 2, c.minute),
        (17, 2, c.second),
        (20, 3, c.millis),
    ] {
        let mut value = value;
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// `Fri, 03 Feb 2017 20:37:38 UTC`: Go's `time.RFC1123` in UTC, as the seed's access log prints.
pub fn rfc1123(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} UTC",
        WEEKDAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `2017/02/03 20:37:34`: the prefix of Go's standard logger, which the seed's log lines carry.
pub fn go_log_prefix(t: SystemTime) -> String {
    let c = Civil::from_system_time(t);
    format!("{:04}/{:02}/{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    #[test]
    fn formats_the_seed_example() {
        // The access-log line in the seed's README: Fri, 03 Feb 2017 20:37:38 UTC.
        let t = at(1_486_154_258, 0);
        assert_eq!(rfc1123(t), "Fri, 03 Feb 2017 20:37:38 UTC");
        assert_eq!(go_log_prefix(t), "2017/02/03 20:37:38");
        assert_eq!(rfc3339(at(1_486_154_258, 42)), "2017-02-03T20:37:38.042Z");
    }

    #[test]
    fn handles_epoch_leap_days_and_year_ends() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z", "Thu, 01 Jan 1970 00:00:00 UTC"),
            (951_782_400, "2000-02-29T00:00:00.000Z", "Tue, 29 Feb 2000 00:00:00 UTC"),
            (1_798_761_599, "2026-12-31T23:59:59.000Z", "Thu, 31 Dec 2026 23:59:59 UTC"),
            (4_107_542_400, "2100-03-01T00:00:00.000Z", "Mon, 01 Mar 2100 00:00:00 UTC"),
            (253_402_300_799, "9999-12-31T23:59:59.000Z", "Fri, 31 Dec 9999 23:59:59 UTC"),
            (253_402_300_800, "10000-01-01T00:00:00.000Z", "Sat, 01 Jan 10000 00:00:00 UTC"),
        ];
        for (secs, iso, http) in cases {
            assert_eq!(rfc3339(at(secs, 0)), iso, "{secs}");
            assert_eq!(rfc1123(at(secs, 0)), http, "{secs}");
        }
    }
}
