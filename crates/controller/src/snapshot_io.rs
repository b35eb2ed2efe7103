//! The I/O side of snapshot exports (snapshot.storage.k8s.io/v1 through DynamicObject).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use svdm_api::{VolumeMode, names};

use std::sync::Arc;

use crate::cache::{self, Read};
use crate::context::Context;
use crate::error::Result;
use crate::exporter;
use crate::kubeio;
use crate::objects::{self, Owner};
use crate::pvc_io::Rest;
use crate::snapshot::{self, Observed, Source, Step};

use crate::cache::{vs_resource, vsc_resource};

fn vs_api(ctx: &Context, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), ns, &vs_resource())
}

fn vsc_api(ctx: &Context) -> Api<DynamicObject> {
    Api::all_with(ctx.client.clone(), &vsc_resource())
}

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether the content's `spec.volumeSnapshotRef` names `vs` (namespace, name, uid); otherwise
/// the object it names.
pub fn content_owner_mismatch(
    content: &Value,
    vs_ns: &str,
    vs_name: &str,
    vs_uid: &str,
) -> Option<String> {
    let r = &content["spec"]["volumeSnapshotRef"];
    let (ns, name, uid) = (
        r["namespace"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default(),
        r["uid"].as_str().unwrap_or_default(),
    );
    // A pre-provisioned content may name the snapshot before it has a uid; a uid it does name
    // must be this one.
    (ns != vs_ns || name != vs_name || (!uid.is_empty() && uid != vs_uid))
        .then(|| format!("VolumeSnapshot {ns}/{name} (uid {uid})"))
}

/// Reads the user's snapshot, its content and our copies.
async fn observe(
    ctx: &Context,
    owner: &Owner,
    source: Option<(&str, &str)>,
    returning: bool,
    read: Read,
) -> Result<(Observed, Option<DynamicObject>)> {
    let client = &ctx.client;
    let caches = ctx.caches();
    let snapshots = caches.and_then(|c| c.snapshots.as_ref());
    let contents = caches.and_then(|c| c.contents.as_ref());
    let (vs_ar, vsc_ar) = (vs_resource(), vsc_resource());
    let name = objects::object_name(&owner.uid);
    let mut o = Observed {
        returning,
        fallback_class: ctx.settings.snapshot_storage_class.clone(),
        ..Default::default()
    };
    let mut user_vs = None;
    if let Some((ns, n)) = source {
        user_vs = cache::get_dynamic(client, snapshots, &vs_ar, read, Some(ns), n)
            .await?
            .map(Arc::unwrap_or_clone);
    }
    if let (Some(vs), Some((ns, vs_name))) = (&user_vs, source) {
        let d = &vs.data;
        let bound = s(&d["status"]["boundVolumeSnapshotContentName"]);
        let mut src = Source {
            ready_to_use: d["status"]["readyToUse"].as_bool().unwrap_or(false),
            bound_content: bound.clone(),
            restore_size: s(&d["status"]["restoreSize"]),
            snapshot_class: s(&d["spec"]["volumeSnapshotClassName"]),
            has_our_finalizer: vs
                .finalizers()
                .iter()
                .any(|f| f == names::FINALIZER_SNAPSHOT_PROTECTION),
            deleting: vs.metadata.deletion_timestamp.is_some(),
            ..Default::default()
        };
        if !returning {
            let mut source_handle = None;
            if let Some(content) = &bound
                && let Some(c) =
                    cache::get_dynamic(client, contents, &vsc_ar, read, None, content).await?
            {
                o.source_content_found = true;
                let cd = &c.data;
                src.content_belongs_elsewhere =
                    content_owner_mismatch(cd, ns, vs_name, &vs.uid().unwrap_or_default());
                src.driver = s(&cd["spec"]["driver"]);
                src.snapshot_handle = s(&cd["status"]["snapshotHandle"])
                    .or_else(|| s(&cd["spec"]["source"]["snapshotHandle"]));
                src.source_volume_mode = s(&cd["spec"]["sourceVolumeMode"]);
                source_handle = s(&cd["spec"]["source"]["volumeHandle"]);
                if src.restore_size.is_none() {
                    src.restore_size = s(&cd["status"]["restoreSize"]);
                }
                if src.snapshot_class.is_none() {
                    src.snapshot_class = s(&cd["spec"]["volumeSnapshotClassName"]);
                }
            }
            // The PVC the snapshot names is its source only while its volume is the one the
            // snapshot was cut from: a PVC deleted and made again under that name is another
            // volume, and its class and mode say nothing about the snapshot.
            if let Some(pvc_name) = s(&d["spec"]["source"]["persistentVolumeClaimName"])
                && let Some(pvc) =
                    cache::get(client, caches.map(|c| &c.pvcs), read, ns, &pvc_name).await?
                && let Some(spec) = pvc.spec.as_ref()
            {
                let volume = spec.volume_name.as_deref().filter(|v| !v.is_empty());
                let pv = match volume {
                    Some(v) => cache::get_cluster(client, caches.map(|c| &c.pvs), read, v).await?,
                    None => None,
                };
                let pv_handle = pv
                    .as_ref()
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.csi.as_ref())
                    .map(|c| c.volume_handle.clone());
                if source_handle.is_some() && pv_handle == source_handle {
                    src.source_pvc_mode = spec.volume_mode.clone();
                    src.source_pvc_class =
                        spec.storage_class_name.clone().filter(|c| !c.is_empty());
                }
            }
        }
        o.source = Some(src);
    }
    if let Some(m) = cache::get_dynamic(
        client,
        contents,
        &vsc_ar,
        read,
        None,
        &objects::snapshot_content_name(&owner.uid),
    )
    .await?
    {
        o.content_copy = true;
        o.content_copy_deleting = m.metadata.deletion_timestamp.is_some();
    }
    if let Some(m) = cache::get_dynamic(
        client,
        snapshots,
        &vs_ar,
        read,
        Some(names::MODULE_NAMESPACE),
        &name,
    )
    .await?
    {
        o.snapshot_copy = true;
        o.snapshot_copy_deleting = m.metadata.deletion_timestamp.is_some();
    }
    let pvcs = caches.map(|c| &c.pvcs);
    if let Some(p) = cache::get(client, pvcs, read, names::MODULE_NAMESPACE, &name).await? {
        o.restored_pvc = Some(
            p.status
                .as_ref()
                .and_then(|st| st.phase.clone())
                .unwrap_or_else(|| "Pending".to_owned()),
        );
        o.restored_pvc_deleting = p.metadata.deletion_timestamp.is_some();
        o.restored_pvc_mode = p
            .spec
            .as_ref()
            .and_then(|sp| VolumeMode::from_k8s(sp.volume_mode.as_deref()));
    }
    (o.exporter_objects_exist, o.exporter_pod) = exporter::observe(ctx, &owner.uid, read).await?;
    // The limit only matters before anything of this export exists (see `snapshot::next_step`).
    if read == Read::Live
        && !returning
        && o.restored_pvc.is_none()
        && !o.content_copy
        && !o.snapshot_copy
    {
        o.concurrency = crate::pvc_io::concurrency_for(ctx, &owner.uid).await?;
    }
    if let Some((ns, n)) = source
        && o.source.as_ref().is_some_and(|s| s.has_our_finalizer)
    {
        // Another of our exports still restoring from the same snapshot keeps it protected.
        let key = format!("{ns}/{n}");
        o.other_restore_pending = cache::labelled(
            client,
            pvcs,
            read,
            Some(names::MODULE_NAMESPACE),
            names::LABEL_MANAGED,
            "true",
        )
        .await?
        .iter()
        .any(|p| {
            p.name_any() != name
                && p.annotations().get(names::ANN_SOURCE_SNAPSHOT) == Some(&key)
                && p.status.as_ref().and_then(|st| st.phase.as_deref()) != Some("Bound")
        });
    }
    Ok((o, user_vs))
}

