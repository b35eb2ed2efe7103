//! Validation of request paths before they reach the kernel.
//!
//! The kernel (`openat2` with `RESOLVE_IN_ROOT`) is the real defence against escaping the volume; this module
//! exists to give clear 4xx answers for input that can never name a file, and to keep the resolved path
//! free of `..` so behaviour does not depend on how the kernel treats it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Linux PATH_MAX; anything longer cannot be resolved anyway.
pub const MAX_PATH_BYTES: usize = 4096;
/// Linux NAME_MAX.
pub const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the path has a malformed percent-encoding ('%' must be followed by two hex digits)")]
    BadEscape,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path contains an encoded '/' (%2F) inside a name; file names cannot contain '/'")]
    EncodedSlash,
    #[error("the path contains a '{0}' segment; only plain names are allowed")]
    DotSegment(&'static str),
    #[error("a name in the path is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
}

/// A decoded path inside the volume: plain names only, never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    segments: Vec<Vec<u8>>,
    /// A trailing `/` asks for a directory (listing or tar), its absence for a file.
    pub trailing_slash: bool,
}

impl VolumePath {
    pub fn root() -> Self {
        VolumePath {
            segments: Vec::new(),
            trailing_slash: true,
        }
    }

    pub fn segments(&self) -> &[Vec<u8>] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The path relative to the volume root as the kernel gets it (`.` for the root).
    pub fn relative_bytes(&self) -> Vec<u8> {
        if self.segments.is_empty() {
            return b".".to_vec();
        }
        self.segments.join(&b'/')
    }

    pub fn file_name(&self) -> Option<&[u8]> {
        self.segments.last().map(Vec::as_slice)
    }

    /// For messages: the path as the user asked for it, never the host path.
    pub fn display(&self) -> String {
        let mut s = String::from("/");
        s.push_str(&String::from_utf8_lossy(&self.relative_bytes_or_empty()));
        if self.trailing_slash && !self.segments.is_empty() {
            s.push('/');
        }
        s
    }

    fn relative_bytes_or_empty(&self) -> Vec<u8> {
        self.segments.join(&b'/')
    }

    /// URL-escaped path relative to the root, `/`-terminated for a directory (`""` for the root), the form
    /// listing items use in `uri`.
    pub fn uri_prefix(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            s.push_str(&escape_segment(seg));
            s.push('/');
        }
        s
    }
}

/// Parses the part of the request path after `/api/v1/files` (empty or starting with `/`), still
/// percent-encoded as it arrived on the wire.
pub fn parse_volume_path(raw: &str) -> Result<VolumePath, PathError> {
    // Each decoded byte takes at most three encoded ones; bail out before decoding huge input.
    if raw.len() > MAX_PATH_BYTES * 3 {
        return Err(PathError::TooLong);
    }
    let trailing_slash = raw.is_empty() || raw.ends_with('/');
    let mut segments = Vec::new();
    let mut total = 0usize;
    for enc in raw.split('/') {
        if enc.is_empty() {
            continue;
        }
        let seg = percent_decode_strict(enc.as_bytes())?;
        if seg.contains(&0) {
            return Err(PathError::Nul);
        }
        if seg.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        match seg.as_slice() {
            b"." => return Err(PathError::DotSegment(".")),
            b".." => return Err(PathError::DotSegment("..")),
            _ => {}
        }
        if seg.len() > MAX_NAME_BYTES {
            return Err(PathError::NameTooLong);
        }
        total += seg.len() + 1;
        if total > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        segments.push(seg);
    }
    Ok(VolumePath {
        segments,
        trailing_slash,
    })
}

/// Decodes `%XX` escapes; unlike lenient decoders, a stray `%` is an error rather than a literal, because
/// the client never sends one (it decodes names before sending) and guessing hides bugs.
pub fn percent_decode_strict(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            let hi = input.get(i + 1).and_then(|c| hex_val(*c));
            let lo = input.get(i + 2).and_then(|c| hex_val(*c));
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(PathError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.PathEscape` set: everything but unreserved characters and `$&+:=@` is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b':')
    .remove(b'=')
    .remove(b'@');

/// Escapes one raw name for a URL path segment; non-UTF-8 bytes are escaped byte by byte, so even names
/// that JSON cannot carry exactly stay fetchable through `uri`.
pub fn escape_segment(seg: &[u8]) -> String {
    match std::str::from_utf8(seg) {
        Ok(s) => utf8_percent_encode(s, SEGMENT).to_string(),
        Err(_) => percent_encoding::percent_encode(seg, SEGMENT).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> VolumePath {
        match parse_volume_path(raw) {
            Ok(p) => p,
            Err(e) => panic!("{raw}: {e}"),
        }
    }

    #[test]
    fn plain_paths() {
        let p = ok("/a/b.txt");
        assert_eq!(p.relative_bytes(), b"a/b.txt");
        assert!(!p.trailing_slash);
        assert_eq!(p.file_name(), Some(&b"b.txt"[..]));
        let d = ok("/a/b/");
        assert!(d.trailing_slash);
        assert_eq!(d.uri_prefix(), "a/b/");
        assert_eq!(d.display(), "/a/b/");
        assert!(ok("").is_root());
        assert!(ok("/").is_root());
        assert_eq!(ok("/").relative_bytes(), b".");
        assert_eq!(ok("//a//b").relative_bytes(), b"a/b");
    }

    #[test]
    fn decoding() {
        assert_eq!(ok("/a%20b").relative_bytes(), b"a b");
        assert_eq!(ok("/%C3%A9").relative_bytes(), "é".as_bytes());
        assert_eq!(ok("/a+b").relative_bytes(), b"a+b");
        assert_eq!(ok("/%2e%2e%2efoo").relative_bytes(), b"...foo");
        assert_eq!(ok("/.hidden").relative_bytes(), b".hidden");
        assert_eq!(ok("/a\\..\\b").relative_bytes(), b"a\\..\\b");
    }

    #[test]
    fn hostile() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("/..", DotSegment("..")),
            ("/../etc/passwd", DotSegment("..")),
            ("/a/../../b", DotSegment("..")),
            ("/%2e%2e/x", DotSegment("..")),
            ("/%2E%2E/x", DotSegment("..")),
            ("/.%2e/x", DotSegment("..")),
            ("/./x", DotSegment(".")),
            ("/a%2f..%2f..%2fetc", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%00b", Nul),
            ("/a%", BadEscape),
            ("/a%4", BadEscape),
            ("/a%zz", BadEscape),
            ("/%%32e", BadEscape),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_volume_path(raw).as_ref(), Err(want), "{raw}");
        }
        let long_name = format!("/{}", "a".repeat(256));
        assert_eq!(parse_volume_path(&long_name), Err(NameTooLong));
        let long_path = "/aaaaaaaaaa".repeat(500);
        assert_eq!(parse_volume_path(&long_path), Err(TooLong));
        let huge = "%41".repeat(20000);
        assert_eq!(parse_volume_path(&huge), Err(TooLong));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_segment(b"a b?#%/;,"), "a%20b%3F%23%25%2F%3B%2C");
        assert_eq!(escape_segment(b"x$&+:=@~-._"), "x$&+:=@~-._");
        assert_eq!(escape_segment(&[0xff, b'a']), "%FFa");
        assert_eq!(escape_segment("é".as_bytes()), "%C3%A9");
        // Round trip through the parser.
        let name = "we ird?#%name";
        let enc = escape_segment(name.as_bytes());
        assert_eq!(ok(&format!("/{enc}")).relative_bytes(), name.as_bytes());
    }
}
