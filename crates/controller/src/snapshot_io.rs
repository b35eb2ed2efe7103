//! The I/O side of snapshot exports (snapshot.storage.k8s.io/v1 through DynamicObject).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};
use svdm_api::{VolumeMode, names};

use crate::context::Context;
use crate::error::Result;
use crate::exporter;
use crate::kubeio;
use crate::objects::{self, Owner};
use crate::pvc_io::Rest;
use crate::snapshot::{self, Observed, Source, Step};

fn vs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

fn vsc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

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

/// Reads the user's snapshot, its content and our copies.
async fn observe(
    ctx: &Context,
    owner: &Owner,
    source: Option<(&str, &str)>,
    returning: bool,
) -> Result<(Observed, Option<DynamicObject>)> {
    let name = objects::object_name(&owner.uid);
    let mut o = Observed {
        returning,
        fallback_class: ctx.settings.snapshot_storage_class.clone(),
        ..Default::default()
    };
    let mut user_vs = None;
    if let Some((ns, n)) = source {
        user_vs = vs_api(ctx, ns).get_opt(n).await?;
    }
    if let Some(vs) = &user_vs {
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
            if let Some(content) = &bound
                && let Some(c) = vsc_api(ctx).get_opt(content).await?
            {
                o.source_content_found = true;
                let cd = &c.data;
                src.driver = s(&cd["spec"]["driver"]);
                src.snapshot_handle = s(&cd["status"]["snapshotHandle"])
                    .or_else(|| s(&cd["spec"]["source"]["snapshotHandle"]));
                src.source_volume_mode = s(&cd["spec"]["sourceVolumeMode"]);
                if src.restore_size.is_none() {
                    src.restore_size = s(&cd["status"]["restoreSize"]);
                }
                if src.snapshot_class.is_none() {
                    src.snapshot_class = s(&cd["spec"]["volumeSnapshotClassName"]);
                }
            }
            if let Some(pvc_name) = s(&d["spec"]["source"]["persistentVolumeClaimName"])
                && let Some((ns, _)) = source
            {
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
                let spec = pvcs.get_opt(&pvc_name).await?.and_then(|p| p.spec);
                src.source_pvc_mode = spec.as_ref().and_then(|sp| sp.volume_mode.clone());
                src.source_pvc_class = spec
                    .and_then(|sp| sp.storage_class_name)
                    .filter(|c| !c.is_empty());
            }
        }
        o.source = Some(src);
    }
    if let Some(m) = vsc_api(ctx)
        .get_metadata_opt(&objects::snapshot_content_name(&owner.uid))
        .await?
    {
        o.content_copy = true;
        o.content_copy_deleting = m.metadata.deletion_timestamp.is_some();
    }
    if let Some(m) = vs_api(ctx, names::MODULE_NAMESPACE)
        .get_metadata_opt(&name)
        .await?
    {
        o.snapshot_copy = true;
        o.snapshot_copy_deleting = m.metadata.deletion_timestamp.is_some();
    }
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
    if let Some(p) = pvcs.get_opt(&name).await? {
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
    (o.exporter_objects_exist, o.exporter_pod) = exporter::observe(ctx, &owner.uid).await?;
    // The limit only matters before anything of this export exists (see `snapshot::next_step`).
    if !returning && o.restored_pvc.is_none() && !o.content_copy && !o.snapshot_copy {
        o.concurrency = crate::pvc_io::concurrency_for(ctx, &owner.uid).await?;
    }
    if let Some((ns, n)) = source
        && o.source.as_ref().is_some_and(|s| s.has_our_finalizer)
    {
        // Another of our exports still restoring from the same snapshot keeps it protected.
        let key = format!("{ns}/{n}");
        o.other_restore_pending = pvcs
            .list(&ListParams::default().labels(&format!("{}=true", names::LABEL_MANAGED)))
            .await?
            .items
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
    for _ in 0..12 {
        let (o, user_vs) = observe(ctx, owner, source, returning).await?;
        let step = snapshot::next_step(&o);
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
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
    if let Some(p) = pvcs.get_metadata_opt(&name).await?
        && let Some(src) = from(p.annotations().get(names::ANN_SOURCE_SNAPSHOT))
    {
        return Ok(Some(src));
    }
    if let Some(v) = vs_api(ctx, names::MODULE_NAMESPACE).get_opt(&name).await?
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