async fn apply(
    ctx: &Context,
    owner: &Owner,
    source: Option<(&str, &str)>,
    o: &Observed,
    user_vs: Option<&DynamicObject>,
    step: &Step,
) -> Result<()> {
    let name = objects::object_name(&owner.uid);
    let content = objects::snapshot_content_name(&owner.uid);
    match step {
        Step::ProtectSource | Step::UnprotectSource => {
            let (Some(vs), Some((ns, n))) = (user_vs, source) else {
                return Ok(());
            };
            let mut fins: Vec<String> = vs
                .finalizers()
                .iter()
                .filter(|f| *f != names::FINALIZER_SNAPSHOT_PROTECTION)
                .cloned()
                .collect();
            if *step == Step::ProtectSource {
                fins.push(names::FINALIZER_SNAPSHOT_PROTECTION.to_owned());
            }
            kubeio::merge(
                &vs_api(ctx, ns),
                n,
                &json!({"metadata": {"resourceVersion": vs.resource_version(), "finalizers": fins}}),
            )
            .await?;
        }
        Step::CreateContentCopy => {
            let Some(src) = &o.source else { return Ok(()) };
            let v = objects::snapshot_content_copy(
                owner,
                &content,
                &name,
                src.driver.as_deref().unwrap_or_default(),
                src.snapshot_handle.as_deref().unwrap_or_default(),
                src.source_volume_mode.as_deref(),
                src.snapshot_class.as_deref(),
            );
            let obj: DynamicObject = serde_json::from_value(v)?;
            kubeio::create_opt(&vsc_api(ctx), &obj).await?;
        }
        Step::CreateSnapshotCopy => {
            let class = o.source.as_ref().and_then(|s| s.snapshot_class.as_deref());
            let mut v = objects::snapshot_copy(owner, &name, &content, class);
            if let Some((ns, n)) = source {
                v["metadata"]["annotations"][names::ANN_SOURCE_SNAPSHOT] =
                    json!(format!("{ns}/{n}"));
            }
            let obj: DynamicObject = serde_json::from_value(v)?;
            kubeio::create_opt(&vs_api(ctx, names::MODULE_NAMESPACE), &obj).await?;
        }
        Step::CreateRestoredPvc {
            storage_class,
            size,
            volume_mode,
        } => {
            let src = source
                .map(|(ns, n)| format!("{ns}/{n}"))
                .unwrap_or_default();
            let pvc = objects::restored_pvc(
                owner,
                &name,
                &name,
                *volume_mode,
                storage_class,
                Quantity(size.clone()),
                &src,
            );
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
            kubeio::create_opt(&api, &pvc).await?;
        }
        Step::DeleteExporterObjects => exporter::delete_all(ctx, &owner.uid).await?,
        Step::ForceDeleteExporterPod => {
            if let Some(pod) = &o.exporter_pod {
                exporter::force_delete_pod(ctx, pod).await?;
            }
        }
        Step::DeleteRestoredPvc => {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
            kubeio::delete_opt(&api, &name).await?;
        }
        Step::DeleteSnapshotCopy => {
            kubeio::delete_opt(&vs_api(ctx, names::MODULE_NAMESPACE), &name).await?;
        }
        Step::DeleteContentCopy => {
            kubeio::delete_opt(&vsc_api(ctx), &content).await?;
        }
        Step::Blocked { .. }
        | Step::Failed { .. }
        | Step::Serve { .. }
        | Step::WaitExporterPod { .. }
        | Step::Wait
        | Step::Returned => {}
    }
    Ok(())
}

