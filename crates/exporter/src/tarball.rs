//! `?format=tar`: a directory subtree as one streamed tar archive.
//!
//! Walked with `openat(O_NOFOLLOW)` one name at a time from the already-resolved directory, so the walk
//! can never leave the subtree. Symlinks become link entries (not followed). FIFOs, sockets, devices and
//! entries that cannot be read are skipped; when anything was skipped, a final regular entry named
//! `.svdm-tar-skipped.txt` at the archive root lists them, one `path<TAB>reason` per line. A file that
//! shrinks while being archived is padded with zeros to the size in its header and also listed there.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, fstat, fstatat};
use tar::{Builder, EntryType, Header};
use tokio::sync::mpsc;

use crate::volume::Meta;

pub const SKIPPED_NAME: &str = ".svdm-tar-skipped.txt";
const BUF: usize = 256 * 1024;

/// Hands the archive to the async side in large chunks; a closed receiver (client gone) stops the walk.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(BUF),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(BUF);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BUF {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Reads exactly `size` bytes, zero-filling if the file got shorter, so the archive stays well-formed.
struct Exact<R> {
    inner: R,
    remaining: u64,
    short: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut out[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            out[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn header_for(meta: &Meta, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(u64::from(meta.uid));
    h.set_gid(u64::from(meta.gid));
    h.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
    h.set_size(size);
    h
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Writes the subtree below `dir` (not including `dir` itself) as a tar archive into `out`.
pub fn write_tree<W: Write>(dir: OwnedFd, out: W) -> io::Result<()> {
    let mut builder = Builder::new(out);
    let mut skipped: Vec<(Vec<u8>, String)> = Vec::new();
    // Depth-first with an explicit stack: deep trees must not overflow the thread's stack.
    let mut stack: Vec<(nix::dir::OwningIter, OwnedFd, Vec<u8>)> = Vec::new();
    let dup = dir.try_clone()?;
    stack.push((
        Dir::from_fd(dir).map_err(io::Error::from)?.into_iter(),
        dup,
        Vec::new(),
    ));
    while let Some((iter, dirfd, prefix)) = stack.last_mut() {
        let entry = match iter.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                skipped.push((prefix.clone(), format!("directory read failed: {e}")));
                stack.pop();
                continue;
            }
            Some(Ok(e)) => e,
        };
        let name: &CStr = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let path = join(prefix, bytes);
        let st = match fstatat(&*dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::from_stat(&st),
            Err(nix::Error::ENOENT) => continue,
            Err(e) => {
                skipped.push((path, format!("stat failed: {e}")));
                continue;
            }
        };
        let tar_path = Path::new(OsStr::from_bytes(&path));
        match st.mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let fd = match openat(
                    &*dirfd,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) => {
                        skipped.push((path, format!("cannot open directory: {e}")));
                        continue;
                    }
                };
                let mut h = header_for(&st, EntryType::Directory, 0);
                builder.append_data(&mut h, tar_path, io::empty())?;
                let dup = fd.try_clone()?;
                let iter = Dir::from_fd(fd).map_err(io::Error::from)?.into_iter();
                stack.push((iter, dup, path));
            }
            libc::S_IFREG => {
                let fd = match openat(
                    &*dirfd,
                    name,
                    OFlag::O_RDONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_NONBLOCK
                        | OFlag::O_NOCTTY
                        | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) => {
                        skipped.push((path, format!("cannot open: {e}")));
                        continue;
                    }
                };
                let now = Meta::from_stat(&fstat(&fd).map_err(io::Error::from)?);
                if now.ino != st.ino || now.mode & libc::S_IFMT != libc::S_IFREG {
                    skipped.push((path, "changed while being archived".into()));
                    continue;
                }
                let mut h = header_for(&now, EntryType::Regular, now.size);
                let mut reader = Exact {
                    inner: File::from(fd),
                    remaining: now.size,
                    short: false,
                };
                builder.append_data(&mut h, tar_path, &mut reader)?;
                if reader.short {
                    skipped.push((path, "shrank while being archived; zero-padded".into()));
                }
            }
            libc::S_IFLNK => match readlinkat(&*dirfd, name) {
                Ok(target) => {
                    let mut h = header_for(&st, EntryType::Symlink, 0);
                    builder.append_link(&mut h, tar_path, Path::new(&target))?;
                }
                Err(e) => skipped.push((path, format!("cannot read link: {e}"))),
            },
            _ => {
                let what = match st.mode & libc::S_IFMT {
                    libc::S_IFIFO => "fifo",
                    libc::S_IFSOCK => "socket",
                    libc::S_IFCHR => "character device",
                    libc::S_IFBLK => "block device",
                    _ => "special file",
                };
                skipped.push((path, what.into()));
            }
        }
    }
    if !skipped.is_empty() {
        let mut report = Vec::new();
        for (path, why) in &skipped {
            report.extend_from_slice(path);
            report.push(b'\t');
            report.extend_from_slice(why.as_bytes());
            report.push(b'\n');
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(report.len() as u64);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        builder.append_data(&mut h, SKIPPED_NAME, report.as_slice())?;
    }
    let mut out = builder.into_inner()?;
    out.flush()
}
