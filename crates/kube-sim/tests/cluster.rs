//! The simulated node against the real control plane (`e2e/testenv.sh up`, then source
//! `.run/testenv/env`). Without `TESTENV_KUBECONFIG` the test prints a note and passes, except under `CI`,
//! where it fails.
//!
//! The test starts its own simulator (the binary cargo just built) as a private node: a unique name, a
//! `NoSchedule` taint its pods tolerate, StorageClasses pinned to it with `allowedTopologies`, its own data
//! directory and loopback prefixes. So it never collides with a shared simulator the e2e run may have
//! started, and vice versa. It stops the simulator and deletes the Node at the end.
//!
//! Scenarios (run concurrently, each in its own namespace):
//! - filesystem: PVC provisioned and bound by the real binder; a plain pod scheduled by the real scheduler
//!   and Running with a pod IP; snapshot, restore with the snapshot's (not the later) data; a stand-in
//!   exporter process started with mapped paths, a Secret and a ConfigMap volume, ready through its HTTPS
//!   probe, reachable as `https://<svc>.<ns>.svc/` through the hosts entry with its CA; pod deletion
//!   stops the process; PVC deletion removes PV and data (reclaim Delete).
//! - block: a real loop device; bytes written through it survive snapshot and restore; deletion detaches.
//! - retain: PVC deletion leaves the PV Released and its data in place.
//! - wffc: WaitForFirstConsumer placement, a `volumeDevices` mapping, restarts with exit code.
//!
//! Finally the simulator stops and the real node lifecycle controller marks the Node NotReady.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use svdm_testenv::{Testenv, wait_for};

const WAIT: Duration = Duration::from_secs(90);

/// The simulator process; stopped (SIGTERM, then SIGKILL) when dropped, even on a failed assertion.
struct SimProcess {
    child: Child,
    log: PathBuf,
    data: PathBuf,
}

impl SimProcess {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..150 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.stop();
        // Safety net: no loop device may outlive the test.
        if let Ok(entries) = std::fs::read_dir(self.data.join("volumes")) {
            for entry in entries.flatten() {
                let _ = svdm_kube_sim::storage::detach_loops(&entry.path());
            }
        }
    }
}

struct Fixture {
    client: Client,
    node: String,
    pod_prefix: String,
    class_delete: String,
    class_retain: String,
    class_wffc: String,
    standin: String,
    /// The simulator's data directory (pod volumes live under `pods/<uid>/volumes/`).
    data: PathBuf,
}

fn dynamic(client: &Client, group: &str, kind: &str, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

async fn create<K>(api: &Api<K>, object: Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    Ok(api.create(&PostParams::default(), &object).await?)
}

fn pvc_object(name: &str, class: &str, size: &str, mode: &str, snapshot: Option<&str>) -> Value {
    let mut spec = json!({
        "storageClassName": class,
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": mode,
        "resources": {"requests": {"storage": size}}
    });
    if let Some(s) = snapshot {
        spec["dataSource"] =
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": s});
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})
}

/// Wait until the claim is Bound; return its PV.
async fn bound_pv(client: &Client, ns: &str, name: &str) -> Result<PersistentVolume> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pv_name = wait_for(&format!("PVC {ns}/{name} Bound"), WAIT, || async {
        let pvc = pvcs.get(name).await.ok()?;
        let bound = pvc.status.as_ref()?.phase.as_deref() == Some("Bound");
        bound.then(|| pvc.spec?.volume_name).flatten()
    })
    .await?;
    Ok(Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await?)
}

fn annotation(pv: &PersistentVolume, key: &str) -> Result<String> {
    pv.annotations()
        .get(key)
        .cloned()
        .with_context(|| format!("PV {} lacks annotation {key}", pv.name_any()))
}

async fn snapshot_ready(client: &Client, ns: &str, name: &str, pvc: &str) -> Result<()> {
    let vs = dynamic(client, "snapshot.storage.k8s.io", "VolumeSnapshot", ns);
    create(
        &vs,
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name},
            "spec": {"volumeSnapshotClassName": "svdm-sim", "source": {"persistentVolumeClaimName": pvc}}
        }),
    )
    .await?;
    wait_for(
        &format!("VolumeSnapshot {ns}/{name} ready"),
        WAIT,
        || async {
            let obj = vs.get(name).await.ok()?;
            (obj.data["status"]["readyToUse"] == json!(true)).then_some(())
        },
    )
    .await?;
    Ok(())
}

