//! The I/O side of the PVC handover: observe the cluster into a [`handover::Observed`], apply one
//! [`handover::Step`], repeat.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use svdm_api::conditions::reason;
use svdm_api::{VolumeMode, names};

use std::sync::Arc;

use crate::cache::{self, Read};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::exporter;
use crate::handover::{self, ClaimRef, ExportPvc, Intent, Observed, Pv, Step, UserPvc};
use crate::kubeio;
use crate::limits::{self, Concurrency};
use crate::metrics::Transfer;
use crate::objects::{self, Owner};

/// Where a handover loop came to rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rest {
    Blocked {
        reason: &'static str,
        message: String,
    },
    Inconsistent {
        pv: Option<String>,
        message: String,
    },
    Serving {
        pvc: String,
        volume_mode: VolumeMode,
    },
    /// Waiting for the binder or a deletion; look again soon.
    Waiting,
    Returned,
}

/// At most this many steps per reconcile pass; the rest continues on the next pass.
const MAX_STEPS: usize = 12;

/// Raw objects behind an observation.
pub struct Raw {
    pub pv: Option<PersistentVolume>,
    pub user_pvc: Option<PersistentVolumeClaim>,
}

fn ann(o: &impl ResourceExt, k: &str) -> Option<String> {
    o.annotations().get(k).cloned()
}

fn to_user(p: &PersistentVolumeClaim, uid: &str) -> UserPvc {
    UserPvc {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        phase: p.status.as_ref().and_then(|s| s.phase.clone()),
        volume_name: p.spec.as_ref().and_then(|s| s.volume_name.clone()),
        deleting: p.metadata.deletion_timestamp.is_some(),
        held_by: ann(p, names::ANN_OWNER_UID),
        has_finalizer: p
            .finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_PVC_PROTECTION),
        has_labels: p
            .labels()
            .get(names::LABEL_DATAEXPORT_UID)
            .map(String::as_str)
            == Some(uid),
    }
}

fn to_pv(p: &PersistentVolume) -> Pv {
    let spec = p.spec.as_ref();
    Pv {
        name: p.name_any(),
        claim_ref: spec.and_then(|s| s.claim_ref.as_ref()).map(|c| ClaimRef {
            namespace: c.namespace.clone().unwrap_or_default(),
            name: c.name.clone().unwrap_or_default(),
            uid: c.uid.clone().unwrap_or_default(),
        }),
        reclaim_policy: spec.and_then(|s| s.persistent_volume_reclaim_policy.clone()),
        phase: p.status.as_ref().and_then(|s| s.phase.clone()),
        owner_uid: ann(p, names::ANN_OWNER_UID),
        exported_label: p.labels().contains_key(names::LABEL_PV_EXPORTED),
        inconsistent_label: p.labels().contains_key(names::LABEL_PV_INCONSISTENT),
        original_reclaim_policy: ann(p, names::ANN_PV_ORIGINAL_RECLAIM_POLICY),
        original_claim_namespace: ann(p, names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE),
        original_claim_name: ann(p, names::ANN_PV_ORIGINAL_CLAIM_NAME),
        original_claim_uid: ann(p, names::ANN_PV_ORIGINAL_CLAIM_UID),
    }
}

fn pod_uses_claim(p: &Pod, claim: &str) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    p.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim)
        })
}

