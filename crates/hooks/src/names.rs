//! Names the hooks share with the templates and the other binaries. Duplicated from `svdm-api`
//! (which links openssl through kube and cannot be in a static binary); a test keeps them equal.

pub const MODULE_NAME: &str = "storage-volume-data-manager";
pub const MODULE_NAMESPACE: &str = "d8-storage-volume-data-manager";

/// Service of the webhook and the Secret with its serving certificate (templates/webhook/).
pub const WEBHOOK_SERVICE: &str = "webhook";
pub const WEBHOOK_TLS_SECRET: &str = "webhook-tls";
/// Secret with the exporter CA (templates/controller/secret-exporter-ca.yaml).
pub const EXPORTER_CA_SECRET: &str = "exporter-ca";

/// Namespace where Deckhouse keeps custom certificates (global `modules.https.customCertificate`).
pub const CUSTOM_CERTIFICATE_NAMESPACE: &str = "d8-system";

pub const GROUP: &str = "storage.deckhouse.io";
pub const VERSION: &str = "v1alpha1";

pub const LABEL_MANAGED: &str = "svdm.storage.deckhouse.io/managed";
pub const LABEL_DATAEXPORT_UID: &str = "svdm.storage.deckhouse.io/dataexport-uid";
pub const LABEL_PV_EXPORTED: &str = "svdm.storage.deckhouse.io/exported";
pub const LABEL_PV_INCONSISTENT: &str = "svdm.storage.deckhouse.io/inconsistent";

pub const ANN_OWNER_NAMESPACE: &str = "svdm.storage.deckhouse.io/dataexport-namespace";
pub const ANN_OWNER_NAME: &str = "svdm.storage.deckhouse.io/dataexport-name";
pub const ANN_OWNER_UID: &str = "svdm.storage.deckhouse.io/dataexport-uid";
pub const ANN_PV_ORIGINAL_RECLAIM_POLICY: &str =
    "svdm.storage.deckhouse.io/original-reclaim-policy";
pub const ANN_PV_ORIGINAL_CLAIM_NAMESPACE: &str =
    "svdm.storage.deckhouse.io/original-claim-namespace";
pub const ANN_PV_ORIGINAL_CLAIM_NAME: &str = "svdm.storage.deckhouse.io/original-claim-name";
pub const ANN_PV_ORIGINAL_CLAIM_UID: &str = "svdm.storage.deckhouse.io/original-claim-uid";

pub const FINALIZER_DATAEXPORT: &str = "svdm.storage.deckhouse.io/cleanup";
pub const FINALIZER_PVC_PROTECTION: &str = "svdm.storage.deckhouse.io/export-protection";
