//! Opening things on the served volume. Every path goes through `openat2(RESOLVE_IN_ROOT)` relative to
//! the root directory fd, and every type decision is made from `fstat` of the fd actually opened, so a
//! concurrent rename or symlink swap can at worst change which in-volume object is served.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

use crate::listing::{EntryInfo, Kind};
use crate::offload::IoMode;
use crate::paths::VolumePath;
use crate::sys::{openat2_in_root, openat2_in_root_cached};

/// Metadata of an opened object, in the units the handlers need.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl Meta {
    pub fn from_stat(st: &FileStat) -> Meta {
        Meta {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }

    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }

    /// How special files are named in messages.
    pub fn kind_name(&self) -> &'static str {
        match self.mode & libc::S_IFMT {
            libc::S_IFIFO => "named pipe (FIFO)",
            libc::S_IFSOCK => "socket",
            libc::S_IFCHR => "character device",
            libc::S_IFBLK => "block device",
            libc::S_IFDIR => "directory",
            libc::S_IFLNK => "symbolic link",
            _ => "regular file",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("not found")]
    NotFound,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("permission denied")]
    PermissionDenied,
    #[error("name too long")]
    NameTooLong,
    #[error("the path changed while it was being opened; retry")]
    Changed,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Only in [`IoMode::Cached`]: answering needs the storage. The step is retried on the pool, so this
    /// never reaches a client.
    #[error("not cached")]
    WouldBlock,
}

impl VolumeError {
    fn from_errno(e: io::Error) -> VolumeError {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => VolumeError::NotFound,
            Some(libc::ELOOP) => VolumeError::Loop,
            Some(libc::EACCES) | Some(libc::EPERM) => VolumeError::PermissionDenied,
            Some(libc::ENAMETOOLONG) => VolumeError::NameTooLong,
            // RESOLVE_IN_ROOT reports a concurrent rename that could have been exploited as EAGAIN;
            // EXDEV would mean a resolution tried to leave the root.
            Some(libc::EAGAIN) | Some(libc::EXDEV) => VolumeError::Changed,
            _ => VolumeError::Io(e),
        }
    }
}

impl From<nix::Error> for VolumeError {
    fn from(e: nix::Error) -> Self {
        VolumeError::from_errno(io::Error::from(e))
    }
}

pub enum Resolved {
    File(File, Meta),
    Dir(OwnedFd, Meta),
    /// FIFOs, sockets and devices: described, never opened for I/O.
    Other(Meta),
}

pub struct FsVolume {
    root: OwnedFd,
}

