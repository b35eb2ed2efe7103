//! The DataExport reconciler: decides intent (export, return, expire, delete), drives the
//! handover or snapshot flow one step at a time, runs the exporter and writes the status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use svdm_api::conditions::reason;
use svdm_api::{DataExport, DataExportStatus, Phase, TargetKind, names};

use crate::cache::{self, Read};
use crate::context::{Context, MANAGER};
use crate::decide::{self, Limits, Plan, Route, ServePlan, Top, decide, decide_serving};
use crate::error::{Error, Result, is_not_found};
use crate::exporter;
use crate::handover::Intent;
use crate::objects::{self, Owner};
use crate::pvc_io::{self, Rest};
use crate::route;
use crate::snapshot_io::{self, SnapRest};
use crate::status::{self, Facts, Outcome};

/// Retry interval while a precondition fails.
const BLOCKED_RETRY: Duration = Duration::from_secs(10);
/// Poll interval while waiting for the binder or a deletion.
const WAIT_RETRY: Duration = Duration::from_secs(2);
/// Retry interval for an inconsistent PV (a human must act).
const INCONSISTENT_RETRY: Duration = Duration::from_secs(120);

pub async fn reconcile(
    obj: Arc<DeserializeGuard<DataExport>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    ctx.metrics.reconciled();
    match &obj.0 {
        Ok(de) => reconcile_export(de, &ctx).await,
        Err(e) => {
            log::warn!("skipping a DataExport that does not deserialize: {e}");
            Ok(Action::await_change())
        }
    }
}

