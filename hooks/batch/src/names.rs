//! Names the hooks share with the templates and the other binaries: the shared ones come from
//! `svdm-api` (which links no TLS library, so the hooks stay a static binary), the rest are the
//! hooks' own (Secrets and Services the templates render).

pub use svdm_api::names::{MODULE_NAME, MODULE_NAMESPACE};

/// Service of the webhook and the Secret with its serving certificate (templates/webhook/).
pub const WEBHOOK_SERVICE: &str = "webhook";
pub const WEBHOOK_TLS_SECRET: &str = "webhook-tls";
/// Secret with the exporter CA (templates/controller/secret-exporter-ca.yaml).
pub const EXPORTER_CA_SECRET: &str = "exporter-ca";

/// Namespace where Deckhouse keeps custom certificates (global `modules.https.customCertificate`).
pub const CUSTOM_CERTIFICATE_NAMESPACE: &str = "d8-system";

pub use svdm_api::names::{
    ANN_BIND_REQUESTED, ANN_OWNER_NAME, ANN_OWNER_NAMESPACE, ANN_OWNER_UID,
    ANN_PV_ORIGINAL_CLAIM_NAME, ANN_PV_ORIGINAL_CLAIM_NAMESPACE, ANN_PV_ORIGINAL_CLAIM_UID,
    ANN_PV_ORIGINAL_RECLAIM_POLICY, ANN_SOURCE_SNAPSHOT, FINALIZER_DATAEXPORT,
    FINALIZER_PVC_PROTECTION, FINALIZER_SNAPSHOT_PROTECTION, GROUP, LABEL_DATAEXPORT_UID,
    LABEL_MANAGED, LABEL_PV_EXPORTED, LABEL_PV_INCONSISTENT, VERSION,
};
