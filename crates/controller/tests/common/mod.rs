//! Shared helpers of the controller's integration tests against the local control plane
//! (`e2e/testenv.sh up`). Each test runs its own controller process, restricted by a label
//! selector to the DataExports the test creates, in its own namespace.
#![allow(dead_code)]

pub mod private_node;

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use svdm_api::{DataExport, names};

pub const EXPORTER_IMAGE: &str = "registry.local/svdm/exporter:dev";
pub const SELECTOR_LABEL: &str = "svdm-controller-test";

/// Returns the admin kubeconfig, or `None` (test skipped) outside CI. In CI a missing control
/// plane is a failure ([`svdm_testenv::require_kubeconfig`]).
#[track_caller]
pub fn kubeconfig() -> Option<String> {
    svdm_testenv::require_kubeconfig(&svdm_testenv::current_test())
        .map(|p| p.to_string_lossy().into_owned())
}

pub async fn client(kubeconfig: &str) -> Client {
    svdm_testenv::client_from(kubeconfig)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique suffix for names.
pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}{n}", std::process::id() & 0xfff, t & 0xfffff)
}

/// Polls `f` until it returns `Some`, failing the test after `secs` ([`svdm_testenv::wait_for`]).
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    svdm_testenv::wait_for(what, Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Installs the CRD, the module namespace and the exporter ServiceAccount (idempotent).
pub async fn prepare_cluster(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "dataexports.storage.deckhouse.io",
        &PatchParams::apply("svdm-controller-tests").force(),
        &Patch::Apply(DataExport::crd()),
    )
    .await
    .expect("apply CRD");
    wait_for("CRD established", 60, || async {
        let c = crds.get("dataexports.storage.deckhouse.io").await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": names::MODULE_NAMESPACE}});
    nss.patch(
        names::MODULE_NAMESPACE,
        &PatchParams::apply("svdm-controller-tests"),
        &Patch::Apply(ns),
    )
    .await
    .expect("module namespace");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": names::EXPORTER_SERVICE_ACCOUNT, "namespace": names::MODULE_NAMESPACE}});
    sas.patch(
        names::EXPORTER_SERVICE_ACCOUNT,
        &PatchParams::apply("svdm-controller-tests"),
        &Patch::Apply(sa),
    )
    .await
    .expect("exporter service account");
}

pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", unique());
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(name, &DeleteParams::default()).await;
}

/// Writes a throw-away exporter CA for a controller process.
pub fn write_ca(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let ca =
        svdm_pki::generate_ca("svdm controller test CA", Duration::from_secs(86400)).expect("ca");
    std::fs::create_dir_all(dir).expect("dir");
    let c = dir.join("ca.crt");
    let k = dir.join("ca.key");
    std::fs::write(&c, ca.cert_pem).expect("write ca");
    std::fs::write(&k, ca.key_pem).expect("write key");
    (c, k)
}

/// A controller process reconciling only DataExports labelled `SELECTOR_LABEL=<id>`.
pub struct Controller {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

pub fn scratch_dir(id: &str) -> PathBuf {
    let base = std::env::var("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join(format!("svdm-controller-test-{id}"))
}

pub fn start_controller(
    kubeconfig: &str,
    id: &str,
    fault: Option<&str>,
    extra: &[&str],
) -> Controller {
    let dir = scratch_dir(id);
    let (ca, key) = write_ca(&dir);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let log = dir.join(format!("controller-{n}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_svdm-controller"));
    cmd.env("KUBECONFIG", kubeconfig)
        .args(["--exporter-image", EXPORTER_IMAGE])
        .arg("--exporter-ca-cert")
        .arg(&ca)
        .arg("--exporter-ca-key")
        .arg(&key)
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(["--log-level", "info,kube=warn"])
        .args([
            "--dataexport-label-selector",
            &format!("{SELECTOR_LABEL}={id}"),
        ])
        .args(extra)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    if let Some(f) = fault {
        cmd.args(["--fault-after-step", f]);
    }
    let child = cmd.spawn().expect("start svdm-controller");
    Controller { child, log }
}

impl Controller {
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits for the process to exit; returns its code.
    pub async fn wait_exit(mut self, secs: u64) -> Option<i32> {
        match tokio::time::timeout(Duration::from_secs(secs), self.child.wait()).await {
            Ok(Ok(st)) => st.code(),
            _ => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let _ = self.child.start_kill();
                panic!("controller did not exit within {secs}s; log:\n{log}");
            }
        }
    }
}

/// PVC `data` provisioned by the simulated node's CSI driver (StorageClass `svdm-sim`), so an
/// exporter pod can really mount it. Returns (PV name, PVC uid).
pub async fn make_provisioned_pvc(client: &Client, ns: &str, mode: &str) -> (String, String) {
    make_provisioned_pvc_of_class(client, ns, mode, "svdm-sim").await
}

/// PVC `data` of `class`, Bound by its provisioner. Returns (PV name, PVC uid).
pub async fn make_provisioned_pvc_of_class(
    client: &Client,
    ns: &str,
    mode: &str,
    class: &str,
) -> (String, String) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "64Mi"}},
            "storageClassName": class,
            "volumeMode": mode,
        }
    }))
    .expect("pvc");
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    wait_for("provisioned PVC Bound", 90, || async {
        let p = pvcs.get("data").await.ok()?;
        if p.status.as_ref()?.phase.as_deref() != Some("Bound") {
            return None;
        }
        Some((p.spec.as_ref()?.volume_name.clone()?, p.uid()?))
    })
    .await
}

