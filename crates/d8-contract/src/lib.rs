//! A client that does what the real `d8 data export` does against this module, and no more
//! (docs/development/D8-CLIENT.md): the publish auto-detect, the DataExport as each client
//! generation writes it, the 3-second wait loop with no pause after Ready, delete-and-recreate on
//! the expiry signal, listings streamed while children download, both URL prefixes. The demo and
//! the end-to-end tests drive the module through it, so a status that is not true when shown fails
//! them the way it fails users.
//!
//! Where d8 would log an error and exit 0, this returns the error, naming the step.

pub mod export;
pub mod kubecfg;
pub mod listing;
pub mod publish;
pub mod transfer;

/// A failed step of the client's flow: what it was doing and what went wrong.
#[derive(Clone, Debug, thiserror::Error)]
#[error("step {step:?}: {message}")]
pub struct Error {
    pub step: String,
    pub message: String,
}

impl Error {
    pub fn step(step: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            step: step.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
