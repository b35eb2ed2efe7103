//! The DNS stand-in: a marked block of `/etc/hosts` lines per simulated node.
//!
//! Only the lines between `# BEGIN svdm-kube-sim <node>` and `# END svdm-kube-sim <node>` are ever touched, so
//! several nodes and the machine's own entries coexist. The file is rewritten in place (it may be a bind mount
//! that cannot be renamed over) under an exclusive lock.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{Result, io_err};

/// One hosts line: an address and the names that resolve to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub ip: Ipv4Addr,
    pub names: Vec<String>,
}

fn markers(node: &str) -> (String, String) {
    (
        format!("# BEGIN svdm-kube-sim {node}"),
        format!("# END svdm-kube-sim {node}"),
    )
}

/// `content` with this node's block replaced by `entries` (removed when `entries` is empty).
pub fn render(content: &str, node: &str, entries: &[Entry]) -> String {
    let (begin, end) = markers(node);
    let mut out = String::with_capacity(content.len());
    let mut inside = false;
    for line in content.lines() {
        if line.trim() == begin {
            inside = true;
        } else if inside && line.trim() == end {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !entries.is_empty() {
        out.push_str(&begin);
        out.push('\n');
        for entry in entries {
            out.push_str(&format!("{} {}\n", entry.ip, entry.names.join(" ")));
        }
        out.push_str(&end);
        out.push('\n');
    }
    out
}

/// Make the node's block in `path` hold exactly `entries`; writes only when something changes.
pub fn apply(path: &Path, node: &str, entries: &[Entry]) -> Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.lock().map_err(io_err("lock", path))?;
    let mut content = String::new();
    file.read_to_string(&mut content)
        .map_err(io_err("read", path))?;
    let wanted = render(&content, node, entries);
    if wanted != content {
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", path))?;
        file.set_len(0).map_err(io_err("truncate", path))?;
        file.write_all(wanted.as_bytes())
            .map_err(io_err("write", path))?;
        file.flush().map_err(io_err("write", path))?;
    }
    // Dropping the file releases the lock.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ip: [u8; 4], names: &[&str]) -> Entry {
        Entry {
            ip: Ipv4Addr::from(ip),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn adds_replaces_and_removes_only_its_own_block() {
        let base = "127.0.0.1 localhost\n";
        let one = render(
            base,
            "n1",
            &[entry(
                [127, 0, 2, 10],
                &["a.ns.svc", "a.ns.svc.cluster.local"],
            )],
        );
        assert_eq!(
            one,
            "127.0.0.1 localhost\n# BEGIN svdm-kube-sim n1\n127.0.2.10 a.ns.svc a.ns.svc.cluster.local\n# END svdm-kube-sim n1\n"
        );
        let two = render(&one, "n2", &[entry([127, 0, 3, 10], &["b.ns.svc"])]);
        let replaced = render(&two, "n1", &[entry([127, 0, 2, 11], &["c.ns.svc"])]);
        assert!(replaced.contains("127.0.2.11 c.ns.svc\n"));
        assert!(!replaced.contains("a.ns.svc"));
        assert!(replaced.contains("127.0.3.10 b.ns.svc\n"));
        let removed = render(&render(&replaced, "n1", &[]), "n2", &[]);
        assert_eq!(removed, base);
    }

    #[test]
    fn apply_rewrites_file_in_place() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io_err("tempdir", Path::new("/tmp")))?;
        let path = dir.path().join("hosts");
        std::fs::write(&path, "127.0.0.1 localhost\n").map_err(io_err("write", &path))?;
        apply(&path, "n1", &[entry([127, 0, 2, 10], &["a.ns.svc"])])?;
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        assert!(text.contains("127.0.2.10 a.ns.svc"));
        apply(&path, "n1", &[])?;
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        assert_eq!(text, "127.0.0.1 localhost\n");
        Ok(())
    }
}
