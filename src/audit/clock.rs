//! UTC time for audit records without a date crate: RFC 3339 formatting with
//! microseconds, and parsing of the forms `cks audit show --since` accepts.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Microseconds since the Unix epoch, UTC (0 if the clock is before 1970).
pub(crate) fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2024-05-01T12:34:56.123456Z`: fixed width, so such strings sort in time order.
pub(crate) fn format_rfc3339_micros(us: i64) -> String {
    let mut s = String::with_capacity(27);
    format_rfc3339_micros_into(us, &mut s);
    s
}

/// As `format_rfc3339_micros`, appending to `out`.
pub(crate) fn format_rfc3339_micros_into(us: i64, out: &mut String) {
    use std::fmt::Write;
    let days = us.div_euclid(MICROS_PER_DAY);
    let rem = us.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1_000_000;
    let micros = rem % 1_000_000;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
}

/// Formats record times fast: the text up to the second is kept and reused while
/// successive records fall in the same second (the usual case), so a record costs six
/// digits. Produces exactly what `format_rfc3339_micros` does.
#[derive(Debug, Default)]
pub(crate) struct TimeText {
    /// The second `text` currently holds, if any.
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` then six digits and `Z`.
    text: Vec<u8>,
    /// Length of the part up to and including the '.'.
    prefix: usize,
}

impl TimeText {
    pub fn of(&mut self, us: i64) -> &[u8] {
        let second = us.div_euclid(1_000_000);
        if self.second != Some(second) {
            let mut s = String::with_capacity(32);
            format_rfc3339_micros_into(second * 1_000_000, &mut s);
            self.text.clear();
            self.text.extend_from_slice(s.as_bytes());
            // Ends in "000000Z".
            self.prefix = self.text.len() - 7;
            self.second = Some(second);
        }
        let mut micros = us.rem_euclid(1_000_000) as u32;
        let digits = &mut self.text[self.prefix..self.prefix + 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        &self.text
    }
}

/// The UTC day number of a time (for rotation by day).
pub(crate) fn day_of(us: i64) -> i64 {
    us.div_euclid(MICROS_PER_DAY)
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = num(&s[0..4])?;
    let m = num(&s[5..7])?;
    let d = num(&s[8..10])?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    // Reject dates such as 2023-02-30 that do not round-trip.
    if civil_from_days(days) != (i64::from(y), m, d) {
        return None;
    }
    Some(days)
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`
/// (a space may replace the `T`) into microseconds since the epoch.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        return parse_date(s).map(|d| d * MICROS_PER_DAY);
    }
    if s.len() < 20 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
        return None;
    }
    let days = parse_date(&s[..10])?;
    let sep = s.as_bytes()[10];
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    let t = &s[11..19];
    let tb = t.as_bytes();
    if tb[2] != b':' || tb[5] != b':' {
        return None;
    }
    let (h, mi, se) = (num(&t[0..2])?, num(&t[3..5])?, num(&t[6..8])?);
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n];
        for (i, c) in digits.bytes().take(6).enumerate() {
            micros += i64::from(c - b'0') * 10_i64.pow(5 - i as u32);
        }
        rest = &frac[n..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' || !matches!(rb[0], b'+' | b'-') {
                return None;
            }
            let oh = i64::from(num(&rest[1..3])?);
            let om = i64::from(num(&rest[4..6])?);
            let v = oh * 3600 + om * 60;
            if rb[0] == b'-' {
                -v
            } else {
                v
            }
        }
    };
    let secs = i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se) - offset_secs;
    Some(days * MICROS_PER_DAY + secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.999999Z (a leap day)
        let t = parse_time("2024-02-29T23:59:59.999999Z").unwrap_or(-1);
        assert_eq!(t, 1_709_251_199_999_999);
        assert_eq!(format_rfc3339_micros(t), "2024-02-29T23:59:59.999999Z");
        assert_eq!(format_rfc3339_micros(t + 1), "2024-03-01T00:00:00.000000Z");
    }

    #[test]
    fn parses_dates_offsets_and_rejects_garbage() {
        assert_eq!(parse_time("1970-01-02"), Some(MICROS_PER_DAY));
        assert_eq!(
            parse_time("1970-01-01T01:00:00+01:00"),
            Some(0),
            "offset applied"
        );
        assert_eq!(parse_time("1970-01-01 00:00:01.5Z"), Some(1_500_000));
        for bad in [
            "",
            "yesterday",
            "2023-02-30",
            "2023-13-01",
            "2023-01-01T25:00:00Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+0100",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_text_matches_format() {
        let mut t = TimeText::default();
        let base = 1_709_251_199_000_000;
        for us in [0, -1, -999_999, -1_000_000, 1, 999_999, 1_000_000, base]
            .into_iter()
            .chain((0..3000).map(|i| base + i * 977))
            .chain((0..50).map(|i| i * 86_399_999_999 + 123_456))
        {
            assert_eq!(
                std::str::from_utf8(t.of(us)).ok(),
                Some(format_rfc3339_micros(us).as_str()),
                "{us}"
            );
        }
    }

    #[test]
    fn round_trips_many_days() {
        let mut us = -5 * MICROS_PER_DAY;
        while us < 40_000 * MICROS_PER_DAY {
            let s = format_rfc3339_micros(us);
            assert_eq!(parse_time(&s), Some(us), "{s}");
            us += MICROS_PER_DAY / 3 + 7_654_321;
        }
    }
}