async fn gone<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(what, WAIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await?;
    Ok(())
}

/// Delete a scenario's namespace and wait until the namespace controller (with the simulator still
/// running to play the snapshot sidecar and the provisioner) has emptied and removed it.
async fn delete_namespace(client: &Client, ns: svdm_testenv::TestNamespace) -> Result<()> {
    let name = ns.name.clone();
    ns.delete().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    gone(&namespaces, &name, &format!("namespace {name} removed")).await
}

async fn ready_pod(client: &Client, ns: &str, name: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = wait_for(&format!("pod {ns}/{name} Ready"), WAIT, || async {
        let pod = pods.get(name).await.ok()?;
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && status.phase.as_deref() == Some("Running")).then_some(pod)
    })
    .await?;
    Ok(pod)
}

fn pod_object(f: &Fixture, name: &str, labels: Value, containers: Value, volumes: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "tolerations": [{"key": "sim.svdm.dev/test", "operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/hostname": f.node},
            "terminationGracePeriodSeconds": 5,
            "containers": containers,
            "volumes": volumes
        }
    })
}

/// A self-signed certificate (and its key) for `dns`; it is its own CA.
fn self_signed(dns: &str) -> Result<(String, String)> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", dns)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = BigNum::from_u32(rand::random::<u32>() >> 1)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(1)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    let san = SubjectAlternativeName::new()
        .dns(dns)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((
        String::from_utf8(b.build().to_pem()?)?,
        String::from_utf8(key.private_key_to_pem_pkcs8()?)?,
    ))
}

