//! TLS for the webhook: openssl, TLS 1.2+, and a serving certificate that follows its files.
//!
//! Kubelet updates a mounted Secret by swapping a `..data` symlink, so watching the files' inodes
//! is unreliable. Instead a task re-reads both files every few seconds and, when their bytes
//! changed and form a valid pair, builds a new `SslContext`. Each handshake picks the current
//! context in the ClientHello callback, which fires with or without SNI (the API server sends no
//! SNI when it dials an IP address), so a new certificate is served without a restart and
//! without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{
    AlpnError, ClientHelloResponse, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod,
    SslVersion,
};
use openssl::x509::X509;

/// Why the serving certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a valid PEM {kind}: {source}")]
    Pem {
        what: PathBuf,
        kind: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS setup failed (does the key match the certificate?): {0}")]
    Ssl(#[from] openssl::error::ErrorStack),
}

/// A certificate/key pair as last read from disk, with the context built from it.
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    context: SslContext,
}

/// The current serving context, shared between the handshake callback and the reload task.
#[derive(Clone)]
pub struct ServingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<RwLock<Loaded>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Applies the protocol policy (TLS 1.2 minimum, Mozilla intermediate ciphers) and the
/// certificate chain and key.
fn configure(
    builder: &mut SslAcceptorBuilder,
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let mut chain = X509::stack_from_pem(cert_pem).map_err(|source| TlsError::Pem {
        what: cert_path.to_owned(),
        kind: "certificate",
        source,
    })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    }
    let leaf = chain.remove(0);
    let key = PKey::private_key_from_pem(key_pem).map_err(|source| TlsError::Pem {
        what: key_path.to_owned(),
        kind: "private key",
        source,
    })?;
    builder.set_certificate(&leaf)?;
    for extra in chain {
        builder.add_extra_chain_cert(extra)?;
    }
    builder.set_private_key(&key)?;
    builder.check_private_key()?;
    Ok(())
}

fn new_builder() -> Result<SslAcceptorBuilder, TlsError> {
    Ok(SslAcceptor::mozilla_intermediate_v5(
        SslMethod::tls_server(),
    )?)
}

fn build_context(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<SslContext, TlsError> {
    let mut b = new_builder()?;
    configure(&mut b, cert_pem, key_pem, cert_path, key_path)?;
    // Contexts swapped in by the ClientHello callback negotiate ALPN themselves.
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x08http/1.1", client).ok_or(AlpnError::NOACK)
    });
    Ok(b.build().into_context())
}

impl ServingCert {
    /// Loads the pair once; fails if it is unusable, so a broken Secret stops startup loudly.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let context = build_context(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(ServingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: Arc::new(RwLock::new(Loaded {
                cert_pem,
                key_pem,
                context,
            })),
        })
    }

    /// An acceptor builder for `HttpServer::bind_openssl`/`listen_openssl` that serves whatever
    /// certificate is current at each handshake.
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, TlsError> {
        let mut builder = new_builder()?;
        {
            let loaded = self.current.read().unwrap_or_else(|p| p.into_inner());
            configure(
                &mut builder,
                &loaded.cert_pem,
                &loaded.key_pem,
                &self.cert_path,
                &self.key_path,
            )?;
        }
        let current = self.current.clone();
        builder.set_client_hello_callback(move |ssl, _alert| {
            let loaded = current.read().unwrap_or_else(|p| p.into_inner());
            ssl.set_ssl_context(&loaded.context)?;
            Ok(ClientHelloResponse::SUCCESS)
        });
        Ok(builder)
    }

    /// Re-reads the files; swaps the context when they changed and are a valid pair.
    /// Returns whether a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = read(&self.key_path)?;
        {
            let loaded = self.current.read().unwrap_or_else(|p| p.into_inner());
            if loaded.cert_pem == cert_pem && loaded.key_pem == key_pem {
                return Ok(false);
            }
        }
        let context = build_context(&cert_pem, &key_pem, &self.cert_path, &self.key_path)?;
        let mut loaded = self.current.write().unwrap_or_else(|p| p.into_inner());
        *loaded = Loaded {
            cert_pem,
            key_pem,
            context,
        };
        Ok(true)
    }

    /// Polls the files forever (spawn it). A half-written update (new certificate, old key) is
    /// reported once and retried at the next tick.
    pub async fn watch(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    log::info!(
                        "serving certificate reloaded from {}",
                        self.cert_path.display()
                    );
                    last_error = None;
                }
                Ok(false) => last_error = None,
                Err(e) => {
                    let msg = e.to_string();
                    if last_error.as_deref() != Some(msg.as_str()) {
                        log::warn!(
                            "serving certificate not reloaded (keeping the current one): {msg}"
                        );
                        last_error = Some(msg);
                    }
                }
            }
        }
    }
}
