//! Orphans: exported PVs and module objects whose DataExport is gone (deleted without its
//! finalizer, or the finalizer removed by hand) are found by a periodic sweep and returned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use svdm_api::{DataExport, names};

use crate::context::Context;
use crate::error::Result;
use crate::objects::Owner;
use crate::pvc_io::{self, Rest};
use crate::reconcile;
use crate::snapshot_io;

/// How often the sweep runs.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// How soon the sweep looks again while an orphan's return is in progress.
pub const BUSY_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Default)]
struct Candidate {
    namespace: String,
    name: String,
    user: Option<(String, String)>,
    pv: Option<String>,
}

fn owner_from<K: Resource>(o: &K) -> Option<(String, String, String)> {
    let a = o.meta().annotations.as_ref()?;
    let uid = a
        .get(names::ANN_OWNER_UID)
        .or_else(|| o.meta().labels.as_ref()?.get(names::LABEL_DATAEXPORT_UID))?;
    Some((
        uid.clone(),
        a.get(names::ANN_OWNER_NAMESPACE)
            .cloned()
            .unwrap_or_default(),
        a.get(names::ANN_OWNER_NAME).cloned().unwrap_or_default(),
    ))
}

fn add<K: Resource>(c: &mut BTreeMap<String, Candidate>, o: &K) -> Option<String> {
    let (uid, ns, name) = owner_from(o)?;
    let e = c.entry(uid.clone()).or_default();
    if e.namespace.is_empty() {
        e.namespace = ns;
        e.name = name;
    }
    Some(uid)
}

/// One sweep over everything carrying our marks.
/// Returns (orphans fully returned, orphans still being returned).
pub async fn sweep(ctx: &Context) -> Result<(usize, usize)> {
    let client = ctx.client.clone();
    let managed = ListParams::default().labels(&format!("{}=true", names::LABEL_MANAGED));
    let mut cands: BTreeMap<String, Candidate> = BTreeMap::new();

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let exported = ListParams::default().labels(&format!("{}=true", names::LABEL_PV_EXPORTED));
    for pv in pvs.list(&exported).await?.items {
        if let Some(uid) = add(&mut cands, &pv) {
            let e = cands.entry(uid).or_default();
            e.user = pvc_io::recorded_user(&pv);
            e.pv = Some(pv.name_any());
        }
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    for p in pvcs.list(&managed).await?.items {
        if let Some(uid) = add(&mut cands, &p) {
            let ns = p.namespace().unwrap_or_default();
            if ns != names::MODULE_NAMESPACE {
                let e = cands.entry(uid).or_default();
                e.user.get_or_insert((ns, p.name_any()));
            }
        }
    }
    for p in Api::<Pod>::namespaced(client.clone(), names::MODULE_NAMESPACE)
        .list_metadata(&managed)
        .await?
        .items
    {
        add(&mut cands, &p);
    }
    for l in Api::<Lease>::namespaced(client.clone(), names::MODULE_NAMESPACE)
        .list_metadata(&managed)
        .await?
        .items
    {
        add(&mut cands, &l);
    }
    for x in Api::<Secret>::namespaced(client.clone(), names::MODULE_NAMESPACE)
        .list_metadata(&managed)
        .await?
        .items
    {
        add(&mut cands, &x);
    }
    for x in Api::<Service>::namespaced(client.clone(), names::MODULE_NAMESPACE)
        .list_metadata(&managed)
        .await?
        .items
    {
        add(&mut cands, &x);
    }
    // Snapshot copies (the snapshot API may be absent: then there is nothing to find).
    for x in snapshot_io::list_copies(ctx).await {
        add(&mut cands, &x);
    }

    let mut returned = 0;
    let mut in_progress = 0;
    for (uid, c) in cands {
        if !c.namespace.is_empty() && !c.name.is_empty() {
            let des: Api<DataExport> = Api::namespaced(client.clone(), &c.namespace);
            if des
                .get_metadata_opt(&c.name)
                .await?
                .is_some_and(|d| d.uid().as_deref() == Some(uid.as_str()))
            {
                continue;
            }
        }
        let owner = Owner {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            uid: uid.clone(),
        };
        let user = c.user.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
        log::info!(
            "orphan of DataExport {}/{} (uid {uid}) found; returning it",
            c.namespace,
            c.name
        );
        match reconcile::return_all(ctx, &owner, user, None).await? {
            Rest::Returned => returned += 1,
            Rest::Inconsistent { pv, message } => {
                log::error!("orphan {uid}: {message}");
                if let Some(pv) = pv.or(c.pv) {
                    pvc_io::mark_inconsistent(ctx, &pv).await?;
                    ctx.metrics.set_inconsistent(&pv, true);
                }
            }
            other => {
                in_progress += 1;
                log::info!("orphan {uid}: return in progress ({other:?})");
            }
        }
    }
    Ok((returned, in_progress))
}

/// Sweeps forever (while this replica leads).
pub async fn run(ctx: Arc<Context>) {
    loop {
        // A return in progress (waiting for the binder) is looked at again soon.
        let pause = match sweep(&ctx).await {
            Ok((n, busy)) => {
                if n > 0 {
                    log::info!("orphan sweep: {n} returned");
                }
                if busy > 0 { BUSY_INTERVAL } else { INTERVAL }
            }
            Err(e) => {
                ctx.metrics.error(e.category());
                log::warn!("orphan sweep failed: {e}");
                INTERVAL
            }
        };
        tokio::time::sleep(pause).await;
    }
}