/// A statically provisioned PV bound by the real binder to PVC `data` in `ns`.
pub async fn make_bound_pvc(client: &Client, ns: &str, mode: &str) -> (String, String) {
    let pv_name = format!("{ns}-pv");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "svdm-test-static",
            "volumeMode": mode,
            "csi": {"driver": "local.csi.svdm.dev", "volumeHandle": format!("{ns}-vol")},
            "claimRef": {"namespace": ns, "name": "data"},
        }
    }))
    .expect("pv");
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "svdm-test-static",
            "volumeMode": mode,
            "volumeName": pv_name,
        }
    }))
    .expect("pvc");
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    let uid = wait_for("user PVC Bound", 60, || async {
        let p = pvcs.get("data").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Bound")).then(|| p.uid())?
    })
    .await;
    (pv_name, uid)
}

pub async fn create_export(
    client: &Client,
    ns: &str,
    name: &str,
    id: &str,
    ttl: &str,
    kind: &str,
    target: &str,
) {
    let des: Api<DataExport> = Api::namespaced(client.clone(), ns);
    let de: DataExport = serde_json::from_value(json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1",
        "kind": "DataExport",
        "metadata": {"name": name, "labels": {SELECTOR_LABEL: id}},
        "spec": {"ttl": ttl, "publish": false, "targetRef": {"kind": kind, "name": target}},
    }))
    .expect("de");
    des.create(&PostParams::default(), &de)
        .await
        .expect("create DataExport");
}

/// The usual export of these tests: PVC `data`, ttl 1h.
pub async fn export_pvc(client: &Client, ns: &str, name: &str, id: &str) {
    create_export(client, ns, name, id, "1h", "PersistentVolumeClaim", "data").await;
}

/// Deletes a DataExport and waits until it is gone (the return done, the finalizer dropped).
pub async fn delete_export_and_wait(client: &Client, ns: &str, name: &str, secs: u64) {
    delete_export(client, ns, name).await;
    wait_gone(client, ns, name, secs).await;
}

/// The end of a test: its controller stopped, its PV and namespace deleted.
pub async fn stop_and_clean_up(ctl: Controller, client: &Client, ns: &str, pv: &str) {
    ctl.stop().await;
    delete_pv(client, pv).await;
    delete_namespace(client, ns).await;
}

fn has_svdm_keys(m: Option<&std::collections::BTreeMap<String, String>>) -> Vec<String> {
    m.into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(names::PREFIX))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The handover has completed: the PV is claimed by the export PVC under Retain and the exporter
/// pod exists.
pub async fn wait_handed_over(client: &Client, pv_name: &str, secs: u64) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    wait_for("handover", secs, || async {
        let pv = pvs.get(pv_name).await.ok()?;
        let spec = pv.spec.as_ref()?;
        let c = spec.claim_ref.as_ref()?;
        if c.namespace.as_deref() != Some(names::MODULE_NAMESPACE)
            || spec.persistent_volume_reclaim_policy.as_deref() != Some("Retain")
        {
            return None;
        }
        let name = c.name.clone()?;
        pods.get_opt(&name).await.ok()??;
        Some(())
    })
    .await;
}

