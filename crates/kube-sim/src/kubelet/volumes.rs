//! Pod volumes on the host: Secret, ConfigMap, projected and downward-API volumes materialised in the
//! kubelet's atomic layout, emptyDirs as directories, and PVCs resolved to the PV's directory or loop device.
//!
//! Atomic layout (as the kubelet's AtomicWriter): the files live in a `..<timestamp>` directory, `..data` is
//! a symlink to it, and each top-level entry is a symlink `name -> ..data/name`. An update writes a new
//! timestamped directory and renames a new `..data` symlink over the old one, so a reader (the exporter
//! reloading its certificate) never sees a half-written set of files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::Api;

use super::expand::{PathMapping, Sources, field_ref};
use crate::Sim;
use crate::error::{Error, Result, io_err};
use crate::provisioner::host_location;
use crate::storage::VolumeMode;

/// Relative path inside the volume -> (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

const DATA: &str = "..data";

/// The directory `..data` points at, if any.
fn current_dir(dir: &Path) -> Option<PathBuf> {
    fs::read_link(dir.join(DATA)).ok().map(|t| dir.join(t))
}

fn same_content(ts_dir: &Path, files: &Files) -> bool {
    let mut on_disk = Vec::new();
    if collect_files(ts_dir, ts_dir, &mut on_disk).is_err() || on_disk.len() != files.len() {
        return false;
    }
    files.iter().all(|(rel, (content, mode))| {
        let p = ts_dir.join(rel);
        let mode_ok = fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o7777 == *mode)
            .unwrap_or(false);
        mode_ok && fs::read(&p).map(|c| c == *content).unwrap_or(false)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(root, &entry.path(), out)?;
        } else {
            out.push(
                entry
                    .path()
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// Make `dir` hold exactly `files` in the atomic layout. Returns whether anything changed.
pub fn write_atomic(dir: &Path, files: &Files) -> Result<bool> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let old = current_dir(dir);
    if old.as_deref().is_some_and(|d| same_content(d, files)) {
        return Ok(false);
    }
    let ts_name = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let ts_dir = dir.join(&ts_name);
    fs::create_dir(&ts_dir).map_err(io_err("create", &ts_dir))?;
    for (rel, (content, mode)) in files {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        fs::write(&path, content).map_err(io_err("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .map_err(io_err("chmod", &path))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(&ts_name, &tmp_link).map_err(io_err("symlink", &tmp_link))?;
    fs::rename(&tmp_link, dir.join(DATA)).map_err(io_err("rename", &tmp_link))?;

    let wanted: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|rel| rel.split('/').next().map(str::to_string))
        .collect();
    for top in &wanted {
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("{DATA}/{top}"), &link).map_err(io_err("symlink", &link))?;
        }
    }
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if !name.starts_with("..") && is_link && !wanted.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let _ = fs::remove_dir_all(old);
    }
    Ok(true)
}

/// Select keys (all, or `items`) into files, as Secret/ConfigMap volumes do.
pub fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
) -> Result<Files> {
    match items {
        None => Ok(data
            .into_iter()
            .map(|(k, v)| (k, (v, default_mode)))
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let content = data
                    .get(&item.key)
                    .cloned()
                    .ok_or_else(|| Error::NotReady(format!("key {} not found", item.key)))?;
                let mode = item.mode.map(|m| m as u32).unwrap_or(default_mode);
                Ok((item.path.clone(), (content, mode)))
            })
            .collect(),
    }
}

/// What the kubelet needs to (re)build one materialised volume.
pub struct Materialised {
    pub volume: Volume,
    pub dir: PathBuf,
}