/// Reads everything [`handover::next_step`] needs. `user` is the user PVC's namespace and name,
/// when known. From the stores (`Read::Cache`) the checks that only matter before the handover
/// starts (pods using the claim, attachments, the export limit) are left out: a decision to start
/// is a write, and [`drive`] takes writes only on a live observation.
pub async fn observe(
    ctx: &Context,
    owner: &Owner,
    user: Option<(&str, &str)>,
    intent: Intent,
    read: Read,
) -> Result<(Observed, Raw)> {
    let client = &ctx.client;
    let caches = ctx.caches();
    let name = objects::object_name(&owner.uid);
    let mut user_obj = None;
    if let Some((ns, n)) = user {
        user_obj = cache::get(client, caches.map(|c| &c.pvcs), read, ns, n).await?;
    }
    // Our record on a PV is found by label; otherwise follow the user PVC's volumeName.
    let pvs = caches.map(|c| &c.pvs);
    let mut pv_obj = cache::labelled(
        client,
        pvs,
        read,
        None,
        names::LABEL_DATAEXPORT_UID,
        &owner.uid,
    )
    .await?
    .into_iter()
    .next();
    if pv_obj.is_none()
        && let Some(vn) = user_obj
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
    {
        pv_obj = cache::get_cluster(client, pvs, read, &vn).await?;
    }
    let export_pvc = cache::get(
        client,
        caches.map(|c| &c.pvcs),
        read,
        names::MODULE_NAMESPACE,
        &name,
    )
    .await?
    .map(|p| ExportPvc {
        namespace: names::MODULE_NAMESPACE.to_owned(),
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        phase: p.status.as_ref().and_then(|s| s.phase.clone()),
        deleting: p.metadata.deletion_timestamp.is_some(),
    });
    let user_pvc = user_obj.as_deref().map(|p| to_user(p, &owner.uid));
    let pv = pv_obj.as_deref().map(to_pv);

    // Costly checks only where the decision needs them: before the handover starts, which is
    // told by what users cannot write (our record on the PV, the export PVC in the module
    // namespace), never by the user PVC's annotations.
    let mut pods_using = Vec::new();
    let mut attached = Vec::new();
    let mut concurrency = Concurrency::default();
    let starting = intent == Intent::Export
        && export_pvc.is_none()
        && pv
            .as_ref()
            .is_none_or(|p| p.owner_uid.as_deref() != Some(owner.uid.as_str()));
    if read == Read::Live
        && starting
        && let Some(u) = &user_pvc
    {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &u.namespace);
        pods_using = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| pod_uses_claim(p, &u.name))
            .map(|p| p.name_any())
            .collect();
        pods_using.sort();
        if let Some(pv) = &pv {
            let vas: Api<VolumeAttachment> = Api::all(client.clone());
            attached = vas
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|va| {
                    va.spec.source.persistent_volume_name.as_deref() == Some(pv.name.as_str())
                        && va.status.as_ref().is_some_and(|s| s.attached)
                })
                .map(|va| va.name_any())
                .collect();
        }
        concurrency = concurrency_for(ctx, &owner.uid).await?;
    }
    // Only a return needs the exporter objects. An export pass that turns out to need a return
    // looks again (see `drive`).
    let (exporter_objects_exist, exporter_pod) = if intent == Intent::Return {
        exporter::observe(ctx, &owner.uid, read).await?
    } else {
        (false, None)
    };
    Ok((
        Observed {
            intent,
            uid: owner.uid.clone(),
            export_pvc_namespace: names::MODULE_NAMESPACE.to_owned(),
            export_pvc_name: name,
            user_pvc,
            pv,
            export_pvc,
            exporter_objects_exist,
            exporter_pod,
            pods_using,
            attached,
            concurrency,
        },
        Raw {
            pv: pv_obj.map(Arc::unwrap_or_clone),
            user_pvc: user_obj.map(Arc::unwrap_or_clone),
        },
    ))
}

/// Running exports of both kinds (see `limits`) against `--max-concurrent-exports`; lists
/// nothing when there is no limit.
pub async fn concurrency_for(ctx: &Context, own_uid: &str) -> Result<Concurrency> {
    let max = ctx.settings.max_concurrent_exports;
    if max == 0 {
        return Ok(Concurrency::default());
    }
    let pvcs = cache::labelled(
        &ctx.client,
        ctx.caches().map(|c| &c.pvcs),
        Read::Live,
        Some(names::MODULE_NAMESPACE),
        names::LABEL_MANAGED,
        "true",
    )
    .await?;
    let running = limits::count_running(
        pvcs.iter().map(|p| {
            p.labels()
                .get(names::LABEL_DATAEXPORT_UID)
                .map(String::as_str)
        }),
        own_uid,
    );
    Ok(Concurrency { running, max })
}

fn claim_json(c: &ClaimRef) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": c.namespace,
        "name": c.name,
        "uid": c.uid,
        "resourceVersion": null,
        "fieldPath": null,
    })
}