impl FsVolume {
    pub fn open(path: &Path) -> io::Result<FsVolume> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        // Every request depends on openat2; a kernel or seccomp profile without it must fail at start,
        // not as a 500 on each request.
        if let Err(e) = openat2_in_root(root.as_fd(), c".", libc::O_PATH) {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "openat2 is unavailable ({e}); Linux 5.6+ and a seccomp profile allowing openat2 are required"
                ),
            ));
        }
        Ok(FsVolume { root })
    }

    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn is_healthy(&self) -> bool {
        fstat(&self.root).is_ok()
    }

    fn open_rel(
        &self,
        rel: &CStr,
        flags: libc::c_int,
        mode: IoMode,
    ) -> Result<OwnedFd, VolumeError> {
        if mode == IoMode::Cached {
            // EAGAIN here means "not in the dentry cache" as well as "renamed meanwhile": the blocking
            // retry below sorts out which.
            return match openat2_in_root_cached(self.root.as_fd(), rel, flags) {
                Ok(fd) => Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(VolumeError::WouldBlock),
                Err(e) => Err(VolumeError::from_errno(e)),
            };
        }
        // A concurrent rename anywhere makes RESOLVE_IN_ROOT give up with EAGAIN; a few retries make a
        // busy volume look normal without letting a hostile swapper loop us forever.
        let mut attempts = 0;
        loop {
            match openat2_in_root(self.root.as_fd(), rel, flags) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempts < 8 => attempts += 1,
                Err(e) => return Err(VolumeError::from_errno(e)),
            }
        }
    }

    /// Opens a path. The final symlink, if any, is followed inside the volume, so a link requested as a
    /// file yields its target's content, as the d8 client (which saves links as regular files) wants.
    pub fn resolve(&self, path: &VolumePath, mode: IoMode) -> Result<Resolved, VolumeError> {
        let rel = path.relative_cstr();
        // O_PATH never runs a device's or FIFO's open handler, so looking at a special file is harmless.
        let probe = self.open_rel(rel, libc::O_PATH, mode)?;
        let meta = Meta::from_stat(&fstat(&probe)?);
        match meta.kind() {
            Kind::File => {
                let fd = self.open_rel(
                    rel,
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                    mode,
                )?;
                let now = Meta::from_stat(&fstat(&fd)?);
                if now.dev != meta.dev || now.ino != meta.ino || now.kind() != Kind::File {
                    return Err(VolumeError::Changed);
                }
                Ok(Resolved::File(File::from(fd), now))
            }
            Kind::Dir => {
                let fd = self.open_rel(rel, libc::O_RDONLY | libc::O_DIRECTORY, mode)?;
                let now = Meta::from_stat(&fstat(&fd)?);
                if now.dev != meta.dev || now.ino != meta.ino {
                    return Err(VolumeError::Changed);
                }
                Ok(Resolved::Dir(fd, now))
            }
            _ => Ok(Resolved::Other(meta)),
        }
    }

    /// Metadata of what an in-volume symlink finally points to, for listing sizes.
    fn target_meta(&self, rel: &[u8]) -> Option<Meta> {
        let rel = CString::new(rel).ok()?;
        let fd = openat2_in_root(self.root.as_fd(), &rel, libc::O_PATH).ok()?;
        fstat(&fd).ok().map(|st| Meta::from_stat(&st))
    }
}

/// Reads a directory incrementally. Each batch runs on the blocking pool, so an open listing that a slow
/// client drains over hours holds an fd, not a thread.
pub struct DirReader {
    iter: nix::dir::OwningIter,
    dirfd: OwnedFd,
    /// Root-relative path of this directory, for resolving link targets.
    rel: Vec<u8>,
}

impl DirReader {
    pub fn new(fd: OwnedFd, path: &VolumePath) -> Result<DirReader, VolumeError> {
        let dirfd = fd.try_clone()?;
        let dir = Dir::from_fd(fd)?;
        let rel = if path.is_root() {
            Vec::new()
        } else {
            path.relative_bytes().to_vec()
        };
        Ok(DirReader {
            iter: dir.into_iter(),
            dirfd,
            rel,
        })
    }

    /// Hands the next entry (lstat semantics) to `f`, or returns `None` at the end. Entries that vanish
    /// between readdir and lstat are skipped. The entry borrows its name from the directory stream, so
    /// a listing allocates nothing per plain entry.
    pub fn next_with<R>(
        &mut self,
        volume: &FsVolume,
        f: impl FnOnce(&EntryInfo<'_>) -> R,
    ) -> Option<Result<R, VolumeError>> {
        loop {
            let entry = match self.iter.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e.into())),
            };
            let name = entry.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let st = match fstatat(&self.dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::Error::ENOENT) => continue,
                Err(e) => return Some(Err(e.into())),
            };
            let meta = Meta::from_stat(&st);
            let kind = meta.kind();
            let mut info = EntryInfo {
                name: bytes,
                kind,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
                mtime: meta.mtime,
                size: (kind == Kind::File).then_some(meta.size),
                target: None,
            };
            if kind == Kind::Link {
                info.target = nix::fcntl::readlinkat(&self.dirfd, name)
                    .ok()
                    .map(std::os::unix::ffi::OsStringExt::into_vec);
                let mut rel = self.rel.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(bytes);
                if let Some(target) = volume.target_meta(&rel)
                    && target.kind() == Kind::File
                {
                    info.size = Some(target.size);
                }
            }
            return Some(Ok(f(&info)));
        }
    }
}
