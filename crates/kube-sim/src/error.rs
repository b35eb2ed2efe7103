//! One error type for the whole simulator.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },

    #[error("{0}")]
    Json(#[from] serde_json::Error),

    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),

    /// An object lacks something the simulator needs; retried later.
    #[error("{0}")]
    NotReady(String),

    /// An object asks for something the simulator cannot do; reported, not retried quickly.
    #[error("{0}")]
    Unsupported(String),

    /// A part of the simulator stopped working.
    #[error("simulator failure: {0}")]
    Crashed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |source| Error::Io { context, source }
}

/// True when the API server answered 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// True when the API server answered 409 (already exists or conflict).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
