//! Header values derived from file metadata, written straight into a caller's buffer: the small-file
//! path builds a dozen of them per request, so none of them allocates on its own.

use std::fmt::Write as _;

use bytes::BufMut;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// `Content-Disposition` per RFC 6266: a quoted ASCII fallback, plus `filename*` whenever the real name
/// cannot travel in the quoted form unchanged (non-ASCII, controls, quotes).
pub fn content_disposition(name: &[u8]) -> String {
    let mut out = Vec::with_capacity(name.len() + 32);
    write_content_disposition(&mut out, name);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_content_disposition(out: &mut impl BufMut, name: &[u8]) {
    let plain = name
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'%');
    out.put_slice(b"attachment; filename=\"");
    for &b in name {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.put_u8(b);
        } else {
            out.put_u8(b'_');
        }
    }
    out.put_u8(b'"');
    if !plain {
        out.put_slice(b"; filename*=UTF-8''");
        for chunk in percent_encode(name, ATTR_CHAR) {
            out.put_slice(chunk.as_bytes());
        }
    }
}

/// RFC 5987 `attr-char` complement.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

pub fn content_type_for(name: &[u8]) -> &'static str {
    let guess = match std::str::from_utf8(name) {
        Ok(name) => mime_guess::from_path(name).first_raw(),
        Err(_) => mime_guess::from_path(String::from_utf8_lossy(name).as_ref()).first_raw(),
    };
    guess.unwrap_or("application/octet-stream")
}

/// Octal with a leading zero, as the reference (`0644`).
pub fn permissions(mode: u32) -> String {
    let mut out = Vec::with_capacity(4);
    write_permissions(&mut out, mode);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_permissions(out: &mut impl BufMut, mode: u32) {
    let m = mode & 0o7777;
    for shift in [9, 6, 3, 0] {
        // Each digit is 0..=7, so the cast cannot truncate.
        out.put_u8(b'0' + ((m >> shift) & 7) as u8);
    }
}

/// A calendar date and time of day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Splits Unix seconds into a proleptic Gregorian date and time of day. The date arithmetic counts in
/// 400-year eras (146,097 days each) from 0000-03-01, so leap days fall at the end of a counted year.
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // month counted from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges above bound every field well inside u32.
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    Civil {
        year,
        month: small(month),
        day: small(day),
        hour: small(tod / 3600),
        minute: small(tod / 60 % 60),
        second: small(tod % 60),
        weekday: small((days + 4).rem_euclid(7)), // 1970-01-01 was a Thursday
    }
}

fn put_2(out: &mut impl BufMut, v: u32) {
    // Callers pass 0..=99.
    out.put_u8(b'0' + (v / 10 % 10) as u8);
    out.put_u8(b'0' + (v % 10) as u8);
}

fn put_year(out: &mut impl BufMut, year: i64) {
    put_2(out, u32::try_from(year / 100).unwrap_or(0));
    put_2(out, u32::try_from(year % 100).unwrap_or(0));
}

/// RFC 3339 in UTC, second precision, as Go's `time.RFC3339` prints it.
pub fn rfc3339(secs: i64) -> String {
    let mut out = Vec::with_capacity(20);
    write_rfc3339(&mut out, secs);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_rfc3339(out: &mut impl BufMut, secs: i64) {
    let c = civil(secs);
    if !(0..=9999).contains(&c.year) {
        // Far outside any real file time; the general formatter keeps the exact former output.
        let text = match jiff::Timestamp::from_second(secs) {
            Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Err(_) => "1970-01-01T00:00:00Z".to_string(),
        };
        out.put_slice(text.as_bytes());
        return;
    }
    put_year(out, c.year);
    out.put_u8(b'-');
    put_2(out, c.month);
    out.put_u8(b'-');
    put_2(out, c.day);
    out.put_u8(b'T');
    put_2(out, c.hour);
    out.put_u8(b':');
    put_2(out, c.minute);
    out.put_u8(b':');
    put_2(out, c.second);
    out.put_u8(b'Z');
}

/// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, for seconds since the epoch.
/// Times before the epoch are sent as the epoch (as before); `false` for years past 9999, which the
/// format cannot carry: the caller then sends no date at all.
pub fn write_http_date(out: &mut impl BufMut, secs: i64) -> bool {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let c = civil(secs.max(0));
    if c.year > 9999 {
        return false;
    }
    out.put_slice(DAYS[c.weekday as usize % 7]);
    out.put_slice(b", ");
    put_2(out, c.day);
    out.put_u8(b' ');
    out.put_slice(MONTHS[(c.month as usize + 11) % 12]);
    out.put_u8(b' ');
    put_year(out, c.year);
    out.put_u8(b' ');
    put_2(out, c.hour);
    out.put_u8(b':');
    put_2(out, c.minute);
    out.put_u8(b':');
    put_2(out, c.second);
    out.put_slice(b" GMT");
    true
}

/// A strong validator: any change of identity, size or mtime (to the nanosecond) changes it.
pub fn file_etag(dev: u64, ino: u64, size: u64, mtime_sec: i64, mtime_nsec: i64) -> String {
    let mut s = String::with_capacity(48);
    let _ = write!(
        s,
        "\"{dev:x}-{ino:x}-{size:x}-{mtime_sec:x}.{mtime_nsec:x}\""
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition() {
        assert_eq!(
            content_disposition(b"a.txt"),
            "attachment; filename=\"a.txt\""
        );
        assert_eq!(
            content_disposition("é x.txt".as_bytes()),
            "attachment; filename=\"__ x.txt\"; filename*=UTF-8''%C3%A9%20x.txt"
        );
        assert_eq!(
            content_disposition(b"a\"b\r\n"),
            "attachment; filename=\"a_b__\"; filename*=UTF-8''a%22b%0D%0A"
        );
    }

    #[test]
    fn misc() {
        assert_eq!(permissions(0o100644), "0644");
        assert_eq!(permissions(0o4755), "4755");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(content_type_for(b"x.json"), "application/json");
        assert_eq!(
            content_type_for(b"x.unknownext"),
            "application/octet-stream"
        );
        assert_eq!(content_type_for(b"noext"), "application/octet-stream");
        assert_ne!(file_etag(1, 2, 3, 4, 5), file_etag(1, 2, 3, 4, 6));
    }

    fn http_date(secs: i64) -> Option<String> {
        let mut out = Vec::new();
        write_http_date(&mut out, secs).then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// The hand-written formatters agree with the general ones over the whole 0000–9999 range (and
    /// a dense sample around leap days and the epoch).
    #[test]
    fn dates_match_general_formatters() {
        let mut secs: Vec<i64> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            // xorshift: reproducible pseudo-random seconds across years 0..=9999.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            secs.push((x % 315_569_520_000) as i64 - 62_167_219_200);
        }
        for day in -800..800 {
            secs.push(day * 86_400 + 86_399);
            secs.push(951_782_400 + day * 86_400); // around 2000-02-29
        }
        for s in secs {
            let ts = jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            assert_eq!(
                rfc3339(s),
                ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "{s}"
            );
            if s >= 0 {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
                let general = actix_http::header::HttpDate::from(t).to_string();
                assert_eq!(http_date(s).as_deref(), Some(general.as_str()), "{s}");
            }
        }
        // Outside the formats: the former fallbacks.
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
        assert_eq!(
            http_date(-5).as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(http_date(253_402_300_800), None);
        assert_eq!(
            http_date(253_402_300_799).as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
    }
}
