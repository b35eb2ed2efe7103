//! The simulated storage backend: what a CSI driver's controller and node plugins would do to real disks.
//!
//! Layout under the data directory:
//! - `volumes/<handle>/` — a Filesystem volume (a plain directory);
//! - `volumes/<handle>.img` — a Block volume's sparse backing file, attached to a loop device;
//! - `snapshots/<handle>/` or `snapshots/<handle>.img` — a snapshot's copy, with `snapshots/<handle>.json`
//!   describing it (volume mode, size).
//!
//! Everything here blocks; callers run it on `spawn_blocking`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeMode {
    Filesystem,
    Block,
}

impl VolumeMode {
    /// From a PVC/PV `volumeMode` field (absent means Filesystem).
    pub fn from_field(field: Option<&str>) -> Self {
        match field {
            Some("Block") => VolumeMode::Block,
            _ => VolumeMode::Filesystem,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::Filesystem => "Filesystem",
            VolumeMode::Block => "Block",
        }
    }
}

/// Where a volume's data lives on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeLocation {
    pub mode: VolumeMode,
    /// The directory (Filesystem) or backing image file (Block).
    pub path: PathBuf,
    /// The loop device over `path` (Block only).
    pub loop_device: Option<String>,
}

/// What the snapshot store records next to each snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    pub mode: VolumeMode,
    pub size_bytes: u64,
    pub source_volume_handle: String,
    /// Unix time in nanoseconds.
    pub created_nanos: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["volumes", "snapshots", "pods", "logs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let root = fs::canonicalize(root).map_err(io_err("resolve", root))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn volume_dir(&self, handle: &str) -> PathBuf {
        self.root.join("volumes").join(handle)
    }

    pub fn volume_image(&self, handle: &str) -> PathBuf {
        self.root.join("volumes").join(format!("{handle}.img"))
    }

    fn snapshot_data(&self, handle: &str, mode: VolumeMode) -> PathBuf {
        match mode {
            VolumeMode::Filesystem => self.root.join("snapshots").join(handle),
            VolumeMode::Block => self.root.join("snapshots").join(format!("{handle}.img")),
        }
    }

    fn snapshot_meta_path(&self, handle: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{handle}.json"))
    }

    /// Create an empty volume, or a volume holding a snapshot's data when `from_snapshot` is given.
    pub fn create_volume(
        &self,
        handle: &str,
        mode: VolumeMode,
        size: u64,
        from_snapshot: Option<&str>,
    ) -> Result<VolumeLocation> {
        check_handle(handle)?;
        match mode {
            VolumeMode::Filesystem => {
                let dir = self.volume_dir(handle);
                if !dir.exists() {
                    let tmp = self.root.join("volumes").join(format!(".tmp-{handle}"));
                    remove_any(&tmp)?;
                    match from_snapshot {
                        Some(snap) => {
                            copy_tree(&self.snapshot_data(snap, VolumeMode::Filesystem), &tmp)?
                        }
                        None => {
                            fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
                            // Like a freshly formatted filesystem: writable by any pod user.
                            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777))
                                .map_err(io_err("chmod", &tmp))?;
                        }
                    }
                    fs::rename(&tmp, &dir).map_err(io_err("rename", &tmp))?;
                }
                Ok(VolumeLocation {
                    mode,
                    path: dir,
                    loop_device: None,
                })
            }
            VolumeMode::Block => {
                let img = self.volume_image(handle);
                if !img.exists() {
                    let tmp = self.root.join("volumes").join(format!(".tmp-{handle}.img"));
                    remove_any(&tmp)?;
                    let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
                    if let Some(snap) = from_snapshot {
                        let src = self.snapshot_data(snap, VolumeMode::Block);
                        let mut input = File::open(&src).map_err(io_err("open", &src))?;
                        sparse_copy(&mut input, &mut out, &tmp)?;
                    }
                    out.set_len(size).map_err(io_err("resize", &tmp))?;
                    out.sync_all().map_err(io_err("sync", &tmp))?;
                    fs::rename(&tmp, &img).map_err(io_err("rename", &tmp))?;
                }
                let dev = attach_loop(&img)?;
                Ok(VolumeLocation {
                    mode,
                    path: img,
                    loop_device: Some(dev),
                })
            }
        }
    }

    /// Remove a volume's data (detaching its loop device first). Missing data is not an error.
    pub fn delete_volume(&self, location: &VolumeLocation) -> Result<()> {
        self.check_inside(&location.path)?;
        if location.mode == VolumeMode::Block {
            detach_loops(&location.path)?;
        }
        remove_any(&location.path)
    }

    /// Copy a volume into the snapshot store under `snap_handle`. Idempotent.
    pub fn create_snapshot(
        &self,
        snap_handle: &str,
        source: &VolumeLocation,
        source_handle: &str,
        size_bytes: u64,
    ) -> Result<SnapshotMeta> {
        check_handle(snap_handle)?;
        if let Some(meta) = self.snapshot(snap_handle)? {
            return Ok(meta);
        }
        let data = self.snapshot_data(snap_handle, source.mode);
        let tmp = self
            .root
            .join("snapshots")
            .join(format!(".tmp-{snap_handle}"));
        remove_any(&tmp)?;
        match source.mode {
            VolumeMode::Filesystem => copy_tree(&source.path, &tmp)?,
            VolumeMode::Block => {
                // Read through the loop device: writes made through it may not have reached the file yet.
                let from = source
                    .loop_device
                    .as_deref()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| source.path.clone());
                let mut input = File::open(&from).map_err(io_err("open", &from))?;
                let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
                sparse_copy(&mut input, &mut out, &tmp)?;
                out.sync_all().map_err(io_err("sync", &tmp))?;
            }
        }
        fs::rename(&tmp, &data).map_err(io_err("rename", &tmp))?;
        let meta = SnapshotMeta {
            mode: source.mode,
            size_bytes,
            source_volume_handle: source_handle.to_string(),
            created_nanos: jiff::Timestamp::now().as_nanosecond() as i64,
        };
        let meta_path = self.snapshot_meta_path(snap_handle);
        fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)
            .map_err(io_err("write", &meta_path))?;
        Ok(meta)
    }

    /// The stored snapshot, if complete.
    pub fn snapshot(&self, snap_handle: &str) -> Result<Option<SnapshotMeta>> {
        check_handle(snap_handle)?;
        let meta_path = self.snapshot_meta_path(snap_handle);
        match fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: SnapshotMeta = serde_json::from_slice(&bytes)?;
                Ok(self
                    .snapshot_data(snap_handle, meta.mode)
                    .exists()
                    .then_some(meta))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &meta_path)(e)),
        }
    }

    pub fn delete_snapshot(&self, snap_handle: &str) -> Result<()> {
        check_handle(snap_handle)?;
        for mode in [VolumeMode::Filesystem, VolumeMode::Block] {
            remove_any(&self.snapshot_data(snap_handle, mode))?;
        }
        remove_any(&self.snapshot_meta_path(snap_handle))
    }

    fn check_inside(&self, path: &Path) -> Result<()> {
        if path.starts_with(&self.root)
            && !path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "refusing to touch {} outside {}",
                path.display(),
                self.root.display()
            )))
        }
    }
}