async fn contents(
    volume: &Volume,
    pod: &Pod,
    sources: &Sources,
    token: &str,
) -> Result<Option<Files>> {
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        return match sources.secret(&name).await? {
            Some(data) => Ok(Some(select(data, s.items.as_deref(), mode)?)),
            None if s.optional.unwrap_or(false) => Ok(Some(Files::new())),
            None => Err(Error::NotReady(format!("secret {name} not found"))),
        };
    }
    if let Some(c) = &volume.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        return match sources.config_map(&c.name).await? {
            Some(data) => Ok(Some(select(data, c.items.as_deref(), mode)?)),
            None if c.optional.unwrap_or(false) => Ok(Some(Files::new())),
            None => Err(Error::NotReady(format!("configmap {} not found", c.name))),
        };
    }
    if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        let mut files = Files::new();
        for item in d.items.iter().flatten() {
            if let Some(f) = &item.field_ref {
                let value = field_ref(pod, &f.field_path).unwrap_or_default();
                files.insert(
                    item.path.clone(),
                    (
                        value.into_bytes(),
                        item.mode.map(|m| m as u32).unwrap_or(mode),
                    ),
                );
            }
        }
        return Ok(Some(files));
    }
    if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        let mut files = Files::new();
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                files.insert(t.path.clone(), (token.as_bytes().to_vec(), mode));
            }
            if let Some(c) = &source.config_map {
                match sources.config_map(&c.name).await? {
                    Some(data) => files.extend(select(data, c.items.as_deref(), mode)?),
                    None if c.optional.unwrap_or(false) => {}
                    None => return Err(Error::NotReady(format!("configmap {} not found", c.name))),
                }
            }
            if let Some(s) = &source.secret {
                match sources.secret(&s.name).await? {
                    Some(data) => files.extend(select(data, s.items.as_deref(), mode)?),
                    None if s.optional.unwrap_or(false) => {}
                    None => return Err(Error::NotReady(format!("secret {} not found", s.name))),
                }
            }
            if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    if let Some(f) = &item.field_ref {
                        let value = field_ref(pod, &f.field_path).unwrap_or_default();
                        files.insert(item.path.clone(), (value.into_bytes(), mode));
                    }
                }
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// (Re)write one materialised volume; returns whether it changed.
pub async fn refresh(m: &Materialised, pod: &Pod, sources: &Sources, token: &str) -> Result<bool> {
    let Some(files) = contents(&m.volume, pod, sources, token).await? else {
        return Ok(false);
    };
    let dir = m.dir.clone();
    tokio::task::spawn_blocking(move || write_atomic(&dir, &files))
        .await
        .map_err(|e| Error::NotReady(e.to_string()))?
}

/// Where a pod volume lives on the host.
pub enum HostVolume {
    /// A directory (materialised volume, emptyDir, Filesystem PVC).
    Dir(PathBuf),
    /// A block device (Block PVC).
    Device(String),
}

/// Set up all of `pod`'s volumes under `pod_dir`. Returns host locations by volume name and the volumes to
/// keep refreshed.
pub async fn prepare(
    sim: &Sim,
    pod: &Pod,
    pod_dir: &Path,
    sources: &Sources,
    token: &str,
) -> Result<(BTreeMap<String, HostVolume>, Vec<Materialised>)> {
    let client = &sim.client;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut hosts = BTreeMap::new();
    let mut materialised = Vec::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let dir = pod_dir.join("volumes").join(&volume.name);
        if let Some(claim) = &volume.persistent_volume_claim {
            let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                .get(&claim.claim_name)
                .await?;
            let pv_name = pvc
                .spec
                .and_then(|s| s.volume_name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::NotReady(format!("claim {} is not bound yet", claim.claim_name))
                })?;
            let pv = Api::<PersistentVolume>::all(client.clone())
                .get(&pv_name)
                .await?;
            let loc = host_location(sim, &pv).await?.ok_or_else(|| {
                Error::Unsupported(format!(
                    "volume {pv_name} is not served by this simulated node"
                ))
            })?;
            let host = match loc.mode {
                VolumeMode::Filesystem => HostVolume::Dir(loc.path),
                VolumeMode::Block => HostVolume::Device(
                    loc.loop_device
                        .ok_or_else(|| Error::NotReady(format!("{pv_name} has no loop device")))?,
                ),
            };
            hosts.insert(volume.name.clone(), host);
        } else if volume.empty_dir.is_some() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            hosts.insert(volume.name.clone(), HostVolume::Dir(dir));
        } else if volume.secret.is_some()
            || volume.config_map.is_some()
            || volume.projected.is_some()
            || volume.downward_api.is_some()
        {
            let m = Materialised {
                volume: volume.clone(),
                dir: dir.clone(),
            };
            refresh(&m, pod, sources, token).await?;
            materialised.push(m);
            hosts.insert(volume.name.clone(), HostVolume::Dir(dir));
        } else {
            log::warn!(
                "pod {ns}/{}: volume {} has an unsupported type; not provided",
                pod.metadata.name.as_deref().unwrap_or(""),
                volume.name
            );
        }
    }
    Ok((hosts, materialised))
}

