//! Pure builders of the objects the controller creates in the module namespace for one export.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TypedLocalObjectReference, Volume, VolumeDevice, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use svdm_api::{VolumeMode, names};

use crate::config::Settings;

/// The DataExport an object belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

pub use svdm_api::names::{ingress_tls_secret_name, object_name, snapshot_content_name};
// (ingress_tls_secret_name: per-export certificates of earlier versions, still deleted on return)

pub fn labels(uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::LABEL_MANAGED.to_owned(), "true".to_owned()),
        (names::LABEL_DATAEXPORT_UID.to_owned(), uid.to_owned()),
    ])
}

pub fn owner_annotations(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            names::ANN_OWNER_NAMESPACE.to_owned(),
            owner.namespace.clone(),
        ),
        (names::ANN_OWNER_NAME.to_owned(), owner.name.clone()),
        (names::ANN_OWNER_UID.to_owned(), owner.uid.clone()),
    ])
}

fn meta(owner: &Owner, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names::MODULE_NAMESPACE.to_owned()),
        labels: Some(labels(&owner.uid)),
        annotations: Some(owner_annotations(owner)),
        ..Default::default()
    }
}

/// Names the exporter's certificate must cover.
pub fn service_dns_names(service: &str, cluster_domain: &str) -> Vec<String> {
    let ns = names::MODULE_NAMESPACE;
    let mut v = vec![
        service.to_owned(),
        format!("{service}.{ns}"),
        format!("{service}.{ns}.svc"),
    ];
    if !cluster_domain.is_empty() {
        v.push(format!("{service}.{ns}.svc.{cluster_domain}"));
    }
    v
}

/// `status.url`.
pub fn in_cluster_url(service: &str) -> String {
    format!("https://{service}.{}.svc/", names::MODULE_NAMESPACE)
}

/// `status.publicURL`.
pub fn public_url(host: &str, namespace: &str, name: &str) -> String {
    format!("https://{host}/{namespace}/{name}/")
}

/// The export PVC of the PVC flow: pre-bound to the PV, ReadWriteOncePod.
pub fn export_pvc(
    owner: &Owner,
    name: &str,
    pv_name: &str,
    volume_mode: VolumeMode,
    storage_class: Option<String>,
    size: Option<Quantity>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(owner, name),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOncePod".to_owned()]),
            volume_name: Some(pv_name.to_owned()),
            volume_mode: Some(volume_mode.as_str().to_owned()),
            // An empty class must stay "" (not absent) so no default class is assigned.
            storage_class_name: Some(storage_class.unwrap_or_default()),
            resources: size.map(|s| VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), s)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The PVC restored from the copied VolumeSnapshot (snapshot flow).
pub fn restored_pvc(
    owner: &Owner,
    name: &str,
    snapshot_name: &str,
    volume_mode: VolumeMode,
    storage_class: &str,
    size: Quantity,
    source: &str,
) -> PersistentVolumeClaim {
    let mut m = meta(owner, name);
    m.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(names::ANN_SOURCE_SNAPSHOT.to_owned(), source.to_owned());
    PersistentVolumeClaim {
        metadata: m,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOncePod".to_owned()]),
            volume_mode: Some(volume_mode.as_str().to_owned()),
            storage_class_name: Some(storage_class.to_owned()),
            data_source: Some(TypedLocalObjectReference {
                api_group: Some("snapshot.storage.k8s.io".to_owned()),
                kind: "VolumeSnapshot".to_owned(),
                name: snapshot_name.to_owned(),
            }),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The copied, pre-provisioned VolumeSnapshotContent (cluster-scoped).
pub fn snapshot_content_copy(
    owner: &Owner,
    name: &str,
    snapshot_name: &str,
    driver: &str,
    snapshot_handle: &str,
    source_volume_mode: Option<&str>,
    snapshot_class: Option<&str>,
) -> Value {
    let mut spec = json!({
        "deletionPolicy": "Retain",
        "driver": driver,
        "source": { "snapshotHandle": snapshot_handle },
        "volumeSnapshotRef": {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "namespace": names::MODULE_NAMESPACE,
            "name": snapshot_name,
        },
    });
    if let Some(m) = source_volume_mode {
        spec["sourceVolumeMode"] = json!(m);
    }
    if let Some(c) = snapshot_class {
        spec["volumeSnapshotClassName"] = json!(c);
    }
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {
            "name": name,
            "labels": labels(&owner.uid),
            "annotations": owner_annotations(owner),
        },
        "spec": spec,
    })
}