/// The user PVC has its PV back exactly as before and nothing of ours is left on either.
pub async fn assert_returned(
    client: &Client,
    ns: &str,
    pv_name: &str,
    user_uid: &str,
    policy: &str,
) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    wait_for("user PVC Bound to its PV again", 60, || async {
        let p = pvcs.get("data").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    let pvc = pvcs.get("data").await.expect("pvc");
    assert_eq!(pvc.uid().as_deref(), Some(user_uid));
    assert_eq!(
        pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some(pv_name)
    );
    assert!(
        !pvc.finalizers()
            .iter()
            .any(|f| f.starts_with(names::PREFIX)),
        "finalizers left: {:?}",
        pvc.finalizers()
    );
    assert!(has_svdm_keys(pvc.metadata.annotations.as_ref()).is_empty());
    assert!(has_svdm_keys(pvc.metadata.labels.as_ref()).is_empty());
    let pv = pvs.get(pv_name).await.expect("pv");
    // A PV its provisioner started to delete (held only by a finalizer) is not returned.
    assert!(
        pv.metadata.deletion_timestamp.is_none(),
        "PV {pv_name} is being deleted"
    );
    let spec = pv.spec.as_ref().expect("spec");
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some(policy)
    );
    let c = spec.claim_ref.as_ref().expect("claimRef");
    assert_eq!(c.namespace.as_deref(), Some(ns));
    assert_eq!(c.name.as_deref(), Some("data"));
    assert_eq!(c.uid.as_deref(), Some(user_uid));
    assert!(
        has_svdm_keys(pv.metadata.annotations.as_ref()).is_empty(),
        "PV annotations left: {:?}",
        pv.metadata.annotations
    );
    assert!(
        has_svdm_keys(pv.metadata.labels.as_ref()).is_empty(),
        "PV labels left: {:?}",
        pv.metadata.labels
    );
    assert_eq!(
        pv.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
}

/// Deletes the test's PV (the binder cannot reclaim a fake CSI volume).
pub async fn delete_pv(client: &Client, pv_name: &str) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let _ = pvs
        .patch(
            pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await;
    let _ = pvs.delete(pv_name, &DeleteParams::default()).await;
}

pub async fn wait_gone(client: &Client, ns: &str, name: &str, secs: u64) {
    let des: Api<DataExport> = Api::namespaced(client.clone(), ns);
    wait_for("DataExport gone", secs, || async {
        match des.get_opt(name).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}

pub async fn delete_export(client: &Client, ns: &str, name: &str) {
    let des: Api<DataExport> = Api::namespaced(client.clone(), ns);
    des.delete(name, &DeleteParams::default())
        .await
        .expect("delete DataExport");
}

/// Whether the simulated node runs (exporter pods then really start).
pub async fn node_ready(client: &Client) -> bool {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .list(&Default::default())
        .await
        .map(|l| {
            l.items.iter().any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        })
        .unwrap_or(false)
}

pub fn log_of(c: &Controller) -> String {
    std::fs::read_to_string(&c.log).unwrap_or_default()
}

/// Where the simulated node keeps a provisioned PV's data: its host directory (Filesystem) or
/// its loop device (Block), from the simulator's annotations on the PV.
pub async fn volume_location(client: &Client, pv_name: &str, mode: &str) -> PathBuf {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(pv_name).await.expect("pv");
    let key = if mode == "Block" {
        "sim.svdm.dev/loop-device"
    } else {
        "sim.svdm.dev/path"
    };
    let path = pv.annotations().get(key).unwrap_or_else(|| {
        panic!("PV {pv_name} has no {key} annotation (not provisioned by the simulator?)")
    });
    PathBuf::from(path)
}

/// Deterministic pseudo-random bytes (xorshift), so each run writes different data without a
/// random-number dependency.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Puts real data on a provisioned volume before it is exported: a few files (one nested, one
/// empty) for Filesystem, or data at the start, middle and end of the device for Block. Returns
/// the checksum of the volume's data ([`volume_checksum`]).
pub async fn write_volume_data(client: &Client, pv_name: &str, mode: &str) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let loc = volume_location(client, pv_name, mode).await;
    let seed = seed_of(pv_name);
    if mode == "Block" {
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&loc)
            .unwrap_or_else(|e| panic!("open {}: {e}", loc.display()));
        let size = dev.seek(SeekFrom::End(0)).expect("device size");
        assert!(
            size >= 3 << 20,
            "device {} is too small: {size}",
            loc.display()
        );
        for (i, at) in [0, size / 2, size - (1 << 20)].into_iter().enumerate() {
            dev.seek(SeekFrom::Start(at)).expect("seek");
            dev.write_all(&pseudo_random(seed + i as u64, 1 << 20))
                .expect("write device");
        }
        dev.sync_all().expect("sync device");
    } else {
        std::fs::create_dir_all(loc.join("dir/sub")).expect("mkdir");
        std::fs::write(loc.join("a.bin"), pseudo_random(seed, 300_000)).expect("write a");
        std::fs::write(loc.join("dir/sub/b.txt"), format!("volume {pv_name}\n")).expect("b");
        std::fs::write(loc.join("dir/empty"), b"").expect("empty");
        std::fs::write(loc.join("dir/c.bin"), pseudo_random(seed + 1, 70_001)).expect("c");
    }
    volume_checksum(client, pv_name, mode).await
}

/// sha256 over the volume's data: every regular file under the volume root (relative path and
/// content, in path order) for Filesystem; the whole device for Block.
pub async fn volume_checksum(client: &Client, pv_name: &str, mode: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let loc = volume_location(client, pv_name, mode).await;
    let mut h = Sha256::new();
    if mode == "Block" {
        let mut dev =
            std::fs::File::open(&loc).unwrap_or_else(|e| panic!("open {}: {e}", loc.display()));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = dev.read(&mut buf).expect("read device");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
                .map(|e| e.expect("entry").path())
                .collect();
            entries.sort();
            for p in entries {
                let md = std::fs::symlink_metadata(&p).expect("stat");
                if md.is_dir() {
                    walk(root, &p, out);
                } else if md.is_file() {
                    out.push(p.strip_prefix(root).expect("under root").to_path_buf());
                }
            }
        }
        let mut files = Vec::new();
        walk(&loc, &loc, &mut files);
        assert!(!files.is_empty(), "no files under {}", loc.display());
        for f in files {
            h.update(f.to_string_lossy().as_bytes());
            h.update([0]);
            let data = std::fs::read(loc.join(&f)).expect("read file");
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
        }
    }
    hex::encode(h.finalize())
}
