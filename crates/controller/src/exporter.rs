//! The exporter objects of one export (TLS Secret, Service, Lease, Pod, Ingress): ensure, inspect,
//! delete.

use std::time::{Duration, SystemTime};

use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use svdm_api::{VolumeMode, names};
use svdm_pki::{CertPair, LeafSpec, Usage};

use std::sync::Arc;

use crate::cache::{self, Read};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};
use crate::kubeio;
use crate::node_loss::{self, ExporterPod, NodeState};
use crate::objects::{self, Owner};

/// Leaf certificates live this long and are renewed when less than [`RENEW_MARGIN`] is left.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const RENEW_MARGIN: Duration = Duration::from_secs(2 * 24 * 3600);

/// Where publishing stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Publish {
    /// Not requested (any Ingress of the export is deleted).
    #[default]
    Off,
    /// The Ingress exists as wanted: the API server (and any admission webhook of the ingress
    /// controller) accepted it.
    Admitted,
    /// Requested but not possible now; the text says why and what to do.
    Failed(String),
}

/// What the exporter looks like right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub pod_ready: bool,
    /// The exporter pod's uid (its EndpointSlice endpoint names it).
    pub pod_uid: Option<String>,
    /// Why the pod cannot serve, when it is clearly broken (not merely starting).
    pub pod_problem: Option<String>,
    pub last_access: Option<Timestamp>,
    /// The exporter CA, PEM, and as `status.ca` carries it (base64 of the PEM).
    pub ca_pem: String,
    pub ca_b64: String,
    pub publish: Publish,
    /// The pod was created in this pass.
    pub created: bool,
}

async fn read(path: &std::path::Path) -> Result<String> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
}

/// The exporter CA (re-read every time, so a CA rotated by the hook is picked up).
pub async fn load_ca(ctx: &Context) -> Result<CertPair> {
    Ok(CertPair {
        cert_pem: read(&ctx.settings.exporter_ca_cert).await?,
        key_pem: read(&ctx.settings.exporter_ca_key).await?,
    })
}

async fn client_ca(ctx: &Context) -> Result<String> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "kube-system");
    let cm = cms.get_opt("extension-apiserver-authentication").await?;
    let ca = cm
        .and_then(|c| c.data)
        .and_then(|d| d.get("client-ca-file").cloned())
        .unwrap_or_default();
    if ca.is_empty() {
        log::warn!(
            "kube-system/extension-apiserver-authentication has no client-ca-file; exporters accept bearer tokens only"
        );
    }
    Ok(ca)
}