fn pv_rv(raw: &Raw) -> Result<(String, Option<String>)> {
    let pv = raw
        .pv
        .as_ref()
        .ok_or_else(|| Error::InvalidObject("PV vanished between observe and apply".into()))?;
    Ok((pv.name_any(), pv.resource_version()))
}

/// Applies one step. Every write carries the observed resourceVersion where a stale view could
/// do harm, so a concurrent change makes it fail and the next pass decides again.
pub async fn apply(
    ctx: &Context,
    owner: &Owner,
    obs: &Observed,
    raw: &Raw,
    step: &Step,
) -> Result<()> {
    let client = ctx.client.clone();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let name = objects::object_name(&owner.uid);
    match step {
        Step::ProtectUserPvc => {
            let u = raw
                .user_pvc
                .as_ref()
                .ok_or_else(|| Error::InvalidObject("user PVC vanished".into()))?;
            let mut fins = u.finalizers().to_vec();
            if !fins.iter().any(|f| f == names::FINALIZER_PVC_PROTECTION) {
                fins.push(names::FINALIZER_PVC_PROTECTION.to_owned());
            }
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(client, &u.namespace().unwrap_or_default());
            kubeio::merge(
                &api,
                &u.name_any(),
                &json!({"metadata": {
                    "resourceVersion": u.resource_version(),
                    "finalizers": fins,
                    "annotations": objects::owner_annotations(owner),
                    "labels": objects::labels(&owner.uid),
                }}),
            )
            .await?;
        }
        Step::RecordPv {
            original_reclaim_policy,
            original_claim,
        } => {
            let (pv, rv) = pv_rv(raw)?;
            let mut annotations = objects::owner_annotations(owner);
            annotations.insert(
                names::ANN_PV_ORIGINAL_RECLAIM_POLICY.to_owned(),
                original_reclaim_policy.clone(),
            );
            annotations.insert(
                names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE.to_owned(),
                original_claim.namespace.clone(),
            );
            annotations.insert(
                names::ANN_PV_ORIGINAL_CLAIM_NAME.to_owned(),
                original_claim.name.clone(),
            );
            annotations.insert(
                names::ANN_PV_ORIGINAL_CLAIM_UID.to_owned(),
                original_claim.uid.clone(),
            );
            // Record and Retain in one write: Retain is in force before any claimRef change.
            kubeio::merge(
                &pvs,
                &pv,
                &json!({
                    "metadata": {
                        "resourceVersion": rv,
                        "annotations": annotations,
                        "labels": {
                            names::LABEL_PV_EXPORTED: "true",
                            names::LABEL_DATAEXPORT_UID: owner.uid,
                        },
                    },
                    "spec": {"persistentVolumeReclaimPolicy": "Retain"},
                }),
            )
            .await?;
        }
        Step::EnsureRetain => {
            let (pv, rv) = pv_rv(raw)?;
            kubeio::merge(
                &pvs,
                &pv,
                &json!({"metadata": {"resourceVersion": rv}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
            )
            .await?;
        }
        Step::CreateExportPvc => {
            let pv = raw
                .pv
                .as_ref()
                .ok_or_else(|| Error::InvalidObject("PV vanished".into()))?;
            let spec = pv.spec.as_ref();
            let mode = VolumeMode::from_k8s(spec.and_then(|s| s.volume_mode.as_deref()))
                .unwrap_or(VolumeMode::Filesystem);
            let size = spec
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .cloned();
            let class = spec.and_then(|s| s.storage_class_name.clone());
            let pvc = objects::export_pvc(owner, &name, &pv.name_any(), mode, class, size);
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client, names::MODULE_NAMESPACE);
            kubeio::create_opt(&api, &pvc).await?;
        }
        Step::BindPvToExportPvc { claim } | Step::RebindPvToUser { claim } => {
            let (pv, rv) = pv_rv(raw)?;
            kubeio::merge(
                &pvs,
                &pv,
                &json!({"metadata": {"resourceVersion": rv}, "spec": {"claimRef": claim_json(claim)}}),
            )
            .await?;
            request_bind(client.clone(), claim, rv.as_deref().unwrap_or_default()).await;
        }
        Step::DeleteExporterObjects => exporter::delete_all(ctx, &owner.uid).await?,
        Step::ForceDeleteExporterPod => {
            if let Some(pod) = &obs.exporter_pod {
                exporter::force_delete_pod(ctx, pod).await?;
            }
        }
        Step::DeleteExportPvc => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client, names::MODULE_NAMESPACE);
            kubeio::delete_opt(&api, &obs.export_pvc_name).await?;
        }
        Step::RestoreReclaimPolicy { policy } => {
            let (pv, rv) = pv_rv(raw)?;
            kubeio::merge(
                &pvs,
                &pv,
                &json!({"metadata": {"resourceVersion": rv}, "spec": {"persistentVolumeReclaimPolicy": policy}}),
            )
            .await?;
        }
        Step::UnprotectUserPvc => {
            let u = raw
                .user_pvc
                .as_ref()
                .ok_or_else(|| Error::InvalidObject("user PVC vanished".into()))?;
            unprotect(client, u).await?;
        }
        Step::ClearPvRecord => {
            let (pv, rv) = pv_rv(raw)?;
            // One write: the tracking label goes with (never before) the record.
            kubeio::merge(
                &pvs,
                &pv,
                &json!({"metadata": {
                    "resourceVersion": rv,
                    "annotations": {
                        names::ANN_OWNER_NAMESPACE: null,
                        names::ANN_OWNER_NAME: null,
                        names::ANN_OWNER_UID: null,
                        names::ANN_PV_ORIGINAL_RECLAIM_POLICY: null,
                        names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE: null,
                        names::ANN_PV_ORIGINAL_CLAIM_NAME: null,
                        names::ANN_PV_ORIGINAL_CLAIM_UID: null,
                    },
                    "labels": {
                        names::LABEL_DATAEXPORT_UID: null,
                        names::LABEL_PV_EXPORTED: null,
                    },
                }}),
            )
            .await?;
        }
        Step::Blocked { .. }
        | Step::Serve
        | Step::WaitExporterPodGone { .. }
        | Step::WaitExportPvcGone
        | Step::WaitUserPvcBound
        | Step::Returned
        | Step::Inconsistent { .. } => {}
    }
    Ok(())
}