/// GET `https://host:port/path`, resolving `host` through the system resolver (the hosts file) and
/// verifying the server against `ca_pem` and `host`. Returns the status code and body.
fn https_get(host: &str, port: u16, path: &str, ca_pem: &str) -> Result<(u16, Vec<u8>)> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder
        .cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(ca_pem.as_bytes())?)?;
    let tcp = TcpStream::connect((host, port)).with_context(|| format!("connect {host}:{port}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = builder.build().connect(host, tcp)?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) if !response.is_empty() => break, // The stand-in closes without close_notify.
            Err(e) => return Err(e.into()),
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    Ok((code, response[split + 4..].to_vec()))
}

async fn filesystem_scenario(env: &Testenv, f: &Fixture) -> Result<()> {
    let ns_handle = env.namespace("kubesim-fs").await?;
    let ns = ns_handle.name.clone();
    let client = &f.client;

    // Provisioning and binding.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create(
        &pvcs,
        pvc_object("data", &f.class_delete, "64Mi", "Filesystem", None),
    )
    .await?;
    let pv = bound_pv(client, &ns, "data").await?;
    let spec = pv.spec.clone().context("PV spec")?;
    ensure!(
        spec.csi.as_ref().map(|c| c.driver.as_str()) == Some("local.csi.svdm.dev"),
        "PV is not CSI: {spec:?}"
    );
    ensure!(spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete"));
    let dir = PathBuf::from(annotation(&pv, "sim.svdm.dev/path")?);
    std::fs::write(dir.join("hello.txt"), "hello from the sim")?;
    std::fs::create_dir_all(dir.join("sub"))?;
    std::fs::write(dir.join("sub/deep.txt"), "deep")?;

    // A plain pod using the claim: scheduled onto the sim node, held Running with an address.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let holder = pod_object(
        f,
        "holder",
        json!({"app": "holder"}),
        json!([{"name": "app", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}]),
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]),
    );
    create(&pods, holder).await?;
    let holder = ready_pod(client, &ns, "holder").await?;
    let ip = holder.status.and_then(|s| s.pod_ip).unwrap_or_default();
    ensure!(
        ip.starts_with(&f.pod_prefix),
        "holder pod IP {ip} is not from {}",
        f.pod_prefix
    );

    // Snapshot, then change the source: the restore must carry the snapshot's data.
    snapshot_ready(client, &ns, "snap", "data").await?;
    std::fs::write(dir.join("hello.txt"), "changed after the snapshot")?;
    create(
        &pvcs,
        pvc_object(
            "restored",
            &f.class_delete,
            "64Mi",
            "Filesystem",
            Some("snap"),
        ),
    )
    .await?;
    let restored_pv = bound_pv(client, &ns, "restored").await?;
    let restored_dir = PathBuf::from(annotation(&restored_pv, "sim.svdm.dev/path")?);
    ensure!(std::fs::read_to_string(restored_dir.join("hello.txt"))? == "hello from the sim");
    ensure!(std::fs::read_to_string(restored_dir.join("sub/deep.txt"))? == "deep");

    // The stand-in exporter on the restored claim, reached by Service name with its CA.
    let svc_host = format!("exp.{ns}.svc");
    let (cert, key) = self_signed(&svc_host)?;
    create(
        &Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": cert, "tls.key": key}}),
    )
    .await?;
    create(
        &Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "standin"},
               "data": {"serve.py": include_str!("fixtures/standin_exporter.py")}}),
    )
    .await?;
    let exporter = pod_object(
        f,
        "exporter",
        json!({"app": "exporter"}),
        json!([{
            "name": "exporter",
            "image": f.standin,
            "args": ["/opt/standin/serve.py", "--address=$(POD_IP)", "--port=8443", "--source=/data",
                     "--tls-cert=/etc/svdm/tls/tls.crt", "--tls-key=/etc/svdm/tls/tls.key"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"name": "https", "containerPort": 8443}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 2},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"},
                              "initialDelaySeconds": 2, "periodSeconds": 2, "failureThreshold": 2},
            "volumeMounts": [
                {"name": "data", "mountPath": "/data", "readOnly": true},
                {"name": "tls", "mountPath": "/etc/svdm/tls", "readOnly": true},
                {"name": "standin", "mountPath": "/opt/standin"}
            ]
        }]),
        json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "restored", "readOnly": true}},
            {"name": "tls", "secret": {"secretName": "tls"}},
            {"name": "standin", "configMap": {"name": "standin"}}
        ]),
    );
    create(&pods, exporter).await?;
    create(
        &Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "exp"},
               "spec": {"selector": {"app": "exporter"}, "ports": [{"port": 443, "targetPort": "https"}]}}),
    )
    .await?;
    ready_pod(client, &ns, "exporter").await?;
    let (host, ca) = (svc_host.clone(), cert.clone());
    let (code, body) = wait_for("exporter reachable by Service name", WAIT, || {
        let (host, ca) = (host.clone(), ca.clone());
        async move {
            tokio::task::spawn_blocking(move || https_get(&host, 443, "/sub/deep.txt", &ca))
                .await
                .ok()?
                .ok()
        }
    })
    .await?;
    ensure!(
        code == 200 && body == b"deep",
        "GET /sub/deep.txt: {code} {:?}",
        String::from_utf8_lossy(&body)
    );
    let (code, body) =
        tokio::task::spawn_blocking(move || https_get(&host, 443, "/hello.txt", &ca)).await??;
    ensure!(
        code == 200 && body == b"hello from the sim",
        "GET /hello.txt: {code}"
    );
    // The Secret volume follows the Secret, atomically (what the exporter's certificate reload relies on).
    let exporter_uid = pods.get("exporter").await?.uid().context("exporter uid")?;
    let tls_dir = f.data.join("pods").join(&exporter_uid).join("volumes/tls");
    ensure!(
        std::fs::read_to_string(tls_dir.join("tls.crt"))? == cert,
        "mounted certificate"
    );
    ensure!(std::fs::read_link(tls_dir.join("tls.crt"))? == Path::new("..data/tls.crt"));
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    let renewed = serde_json::json!({"stringData": {"tls.crt": "renewed"}});
    secrets
        .patch(
            "tls",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(renewed),
        )
        .await?;
    wait_for("renewed Secret reaches the pod volume", WAIT, || async {
        let now = std::fs::read_to_string(tls_dir.join("tls.crt")).ok()?;
        (now == "renewed").then_some(())
    })
    .await?;

    // Its liveness probe passes: no restart after several periods.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = pods
        .get("exporter")
        .await?
        .status
        .context("exporter status")?;
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    ensure!(
        restarts == 0,
        "a live exporter was restarted {restarts} times"
    );

    // Deleting the pod stops the process, removes the pod and the Service's name.
    pods.delete("exporter", &DeleteParams::default()).await?;
    gone(&pods, "exporter", "exporter pod removed").await?;
    let hosts = wait_for("Service name removed from the hosts file", WAIT, || async {
        let text = std::fs::read_to_string("/etc/hosts").ok()?;
        (!text.contains(&format!(" {svc_host} "))).then_some(())
    })
    .await;
    hosts?;
    pods.delete("holder", &DeleteParams::default()).await?;
    gone(&pods, "holder", "holder pod removed").await?;

    // Reclaim policy Delete: the PVs and their data go with the claims.
    let vs = dynamic(client, "snapshot.storage.k8s.io", "VolumeSnapshot", &ns);
    vs.delete("snap", &DeleteParams::default()).await?;
    pvcs.delete("restored", &DeleteParams::default()).await?;
    pvcs.delete("data", &DeleteParams::default()).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    gone(&pvs, &pv.name_any(), "source PV deleted").await?;
    gone(&pvs, &restored_pv.name_any(), "restored PV deleted").await?;
    ensure!(
        !dir.exists() && !restored_dir.exists(),
        "volume data left behind"
    );
    delete_namespace(client, ns_handle).await?;
    eprintln!("filesystem scenario: ok");
    Ok(())
}

