//! Validating admission webhook for DataExports.
//!
//! - [`validate`]: the rules, pure functions over a [`validate::ClusterView`];
//! - [`facts`]: gathers that view from watch caches and bounded live GETs;
//! - [`server`]: the actix-web handlers (AdmissionReview in and out, health endpoints);
//! - [`tls`]: openssl serving with certificate reload;
//! - [`config`]: the command line.

#![forbid(unsafe_code)]

pub mod config;
pub mod facts;
pub mod server;
pub mod tls;
pub mod validate;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

/// How long a live GET of a target may take before the webhook denies with a retry message.
/// Well under the API server's webhook timeout, so users see our message, not a timeout.
pub const GET_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the serving certificate files are re-read.
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot create the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTPS server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the webhook until the process is told to stop.
pub async fn run(args: config::Args) -> Result<(), Error> {
    let cert = tls::ServingCert::load(&args.tls_cert, &args.tls_key)?;
    let client = kube::Client::try_default().await?;
    let (facts, drive) = facts::KubeFacts::start(client, GET_TIMEOUT);
    tokio::spawn(drive);
    tokio::spawn(cert.clone().watch(CERT_RELOAD_INTERVAL));

    let addr = SocketAddr::new(args.address, args.port);
    let listener = TcpListener::bind(addr).map_err(|source| Error::Listen { addr, source })?;
    let state = web::Data::new(server::AppState {
        settings: args.settings(),
        facts: Arc::new(facts),
    });
    log::info!(
        "serving DataExport admission on https://{addr} (default ttl {}, max ttl {}, publishing {})",
        svdm_api::ttl::format(args.default_ttl),
        svdm_api::ttl::format(args.max_ttl),
        if args.publish_host.trim().is_empty() {
            "not configured".to_owned()
        } else {
            format!("on {}", args.publish_host)
        },
    );
    server::serve(listener, &cert, state, 2)?
        .await
        .map_err(Error::Serve)
}
