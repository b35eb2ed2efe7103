//! The controller's error type. Each variant has a stable PascalCase category used as Event
//! reason and metric label.

/// Why a reconcile pass (or startup) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate error: {0}")]
    Pki(#[from] svdm_pki::PkiError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode or decode an object: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error("invalid object: {0}")]
    InvalidObject(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A guarded write lost a race (a JSON Patch `test` failed): as a 409, retry on a fresh read.
    #[error("{0} changed concurrently; retrying")]
    Stale(String),
}

impl Error {
    /// Stable category for Event reasons and the `reason` label of the error metric.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "Conflict",
            Error::Stale(_) => "Conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ApiUnavailable",
            Error::Pki(_) => "CertificateError",
            Error::Io { .. } => "IoError",
            Error::Serialization(_) => "SerializationError",
            Error::InvalidObject(_) => "InvalidObject",
            Error::Config(_) => "ConfigError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a kube error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is a 409 AlreadyExists/Conflict.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_pascal_case() {
        let errs = [
            Error::InvalidObject("x".into()),
            Error::Config("y".into()),
            Error::Io {
                path: "/p".into(),
                source: std::io::Error::other("z"),
            },
        ];
        for e in errs {
            let c = e.category();
            assert!(c.chars().next().is_some_and(|ch| ch.is_ascii_uppercase()));
            assert!(c.chars().all(|ch| ch.is_ascii_alphanumeric()));
        }
    }
}