/// Removes our finalizer, owner annotations and labels from a user PVC (nothing else), guarded
/// by the resourceVersion it was read at.
pub async fn unprotect(client: kube::Client, u: &PersistentVolumeClaim) -> Result<()> {
    let fins: Vec<String> = u
        .finalizers()
        .iter()
        .filter(|f| *f != names::FINALIZER_PVC_PROTECTION)
        .cloned()
        .collect();
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(client, &u.namespace().unwrap_or_default());
    kubeio::merge(
        &api,
        &u.name_any(),
        &json!({"metadata": {
            "resourceVersion": u.resource_version(),
            "finalizers": fins,
            "annotations": {
                names::ANN_OWNER_NAMESPACE: null,
                names::ANN_OWNER_NAME: null,
                names::ANN_OWNER_UID: null,
                names::ANN_BIND_REQUESTED: null,
            },
            "labels": {
                names::LABEL_MANAGED: null,
                names::LABEL_DATAEXPORT_UID: null,
            },
        }}),
    )
    .await?;
    Ok(())
}

/// Labels a PV whose record is inconsistent (never changing anything else on it).
pub async fn mark_inconsistent(ctx: &Context, pv: &str) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    kubeio::merge(
        &pvs,
        pv,
        &json!({"metadata": {"labels": {names::LABEL_PV_INCONSISTENT: "true"}}}),
    )
    .await?;
    Ok(())
}

