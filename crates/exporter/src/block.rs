//! The block device (or, for tests and benchmarks, a regular image file) served at `/api/v1/block`.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use nix::sys::stat::fstat;
use nix::unistd::{Whence, lseek};

use crate::sys::block_device_size;

pub struct BlockVolume {
    file: Arc<File>,
    /// The export owns the volume exclusively and read-only, so its bytes cannot change while this
    /// process lives: a per-process tag is a truthful strong validator for resumable downloads.
    etag_seed: String,
}

impl BlockVolume {
    pub fn open(path: &Path) -> io::Result<BlockVolume> {
        let file = File::open(path)?;
        let st = fstat(&file).map_err(io::Error::from)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFBLK => {}
            libc::S_IFREG => log::warn!(
                "block source is a regular file, not a block device; serving it as an image"
            ),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "block source must be a block device (or a regular image file)",
                ));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(BlockVolume {
            file: Arc::new(file),
            etag_seed: format!("{now:x}-{:x}", std::process::id()),
        })
    }

    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Asked per request so an online resize is noticed; `BLKGETSIZE64` never trusts `st_size`.
    pub fn size(&self) -> io::Result<u64> {
        match block_device_size(self.file.as_fd()) {
            Ok(size) => Ok(size),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                let end = lseek(self.file.as_fd(), 0, Whence::SeekEnd).map_err(io::Error::from)?;
                u64::try_from(end).map_err(|_| io::Error::other("negative size"))
            }
            Err(e) => Err(e),
        }
    }

    pub fn etag(&self, size: u64) -> String {
        format!("\"blk-{}-{size:x}\"", self.etag_seed)
    }
}