fn write_at(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut dev = std::fs::OpenOptions::new().write(true).open(path)?;
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(data)?;
    dev.sync_all()?;
    Ok(())
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut dev = std::fs::File::open(path)?;
    dev.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    dev.read_exact(&mut buf)?;
    Ok(buf)
}

async fn block_scenario(env: &Testenv, f: &Fixture) -> Result<()> {
    let ns_handle = env.namespace("kubesim-block").await?;
    let ns = ns_handle.name.clone();
    let client = &f.client;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create(
        &pvcs,
        pvc_object("disk", &f.class_delete, "16Mi", "Block", None),
    )
    .await?;
    let pv = bound_pv(client, &ns, "disk").await?;
    let img = PathBuf::from(annotation(&pv, "sim.svdm.dev/path")?);
    let dev = PathBuf::from(annotation(&pv, "sim.svdm.dev/loop-device")?);
    let attached = svdm_kube_sim::storage::loops_of(&img)?;
    ensure!(
        attached == vec![dev.to_string_lossy().into_owned()],
        "loop devices of {}: {attached:?}",
        img.display()
    );
    ensure!(std::fs::metadata(&img)?.len() == 16 << 20, "image size");

    let payload = b"block payload written through the loop device";
    write_at(&dev, 1 << 20, payload)?;
    snapshot_ready(client, &ns, "snap", "disk").await?;
    create(
        &pvcs,
        pvc_object("copy", &f.class_delete, "16Mi", "Block", Some("snap")),
    )
    .await?;
    let copy_pv = bound_pv(client, &ns, "copy").await?;
    let copy_dev = PathBuf::from(annotation(&copy_pv, "sim.svdm.dev/loop-device")?);
    ensure!(copy_dev != dev);
    ensure!(
        read_at(&copy_dev, 1 << 20, payload.len())? == payload,
        "restored block data differs"
    );

    let copy_img = PathBuf::from(annotation(&copy_pv, "sim.svdm.dev/path")?);
    pvcs.delete("copy", &DeleteParams::default()).await?;
    pvcs.delete("disk", &DeleteParams::default()).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    gone(&pvs, &pv.name_any(), "block PV deleted").await?;
    gone(&pvs, &copy_pv.name_any(), "restored block PV deleted").await?;
    ensure!(
        !img.exists() && !copy_img.exists(),
        "block images left behind"
    );
    ensure!(
        svdm_kube_sim::storage::loops_of(&img).is_ok_and(|l| l.is_empty()),
        "loop device left attached"
    );
    delete_namespace(client, ns_handle).await?;
    eprintln!("block scenario: ok");
    Ok(())
}

