//! Hooks of the storage-volume-data-manager module, one binary speaking the addon-operator
//! batch-hook protocol. See [`protocol`] for the wire format and [`hooks`] for the list.

pub mod custom_certificate;
pub mod disable;
pub mod migration;
pub mod names;
pub mod protocol;
pub mod tls;

use protocol::Hook;

/// Every hook of the binary; the index is the id in `hook run <id>` and must stay stable within a
/// release (addon-operator re-reads `hook config` on start).
pub fn hooks() -> Vec<Box<dyn Hook>> {
    vec![
        Box::new(tls::TlsHook::default()),
        Box::new(custom_certificate::CustomCertificateHook),
        Box::new(disable::DisableHook),
        Box::new(migration::MigrationHook),
    ]
}