/// Handles become file names; keep them to a safe alphabet.
fn check_handle(handle: &str) -> Result<()> {
    let ok = !handle.is_empty()
        && !handle.starts_with('.')
        && handle
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Unsupported(format!("invalid handle {handle:?}")))
    }
}

fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Copy a directory tree keeping modes, owners, modification times, symlinks (verbatim) and FIFOs.
/// Sockets and device nodes are skipped: a copy of them means nothing.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(io_err("create", dst))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(io_err("list", src))?
            .collect::<std::io::Result<_>>()
            .map_err(io_err("list", src))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err("readlink", src))?;
        symlink(&target, dst).map_err(io_err("symlink", dst))?;
        lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", dst))?;
        return Ok(());
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(io_err("copy to", dst))?;
    } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
        nix::unistd::mkfifo(dst, nix::sys::stat::Mode::from_bits_truncate(meta.mode()))
            .map_err(|e| io_err("mkfifo", dst)(e.into()))?;
    } else {
        log::debug!("snapshot copy skips special file {}", src.display());
        return Ok(());
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err("chmod", dst))?;
    if let Ok(mtime) = meta.modified()
        && (ft.is_file() || ft.is_dir())
    {
        // Directories last, after their contents changed them.
        File::open(dst)
            .and_then(|f| f.set_modified(mtime))
            .map_err(io_err("set mtime of", dst))?;
    }
    Ok(())
}

