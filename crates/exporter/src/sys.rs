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
