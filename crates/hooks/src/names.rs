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