/// Runs the handover (or return) until it rests, one observed step at a time.
pub async fn drive(
    ctx: &Context,
    owner: &Owner,
    user: Option<(&str, &str)>,
    intent: Intent,
) -> Result<Rest> {
    // The stores first; a step that writes is decided again on a live observation.
    let mut read = Read::Cache;
    for _ in 0..MAX_STEPS {
        let (mut obs, raw) = observe(ctx, owner, user, intent, read).await?;
        let mut step = handover::next_step(&obs);
        if intent == Intent::Export && is_return_step(&step) {
            (obs.exporter_objects_exist, obs.exporter_pod) =
                exporter::observe(ctx, &owner.uid, read).await?;
            step = handover::next_step(&obs);
        }
        if read == Read::Cache && (step.is_action() || matches!(step, Step::Inconsistent { .. })) {
            read = Read::Live;
            continue;
        }
        if let Some(pv) = &obs.pv
            && !matches!(step, Step::Inconsistent { .. })
        {
            // An administrator repaired it (or it never was): the gauge follows.
            ctx.metrics.set_inconsistent(&pv.name, false);
        }
        log::debug!("{}/{}: step {}", owner.namespace, owner.name, step.name());
        match step {
            Step::Blocked { reason, message } => return Ok(Rest::Blocked { reason, message }),
            Step::Inconsistent { message } => {
                let pv = obs.pv.as_ref().map(|p| p.name.clone());
                return Ok(Rest::Inconsistent { pv, message });
            }
            Step::Serve => {
                ctx.metrics.transfer_done(&owner.uid, Transfer::Handover);
                let mode = raw
                    .pv
                    .as_ref()
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| VolumeMode::from_k8s(s.volume_mode.as_deref()))
                    .unwrap_or(VolumeMode::Filesystem);
                return Ok(Rest::Serving {
                    pvc: obs.export_pvc_name,
                    volume_mode: mode,
                });
            }
            Step::WaitExporterPodGone {
                lost_node: Some(message),
            } => {
                // Not an error of ours, but the user must know what ends the wait.
                return Ok(Rest::Blocked {
                    reason: reason::EXPORTER_FAILED,
                    message,
                });
            }
            Step::WaitExporterPodGone { lost_node: None }
            | Step::WaitExportPvcGone
            | Step::WaitUserPvcBound => return Ok(Rest::Waiting),
            Step::Returned => {
                ctx.metrics.transfer_done(&owner.uid, Transfer::Return);
                return Ok(Rest::Returned);
            }
            step => {
                let transfer = match step {
                    Step::ProtectUserPvc
                    | Step::RecordPv { .. }
                    | Step::CreateExportPvc
                    | Step::BindPvToExportPvc { .. } => Transfer::Handover,
                    _ => Transfer::Return,
                };
                ctx.metrics.transfer_step(&owner.uid, transfer);
                apply(ctx, owner, &obs, &raw, &step).await?;
                log::info!("{}/{}: {} done", owner.namespace, owner.name, step.name());
                ctx.fault_point(step.name());
            }
        }
    }
    Ok(Rest::Waiting)
}

/// Asks the PV binder to complete the binding of `claim` now rather than at its next resync
/// (see [`names::ANN_BIND_REQUESTED`]). Best effort: the resync binds it anyway, so a failure only
/// costs time. The uid precondition keeps a newer claim of the same name untouched.
async fn request_bind(client: kube::Client, claim: &ClaimRef, pv_rv: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client, &claim.namespace);
    let patch =
        json!({"metadata": {"uid": claim.uid, "annotations": {names::ANN_BIND_REQUESTED: pv_rv}}});
    if let Err(e) = kubeio::merge(&api, &claim.name, &patch).await {
        log::debug!(
            "cannot ask the binder to sync {}/{} now: {e}",
            claim.namespace,
            claim.name
        );
    }
}

/// Steps only a return takes; under an export intent they mean the handover must unwind first,
/// which needs the exporter objects observed.
fn is_return_step(step: &Step) -> bool {
    matches!(
        step,
        Step::ForceDeleteExporterPod
            | Step::WaitExporterPodGone { .. }
            | Step::DeleteExportPvc
            | Step::WaitExportPvcGone
            | Step::RebindPvToUser { .. }
            | Step::WaitUserPvcBound
            | Step::RestoreReclaimPolicy { .. }
            | Step::UnprotectUserPvc
            | Step::ClearPvRecord
            | Step::Returned
    )
}

/// The user PVC a PV's record names, if complete.
pub fn recorded_user(pv: &PersistentVolume) -> Option<(String, String)> {
    let a = pv.annotations();
    Some((
        a.get(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE)?.clone(),
        a.get(names::ANN_PV_ORIGINAL_CLAIM_NAME)?.clone(),
    ))
}
