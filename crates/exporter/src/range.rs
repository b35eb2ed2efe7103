//! HTTP byte ranges with the semantics of Go's `http.ServeContent` (the reference exporter), so clients
//! written against it (d8, qemu, curl resume) see the same answers.

/// One satisfiable range, already clamped to the content size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub length: u64,
}

impl ByteRange {
    pub fn content_range(&self, size: u64) -> String {
        format!(
            "bytes {}-{}/{}",
            self.start,
            self.start + self.length - 1,
            size
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("invalid range")]
    Invalid,
    #[error("no satisfiable range")]
    NoOverlap,
}

/// Above this many ranges the header is ignored and the whole content served: multipart framing for
/// thousands of tiny ranges costs far more than the bytes themselves.
pub const MAX_RANGES: usize = 256;

/// Parses a `Range` header value against a content of `size` bytes, as Go's `parseRange` does.
pub fn parse_range(header: &str, size: u64) -> Result<Vec<ByteRange>, RangeError> {
    let spec = header.strip_prefix("bytes=").ok_or(RangeError::Invalid)?;
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (start, end) = part.split_once('-').ok_or(RangeError::Invalid)?;
        let (start, end) = (start.trim(), end.trim());
        if start.is_empty() {
            // Suffix range: the last N bytes.
            if end.is_empty() || end.starts_with('-') {
                return Err(RangeError::Invalid);
            }
            let n = parse_u64(end)?;
            if n == 0 {
                no_overlap = true;
                continue;
            }
            let n = n.min(size);
            if n == 0 {
                no_overlap = true;
                continue;
            }
            ranges.push(ByteRange {
                start: size - n,
                length: n,
            });
            continue;
        }
        let first = parse_u64(start)?;
        if first >= size {
            // Go still validates the end before skipping.
            if !end.is_empty() {
                let last = parse_u64(end)?;
                if first > last {
                    return Err(RangeError::Invalid);
                }
            }
            no_overlap = true;
            continue;
        }
        let length = if end.is_empty() {
            size - first
        } else {
            let last = parse_u64(end)?;
            if first > last {
                return Err(RangeError::Invalid);
            }
            last.min(size - 1) - first + 1
        };
        ranges.push(ByteRange {
            start: first,
            length,
        });
    }
    if no_overlap && ranges.is_empty() {
        return Err(RangeError::NoOverlap);
    }
    Ok(ranges)
}

fn parse_u64(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Invalid);
    }
    s.parse().map_err(|_| RangeError::Invalid)
}

/// What to send for a request, once preconditions have been evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    Full,
    Single(ByteRange),
    Multi(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
    /// 416 without `Content-Range`: the header could not be parsed.
    Invalid,
}

pub fn plan(range_header: Option<&str>, size: u64) -> RangePlan {
    let Some(header) = range_header else {
        return RangePlan::Full;
    };
    // An empty representation has no bytes to select; Go serves it whole.
    if size == 0 {
        return RangePlan::Full;
    }
    match parse_range(header, size) {
        Err(RangeError::Invalid) => RangePlan::Invalid,
        Err(RangeError::NoOverlap) => RangePlan::Unsatisfiable,
        Ok(ranges) => {
            let sum = ranges
                .iter()
                .fold(0u64, |acc, r| acc.saturating_add(r.length));
            if ranges.is_empty() || sum > size || ranges.len() > MAX_RANGES {
                RangePlan::Full
            } else if ranges.len() == 1 {
                RangePlan::Single(ranges[0])
            } else {
                RangePlan::Multi(ranges)
            }
        }
    }
}

/// The framing of a `multipart/byteranges` body, laid out up front so `Content-Length` is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartLayout {
    pub content_type: String,
    /// Each part's header bytes (including the boundary line) followed by the range it frames.
    pub parts: Vec<(Vec<u8>, ByteRange)>,
    pub trailer: Vec<u8>,
    pub total_length: u64,
}

