//! The `DataExport` custom resource (`storage.deckhouse.io/v1alpha1`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Exports the contents of a PersistentVolumeClaim or VolumeSnapshot over HTTPS while it is used.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "storage.deckhouse.io",
    version = "v1alpha1",
    kind = "DataExport",
    plural = "dataexports",
    shortname = "de",
    doc = "DataExport serves the contents of a PersistentVolumeClaim or VolumeSnapshot in its namespace over HTTPS while it is used (files and directory listings, or the raw block device), to users allowed to get dataexports/download.",
    namespaced,
    status = "DataExportStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.volumeMode"}"#,
    printcolumn = r#"{"name":"TTL","type":"string","jsonPath":".spec.ttl"}"#,
    printcolumn = r#"{"name":"Used","type":"date","jsonPath":".status.accessTimestamp","description":"Time since the last access"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expirationTimestamp","priority":1}"#,
    printcolumn = r#"{"name":"Public","type":"boolean","jsonPath":".spec.publish","priority":1}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DataExportSpec {
    /// Idle timeout: the export ends when nobody has used it for this long (a Go duration such
    /// as `30s`, `5m` or `1h30m`). A running download counts as use. When omitted, the module's
    /// default applies. May be changed on a live export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub ttl: Option<String>,

    /// Also publish the export outside the cluster through the module's Ingress
    /// (`status.publicURL`). May be switched on for a live export.
    #[serde(default)]
    pub publish: bool,

    /// What to export: a PersistentVolumeClaim or a VolumeSnapshot in the same namespace.
    /// Immutable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("targetRef is immutable; delete this DataExport and create a new one"))]
    pub target_ref: TargetRef,
}

/// Reference to the exported object in the DataExport's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = kube::core::Rule::new("(self.kind == 'PersistentVolumeClaim' && (!has(self.group) || self.group == '')) || (self.kind == 'VolumeSnapshot' && (!has(self.group) || self.group == 'snapshot.storage.k8s.io'))").message("targetRef.group does not match targetRef.kind: PersistentVolumeClaim has group \"\", VolumeSnapshot has group snapshot.storage.k8s.io"))]
pub struct TargetRef {
    /// `PersistentVolumeClaim` or `VolumeSnapshot`.
    pub kind: TargetKind,
    /// Name of the PersistentVolumeClaim or VolumeSnapshot.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// API group: empty for PersistentVolumeClaim, `snapshot.storage.k8s.io` for VolumeSnapshot.
    /// Optional; older `d8` releases omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Kinds that can be exported.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    PersistentVolumeClaim,
    VolumeSnapshot,
}

impl TargetKind {
    /// The API group the kind belongs to.
    pub fn group(self) -> &'static str {
        match self {
            TargetKind::PersistentVolumeClaim => "",
            TargetKind::VolumeSnapshot => "snapshot.storage.k8s.io",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            TargetKind::VolumeSnapshot => "VolumeSnapshot",
        }
    }
}

/// Observed state of a DataExport.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataExportStatus {
    /// Lifecycle phase: Pending, Ready, Expired, Failed or Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// In-cluster base URL of the exporter (`https://<service>.<namespace>.svc/`). Set no later
    /// than `Ready=True`, also when published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Base64 of the PEM CA certificate that signs the exporter's certificate at `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Base URL outside the cluster, when `spec.publish` is true and publishing works.
    #[serde(default, rename = "publicURL", skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// `Filesystem` or `Block`: which endpoint serves the data (`/api/v1/files/` or `/api/v1/block`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<VolumeMode>,
    /// Last time the export was used (an authorised request or bytes of a running transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_timestamp: Option<Time>,
    /// When the export expires if nobody uses it before then (last use + ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<Time>,
    /// The ttl in effect (spec.ttl or the module default), as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_ttl: Option<String>,
    /// Conditions: `Ready` (and, for `d8` releases up to v0.33.6, `Expired=True` on expiry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle phase of a DataExport.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Pending,
    Ready,
    // Idle longer than its ttl, the volume on its way back; `Expired` once it is back and the
    // object can be deleted at once. (Plain comments: doc comments on variants would turn the
    // schema's `enum` into a `oneOf`.)
    Expiring,
    Expired,
    Failed,
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Ready => "Ready",
            Phase::Expiring => "Expiring",
            Phase::Expired => "Expired",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        }
    }
}

/// Volume mode of the exported data.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolumeMode {
    Filesystem,
    Block,
}

impl VolumeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::Filesystem => "Filesystem",
            VolumeMode::Block => "Block",
        }
    }

    /// Reads a PVC/PV `volumeMode`, where absence means Filesystem.
    pub fn from_k8s(mode: Option<&str>) -> Option<Self> {
        match mode {
            None | Some("Filesystem") => Some(VolumeMode::Filesystem),
            Some("Block") => Some(VolumeMode::Block),
            Some(_) => None,
        }
    }
}
