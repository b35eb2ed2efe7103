//! JSON encoding of directory listings, one item at a time so a listing never has to fit in memory.
//!
//! The d8 client finds the array by scanning for the first string token equal to `"items"`, so the
//! document opens with `{"apiVersion":"v1","items":[` and nothing before it can contain that string.

use serde::Serialize;

use crate::headers::{permissions, rfc3339};
use crate::paths::escape_segment;

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

/// One directory entry as the lister found it (lstat semantics).
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: Option<u64>,
    pub target: Option<Vec<u8>>,
}

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

/// Appends one item; `first` decides the separator. `dir_uri` is the escaped root-relative directory
/// path ending in `/` (empty for the root).
pub fn encode_item(
    out: &mut Vec<u8>,
    dir_uri: &str,
    e: &EntryInfo,
    first: bool,
) -> Result<(), serde_json::Error> {
    if !first {
        out.extend_from_slice(b",\n");
    }
    let name = String::from_utf8_lossy(&e.name);
    let mut uri = String::with_capacity(dir_uri.len() + e.name.len() + 1);
    uri.push_str(dir_uri);
    uri.push_str(&escape_segment(&e.name));
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
            modtime: rfc3339(e.mtime),
            uid: e.uid,
            gid: e.gid,
            permissions: permissions(e.mode),
            size: e.size,
        },
    };
    serde_json::to_writer(&mut *out, &item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: Kind) -> EntryInfo {
        EntryInfo {
            name: name.as_bytes().to_vec(),
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
            encode_item(&mut out, "sub/", e, i == 0).unwrap_or_default();
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
}