/// Frames parts the way Go's `mime/multipart` writer does (headers sorted, CRLF line ends).
pub fn multipart_layout(
    ranges: &[ByteRange],
    size: u64,
    part_type: &str,
    boundary: &str,
) -> MultipartLayout {
    let mut parts = Vec::with_capacity(ranges.len());
    let mut total = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Range: {}\r\nContent-Type: {part_type}\r\n\r\n",
            r.content_range(size)
        )
        .into_bytes();
        total += head.len() as u64 + r.length;
        parts.push((head, *r));
    }
    let trailer = format!("\r\n--{boundary}--\r\n").into_bytes();
    total += trailer.len() as u64;
    MultipartLayout {
        content_type: format!("multipart/byteranges; boundary={boundary}"),
        parts,
        trailer,
        total_length: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, length: u64) -> ByteRange {
        ByteRange { start, length }
    }

    #[test]
    fn parses_like_go() {
        let size = 10;
        assert_eq!(parse_range("bytes=0-4", size), Ok(vec![r(0, 5)]));
        assert_eq!(parse_range("bytes=2-", size), Ok(vec![r(2, 8)]));
        assert_eq!(parse_range("bytes=-3", size), Ok(vec![r(7, 3)]));
        assert_eq!(parse_range("bytes=-30", size), Ok(vec![r(0, 10)]));
        assert_eq!(parse_range("bytes=5-100", size), Ok(vec![r(5, 5)]));
        assert_eq!(
            parse_range("bytes= 0-0 , 9-9 ", size),
            Ok(vec![r(0, 1), r(9, 1)])
        );
        assert_eq!(parse_range("bytes=0-1,,", size), Ok(vec![r(0, 2)]));
        assert_eq!(parse_range("bytes=", size), Ok(vec![]));
        assert_eq!(parse_range("bytes=10-", size), Err(RangeError::NoOverlap));
        assert_eq!(
            parse_range("bytes=10-20,30-", size),
            Err(RangeError::NoOverlap)
        );
        assert_eq!(parse_range("bytes=-0", size), Err(RangeError::NoOverlap));
        assert_eq!(parse_range("bytes=10-20,0-1", size), Ok(vec![r(0, 2)]));
        for bad in [
            "items=0-1",
            "bytes=5-4",
            "bytes=a-b",
            "bytes=-",
            "bytes=--1",
            "bytes=0",
            "bytes=-1-2",
            "bytes=+1-2",
            "bytes=1-+2",
        ] {
            assert_eq!(parse_range(bad, size), Err(RangeError::Invalid), "{bad}");
        }
        assert_eq!(
            parse_range("bytes=0-99999999999999999999", size),
            Err(RangeError::Invalid)
        );
    }

    #[test]
    fn plans() {
        assert_eq!(plan(None, 10), RangePlan::Full);
        assert_eq!(plan(Some("bytes=0-0"), 0), RangePlan::Full);
        assert_eq!(plan(Some("bytes=0-0"), 10), RangePlan::Single(r(0, 1)));
        assert_eq!(
            plan(Some("bytes=0-0,2-3"), 10),
            RangePlan::Multi(vec![r(0, 1), r(2, 2)])
        );
        // Overlapping ranges summing past the size are ignored (anti-abuse, as Go does).
        assert_eq!(plan(Some("bytes=0-9,0-9"), 10), RangePlan::Full);
        assert_eq!(plan(Some("bytes=20-"), 10), RangePlan::Unsatisfiable);
        assert_eq!(plan(Some("bytes=x"), 10), RangePlan::Invalid);
        let many: Vec<String> = (0..300).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            plan(Some(&format!("bytes={}", many.join(","))), 1000),
            RangePlan::Full
        );
    }

    #[test]
    fn multipart_lengths_are_exact() {
        let ranges = [r(0, 2), r(5, 3)];
        let l = multipart_layout(&ranges, 10, "text/plain", "B");
        let mut body = Vec::new();
        let data = b"0123456789";
        for (head, range) in &l.parts {
            body.extend_from_slice(head);
            body.extend_from_slice(
                &data[range.start as usize..(range.start + range.length) as usize],
            );
        }
        body.extend_from_slice(&l.trailer);
        assert_eq!(body.len() as u64, l.total_length);
        let text = String::from_utf8(body).unwrap_or_default();
        assert_eq!(
            text,
            "--B\r\nContent-Range: bytes 0-1/10\r\nContent-Type: text/plain\r\n\r\n01\r\n--B\r\nContent-Range: bytes 5-7/10\r\nContent-Type: text/plain\r\n\r\n567\r\n--B--\r\n"
        );
        assert_eq!(l.content_type, "multipart/byteranges; boundary=B");
    }
}
