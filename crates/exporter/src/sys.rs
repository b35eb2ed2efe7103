//! The only unsafe code of the exporter: two system calls the safe crates do not wrap.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Opens `path` relative to `root` with the kernel resolving every component as if `root` were `/`:
/// `..` cannot climb above it and absolute symlinks land inside it. Magic links (`/proc/self/fd/…`) are
/// refused outright since they could point anywhere.
pub fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2_resolving(root, path, flags, 0)
}

/// [`openat2_in_root`] answered from the dentry cache only: `EAGAIN` when resolving the path would
/// have to read the storage (Linux 5.12+; `EINVAL` before).
pub fn openat2_in_root_cached(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2_resolving(root, path, flags, libc::RESOLVE_CACHED)
}

fn openat2_resolving(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    extra_resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct of integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = 0;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | extra_resolve;
    loop {
        // SAFETY: root is a valid open fd for the duration of the call (borrowed), path is a NUL-terminated
        // string that outlives the call, and `how` is a properly initialised open_how whose size we pass.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        let fd = RawFd::try_from(ret)
            .map_err(|_| io::Error::other("openat2 returned an out-of-range fd"))?;
        // SAFETY: a non-negative return from openat2 is a fresh fd that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(tiocoutq, libc::TIOCOUTQ, libc::c_int);

/// Bytes in a TCP socket's send queue that the peer has not acknowledged yet (`SIOCOUTQ`): it shrinks
/// whenever the client takes data, however little.
pub fn send_queue_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: fd is a valid open socket and `queued` is the c_int the ioctl writes.
    unsafe { tiocoutq(fd.as_raw_fd(), &mut queued) }.map_err(io::Error::from)?;
    usize::try_from(queued).map_err(io::Error::other)
}

/// Size of a block device in bytes (`BLKGETSIZE64`); `st_size` is 0 for devices.
pub fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: fd is a valid open fd and `size` is a u64 the ioctl writes exactly once.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Reads exactly `len` bytes at `offset` into a fresh buffer without zero-filling it first: on the bulk
/// path the memset is a whole extra pass over every byte served.
pub fn pread_exact(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    pread_exact_flags(fd, offset, len, 0)
}

/// [`pread_exact`] from the page cache only (`RWF_NOWAIT`): an error of kind `WouldBlock` when any of
/// the bytes would have to be read from the storage, or when the file system cannot promise that.
pub fn pread_exact_cached(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    match pread_exact_flags(fd, offset, len, libc::RWF_NOWAIT) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Err(io::Error::new(io::ErrorKind::WouldBlock, e))
        }
        other => other,
    }
}

fn pread_exact_flags(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: usize,
    flags: libc::c_int,
) -> io::Result<bytes::Bytes> {
    let mut buf = bytes::BytesMut::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(len - done);
        let pos = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::other("offset out of range"))?;
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: `iov` describes `spare`, valid for writes of `want` bytes (MaybeUninit<u8> has u8's
        // layout), and the fd is open for the duration of the call; preadv2 writes at most `want` bytes.
        let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, pos, flags) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if n == 0 && flags & libc::RWF_NOWAIT != 0 {
            // Not at the end necessarily: the rest may simply not be cached.
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        if n == 0 {
            // The file shrank under us: failing makes the client see a short body against its
            // Content-Length rather than silently wrong bytes.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        let n = usize::try_from(n).map_err(io::Error::other)?;
        // SAFETY: the kernel initialised exactly `n` more bytes right after the current length.
        unsafe { buf.set_len(done + n) };
    }
    Ok(buf.freeze())
}