/// Result of driving a snapshot export.
pub enum SnapRest {
    Rest(Rest),
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Runs the snapshot flow until it rests.
pub async fn drive(
    ctx: &Context,
    owner: &Owner,
    source: Option<(&str, &str)>,
    returning: bool,
) -> Result<SnapRest> {
    // The stores first; a step that writes (or fails the export) is decided again on a live
    // observation.
    let mut read = Read::Cache;
    for _ in 0..12 {
        let (o, user_vs) = observe(ctx, owner, source, returning, read).await?;
        let step = snapshot::next_step(&o);
        if read == Read::Cache && (step.is_action() || matches!(step, Step::Failed { .. })) {
            read = Read::Live;
            continue;
        }
        match step {
            Step::Blocked { reason, message } => {
                return Ok(SnapRest::Rest(Rest::Blocked { reason, message }));
            }
            Step::Failed { reason, message } => return Ok(SnapRest::Failed { reason, message }),
            Step::Serve { volume_mode } => {
                return Ok(SnapRest::Rest(Rest::Serving {
                    pvc: objects::object_name(&owner.uid),
                    volume_mode,
                }));
            }
            Step::WaitExporterPod { message } => {
                return Ok(SnapRest::Rest(Rest::Blocked {
                    reason: svdm_api::conditions::reason::EXPORTER_FAILED,
                    message,
                }));
            }
            Step::Wait => return Ok(SnapRest::Rest(Rest::Waiting)),
            Step::Returned => return Ok(SnapRest::Rest(Rest::Returned)),
            step => {
                apply(ctx, owner, source, &o, user_vs.as_ref(), &step).await?;
                log::info!("{}/{}: {} done", owner.namespace, owner.name, step.name());
                ctx.fault_point(step.name());
            }
        }
    }
    Ok(SnapRest::Rest(Rest::Waiting))
}

/// The source snapshot recorded on our copies (for orphans whose DataExport is gone).
pub async fn recorded_source(ctx: &Context, uid: &str) -> Result<Option<(String, String)>> {
    let name = objects::object_name(uid);
    let from = |a: Option<&String>| {
        a.and_then(|v| v.split_once('/'))
            .map(|(n, m)| (n.to_owned(), m.to_owned()))
    };
    let caches = ctx.caches();
    if let Some(p) = cache::get(
        &ctx.client,
        caches.map(|c| &c.pvcs),
        Read::Cache,
        names::MODULE_NAMESPACE,
        &name,
    )
    .await?
        && let Some(src) = from(p.annotations().get(names::ANN_SOURCE_SNAPSHOT))
    {
        return Ok(Some(src));
    }
    if let Some(v) = cache::get_dynamic(
        &ctx.client,
        caches.and_then(|c| c.snapshots.as_ref()),
        &vs_resource(),
        Read::Cache,
        Some(names::MODULE_NAMESPACE),
        &name,
    )
    .await?
        && let Some(src) = from(v.annotations().get(names::ANN_SOURCE_SNAPSHOT))
    {
        return Ok(Some(src));
    }
    Ok(None)
}

/// Whether the snapshot API is served (the CRDs may be missing in a cluster without snapshots).
pub async fn api_available(ctx: &Context) -> bool {
    vsc_api(ctx)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .is_ok()
}

/// Our VolumeSnapshot and VolumeSnapshotContent copies (metadata), for the orphan sweep. Errors
/// (e.g. no snapshot API) give an empty list.
pub async fn list_copies(ctx: &Context) -> Vec<kube::core::PartialObjectMeta<DynamicObject>> {
    let lp = ListParams::default().labels(&format!("{}=true", names::LABEL_MANAGED));
    let mut out = Vec::new();
    if let Ok(l) = vs_api(ctx, names::MODULE_NAMESPACE)
        .list_metadata(&lp)
        .await
    {
        out.extend(l.items);
    }
    if let Ok(l) = vsc_api(ctx).list_metadata(&lp).await {
        out.extend(l.items);
    }
    out
}