fn secret_str(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Whether the Secret's certificate must be (re)issued.
pub fn needs_new_leaf(
    secret: Option<&Secret>,
    ca_pem: &str,
    dns: &[String],
    now: SystemTime,
) -> bool {
    let Some(s) = secret else { return true };
    if secret_str(s, names::TLS_SECRET_CA).as_deref() != Some(ca_pem) {
        return true;
    }
    let Some(cert) = secret_str(s, names::TLS_SECRET_CERT) else {
        return true;
    };
    if secret_str(s, names::TLS_SECRET_KEY).is_none() {
        return true;
    }
    match svdm_pki::inspect(&cert) {
        Ok(info) => info.needs_renewal(now, RENEW_MARGIN) || !info.covers_exactly(dns),
        Err(_) => true,
    }
}

fn pod_problem(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    if let Some(c) = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return Some(format!(
            "the exporter pod cannot be scheduled: {}",
            c.message.clone().unwrap_or_default()
        ));
    }
    for cs in st.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let r = w.reason.as_deref().unwrap_or_default();
            if matches!(
                r,
                "CrashLoopBackOff"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "InvalidImageName"
            ) {
                return Some(format!(
                    "the exporter container is in {r}: {}",
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    None
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Makes sure Secret, Service, Lease and Pod (and the Ingress when published) exist and are
/// current; returns what the exporter looks like.
pub async fn ensure(
    ctx: &Context,
    owner: &Owner,
    pvc: &str,
    mode: VolumeMode,
    publish: bool,
) -> Result<State> {
    let client = ctx.client.clone();
    let ns = names::MODULE_NAMESPACE;
    let name = objects::object_name(&owner.uid);
    let ca = load_ca(ctx).await?;

    // TLS Secret, (re)issued when missing, expiring, for other names or from another CA.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let caches = ctx.caches();
    let existing = cache::get(&client, caches.map(|c| &c.secrets), Read::Cache, ns, &name)
        .await?
        .map(Arc::unwrap_or_clone);
    let dns = objects::service_dns_names(&name, &ctx.settings.cluster_domain);
    if needs_new_leaf(existing.as_ref(), &ca.cert_pem, &dns, SystemTime::now()) {
        let leaf = svdm_pki::issue(
            &ca,
            &LeafSpec {
                common_name: &dns[2],
                organizations: &[],
                dns_names: &dns,
                ip_addresses: &[],
                usage: Usage::Server,
                validity: LEAF_VALIDITY,
            },
        )?;
        let client_ca = client_ca(ctx).await?;
        let secret = objects::tls_secret(
            owner,
            &name,
            &leaf.cert_pem,
            &leaf.key_pem,
            &ca.cert_pem,
            &client_ca,
        );
        secrets
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        log::info!(
            "{}/{}: exporter certificate issued",
            owner.namespace,
            owner.name
        );
    }

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    if cache::get(&client, caches.map(|c| &c.services), Read::Cache, ns, &name)
        .await?
        .is_none()
    {
        kubeio::create_opt(&services, &objects::service(owner, &name)).await?;
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease = match cache::get(&client, caches.map(|c| &c.leases), Read::Cache, ns, &name).await?
    {
        Some(l) => Arc::unwrap_or_clone(l),
        None => {
            let l = objects::lease(owner, &name, Timestamp::now());
            kubeio::create_opt(&leases, &l).await?;
            l
        }
    };
    let last_access = lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut created = false;
    let mut pod_uid = None;
    let (ready, problem) =
        match cache::get(&client, caches.map(|c| &c.pods), Read::Cache, ns, &name)
            .await?
            .map(Arc::unwrap_or_clone)
        {
            None => {
                let pod = objects::exporter_pod(owner, &name, pvc, mode, &ctx.settings);
                kubeio::create_opt(&pods, &pod).await?;
                created = true;
                (false, None)
            }
            Some(p) => {
                pod_uid = p.uid();
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                if p.metadata.deletion_timestamp.is_none()
                    && matches!(phase, Some("Failed") | Some("Succeeded"))
                {
                    // restartPolicy Always makes this rare (eviction, node loss): start a new one.
                    // The uid precondition keeps a newer pod of the name (a stale read) alive.
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: p.uid(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match pods.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let mut ready = pod_ready(&p);
                let mut problem = pod_problem(&p);
                // The node lifecycle controller marks a lost node's pods not ready; only then is the
                // Node worth a look (one GET), and a lost node explains more than the pod does.
                let mut view = pod_view(&p);
                if (!ready || view.deleting)
                    && let Some(node) = view.node.clone()
                {
                    view.node_state = Some(node_state(ctx, &node).await?);
                    if let Some(m) = node_loss::serving_problem(&view) {
                        ready = false;
                        problem = Some(m);
                    }
                }
                (ready, problem)
            }
        };

    let publish = ensure_ingress(ctx, owner, &name, publish).await?;

    Ok(State {
        pod_ready: ready,
        pod_uid,
        pod_problem: problem,
        last_access,
        ca_b64: base64::engine::general_purpose::STANDARD.encode(ca.cert_pem.as_bytes()),
        ca_pem: ca.cert_pem,
        publish,
        created,
    })
}

/// The exporter's last activity as the API server has it now (the store may lag behind a
/// renewal by a moment: asked before an export is ended).
pub async fn last_access_live(ctx: &Context, uid: &str) -> Result<Option<Timestamp>> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
    Ok(leases
        .get_opt(&objects::object_name(uid))
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.renew_time)
        .map(|t| t.0))
}

/// The Ingress of a published export: made to match the settings, or deleted when publishing is
/// off. An API error on the Ingress itself (a rejected object, a denying admission webhook of the
/// ingress controller) does not fail the pass: the in-cluster URL still works, and the status says
/// why publishing does not.
async fn ensure_ingress(
    ctx: &Context,
    owner: &Owner,
    name: &str,
    publish: bool,
) -> Result<Publish> {
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
    if !publish {
        let cached = cache::get(
            &ctx.client,
            ctx.caches().map(|c| &c.ingresses),
            Read::Cache,
            names::MODULE_NAMESPACE,
            name,
        )
        .await?;
        if cached.is_some() {
            kubeio::delete_opt(&ingresses, name).await?;
        }
        return Ok(Publish::Off);
    }
    if let Some(message) = objects::publish_unavailable(&ctx.settings) {
        return Ok(Publish::Failed(message));
    }
    let Some(desired) = objects::ingress(owner, name, &ctx.settings) else {
        return Ok(Publish::Failed(
            "spec.publish is true, but this cluster publishes no exports: the module's \
             publicHost (or the cluster's public domain template) is not set. Ask the platform \
             team to configure it, or set spec.publish to false and use status.url inside the \
             cluster"
                .into(),
        ));
    };
    let current = cache::get(
        &ctx.client,
        ctx.caches().map(|c| &c.ingresses),
        Read::Cache,
        names::MODULE_NAMESPACE,
        name,
    )
    .await?;
    let drift = current.as_ref().is_none_or(|c| {
        c.spec != desired.spec
            || desired
                .annotations()
                .iter()
                .any(|(k, v)| c.annotations().get(k) != Some(v))
    });
    if !drift {
        return Ok(Publish::Admitted);
    }
    match ingresses
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(_) => Ok(Publish::Admitted),
        Err(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 409 => {
            log::warn!(
                "{}/{}: Ingress {name} refused: {}",
                owner.namespace,
                owner.name,
                e.message
            );
            Ok(Publish::Failed(format!(
                "the Ingress that publishes the export was refused ({}): {}. The in-cluster \
                 status.url works; the platform team can fix the module's publish settings",
                e.reason, e.message
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the state of a Node; a Node the controller may not read is `Unknown` (never taken
/// for a missing one).
pub async fn node_state(ctx: &Context, node: &str) -> Result<NodeState> {
    match Api::<Node>::all(ctx.client.clone()).get_opt(node).await {
        Ok(None) => Ok(NodeState::Missing),
        Ok(Some(n)) => Ok(node_loss::node_state_from_conditions(
            n.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .map(|c| (c.type_.as_str(), c.status.as_str())),
        )),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            log::warn!("cannot read Node {node} (forbidden): {}", e.message);
            Ok(NodeState::Unknown)
        }
        Err(e) => Err(e.into()),
    }
}

fn pod_view(p: &Pod) -> ExporterPod {
    ExporterPod {
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        node_state: None,
        deleting: p.metadata.deletion_timestamp.is_some(),
    }
}

/// Whether any exporter object of this export still exists (a pod already being deleted does
/// not count: its deletion is under way), and the exporter pod itself, with its node's state
/// when it is terminating (what a return decides on).
pub async fn observe(ctx: &Context, uid: &str, read: Read) -> Result<(bool, Option<ExporterPod>)> {
    let c = &ctx.client;
    let caches = ctx.caches();
    let ns = names::MODULE_NAMESPACE;
    let name = objects::object_name(uid);
    let mut pod = cache::get(c, caches.map(|c| &c.pods), read, ns, &name)
        .await?
        .map(|p| pod_view(&p));
    if let Some(p) = pod.as_mut()
        && p.deleting
        && let Some(node) = p.node.clone()
    {
        p.node_state = Some(node_state(ctx, &node).await?);
    }
    let pod_live = pod.as_ref().is_some_and(|p| !p.deleting);
    let any = pod_live
        || cache::get(c, caches.map(|c| &c.services), read, ns, &name)
            .await?
            .is_some()
        || cache::get(c, caches.map(|c| &c.secrets), read, ns, &name)
            .await?
            .is_some()
        || cache::get(c, caches.map(|c| &c.leases), read, ns, &name)
            .await?
            .is_some()
        || cache::get(c, caches.map(|c| &c.ingresses), read, ns, &name)
            .await?
            .is_some();
    Ok((any, pod))
}

/// Deletes the exporter pod without waiting for its kubelet. Only called when the pod's Node
/// object no longer exists (see `node_loss`); the uid precondition keeps a newer pod of the
/// same name safe.
pub async fn force_delete_pod(ctx: &Context, pod: &ExporterPod) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), names::MODULE_NAMESPACE);
    log::warn!(
        "exporter pod {} is on node {}, whose Node object is gone; deleting the pod without the kubelet's confirmation",
        pod.name,
        pod.node.as_deref().unwrap_or_default()
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(&pod.name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_not_found(&e) => Ok(()),
        // The precondition failed: a different pod now has the name; the next pass decides.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every exporter object of this export (missing ones are fine).
pub async fn delete_all(ctx: &Context, uid: &str) -> Result<()> {
    let c = ctx.client.clone();
    let ns = names::MODULE_NAMESPACE;
    let name = objects::object_name(uid);
    kubeio::delete_opt(&Api::<Ingress>::namespaced(c.clone(), ns), &name).await?;
    kubeio::delete_opt(&Api::<Pod>::namespaced(c.clone(), ns), &name).await?;
    kubeio::delete_opt(&Api::<Service>::namespaced(c.clone(), ns), &name).await?;
    kubeio::delete_opt(&Api::<Lease>::namespaced(c.clone(), ns), &name).await?;
    let secrets = Api::<Secret>::namespaced(c, ns);
    kubeio::delete_opt(&secrets, &name).await?;
    kubeio::delete_opt(&secrets, &objects::ingress_tls_secret_name(uid)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn leaf_is_reissued_when_missing_foreign_or_for_other_names() {
        let ca = svdm_pki::generate_ca("test-ca", Duration::from_secs(86400 * 30)).expect("ca");
        let dns = objects::service_dns_names("exp-1", "cluster.local");
        let leaf = svdm_pki::issue(
            &ca,
            &LeafSpec {
                common_name: &dns[2],
                organizations: &[],
                dns_names: &dns,
                ip_addresses: &[],
                usage: Usage::Server,
                validity: LEAF_VALIDITY,
            },
        )
        .expect("leaf");
        let mk = |ca_pem: &str| Secret {
            data: Some(BTreeMap::from([
                (
                    "tls.crt".to_owned(),
                    ByteString(leaf.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".to_owned(),
                    ByteString(leaf.key_pem.clone().into_bytes()),
                ),
                ("ca.crt".to_owned(), ByteString(ca_pem.as_bytes().to_vec())),
            ])),
            ..Default::default()
        };
        let now = SystemTime::now();
        assert!(needs_new_leaf(None, &ca.cert_pem, &dns, now));
        assert!(!needs_new_leaf(
            Some(&mk(&ca.cert_pem)),
            &ca.cert_pem,
            &dns,
            now
        ));
        assert!(needs_new_leaf(Some(&mk("other")), &ca.cert_pem, &dns, now));
        let other = objects::service_dns_names("exp-2", "cluster.local");
        assert!(needs_new_leaf(
            Some(&mk(&ca.cert_pem)),
            &ca.cert_pem,
            &other,
            now
        ));
        let later = now + Duration::from_secs(6 * 86400);
        assert!(needs_new_leaf(
            Some(&mk(&ca.cert_pem)),
            &ca.cert_pem,
            &dns,
            later
        ));
    }
}
