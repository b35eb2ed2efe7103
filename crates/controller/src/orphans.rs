//! Orphans: exported PVs and module objects whose DataExport is gone (deleted without its
//! finalizer, or the finalizer removed by hand) are found by a periodic sweep over the
//! controller's stores and returned.
//!
//! Only what users cannot write is taken as the module's record (docs/development/ARCHITECTURE.md,
//! "What is trusted"): our record on a PV, and our objects in the module namespace. A PVC in a
//! user's namespace is never a candidate for a return by what its labels or annotations say —
//! a tenant can write those, naming any export of any tenant. At most they describe the PVC
//! itself: a user PVC still protected by our finalizer, whose named owner in its own namespace
//! does not exist and that no PV record names, gets only its own protection removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use svdm_api::{DataExport, names};

use crate::cache::Caches;
use crate::context::Context;
use crate::error::Result;
use crate::objects::Owner;
use crate::pvc_io::{self, Rest};
use crate::reconcile;

/// How often the sweep runs.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// How soon the sweep looks again while an orphan's return is in progress.
pub const BUSY_INTERVAL: Duration = Duration::from_secs(3);

type Exports = Store<DeserializeGuard<DataExport>>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub user: Option<(String, String)>,
    pub pv: Option<String>,
}

/// Owner (uid, namespace, name) from an object's owner annotations.
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

fn managed<K: Resource>(o: &K) -> bool {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_MANAGED))
        .is_some_and(|v| v == "true")
}

fn in_module_namespace<K: Resource>(o: &K) -> bool {
    o.meta().namespace.as_deref() == Some(names::MODULE_NAMESPACE)
}

/// Every export the module's own records name, keyed by the DataExport's uid (pure over the
/// stores' contents).
pub fn candidates(caches: &Caches) -> BTreeMap<String, Candidate> {
    let mut cands: BTreeMap<String, Candidate> = BTreeMap::new();
    for pv in caches.pvs.state() {
        if !pv.labels().contains_key(names::LABEL_PV_EXPORTED) {
            continue;
        }
        if let Some(uid) = add(&mut cands, pv.as_ref()) {
            let e = cands.entry(uid).or_default();
            e.user = pvc_io::recorded_user(&pv);
            e.pv = Some(pv.name_any());
        }
    }
    fn module<K: Resource>(c: &mut BTreeMap<String, Candidate>, items: Vec<Arc<K>>) {
        for o in items {
            if in_module_namespace(o.as_ref()) && managed(o.as_ref()) {
                add(c, o.as_ref());
            }
        }
    }
    module(&mut cands, caches.pvcs.state());
    module(&mut cands, caches.pods.state());
    module(&mut cands, caches.leases.state());
    module(&mut cands, caches.secrets.state());
    module(&mut cands, caches.services.state());
    module(&mut cands, caches.ingresses.state());
    let copies = |s: Option<&Store<DynamicObject>>| s.map(|s| s.state()).unwrap_or_default();
    module(&mut cands, copies(caches.snapshots.as_ref()));
    // Contents are cluster-scoped: only the module creates them with its label.
    for c in copies(caches.contents.as_ref()) {
        if managed(c.as_ref()) {
            add(&mut cands, c.as_ref());
        }
    }
    cands
}

/// Whether the DataExport `namespace/name` with `uid` still exists: the store first, then the
/// API, since a selector-restricted or just-created export may not be in the store.
async fn exists(
    ctx: &Context,
    exports: &Exports,
    uid: &str,
    namespace: &str,
    name: &str,
) -> Result<bool> {
    if exports.state().iter().any(|d| {
        d.0.as_ref().is_ok_and(|d| {
            d.uid().as_deref() == Some(uid)
                && d.namespace().as_deref() == Some(namespace)
                && d.name_any() == name
        })
    }) {
        return Ok(true);
    }
    if namespace.is_empty() || name.is_empty() {
        return Ok(false);
    }
    let des: Api<DataExport> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(des
        .get_metadata_opt(name)
        .await?
        .is_some_and(|d| d.uid().as_deref() == Some(uid)))
}

/// One sweep over everything carrying our marks.
/// Returns (orphans fully returned, orphans still being returned).
pub async fn sweep(ctx: &Context, exports: &Exports) -> Result<(usize, usize)> {
    let Some(caches) = ctx.caches() else {
        return Ok((0, 0));
    };
    let mut returned = 0;
    let mut in_progress = 0;
    let cands = candidates(caches);
    for (uid, c) in &cands {
        if exists(ctx, exports, uid, &c.namespace, &c.name).await? {
            continue;
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
                if let Some(pv) = pv.or(c.pv.clone()) {
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
    returned += release_user_pvcs(ctx, caches, exports, &cands).await?;
    Ok((returned, in_progress))
}

/// A user PVC whose own protection outlived its export: our finalizer on it, the owner its
/// annotations name (which must be in the PVC's own namespace) gone, and no record of ours on
/// any PV naming it. Pure over the stores' contents; see [`release_user_pvcs`].
pub fn stale_protection(
    pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
    recorded_claims: &[(String, String)],
) -> Option<(String, String, String)> {
    if in_module_namespace(pvc)
        || !pvc
            .finalizers()
            .iter()
            .any(|f| f == names::FINALIZER_PVC_PROTECTION)
    {
        return None;
    }
    let ns = pvc.namespace()?;
    if recorded_claims
        .iter()
        .any(|(n, m)| *n == ns && *m == pvc.name_any())
    {
        return None;
    }
    let (uid, owner_ns, owner_name) = owner_from(pvc).unwrap_or_default();
    // An owner in another namespace is no owner of this PVC: whatever it names, only this PVC's
    // own protection is at stake.
    let owner_ns = if owner_ns == ns {
        owner_ns
    } else {
        String::new()
    };
    Some((uid, owner_ns, owner_name))
}

async fn release_user_pvcs(
    ctx: &Context,
    caches: &Caches,
    exports: &Exports,
    cands: &BTreeMap<String, Candidate>,
) -> Result<usize> {
    let recorded: Vec<(String, String)> = cands.values().filter_map(|c| c.user.clone()).collect();
    let mut released = 0;
    for pvc in caches.pvcs.state() {
        let Some((uid, ns, name)) = stale_protection(&pvc, &recorded) else {
            continue;
        };
        if !uid.is_empty() && exists(ctx, exports, &uid, &ns, &name).await? {
            continue;
        }
        log::info!(
            "PVC {}/{} keeps the export protection of a DataExport that no longer exists; removing it",
            pvc.namespace().unwrap_or_default(),
            pvc.name_any()
        );
        pvc_io::unprotect(ctx.client.clone(), &pvc).await?;
        released += 1;
    }
    Ok(released)
}

/// Sweeps forever (while this replica leads).
pub async fn run(ctx: Arc<Context>, exports: Exports) {
    loop {
        // A return in progress (waiting for the binder) is looked at again soon.
        let pause = match sweep(&ctx, &exports).await {
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
