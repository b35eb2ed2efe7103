//! DataExport API types and the names the module's components share.
//!
//! Everything that must agree between the controller, the webhook, the hooks, the exporter pod
//! and the Helm templates lives here, so a rename cannot silently split them.

pub mod conditions;
pub mod names;
pub mod ttl;
pub mod types;

pub use types::{
    DataExport, DataExportSpec, DataExportStatus, Phase, TargetKind, TargetRef, VolumeMode,
};

/// The CRD as committed under `crds/`, with a header saying it is generated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = DataExport::crd();
    // Deckhouse tells its modules' CRDs apart by these labels (dmt requires them).
    crd.metadata.labels = Some(
        [
            ("heritage".to_owned(), "deckhouse".to_owned()),
            ("module".to_owned(), names::MODULE_NAME.to_owned()),
        ]
        .into(),
    );
    let body = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated from crates/api by `make crds`; do not edit by hand.\n---\n{body}"
    ))
}
