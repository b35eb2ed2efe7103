//! Header values derived from file metadata.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// `Content-Disposition` per RFC 6266: a quoted ASCII fallback, plus `filename*` whenever the real name
/// cannot travel in the quoted form unchanged (non-ASCII, controls, quotes).
pub fn content_disposition(name: &[u8]) -> String {
    let plain = name
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'%');
    let fallback: String = name
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if plain {
        format!("attachment; filename=\"{fallback}\"")
    } else {
        format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            percent_encode(name, ATTR_CHAR)
        )
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

pub fn content_type_for(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    mime_guess::from_path(name.as_ref())
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// Octal with a leading zero, as the reference (`0644`).
pub fn permissions(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// RFC 3339 in UTC, second precision, as Go's `time.RFC3339` prints it.
pub fn rfc3339(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// A strong validator: any change of identity, size or mtime (to the nanosecond) changes it.
pub fn file_etag(dev: u64, ino: u64, size: u64, mtime_sec: i64, mtime_nsec: i64) -> String {
    format!("\"{dev:x}-{ino:x}-{size:x}-{mtime_sec:x}.{mtime_nsec:x}\"")
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
}