/// Container paths (`volumeMounts`, `volumeDevices`) paired with their host paths.
pub fn mappings(
    container: &k8s_openapi::api::core::v1::Container,
    hosts: &BTreeMap<String, HostVolume>,
) -> Result<Vec<PathMapping>> {
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        match hosts.get(&mount.name) {
            Some(HostVolume::Dir(dir)) => {
                let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => dir.join(sub),
                    None => dir.clone(),
                };
                out.push(PathMapping {
                    container: mount.mount_path.clone(),
                    host: host.to_string_lossy().into_owned(),
                });
            }
            Some(HostVolume::Device(_)) => {
                return Err(Error::Unsupported(format!(
                    "volume {} is a block device; use volumeDevices",
                    mount.name
                )));
            }
            None => {
                return Err(Error::Unsupported(format!(
                    "volumeMount {} names no supported volume",
                    mount.name
                )));
            }
        }
    }
    for device in container.volume_devices.iter().flatten() {
        match hosts.get(&device.name) {
            Some(HostVolume::Device(dev)) => out.push(PathMapping {
                container: device.device_path.clone(),
                host: dev.clone(),
            }),
            _ => {
                return Err(Error::Unsupported(format!(
                    "volumeDevice {} is not a Block volume",
                    device.name
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn atomic_layout_and_update() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(io_err("tempdir", Path::new("/tmp")))?;
        let dir = tmp.path().join("tls");
        assert!(write_atomic(
            &dir,
            &files(&[("tls.crt", "one"), ("tls.key", "k")])
        )?);
        assert_eq!(
            fs::read_to_string(dir.join("tls.crt")).map_err(io_err("read", &dir))?,
            "one"
        );
        assert_eq!(
            fs::read_link(dir.join("tls.crt")).map_err(io_err("readlink", &dir))?,
            Path::new("..data/tls.crt")
        );
        let first = fs::read_link(dir.join(DATA)).map_err(io_err("readlink", &dir))?;
        assert!(first.to_string_lossy().starts_with("..20"));

        // Same content: nothing happens.
        assert!(!write_atomic(
            &dir,
            &files(&[("tls.crt", "one"), ("tls.key", "k")])
        )?);

        // New content: new directory, old one gone, dropped keys unlinked.
        assert!(write_atomic(&dir, &files(&[("tls.crt", "two")]))?);
        let second = fs::read_link(dir.join(DATA)).map_err(io_err("readlink", &dir))?;
        assert_ne!(first, second);
        assert!(!dir.join(&first).exists());
        assert_eq!(
            fs::read_to_string(dir.join("tls.crt")).map_err(io_err("read", &dir))?,
            "two"
        );
        assert!(fs::symlink_metadata(dir.join("tls.key")).is_err());
        Ok(())
    }

    #[test]
    fn select_honours_items_and_modes() -> Result<()> {
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        let all = select(data.clone(), None, 0o600)?;
        assert_eq!(all.len(), 2);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o400),
        }];
        let some = select(data.clone(), Some(&items), 0o600)?;
        assert_eq!(some.get("sub/b.txt"), Some(&(b"2".to_vec(), 0o400)));
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            mode: None,
        }];
        assert!(select(data, Some(&missing), 0o600).is_err());
        Ok(())
    }
}