async fn retain_scenario(env: &Testenv, f: &Fixture) -> Result<()> {
    let ns_handle = env.namespace("kubesim-retain").await?;
    let ns = ns_handle.name.clone();
    let client = &f.client;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create(
        &pvcs,
        pvc_object("keep", &f.class_retain, "8Mi", "Filesystem", None),
    )
    .await?;
    let pv = bound_pv(client, &ns, "keep").await?;
    let dir = PathBuf::from(annotation(&pv, "sim.svdm.dev/path")?);
    std::fs::write(dir.join("precious"), "keep me")?;
    pvcs.delete("keep", &DeleteParams::default()).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    wait_for("retained PV Released", WAIT, || async {
        let pv = pvs.get(&pv.name_any()).await.ok()?;
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await; // Give a wrong deletion the chance to happen.
    ensure!(
        pvs.get_opt(&pv.name_any()).await?.is_some(),
        "retained PV was deleted"
    );
    ensure!(
        std::fs::read_to_string(dir.join("precious"))? == "keep me",
        "retained data lost"
    );
    pvs.delete(&pv.name_any(), &DeleteParams::default()).await?;
    delete_namespace(client, ns_handle).await?;
    eprintln!("retain scenario: ok");
    Ok(())
}

/// WaitForFirstConsumer: the scheduler picks the node, then the volume appears there. The pod runs the
/// exporter binary on a Block volume (`volumeDevices`, mapped to the loop device) and exits 3 after opening
/// it: the simulator must restart it and report the exit code and restart count.
async fn wffc_restart_scenario(env: &Testenv, f: &Fixture) -> Result<()> {
    let ns_handle = env.namespace("kubesim-wffc").await?;
    let ns = ns_handle.name.clone();
    let client = &f.client;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create(
        &pvcs,
        pvc_object("late", &f.class_wffc, "8Mi", "Block", None),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pvc = pvcs.get("late").await?;
    ensure!(
        pvc.status.and_then(|s| s.phase).as_deref() == Some("Pending"),
        "a WaitForFirstConsumer claim must wait for its pod"
    );
    let crasher = pod_object(
        f,
        "crasher",
        json!({"app": "crasher"}),
        json!([{
            "name": "exporter",
            "image": f.standin,
            "args": ["-c", "import os, sys; os.close(os.open(sys.argv[1], os.O_RDONLY)); sys.exit(3)",
                     "/dev/svdm-data"],
            "volumeDevices": [{"name": "disk", "devicePath": "/dev/svdm-data"}]
        }]),
        json!([{"name": "disk", "persistentVolumeClaim": {"claimName": "late"}}]),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create(&pods, crasher).await?;
    let pv = bound_pv(client, &ns, "late").await?;
    ensure!(
        pv.annotations().get("sim.svdm.dev/node") == Some(&f.node),
        "provisioned on the wrong node"
    );
    wait_for(
        "crashing container restarted with its exit code",
        WAIT,
        || async {
            let pod = pods.get("crasher").await.ok()?;
            let status = pod.status?.container_statuses?.into_iter().next()?;
            let last = status.last_state?.terminated?;
            (status.restart_count >= 1 && last.exit_code == 3).then_some(())
        },
    )
    .await?;
    pods.delete("crasher", &DeleteParams::default()).await?;
    gone(&pods, "crasher", "crasher pod removed").await?;
    pvcs.delete("late", &DeleteParams::default()).await?;
    gone(
        &Api::<PersistentVolume>::all(client.clone()),
        &pv.name_any(),
        "WFFC PV deleted",
    )
    .await?;
    delete_namespace(client, ns_handle).await?;
    eprintln!("wffc/restart scenario: ok");
    Ok(())
}

async fn pinned_class(
    client: &Client,
    name: &str,
    node: &str,
    reclaim: &str,
    binding: &str,
) -> Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    create(
        &classes,
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "local.csi.svdm.dev",
            "reclaimPolicy": reclaim,
            "volumeBindingMode": binding,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "kubernetes.io/hostname", "values": [node]}]}]
        }),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_node_end_to_end() -> Result<()> {
    let Some(env) = Testenv::require("kube-sim simulated_node_end_to_end") else {
        return Ok(());
    };
    let client = env.admin().await?;
    let id = rand::random::<u32>() % 50;
    let node = format!("kubesim-test-{:06}", rand::random::<u32>() % 1_000_000);
    let pod_prefix = format!("198.18.{}", 100 + id);
    let service_prefix = format!("127.0.{}", 150 + id);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let log = tmp.path().join("sim.log");
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3");
    let standin = "registry.local/svdm/kube-sim-standin:test".to_string();

    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_svdm-kube-sim"))
        .args(["--kubeconfig", &env.admin_kubeconfig.to_string_lossy()])
        .args([
            "--node-name",
            &node,
            "--pod-ip-prefix",
            &pod_prefix,
            "--service-ip-prefix",
            &service_prefix,
        ])
        .args([
            "--register-with-taints",
            "sim.svdm.dev/test=kube-sim:NoSchedule",
            "--pinned-only",
        ])
        .args(["--exporter-image", &standin, "--exporter-binary", python])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()?;
    let mut sim = SimProcess { child, log, data };

    let fixture = Fixture {
        client: client.clone(),
        pod_prefix: format!("{pod_prefix}."),
        class_delete: format!("{node}-delete"),
        class_retain: format!("{node}-retain"),
        class_wffc: format!("{node}-wffc"),
        node: node.clone(),
        standin,
        data: sim.data.clone(),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let outcome: Result<()> = async {
        pinned_class(&client, &fixture.class_delete, &node, "Delete", "Immediate").await?;
        pinned_class(&client, &fixture.class_retain, &node, "Retain", "Immediate").await?;
        pinned_class(
            &client,
            &fixture.class_wffc,
            &node,
            "Delete",
            "WaitForFirstConsumer",
        )
        .await?;
        wait_for("sim node Ready", WAIT, || async {
            let n = nodes.get(&node).await.ok()?;
            let ready = n
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await?;
        let (fs, block, retain, wffc) = tokio::join!(
            filesystem_scenario(&env, &fixture),
            block_scenario(&env, &fixture),
            retain_scenario(&env, &fixture),
            wffc_restart_scenario(&env, &fixture)
        );
        let mut failures = BTreeMap::new();
        let results = [
            ("filesystem", fs),
            ("block", block),
            ("retain", retain),
            ("wffc", wffc),
        ];
        for (name, r) in results {
            if let Err(e) = r {
                failures.insert(name, format!("{e:#}"));
            }
        }
        if !failures.is_empty() {
            bail!("scenarios failed: {failures:#?}");
        }
        Ok(())
    }
    .await;

    // Leave nothing behind: the simulator, its Node (the GC takes Lease and CSINode), the classes.
    sim.stop();
    let tail = sim.log_tail();
    drop(sim);
    // A stopped simulator is a node gone: the real node lifecycle controller notices the silence.
    let outcome = match outcome {
        Ok(()) => wait_for(
            "Node NotReady after the simulator stopped",
            WAIT,
            || async {
                let n = nodes.get(&node).await.ok()?;
                let conditions = n.status?.conditions?;
                let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.status != "True").then_some(())
            },
        )
        .await
        .map_err(anyhow::Error::from),
        failed => failed,
    };
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
    let classes: Api<StorageClass> = Api::all(client.clone());
    for class in [
        &fixture.class_delete,
        &fixture.class_retain,
        &fixture.class_wffc,
    ] {
        let _ = classes.delete(class, &DeleteParams::default()).await;
    }
    let leftover = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for pv in leftover
        .items
        .iter()
        .filter(|pv| pv.annotations().get("sim.svdm.dev/node") == Some(&node))
    {
        let _ = Api::<PersistentVolume>::all(client.clone())
            .delete(&pv.name_any(), &DeleteParams::default())
            .await;
    }
    let hosts = std::fs::read_to_string("/etc/hosts")?;
    ensure!(
        !hosts.contains(&format!("svdm-kube-sim {node}")),
        "hosts block left behind"
    );
    if outcome.is_err() {
        eprintln!("---- simulator log (tail) ----\n{tail}");
    }
    outcome
}
