//! Validation of request paths before they reach the kernel.
//!
//! The kernel (`openat2` with `RESOLVE_IN_ROOT`) is the real defence against escaping the volume; this module
//! exists to give clear 4xx answers for input that can never name a file, and to keep the resolved path
//! free of `..` so behaviour does not depend on how the kernel treats it.

use std::ffi::{CStr, CString};

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
///
/// Held as one NUL-terminated buffer (`a/b/c`, or `.` for the root) that goes to `openat2` as it is, so
/// parsing a request path costs one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    rel: CString,
    /// A trailing `/` asks for a directory (listing or tar), its absence for a file.
    pub trailing_slash: bool,
}

impl VolumePath {
    pub fn root() -> Self {
        VolumePath {
            rel: c".".to_owned(),
            trailing_slash: true,
        }
    }

    pub fn is_root(&self) -> bool {
        self.rel.as_bytes() == b"."
    }

    /// The names from the root down.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let path: &[u8] = if self.is_root() {
            &[]
        } else {
            self.rel.as_bytes()
        };
        path.split(|&b| b == b'/').filter(|s| !s.is_empty())
    }

    /// The path relative to the volume root as the kernel gets it (`.` for the root).
    pub fn relative_bytes(&self) -> &[u8] {
        self.rel.as_bytes()
    }

    pub fn relative_cstr(&self) -> &CStr {
        &self.rel
    }

    pub fn file_name(&self) -> Option<&[u8]> {
        self.segments().last()
    }

    /// For messages: the path as the user asked for it, never the host path. It may hold any byte a
    /// name can hold (newlines too): log it with `{:?}`.
    pub fn display(&self) -> String {
        let mut s = String::from("/");
        if !self.is_root() {
            s.push_str(&String::from_utf8_lossy(self.rel.as_bytes()));
            if self.trailing_slash {
                s.push('/');
            }
        }
        s
    }

    /// URL-escaped path relative to the root, `/`-terminated for a directory (`""` for the root), the form
    /// listing items use in `uri`.
    pub fn uri_prefix(&self) -> String {
        let mut s = String::new();
        for seg in self.segments() {
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
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 1);
    for enc in raw.split('/') {
        if enc.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        let start = out.len();
        percent_decode_into(enc.as_bytes(), &mut out)?;
        let seg = &out[start..];
        if seg.contains(&0) {
            return Err(PathError::Nul);
        }
        if seg.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        match seg {
            b"." => return Err(PathError::DotSegment(".")),
            b".." => return Err(PathError::DotSegment("..")),
            _ => {}
        }
        if seg.len() > MAX_NAME_BYTES {
            return Err(PathError::NameTooLong);
        }
        // Counted as the kernel sees the path: names plus one separator each.
        if out.len() + 1 > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
    }
    if out.is_empty() {
        return Ok(VolumePath::root());
    }
    // No NUL anywhere: every segment was checked above.
    let rel = CString::new(out).map_err(|_| PathError::Nul)?;
    Ok(VolumePath {
        rel,
        trailing_slash,
    })
}

/// Decodes `%XX` escapes; unlike lenient decoders, a stray `%` is an error rather than a literal, because
/// the client never sends one (it decodes names before sending) and guessing hides bugs.
pub fn percent_decode_strict(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    percent_decode_into(input, &mut out)?;
    Ok(out)
}

fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
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
    Ok(())
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
    let mut out = Vec::with_capacity(seg.len());
    write_escaped_segment(&mut out, seg);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`escape_segment`] appended to `out`.
pub fn write_escaped_segment(out: &mut Vec<u8>, seg: &[u8]) {
    match std::str::from_utf8(seg) {
        Ok(s) => utf8_percent_encode(s, SEGMENT).for_each(|c| out.extend_from_slice(c.as_bytes())),
        Err(_) => percent_encoding::percent_encode(seg, SEGMENT)
            .for_each(|c| out.extend_from_slice(c.as_bytes())),
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
