//! JSON encoding of directory listings, one item at a time so a listing never has to fit in memory.
//!
//! The d8 client finds the array by scanning for the first string token equal to `"items"`, so the
//! document opens with `{"apiVersion":"v1","items":[` and nothing before it can contain that string.

use crate::headers::{write_permissions, write_rfc3339};
use crate::paths::write_escaped_segment;

pub const HEAD: &[u8] = b"{\"apiVersion\":\"v1\",\"items\":[\n";
pub const TAIL: &[u8] = b"]}\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Link => "link",
            Kind::Other => "other",
        }
    }
}

/// One directory entry as the lister found it (lstat semantics), borrowing the name from the
/// directory stream.
#[derive(Debug, Clone)]
pub struct EntryInfo<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: Option<u64>,
    pub target: Option<Vec<u8>>,
}

/// Appends one item; `first` decides the separator. `dir_uri` is the escaped root-relative directory
/// path ending in `/` (empty for the root).
///
/// Written by hand rather than through serde: a 100,000-entry listing spent most of its user time in
/// per-item allocations (the lossy name, the escaped uri, the formatted attributes). The output is byte
/// for byte what `serde_json` makes of the same item (the tests compare the two), keys in this order:
/// `name`, `type`, `uri`, `targetPath` (links only), `attributes` {`modtime`, `uid`, `gid`,
/// `permissions`, `size` (files only)}.
pub fn encode_item(out: &mut Vec<u8>, dir_uri: &str, e: &EntryInfo<'_>, first: bool) {
    if !first {
        out.extend_from_slice(b",\n");
    }
    out.extend_from_slice(b"{\"name\":");
    json_string(out, e.name);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(e.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"uri\":\"");
    // Percent-encoded text is plain ASCII without quotes or backslashes: no JSON escaping needed.
    out.extend_from_slice(dir_uri.as_bytes());
    write_escaped_segment(out, e.name);
    if e.kind == Kind::Dir {
        out.push(b'/');
    }
    out.push(b'"');
    if let Some(t) = &e.target {
        out.extend_from_slice(b",\"targetPath\":");
        json_string(out, t);
    }
    out.extend_from_slice(b",\"attributes\":{\"modtime\":\"");
    write_rfc3339(out, e.mtime);
    out.extend_from_slice(b"\",\"uid\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.uid).as_bytes());
    out.extend_from_slice(b",\"gid\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.gid).as_bytes());
    out.extend_from_slice(b",\"permissions\":\"");
    write_permissions(out, e.mode);
    out.push(b'"');
    if let Some(size) = e.size {
        out.extend_from_slice(b",\"size\":");
        out.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
    }
    out.extend_from_slice(b"}}");
}

/// A JSON string of the name, invalid UTF-8 replaced by U+FFFD (as `String::from_utf8_lossy`), escaped
/// as serde_json escapes: `"` `\\` and the short forms of \b \f \n \r \t, other controls as `\u00XX`.
fn json_string(out: &mut Vec<u8>, raw: &[u8]) {
    out.push(b'"');
    for chunk in raw.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut from = 0;
        for (i, &b) in valid.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&valid[from..i]);
            from = i + 1;
            if esc.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(esc);
            }
        }
        out.extend_from_slice(&valid[from..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn entry(name: &str, kind: Kind) -> EntryInfo<'_> {
        EntryInfo {
            name: name.as_bytes(),
            kind,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 0,
            size: if kind == Kind::File { Some(5) } else { None },
            target: if kind == Kind::Link {
                Some(b"/t".to_vec())
            } else {
                None
            },
        }
    }

    #[test]
    fn document_shape() {
        let mut out = HEAD.to_vec();
        for (i, e) in [
            entry("items", Kind::File),
            entry("d ir", Kind::Dir),
            entry("l", Kind::Link),
        ]
        .iter()
        .enumerate()
        {
            encode_item(&mut out, "sub/", e, i == 0);
        }
        out.extend_from_slice(TAIL);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["apiVersion"], "v1");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["name"], "items");
        assert_eq!(items[0]["type"], "file");
        assert_eq!(items[0]["uri"], "sub/items");
        assert_eq!(items[0]["attributes"]["size"], 5);
        assert_eq!(items[0]["attributes"]["permissions"], "0644");
        assert_eq!(items[1]["uri"], "sub/d%20ir/");
        assert!(items[1]["attributes"].get("size").is_none());
        assert_eq!(items[2]["targetPath"], "/t");
        // The first string equal to "items" must be the key.
        let text = String::from_utf8_lossy(&out);
        let first = text.find("\"items\"").unwrap_or(usize::MAX);
        assert_eq!(first, text.find("\"items\":[").unwrap_or(0));
        // Item key order: name, type, uri first.
        let item = text.lines().nth(1).unwrap_or_default();
        assert!(
            item.starts_with("{\"name\":\"items\",\"type\":\"file\",\"uri\":"),
            "{item}"
        );
    }

    /// The encoder this one replaced: serde over these structs. Kept as the reference the hand-written
    /// encoder must match byte for byte.
    #[derive(Serialize)]
    struct Item<'a> {
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        uri: &'a str,
        #[serde(rename = "targetPath", skip_serializing_if = "Option::is_none")]
        target_path: Option<&'a str>,
        attributes: Attributes,
    }

    #[derive(Serialize)]
    struct Attributes {
        modtime: String,
        uid: u32,
        gid: u32,
        permissions: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    }

    fn reference(dir_uri: &str, e: &EntryInfo<'_>) -> Vec<u8> {
        let name = String::from_utf8_lossy(e.name);
        let mut uri = dir_uri.to_string();
        uri.push_str(&crate::paths::escape_segment(e.name));
        if e.kind == Kind::Dir {
            uri.push('/');
        }
        let target = e.target.as_ref().map(|t| String::from_utf8_lossy(t));
        let item = Item {
            name: &name,
            kind: e.kind.as_str(),
            uri: &uri,
            target_path: target.as_deref(),
            attributes: Attributes {
                modtime: crate::headers::rfc3339(e.mtime),
                uid: e.uid,
                gid: e.gid,
                permissions: crate::headers::permissions(e.mode),
                size: e.size,
            },
        };
        serde_json::to_vec(&item).unwrap_or_default()
    }

    #[test]
    fn matches_serde_byte_for_byte() {
        let mut names: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b'a', b, b'z']).collect();
        names.extend(
            [
                &b"plain"[..],
                "é x?#%.txt".as_bytes(),
                b"quote\"back\\slash",
                b"\xff\xfe",
                b"ok\xe2\x82",
                b"\xf0\x9f\x98\x80 emoji",
                b"\xc3(",
                "\u{2028}line sep".as_bytes(),
                b"\x7f",
            ]
            .map(<[u8]>::to_vec),
        );
        let mut x: u64 = 7;
        for _ in 0..2000 {
            let mut n = Vec::new();
            for _ in 0..(x % 12) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                n.push((x >> 24) as u8);
            }
            names.push(n);
        }
        for (i, name) in names.iter().enumerate() {
            for kind in [Kind::File, Kind::Dir, Kind::Link, Kind::Other] {
                let e = EntryInfo {
                    name,
                    kind,
                    mode: 0o100000 | ((i as u32 * 37) % 0o10000),
                    uid: i as u32 * 1000,
                    gid: u32::MAX - i as u32,
                    mtime: (i as i64 - 1000) * 86_399 * 31,
                    size: (kind == Kind::File).then_some(i as u64 * 1_000_003),
                    target: (kind == Kind::Link).then(|| name.iter().rev().copied().collect()),
                };
                let mut ours = Vec::new();
                encode_item(&mut ours, "d%20ir/", &e, true);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&reference("d%20ir/", &e)),
                    "{name:?}"
                );
            }
        }
    }
}
