//! Times written straight into a JSON buffer, with exactly the bytes chrono writes, without
//! going through `fmt::Display` (chrono's `Serialize` formats through `collect_str`, which is
//! most of what a long list costs after the strings).
//!
//! Years 0 to 9999 and ordinary seconds take the fast path; anything else (a leap second,
//! a year chrono writes with a sign) is left to chrono itself, so the bytes never differ.

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};

/// Appends `t` as a JSON string, as `serde_json` writes a `DateTime<Utc>`: RFC 3339 with `Z`
/// and as many fractional digits as needed (none, 3, 6 or 9), e.g.
/// `"2026-11-28T03:13:19.425419Z"`.
pub fn push_rfc3339(buf: &mut Vec<u8>, t: &DateTime<Utc>) {
    buf.push(b'"');
    // UTC's offset is zero: the naive form is the time itself, with no offset arithmetic
    // (which `DateTime`'s own accessors do for every field).
    let n = t.naive_utc();
    if !push_date_time(buf, &n) {
        buf.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        buf.push(b'"');
        return;
    }
    let nano = n.nanosecond();
    if nano == 0 {
    } else if nano.is_multiple_of(1_000_000) {
        push_fraction(buf, nano / 1_000_000, 3);
    } else if nano.is_multiple_of(1_000) {
        push_fraction(buf, nano / 1_000, 6);
    } else {
        push_fraction(buf, nano, 9);
    }
    buf.extend_from_slice(b"Z\"");
}

/// Appends `t` as a JSON string in Cinder's naive form: UTC, no offset, exactly six
/// fractional digits (chrono's `%Y-%m-%dT%H:%M:%S%.6f`), e.g. `"2026-11-28T03:13:19.425419"`.
pub fn push_naive_utc(buf: &mut Vec<u8>, t: &DateTime<Utc>) {
    buf.push(b'"');
    let n = t.naive_utc();
    if push_date_time(buf, &n) {
        push_fraction(buf, n.nanosecond() / 1_000, 6);
    } else {
        buf.extend_from_slice(naive_utc_chrono(t).as_bytes());
    }
    buf.push(b'"');
}

/// Cinder's naive form of `t` as chrono formats it (the reference of [`push_naive_utc`]).
pub fn naive_utc_chrono(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Appends `YYYY-MM-DDTHH:MM:SS` and returns true, or appends nothing and returns false when
/// `t` is outside the fast path (a year outside 0..=9999, or a leap second).
fn push_date_time(buf: &mut Vec<u8>, t: &NaiveDateTime) -> bool {
    let (date, time) = (t.date(), t.time());
    let year = date.year();
    if !(0..=9999).contains(&year) || time.nanosecond() >= 1_000_000_000 {
        return false;
    }
    // Every value below is at most 99 after the year's split: two digits each, written
    // into their places and appended at once.
    let year = year as u32;
    let secs = time.num_seconds_from_midnight();
    let mut out = *b"0000-00-00T00:00:00";
    for (at, value) in [
        (0, year / 100),
        (2, year % 100),
        (5, date.month()),
        (8, date.day()),
        (11, secs / 3600),
        (14, secs / 60 % 60),
        (17, secs % 60),
    ] {
        out[at] = b'0' + (value / 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    }
    buf.extend_from_slice(&out);
    true
}

/// Appends `.` and `value` zero-padded to `digits` digits.
fn push_fraction(buf: &mut Vec<u8>, mut value: u32, digits: usize) {
    let mut out = [b'0'; 9];
    for slot in out[..digits].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    buf.push(b'.');
    buf.extend_from_slice(&out[..digits]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    /// Times that exercise every branch: whole seconds, 3, 6 and 9 fractional digits, the
    /// extremes of the fast path, a leap second, and years chrono writes with a sign.
    fn samples() -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let at = |y, mo, d, h, mi, s, nano| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_nano_opt(h, mi, s, nano))
                .map(|n| Utc.from_utc_datetime(&n))
        };
        for nano in [
            0,
            1,
            7_000,
            425_419_000,
            425_419_123,
            120_000_000,
            999_999_999,
            100,
            1_000_000,
            10_000,
            1_500_000_000, // a leap second
        ] {
            for (y, mo, d, h, mi, s) in [
                (2026, 11, 28, 3, 13, 19),
                (1970, 1, 1, 0, 0, 0),
                (0, 1, 1, 0, 0, 0),
                (9999, 12, 31, 23, 59, 59),
                (10000, 1, 1, 0, 0, 0),
                (-1, 6, 15, 12, 30, 45),
                (2024, 2, 29, 9, 5, 7),
                (1999, 12, 31, 23, 59, 59),
            ] {
                out.extend(at(y, mo, d, h, mi, s, nano));
            }
        }
        out.push(DateTime::<Utc>::MIN_UTC);
        out.push(DateTime::<Utc>::MAX_UTC);
        out.push(Utc::now());
        out
    }

    #[test]
    fn rfc3339_bytes_equal_serde_json() {
        let samples = samples();
        assert!(samples.len() > 80, "the samples were built");
        for t in samples {
            let mut buf = Vec::new();
            push_rfc3339(&mut buf, &t);
            let expected = serde_json::to_vec(&t).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&buf),
                String::from_utf8_lossy(&expected),
                "{t:?}"
            );
        }
    }

    #[test]
    fn naive_utc_bytes_equal_chrono_format() {
        for t in samples() {
            let mut buf = Vec::new();
            push_naive_utc(&mut buf, &t);
            let expected = serde_json::to_vec(&naive_utc_chrono(&t)).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&buf),
                String::from_utf8_lossy(&expected),
                "{t:?}"
            );
        }
    }
}
