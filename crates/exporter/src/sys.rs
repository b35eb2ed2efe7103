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
    // SAFETY: open_how is a plain C struct of integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = 0;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
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
    let mut buf = bytes::BytesMut::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(len - done);
        let pos = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::other("offset out of range"))?;
        // SAFETY: `spare` is valid for writes of `want` bytes (MaybeUninit<u8> has u8's layout) and the fd
        // is open for the duration of the call; pread writes at most `want` bytes.
        let n = unsafe { libc::pread(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want, pos) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
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