/// Copy `input` to `out` from the start, seeking over all-zero blocks so the result stays sparse.
fn sparse_copy(input: &mut File, out: &mut File, out_path: &Path) -> Result<()> {
    const BLOCK: usize = 1 << 16;
    let mut buf = vec![0u8; BLOCK];
    let mut len: u64 = 0;
    input
        .seek(SeekFrom::Start(0))
        .map_err(io_err("seek", out_path))?;
    loop {
        let n = read_full(input, &mut buf).map_err(io_err("read source of", out_path))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64))
                .map_err(io_err("seek", out_path))?;
        } else {
            out.write_all(&buf[..n])
                .map_err(io_err("write", out_path))?;
        }
        len += n as u64;
    }
    out.set_len(len).map_err(io_err("resize", out_path))
}

fn read_full(input: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn losetup(args: &[&str]) -> Result<String> {
    let command = format!("losetup {}", args.join(" "));
    let out = Command::new("losetup")
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Loop devices currently attached to `file`.
pub fn loops_of(file: &Path) -> Result<Vec<String>> {
    let path = file.to_string_lossy();
    let out = losetup(&["-j", &path])?;
    // Lines look like `/dev/loop0: [65024]:9977885 (/path/file.img)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(dev, _)| dev.to_string()))
        .collect())
}

/// The loop device over `file`, attaching one when none is.
pub fn attach_loop(file: &Path) -> Result<String> {
    if let Some(dev) = loops_of(file)?.into_iter().next() {
        return Ok(dev);
    }
    let path = file.to_string_lossy();
    Ok(losetup(&["-f", "--show", &path])?.trim().to_string())
}

pub fn detach_loops(file: &Path) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    for dev in loops_of(file)? {
        losetup(&["-d", &dev])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_modes_symlinks_and_fifos() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(io_err("tempdir", Path::new("/tmp")))?;
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).map_err(io_err("mkdir", &src))?;
        fs::write(src.join("sub/a.txt"), b"hello").map_err(io_err("write", &src))?;
        fs::set_permissions(src.join("sub/a.txt"), fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", &src))?;
        symlink("sub/a.txt", src.join("link")).map_err(io_err("symlink", &src))?;
        symlink("/etc/passwd", src.join("abs")).map_err(io_err("symlink", &src))?;
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .map_err(|e| io_err("mkfifo", &src)(e.into()))?;

        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst)?;
        assert_eq!(
            fs::read(dst.join("sub/a.txt")).map_err(io_err("read", &dst))?,
            b"hello"
        );
        let mode = fs::metadata(dst.join("sub/a.txt"))
            .map_err(io_err("stat", &dst))?
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_link(dst.join("link")).map_err(io_err("readlink", &dst))?,
            Path::new("sub/a.txt")
        );
        assert_eq!(
            fs::read_link(dst.join("abs")).map_err(io_err("readlink", &dst))?,
            Path::new("/etc/passwd")
        );
        let fifo = fs::symlink_metadata(dst.join("fifo")).map_err(io_err("stat", &dst))?;
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
        Ok(())
    }

    #[test]
    fn filesystem_volume_snapshot_and_restore() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(io_err("tempdir", Path::new("/tmp")))?;
        let store = Store::open(tmp.path())?;
        let vol = store.create_volume("vol-a", VolumeMode::Filesystem, 1 << 20, None)?;
        fs::write(vol.path.join("f"), b"data").map_err(io_err("write", &vol.path))?;
        let meta = store.create_snapshot("snap-a", &vol, "vol-a", 1 << 20)?;
        assert_eq!(meta.mode, VolumeMode::Filesystem);
        assert_eq!(store.snapshot("snap-a")?, Some(meta));
        fs::write(vol.path.join("f"), b"changed").map_err(io_err("write", &vol.path))?;
        let restored =
            store.create_volume("vol-b", VolumeMode::Filesystem, 1 << 20, Some("snap-a"))?;
        assert_eq!(
            fs::read(restored.path.join("f")).map_err(io_err("read", &restored.path))?,
            b"data"
        );
        store.delete_snapshot("snap-a")?;
        assert_eq!(store.snapshot("snap-a")?, None);
        store.delete_volume(&vol)?;
        assert!(!vol.path.exists());
        Ok(())
    }

    #[test]
    fn handles_are_checked() {
        assert!(check_handle("vol-1234_x.y").is_ok());
        assert!(check_handle("../etc").is_err());
        assert!(check_handle("a/b").is_err());
        assert!(check_handle(".hidden").is_err());
        assert!(check_handle("").is_err());
    }
}
