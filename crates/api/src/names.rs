//! Names shared by every component: API coordinates, the module namespace, and the labels,
//! annotations and finalizers through which the module's state is readable from the cluster.
//!
//! Cross-namespace ownerReferences are impossible, so objects created in the module namespace on
//! behalf of a DataExport carry the owner annotations below plus [`LABEL_DATAEXPORT_UID`], and
//! the controller maps watch events back through them.

/// API group of the DataExport kind (the group `d8` releases up to v0.33.6 speak).
pub const GROUP: &str = "storage.deckhouse.io";
/// API version of the DataExport kind.
pub const VERSION: &str = "v1alpha1";
/// Kind name.
pub const KIND: &str = "DataExport";
/// Plural resource name.
pub const PLURAL: &str = "dataexports";
/// Subresource a user must be allowed to `get` to download data.
pub const DOWNLOAD_SUBRESOURCE: &str = "download";

/// The Deckhouse module name.
pub const MODULE_NAME: &str = "storage-volume-data-manager";
/// Namespace holding everything the module creates; never the user's namespace.
pub const MODULE_NAMESPACE: &str = "d8-storage-volume-data-manager";

/// Prefix of every label, annotation and finalizer this module owns. It differs from the Go
/// implementation's `storage.deckhouse.io/` keys, so the migration hook can tell them apart.
pub const PREFIX: &str = "svdm.storage.deckhouse.io";

/// Common label on every object the module creates or takes over (`"true"`).
pub const LABEL_MANAGED: &str = "svdm.storage.deckhouse.io/managed";
/// Label with the owning DataExport's UID; label values cannot hold a 253-character name.
pub const LABEL_DATAEXPORT_UID: &str = "svdm.storage.deckhouse.io/dataexport-uid";
/// Tracking label on a PV that is exported right now (`"true"`); removed last on return.
pub const LABEL_PV_EXPORTED: &str = "svdm.storage.deckhouse.io/exported";
/// Label on a PV whose recorded state is inconsistent and needs a human (`"true"`).
pub const LABEL_PV_INCONSISTENT: &str = "svdm.storage.deckhouse.io/inconsistent";

/// Owner annotations (namespace, name, uid of the DataExport).
pub const ANN_OWNER_NAMESPACE: &str = "svdm.storage.deckhouse.io/dataexport-namespace";
pub const ANN_OWNER_NAME: &str = "svdm.storage.deckhouse.io/dataexport-name";
pub const ANN_OWNER_UID: &str = "svdm.storage.deckhouse.io/dataexport-uid";
/// Written on the claim a PV has just been pointed at (the export PVC, or the user PVC on the
/// return): kube-controller-manager's PV binder completes a pre-bound claim only when it syncs
/// that claim, on a change of the claim or at its periodic resync (15 s by default), so without
/// this write every handover and return would wait for the resync. Removed with the owner
/// annotations.
pub const ANN_BIND_REQUESTED: &str = "svdm.storage.deckhouse.io/bind-requested";

/// On an exported PV: what to restore when the export ends.
pub const ANN_PV_ORIGINAL_RECLAIM_POLICY: &str =
    "svdm.storage.deckhouse.io/original-reclaim-policy";
pub const ANN_PV_ORIGINAL_CLAIM_NAMESPACE: &str =
    "svdm.storage.deckhouse.io/original-claim-namespace";
pub const ANN_PV_ORIGINAL_CLAIM_NAME: &str = "svdm.storage.deckhouse.io/original-claim-name";
pub const ANN_PV_ORIGINAL_CLAIM_UID: &str = "svdm.storage.deckhouse.io/original-claim-uid";

/// On a PVC the controller restored from a user's VolumeSnapshot: the source `<namespace>/<name>`.
pub const ANN_SOURCE_SNAPSHOT: &str = "svdm.storage.deckhouse.io/source-snapshot";

