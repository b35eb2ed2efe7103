//! Where short file-system steps (resolve and open a path, read a small file, the device size) run.
//!
//! Handing each such step to the blocking thread pool costs two thread wake-ups and context switches,
//! which on the bench machine were most of a small request's CPU time (bench/exporter.sh; more than the
//! TLS, the HTTP parsing and the file system together). So a step first runs on the connection's
//! worker, as nginx runs it, in a mode that cannot block: path resolution with `RESOLVE_CACHED`
//! (the kernel answers from its dentry cache or says `EAGAIN`) and reads with `RWF_NOWAIT` (page cache
//! or `EAGAIN`). Whatever would have to wait for the storage is done again on the pool, where slow
//! steps overlap instead of stalling the worker's other connections.
//!
//! Network and FUSE file systems can wait inside `open` and `fstat` even when the lookup is cached
//! (NFS revalidates attributes over the wire), so on those every step goes to the pool, as do all
//! steps on kernels without `RESOLVE_CACHED` (before 5.12). Directory listings always use the pool:
//! `getdents` and a `stat` per entry have no non-blocking form.

use std::io;
use std::os::fd::BorrowedFd;

/// How a step may do its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Only what the kernel can answer from its caches; anything else is [`WouldBlock`].
    Cached,
    /// Anything, waiting for the storage if needed (on the blocking pool).
    Blocking,
}

/// The step needs the storage; retry it in [`IoMode::Blocking`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldBlock;

/// File systems whose open or stat may wait on a network or a user-space daemon even when the path is
/// in the dentry cache (`statfs(2)` magic numbers).
const REMOTE_FILESYSTEMS: &[(&str, i64)] = &[
    ("nfs", 0x6969),
    ("smb", 0x517b),
    ("cifs", 0xff53_4d42),
    ("smb2", 0xfe53_4d42),
    ("ceph", 0x00c3_6400),
    ("fuse", 0x6573_5546),
    ("9p", 0x0102_1997),
    ("afs", 0x5346_414f),
    ("coda", 0x7375_7245),
    ("gfs2", 0x0116_1970),
    ("ocfs2", 0x7461_636f),
    ("lustre", 0x0bd0_0bd0),
];

/// The remote file system `f_type` names, if it is one.
pub fn remote_filesystem(f_type: i64) -> Option<&'static str> {
    REMOTE_FILESYSTEMS
        .iter()
        .find(|(_, magic)| *magic == f_type)
        .map(|(name, _)| *name)
}

pub struct Offload {
    inline: bool,
}

impl Offload {
    /// Steps go to the pool only.
    pub fn pool_only() -> Offload {
        Offload { inline: false }
    }

    /// Decides for the volume whose root is `root`: inline steps when `allow`, the kernel has
    /// `RESOLVE_CACHED` and the file system is local.
    pub fn for_volume(root: BorrowedFd<'_>, allow: bool) -> Offload {
        if !allow {
            return Offload::pool_only();
        }
        if let Err(e) = crate::sys::openat2_in_root_cached(root, c".", libc::O_PATH) {
            log::info!(
                "file-system steps use the thread pool: RESOLVE_CACHED is unavailable ({e}; Linux 5.12+)"
            );
            return Offload::pool_only();
        }
        match nix::sys::statfs::fstatfs(root) {
            Ok(st) => match remote_filesystem(st.filesystem_type().0) {
                Some(name) => {
                    log::info!(
                        "file-system steps use the thread pool: the volume is on {name}, whose open and stat can wait on the network"
                    );
                    Offload::pool_only()
                }
                None => Offload { inline: true },
            },
            Err(e) => {
                log::info!("file-system steps use the thread pool: statfs failed ({e})");
                Offload::pool_only()
            }
        }
    }

    pub fn inline(&self) -> bool {
        self.inline
    }

    /// Runs `step` on the worker in [`IoMode::Cached`] if allowed, and on the pool in
    /// [`IoMode::Blocking`] otherwise or when it would block.
    pub async fn run<T: Send + 'static>(
        &self,
        step: impl Fn(IoMode) -> Result<T, WouldBlock> + Send + 'static,
    ) -> io::Result<T> {
        if self.inline
            && let Ok(out) = step(IoMode::Cached)
        {
            return Ok(out);
        }
        tokio::task::spawn_blocking(move || step(IoMode::Blocking))
            .await
            .map_err(io::Error::other)?
            .map_err(|WouldBlock| io::Error::other("a blocking step reported WouldBlock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_filesystems_are_recognised() {
        assert_eq!(remote_filesystem(0x6969), Some("nfs"));
        assert_eq!(remote_filesystem(0x6573_5546), Some("fuse"));
        assert_eq!(remote_filesystem(0x00c3_6400), Some("ceph"));
        // ext4, xfs, btrfs, tmpfs, overlayfs: local.
        for local in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994, 0x794c_7630] {
            assert_eq!(remote_filesystem(local), None, "{local:#x}");
        }
    }

    #[tokio::test]
    async fn a_step_that_would_block_runs_again_on_the_pool() {
        let here = std::thread::current().id();
        let inline = Offload { inline: true };
        let ran = inline
            .run(|mode| Ok((mode, std::thread::current().id())))
            .await
            .ok();
        assert_eq!(ran, Some((IoMode::Cached, here)));
        let ran = inline
            .run(|mode| match mode {
                IoMode::Cached => Err(WouldBlock),
                IoMode::Blocking => Ok((mode, std::thread::current().id())),
            })
            .await
            .ok();
        assert!(matches!(ran, Some((IoMode::Blocking, id)) if id != here));
        let pooled = Offload::pool_only().run(Ok).await.ok();
        assert_eq!(pooled, Some(IoMode::Blocking));
    }
}