pub fn error_policy(
    _obj: Arc<DeserializeGuard<DataExport>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(err.category());
    log::warn!("reconcile failed ({}): {err}", err.category());
    let delay = if err.category() == "Conflict" {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    Action::requeue(delay)
}

fn owner_of(de: &DataExport) -> Result<Owner> {
    Ok(Owner {
        namespace: de
            .namespace()
            .ok_or_else(|| Error::InvalidObject("DataExport without namespace".into()))?,
        name: de.name_any(),
        uid: de
            .uid()
            .ok_or_else(|| Error::InvalidObject("DataExport without uid".into()))?,
    })
}

fn has_finalizer(de: &DataExport) -> bool {
    de.finalizers()
        .iter()
        .any(|f| f == names::FINALIZER_DATAEXPORT)
}

async fn set_finalizer(api: &Api<DataExport>, de: &DataExport, present: bool) -> Result<()> {
    let current = de.finalizers().to_vec();
    let mut fins: Vec<String> = current
        .iter()
        .filter(|f| *f != names::FINALIZER_DATAEXPORT)
        .cloned()
        .collect();
    if present {
        fins.push(names::FINALIZER_DATAEXPORT.to_owned());
    }
    // Test the finalizer list itself (not the whole object's resourceVersion), so a status
    // write in between does not conflict while a concurrent finalizer change does.
    let ops = if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": fins},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": fins},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops)?;
    match api
        .patch(
            &de.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // The API server answers a failed `test` op with 422 Invalid: someone else changed the
        // finalizers since our read. That is a conflict, not a bad request.
        Err(kube::Error::Api(s)) if s.code == 422 => Err(Error::Stale(format!(
            "the finalizers of DataExport {}/{}",
            de.namespace().unwrap_or_default(),
            de.name_any()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Writes the status (status subresource, server-side apply) when it changed, and publishes an
/// Event when the phase or the Ready reason changed.
async fn write_status(
    ctx: &Context,
    api: &Api<DataExport>,
    de: &DataExport,
    outcome: &Outcome,
    facts: &Facts,
) -> Result<()> {
    let prev = de.status.as_ref();
    let next = status::compute(prev, outcome, facts, Timestamp::now());
    if prev == Some(&next) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": format!("{}/{}", names::GROUP, names::VERSION),
        "kind": names::KIND,
        "status": next,
    });
    match api
        .patch_status(
            &de.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if let Some(uid) = de.uid() {
        ctx.metrics.set_phase(&uid, next.phase);
    }
    if let Some((warning, reason, note)) = status::transition(prev, &next) {
        // Events of a deletion (e.g. a return waiting for a lost node, reason ExporterFailed)
        // must not be folded into the export's earlier Events of the same reason.
        let action = if next.phase == Some(Phase::Terminating) {
            "Return"
        } else {
            "Reconcile"
        };
        ctx.event_for(de, warning, &reason, &note, action).await;
    }
    Ok(())
}

/// Facts kept from the previous status when nothing new is known (e.g. during a return).
fn carried_facts(de: &DataExport) -> Facts {
    let st = de.status.clone().unwrap_or_default();
    Facts {
        generation: de.meta().generation,
        url: None,
        ca: st.ca,
        public_url: None,
        volume_mode: st.volume_mode,
        access: st.access_timestamp.map(|t| t.0),
        expiration: st.expiration_timestamp.map(|t| t.0),
        effective_ttl: st
            .effective_ttl
            .as_deref()
            .and_then(|t| svdm_api::ttl::parse(t).ok()),
    }
}

/// Gives back everything an export holds. `user_pvc` / `source_vs` are the target coordinates
/// when known. Returns the rest state of the return.
pub async fn return_all(
    ctx: &Context,
    owner: &Owner,
    user_pvc: Option<(&str, &str)>,
    source_vs: Option<(&str, &str)>,
) -> Result<Rest> {
    // Snapshot source first recorded on our copies (orphans have no DataExport to tell).
    let recorded;
    let source_vs = match source_vs {
        Some(s) => Some(s),
        None => {
            recorded = snapshot_io::recorded_source(ctx, &owner.uid).await?;
            recorded.as_ref().map(|(a, b)| (a.as_str(), b.as_str()))
        }
    };
    match pvc_io::drive(ctx, owner, user_pvc, Intent::Return).await? {
        Rest::Returned => {}
        other => return Ok(other),
    }
    match snapshot_io::drive(ctx, owner, source_vs, true).await? {
        SnapRest::Rest(r) => Ok(r),
        SnapRest::Failed { message, .. } => Err(Error::InvalidObject(message)),
    }
}

/// A namespaced object's coordinates.
type NsName<'a> = Option<(&'a str, &'a str)>;

fn targets(de: &DataExport) -> (NsName<'_>, NsName<'_>) {
    let ns = de.metadata.namespace.as_deref().unwrap_or_default();
    let name = de.spec.target_ref.name.as_str();
    match de.spec.target_ref.kind {
        TargetKind::PersistentVolumeClaim => (Some((ns, name)), None),
        TargetKind::VolumeSnapshot => (None, Some((ns, name))),
    }
}

/// Handles a rest state of a return; `Some(action)` when the return is not finished.
async fn after_return(ctx: &Context, de: &DataExport, rest: Rest) -> Result<Option<Action>> {
    match rest {
        Rest::Returned => Ok(None),
        Rest::Inconsistent { pv, message } => {
            report_inconsistent(ctx, de, pv.as_deref(), &message).await?;
            Ok(Some(Action::requeue(INCONSISTENT_RETRY)))
        }
        _ => Ok(Some(Action::requeue(WAIT_RETRY))),
    }
}

async fn report_inconsistent(
    ctx: &Context,
    de: &DataExport,
    pv: Option<&str>,
    message: &str,
) -> Result<()> {
    log::error!(
        "{}/{}: inconsistent PV state: {message}",
        de.namespace().unwrap_or_default(),
        de.name_any()
    );
    if let Some(pv) = pv {
        let already = ctx.metrics.is_inconsistent(pv);
        pvc_io::mark_inconsistent(ctx, pv).await?;
        ctx.metrics.set_inconsistent(pv, true);
        if !already {
            ctx.event(de, true, "PVInconsistent", message).await;
        }
    }
    Ok(())
}

/// Whether the PVC an export targets is being deleted (from the store).
async fn user_pvc_deleting(ctx: &Context, user_pvc: NsName<'_>) -> Result<bool> {
    let Some((ns, n)) = user_pvc else {
        return Ok(false);
    };
    Ok(cache::get(
        &ctx.client,
        ctx.caches().map(|c| &c.pvcs),
        Read::Cache,
        ns,
        n,
    )
    .await?
    .is_some_and(|p| p.metadata.deletion_timestamp.is_some()))
}

/// Carries out [`decide`]'s plan for one pass.
async fn reconcile_export(de: &DataExport, ctx: &Context) -> Result<Action> {
    let owner = owner_of(de)?;
    let api: Api<DataExport> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let (user_pvc, source_vs) = targets(de);
    let phase = de.status.as_ref().and_then(|s| s.phase);
    // Keeps the by-phase gauge right after a restart, when no status changes.
    if de.meta().deletion_timestamp.is_none() && phase.is_some() {
        ctx.metrics.set_phase(&owner.uid, phase);
    }
    let top = Top {
        user_pvc_deleting: de.meta().deletion_timestamp.is_none()
            && de.spec.target_ref.kind == TargetKind::PersistentVolumeClaim
            && user_pvc_deleting(ctx, user_pvc).await?,
    };
    let limits = Limits {
        default_ttl: ctx.settings.default_ttl,
        max_ttl: ctx.settings.max_ttl,
        expired_retention: ctx.settings.expired_retention,
    };
    match decide(de, &top, &limits) {
        Plan::Forget => {
            ctx.metrics.set_phase(&owner.uid, None);
            Ok(Action::await_change())
        }
        Plan::Release { show_terminating } => {
            if show_terminating {
                write_status(ctx, &api, de, &Outcome::Terminating, &carried_facts(de)).await?;
            }
            let rest = return_all(ctx, &owner, user_pvc, source_vs).await?;
            // A return held up by something the user must act on (a lost node) says so in the
            // status; the change of reason also publishes one Event. Once the hold is gone the
            // status says plainly that the return goes on.
            let outcome = match &rest {
                Rest::Blocked { reason, message } => Outcome::TerminatingBlocked {
                    reason,
                    message: format!("the DataExport is being deleted; {message}"),
                },
                _ => Outcome::Terminating,
            };
            // (`de` predates the write above: on the first pass a plain Terminating is out.)
            let already_out = show_terminating && outcome == Outcome::Terminating;
            if !matches!(rest, Rest::Returned) && !already_out {
                write_status(ctx, &api, de, &outcome, &carried_facts(de)).await?;
            }
            if let Some(action) = after_return(ctx, de, rest).await? {
                return Ok(action);
            }
            set_finalizer(&api, de, false).await?;
            ctx.metrics.set_phase(&owner.uid, None);
            log::info!(
                "{}/{}: deleted, everything returned",
                owner.namespace,
                owner.name
            );
            Ok(Action::await_change())
        }
        Plan::FinishExpiry => {
            let rest = return_all(ctx, &owner, user_pvc, source_vs).await?;
            if let Some(action) = after_return(ctx, de, rest).await? {
                return Ok(action);
            }
            if has_finalizer(de) {
                set_finalizer(&api, de, false).await?;
            }
            write_status(ctx, &api, de, &Outcome::Expired, &carried_facts(de)).await?;
            log::info!(
                "{}/{}: expired, volume returned",
                owner.namespace,
                owner.name
            );
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Plan::Settle { delete_at } => {
            // An Expired object of an earlier version may still hold its volume.
            let rest = return_all(ctx, &owner, user_pvc, source_vs).await?;
            if let Some(action) = after_return(ctx, de, rest).await? {
                return Ok(action);
            }
            if has_finalizer(de) {
                set_finalizer(&api, de, false).await?;
            }
            ctx.metrics.set_phase(&owner.uid, phase);
            let Some(at) = delete_at else {
                return Ok(Action::await_change());
            };
            let now = Timestamp::now();
            if now < at {
                return Ok(Action::requeue(
                    status::until(now, at).max(Duration::from_secs(1)),
                ));
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(owner.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&owner.name, &dp).await {
                Ok(_) => log::info!(
                    "{}/{}: expired longer than the retention; deleted",
                    owner.namespace,
                    owner.name
                ),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
        Plan::AddFinalizer => {
            set_finalizer(&api, de, true).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Plan::Fail { reason, message } => {
            let outcome = Outcome::Failed { reason, message };
            write_status(ctx, &api, de, &outcome, &carried_facts(de)).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Plan::ReturnForDeletedPvc => {
            let rest = return_all(ctx, &owner, user_pvc, None).await?;
            if let Some(action) = after_return(ctx, de, rest).await? {
                return Ok(action);
            }
            let outcome = Outcome::Failed {
                reason: reason::TARGET_NOT_FOUND,
                message: "the PVC was deleted during the export; its volume was returned".into(),
            };
            write_status(ctx, &api, de, &outcome, &carried_facts(de)).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Plan::Export { ttl } => export(ctx, &api, de, &owner, user_pvc, source_vs, ttl).await,
    }
}

/// The handover (or snapshot restore), then serving.
async fn export(
    ctx: &Context,
    api: &Api<DataExport>,
    de: &DataExport,
    owner: &Owner,
    user_pvc: NsName<'_>,
    source_vs: NsName<'_>,
    ttl: Duration,
) -> Result<Action> {
    let mut facts = carried_facts(de);
    facts.effective_ttl = Some(ttl);
    let rest = match de.spec.target_ref.kind {
        TargetKind::PersistentVolumeClaim => {
            pvc_io::drive(ctx, owner, user_pvc, Intent::Export).await?
        }
        TargetKind::VolumeSnapshot => match snapshot_io::drive(ctx, owner, source_vs, false).await?
        {
            SnapRest::Rest(r) => r,
            SnapRest::Failed { reason, message } => {
                let outcome = Outcome::Failed { reason, message };
                write_status(ctx, api, de, &outcome, &facts).await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
        },
    };
    match rest {
        Rest::Blocked { reason, message } => {
            let retry = if reason == svdm_api::conditions::reason::LIMIT_REACHED {
                Duration::from_secs(15)
            } else {
                BLOCKED_RETRY
            };
            write_status(ctx, api, de, &Outcome::Pending { reason, message }, &facts).await?;
            Ok(Action::requeue(retry))
        }
        Rest::Inconsistent { pv, message } => {
            report_inconsistent(ctx, de, pv.as_deref(), &message).await?;
            let outcome = Outcome::Pending {
                reason: reason::PV_CONFLICT,
                message: format!(
                    "{message}; the PV was labelled {} for an administrator",
                    names::LABEL_PV_INCONSISTENT
                ),
            };
            write_status(ctx, api, de, &outcome, &facts).await?;
            Ok(Action::requeue(INCONSISTENT_RETRY))
        }
        Rest::Waiting => {
            let outcome = Outcome::Pending {
                reason: reason::PENDING,
                message: "the volume is being handed over to the exporter".into(),
            };
            write_status(ctx, api, de, &outcome, &facts).await?;
            Ok(Action::requeue(WAIT_RETRY))
        }
        Rest::Returned => {
            // Only reachable when a flow returned under an export intent; start again.
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Rest::Serving { pvc, volume_mode } => {
            serve(ctx, api, de, owner, &pvc, volume_mode, ttl, facts).await
        }
    }
}

/// Runs the exporter and carries out [`decide_serving`]'s plan.
#[allow(clippy::too_many_arguments)]
async fn serve(
    ctx: &Context,
    api: &Api<DataExport>,
    de: &DataExport,
    owner: &Owner,
    pvc: &str,
    mode: svdm_api::VolumeMode,
    ttl: Duration,
    mut facts: Facts,
) -> Result<Action> {
    let state = exporter::ensure(ctx, owner, pvc, mode, de.spec.publish).await?;
    if state.created {
        ctx.fault_point("serve");
    }
    let name = objects::object_name(&owner.uid);
    let url = objects::in_cluster_url(&name);
    facts.url = Some(url.clone());
    facts.ca = Some(state.ca_b64.clone());
    facts.volume_mode = Some(mode);
    let prev = de.status.as_ref();
    let route = if decide::needs_route_check(prev, state.pod_ready) {
        let pod_uid = state.pod_uid.as_deref().unwrap_or_default();
        match route::check(ctx, &name, pod_uid, &url, &state.ca_pem).await? {
            None => Route::Ok,
            Some(why) => Route::Waiting(why),
        }
    } else {
        Route::Unchecked
    };
    let mut view = decide::Exporter {
        pod_ready: state.pod_ready,
        pod_problem: state.pod_problem.clone(),
        route,
        last_access: state.last_access,
        publish: state.publish.clone(),
    };
    let host = ctx.settings.publish_host.as_deref();
    let mut plan = decide_serving(prev, &view, ttl, host, Timestamp::now());
    if matches!(plan, ServePlan::Expire { .. }) {
        // The Lease store may lag behind the exporter's last renewal: ask the API before ending
        // an export that may be in use.
        view.last_access = exporter::last_access_live(ctx, &owner.uid)
            .await?
            .or(view.last_access);
        plan = decide_serving(prev, &view, ttl, host, Timestamp::now());
    }
    facts.access = view.last_access;
    match plan {
        ServePlan::Wait { outcome, retry } => {
            // The idle clock does not run while nothing serves.
            facts.access = None;
            facts.expiration = None;
            write_status(ctx, api, de, &outcome, &facts).await?;
            Ok(Action::requeue(retry))
        }
        ServePlan::Expire { last } => {
            facts.expiration = Some(status::expires_at(last, ttl));
            log::info!(
                "{}/{}: idle since {last}, ttl {}: expired",
                owner.namespace,
                owner.name,
                svdm_api::ttl::format(ttl)
            );
            write_status(ctx, api, de, &Outcome::Expiring, &facts).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        ServePlan::Show {
            outcome,
            public_url,
            expires,
            next,
        } => {
            facts.expiration = Some(expires);
            if public_url && let Some(h) = host {
                facts.public_url = Some(objects::public_url(h, &owner.namespace, &owner.name));
            }
            write_status(ctx, api, de, &outcome, &facts).await?;
            Ok(Action::requeue(next))
        }
    }
}

/// Current status phase helper for tests and orphans.
pub fn phase_of(st: Option<&DataExportStatus>) -> Option<Phase> {
    st.and_then(|s| s.phase)
}