/// Finalizer on a DataExport while it holds anything that must be returned.
pub const FINALIZER_DATAEXPORT: &str = "svdm.storage.deckhouse.io/cleanup";
/// Finalizer on the user's PVC while its PV is handed over, so it cannot be deleted meanwhile.
pub const FINALIZER_PVC_PROTECTION: &str = "svdm.storage.deckhouse.io/export-protection";
/// Finalizer on the user's VolumeSnapshot while it is being restored into the module namespace.
pub const FINALIZER_SNAPSHOT_PROTECTION: &str = "svdm.storage.deckhouse.io/restore-protection";

/// Legacy names left by the Go implementation, recognised by the migration hook.
pub mod legacy {
    pub const FINALIZER_CONTROLLER: &str = "storage.deckhouse.io/storage-manager-controller";
    pub const ANNOTATION_PREFIX: &str = "storage.deckhouse.io/";
    pub const CONDITION_EXPIRED: &str = "Expired";
}

/// Container port of the exporter and the Service port in front of it.
pub const EXPORTER_PORT: u16 = 8443;
pub const EXPORTER_SERVICE_PORT: u16 = 443;
/// The exporter's plain-HTTP port for probes and metrics (`/healthz`, `/readyz`, `/metrics`). Neither
/// the Service nor the Ingress publishes it.
pub const EXPORTER_ADMIN_PORT: u16 = 8080;
/// Paths inside the exporter pod.
pub const EXPORTER_FS_MOUNT: &str = "/data";
pub const EXPORTER_BLOCK_DEVICE: &str = "/dev/svdm-data";
pub const EXPORTER_TLS_DIR: &str = "/etc/svdm/tls";
/// Keys of the exporter's TLS Secret (`tls.crt`/`tls.key` as for `kubernetes.io/tls`, plus the
/// exporter CA and the cluster's client CA for mTLS users).
pub const TLS_SECRET_CERT: &str = "tls.crt";
pub const TLS_SECRET_KEY: &str = "tls.key";
pub const TLS_SECRET_CA: &str = "ca.crt";
pub const TLS_SECRET_CLIENT_CA: &str = "client-ca.crt";

/// ServiceAccount the exporter pods run as (created by the module's templates).
pub const EXPORTER_SERVICE_ACCOUNT: &str = "exporter";
/// Secret with the exporter CA certificate alone (templates/ingress-tls.yaml), which the ingress
/// controller verifies exporters with.
pub const EXPORTER_CA_BUNDLE_SECRET: &str = "exporter-ca-bundle";

/// Short deterministic name of every per-export object in the module namespace (exporter Pod,
/// Service, Secret, Lease, Ingress, export or restored PVC, copied VolumeSnapshot): never longer
/// than 16 characters and distinct for distinct UIDs (48 bits of a hash). The controller creates
/// objects by it and the hooks find them by it, so it lives here once.
pub fn object_name(uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(uid.as_bytes());
    format!("exp-{}", &hex::encode(digest)[..12])
}

/// Name of the copied (cluster-scoped) VolumeSnapshotContent of a snapshot export.
pub fn snapshot_content_name(uid: &str) -> String {
    format!("svdm-{}", object_name(uid))
}

/// Name of the cert-manager certificate Secret of a published export's Ingress (cert-manager
/// creates it without the module's labels, so it is found by name).
pub fn ingress_tls_secret_name(uid: &str) -> String {
    format!("{}-public-tls", object_name(uid))
}

#[cfg(test)]
mod object_name_tests {
    use super::*;

    #[test]
    fn object_names_are_short_stable_and_distinct() {
        let a = object_name("0f6b8f52-7e3f-4f0e-9a51-3c1d2b7a9e10");
        assert_eq!(a.len(), 16);
        assert!(a.starts_with("exp-"));
        assert_eq!(a, object_name("0f6b8f52-7e3f-4f0e-9a51-3c1d2b7a9e10"));
        assert_ne!(a, object_name("0f6b8f52-7e3f-4f0e-9a51-3c1d2b7a9e11"));
        assert_eq!(
            snapshot_content_name("u"),
            format!("svdm-{}", object_name("u"))
        );
        assert_eq!(
            ingress_tls_secret_name("u"),
            format!("{}-public-tls", object_name("u"))
        );
    }
}