/// The VolumeSnapshot in the module namespace bound to the copied content.
pub fn snapshot_copy(owner: &Owner, name: &str, content_name: &str, class: Option<&str>) -> Value {
    let mut spec = json!({ "source": { "volumeSnapshotContentName": content_name } });
    if let Some(c) = class {
        spec["volumeSnapshotClassName"] = json!(c);
    }
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": names::MODULE_NAMESPACE,
            "labels": labels(&owner.uid),
            "annotations": owner_annotations(owner),
        },
        "spec": spec,
    })
}

/// TLS Secret of the exporter.
pub fn tls_secret(
    owner: &Owner,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    client_ca_pem: &str,
) -> Secret {
    let data = BTreeMap::from([
        (
            names::TLS_SECRET_CERT.to_owned(),
            ByteString(cert_pem.as_bytes().to_vec()),
        ),
        (
            names::TLS_SECRET_KEY.to_owned(),
            ByteString(key_pem.as_bytes().to_vec()),
        ),
        (
            names::TLS_SECRET_CA.to_owned(),
            ByteString(ca_pem.as_bytes().to_vec()),
        ),
        (
            names::TLS_SECRET_CLIENT_CA.to_owned(),
            ByteString(client_ca_pem.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: meta(owner, name),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// The activity Lease; the exporter renews `spec.renewTime`.
pub fn lease(owner: &Owner, name: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: meta(owner, name),
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// The Service in front of the exporter pod.
pub fn service(owner: &Owner, name: &str) -> Service {
    Service {
        metadata: meta(owner, name),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                names::LABEL_DATAEXPORT_UID.to_owned(),
                owner.uid.clone(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some("https".to_owned()),
                port: i32::from(names::EXPORTER_SERVICE_PORT),
                target_port: Some(IntOrString::Int(i32::from(names::EXPORTER_PORT))),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Probes use the exporter's admin port (plain HTTP), which the Service does not publish: health and
/// metrics are not reachable through the export's URLs.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(names::EXPORTER_ADMIN_PORT)),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// Exporter container args (exactly as the exporter expects them).
pub fn exporter_args(owner: &Owner, mode: VolumeMode, lease_name: &str) -> Vec<String> {
    let (mode_arg, source) = match mode {
        VolumeMode::Filesystem => ("filesystem", names::EXPORTER_FS_MOUNT),
        VolumeMode::Block => ("block", names::EXPORTER_BLOCK_DEVICE),
    };
    let tls = names::EXPORTER_TLS_DIR;
    vec![
        format!("--mode={mode_arg}"),
        format!("--source={source}"),
        "--address=$(POD_IP)".to_owned(),
        format!("--port={}", names::EXPORTER_PORT),
        format!("--admin-port={}", names::EXPORTER_ADMIN_PORT),
        format!("--tls-cert={tls}/{}", names::TLS_SECRET_CERT),
        format!("--tls-key={tls}/{}", names::TLS_SECRET_KEY),
        format!("--client-ca={tls}/{}", names::TLS_SECRET_CLIENT_CA),
        format!("--export-namespace={}", owner.namespace),
        format!("--export-name={}", owner.name),
        format!("--lease-namespace={}", names::MODULE_NAMESPACE),
        format!("--lease-name={lease_name}"),
    ]
}

/// The exporter pod serving `pvc_name` read-only.
pub fn exporter_pod(
    owner: &Owner,
    name: &str,
    pvc_name: &str,
    mode: VolumeMode,
    s: &Settings,
) -> Pod {
    let mut mounts = vec![VolumeMount {
        name: "tls".to_owned(),
        mount_path: names::EXPORTER_TLS_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut devices = None;
    let mut add_caps = None;
    match mode {
        VolumeMode::Filesystem => {
            mounts.push(VolumeMount {
                name: "data".to_owned(),
                mount_path: names::EXPORTER_FS_MOUNT.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
            // Read every file whatever its owner and mode, and nothing more.
            add_caps = Some(vec!["DAC_READ_SEARCH".to_owned()]);
        }
        VolumeMode::Block => {
            devices = Some(vec![VolumeDevice {
                name: "data".to_owned(),
                device_path: names::EXPORTER_BLOCK_DEVICE.to_owned(),
            }]);
        }
    }
    let container = Container {
        name: "exporter".to_owned(),
        image: Some(s.exporter_image.clone()),
        args: Some(exporter_args(owner, mode, name)),
        env: Some(vec![
            field_env("POD_IP", "status.podIP"),
            field_env("POD_NAME", "metadata.name"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("https".to_owned()),
                container_port: i32::from(names::EXPORTER_PORT),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("http-admin".to_owned()),
                container_port: i32::from(names::EXPORTER_ADMIN_PORT),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
        ]),
        volume_mounts: Some(mounts),
        volume_devices: devices,
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: s.exporter_resources.clone(),
        security_context: Some(SecurityContext {
            // Root is needed only so the added capability is effective; everything else is dropped.
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: add_caps,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    Pod {
        metadata: meta(owner, name),
        spec: Some(PodSpec {
            service_account_name: Some(names::EXPORTER_SERVICE_ACCOUNT.to_owned()),
            restart_policy: Some("Always".to_owned()),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(10),
            priority_class_name: s.exporter_priority_class.clone(),
            tolerations: (!s.exporter_tolerations.is_empty())
                .then(|| s.exporter_tolerations.clone()),
            node_selector: (!s.exporter_node_selector.is_empty())
                .then(|| s.exporter_node_selector.clone()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(vec![
                Volume {
                    name: "data".to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: pvc_name.to_owned(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "tls".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name.to_owned()),
                        default_mode: Some(0o440),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Why a published export gets no Ingress although a public host is configured (the custom
/// certificate cannot be used), as its `PublishFailed` message; `None` when nothing is in the way.
pub fn publish_unavailable(s: &Settings) -> Option<String> {
    s.publish_host.as_ref()?;
    if let Some(why) = s.publish_unavailable.as_deref() {
        return Some(format!(
            "spec.publish is true, but this cluster cannot publish exports now: {why}. The in-cluster \
             status.url works; the platform team fixes the module's https settings"
        ));
    }
    // Users' bearer tokens travel in every request: never publish without TLS towards them.
    (s.ingress_tls_secret.is_none() && !s.ingress_tls_external).then(|| {
        "spec.publish is true, but no TLS certificate is configured for the public host, and \
         published exports would carry users' bearer tokens over plain HTTP. The in-cluster \
         status.url works; the platform team sets the module's https mode"
            .to_owned()
    })
}

/// The Ingress of a published export, or `None` when publishing is not configured.
pub fn ingress(owner: &Owner, name: &str, s: &Settings) -> Option<Ingress> {
    let host = s.publish_host.clone()?;
    let mut m = meta(owner, name);
    let ann = m.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in [
        ("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS"),
        ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off"),
        ("nginx.ingress.kubernetes.io/proxy-body-size", "0"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
        ("nginx.ingress.kubernetes.io/proxy-send-timeout", "3600"),
        // The hop behind the ingress controller is verified too: the exporter's certificate
        // must chain to the exporter CA and name the export's Service.
        ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
        ("nginx.ingress.kubernetes.io/proxy-ssl-server-name", "on"),
        ("nginx.ingress.kubernetes.io/proxy-ssl-verify-depth", "2"),
    ] {
        ann.insert(k.to_owned(), v.to_owned());
    }
    ann.insert(
        "nginx.ingress.kubernetes.io/proxy-ssl-secret".to_owned(),
        format!(
            "{}/{}",
            names::MODULE_NAMESPACE,
            names::EXPORTER_CA_BUNDLE_SECRET
        ),
    );
    ann.insert(
        "nginx.ingress.kubernetes.io/proxy-ssl-name".to_owned(),
        format!("{name}.{}.svc", names::MODULE_NAMESPACE),
    );
    let tls_secret = s.ingress_tls_secret.clone();
    Some(Ingress {
        metadata: m,
        spec: Some(IngressSpec {
            ingress_class_name: (!s.ingress_class.is_empty()).then(|| s.ingress_class.clone()),
            tls: tls_secret.map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host.clone()]),
                    secret_name: Some(secret),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(format!("/{}/{}/", owner.namespace, owner.name)),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.to_owned(),
                                port: Some(ServiceBackendPort {
                                    name: Some("https".to_owned()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
