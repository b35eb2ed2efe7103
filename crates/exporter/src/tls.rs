//! TLS from PEM files that Kubernetes may replace at any time (Secret volumes swap a `..data` symlink).
//!
//! The acceptor given to the server never changes; its ClientHello callback switches each new connection
//! to the newest `SslContext`, so a reload affects new handshakes only and running transfers keep their
//! session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use openssl::nid::Nid;
use openssl::ssl::{
    ClientHelloResponse, SslAcceptor, SslAcceptorBuilder, SslContext, SslFiletype, SslMethod,
    SslRef, SslVerifyMode, SslVersion,
};
use openssl::x509::X509Name;
use openssl::x509::X509VerifyResult;

use crate::auth::{PeerCert, Principal};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {source}")]
    Ssl {
        what: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
}

fn ssl<T>(what: &'static str, r: Result<T, openssl::error::ErrorStack>) -> Result<T, TlsError> {
    r.map_err(|source| TlsError::Ssl { what, source })
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Builds the whole server configuration from the files; used for the first context and every reload so
/// they cannot drift apart (verification settings must match on the swapped-in context).
fn builder(files: &TlsFiles) -> Result<SslAcceptorBuilder, TlsError> {
    let mut b = ssl(
        "TLS setup",
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()),
    )?;
    ssl(
        "TLS setup",
        b.set_min_proto_version(Some(SslVersion::TLS1_2)),
    )?;
    ssl("certificate", b.set_certificate_chain_file(&files.cert))?;
    ssl(
        "private key",
        b.set_private_key_file(&files.key, SslFiletype::PEM),
    )?;
    ssl(
        "private key does not match certificate",
        b.check_private_key(),
    )?;
    ssl("TLS setup", b.set_session_id_context(b"svdm-exporter"))?;
    // Read whatever the socket holds in one call instead of a record header and then its body: a
    // small request costs one receive system call instead of two.
    b.set_read_ahead(true);
    if let Some(ca) = files.client_ca.as_ref().filter(|ca| usable_client_ca(ca)) {
        ssl("client CA", b.set_ca_file(ca))?;
        let names = ssl("client CA", X509Name::load_client_ca_file(ca))?;
        b.set_client_ca_list(names);
        // Request but do not require a certificate, and let the handshake finish even when it does not
        // verify: the request then gets a 401 with an explanation instead of an opaque TLS alert.
        b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    }
    Ok(b)
}

/// A missing or empty client CA must not take the export down: bearer tokens still work, so client
/// certificates are then simply not requested.
fn usable_client_ca(path: &Path) -> bool {
    match std::fs::read(path) {
        Ok(pem)
            if openssl::x509::X509::stack_from_pem(&pem).is_ok_and(|certs| !certs.is_empty()) =>
        {
            true
        }
        Ok(_) => {
            log::warn!(
                "client CA {} holds no certificate; client certificates are not accepted",
                path.display()
            );
            false
        }
        Err(e) => {
            log::warn!(
                "cannot read client CA {}: {e}; client certificates are not accepted",
                path.display()
            );
            false
        }
    }
}

pub fn build_context(files: &TlsFiles) -> Result<SslContext, TlsError> {
    Ok(builder(files)?.build().into_context())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<SystemTime>, u64, u64)>);

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    let mut parts = Vec::new();
    for p in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        // canonicalize follows the ..data symlink, so a Secret update changes the resolved path even
        // when mtimes collide.
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let meta = std::fs::metadata(&real).ok();
        let mtime = meta.as_ref().and_then(|m| m.modified().ok());
        let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let ino = meta
            .as_ref()
            .map(std::os::unix::fs::MetadataExt::ino)
            .unwrap_or(0);
        parts.push((real, mtime, len, ino));
    }
    Fingerprint(parts)
}

pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<SslContext>,
    seen: Mutex<Fingerprint>,
}

impl TlsReloader {
    pub fn new(files: TlsFiles) -> Result<Arc<TlsReloader>, TlsError> {
        let seen = fingerprint(&files);
        let ctx = build_context(&files)?;
        Ok(Arc::new(TlsReloader {
            files,
            current: RwLock::new(ctx),
            seen: Mutex::new(seen),
        }))
    }

    fn current(&self) -> SslContext {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads if the files changed; a broken update keeps the old certificate in service.
    pub fn check(&self) {
        let now = fingerprint(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return;
        }
        *seen = now;
        match build_context(&self.files) {
            Ok(ctx) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = ctx;
                log::info!("TLS certificate reloaded");
            }
            Err(e) => log::warn!(
                "TLS files changed but cannot be loaded, keeping the previous certificate: {e}"
            ),
        }
    }

    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            self.check();
        }
    }

    /// The acceptor for the listener; HTTP/1.1 only (no ALPN), since h2 is markedly slower for the bulk
    /// single-stream transfers this server exists for.
    pub fn acceptor(self: &Arc<Self>) -> Result<SslAcceptor, TlsError> {
        let mut b = builder(&self.files)?;
        let me = self.clone();
        b.set_client_hello_callback(move |ssl: &mut SslRef, _alert| {
            let ctx = me.current();
            ssl.set_ssl_context(&ctx)?;
            Ok(ClientHelloResponse::SUCCESS)
        });
        Ok(b.build())
    }
}

/// Reads the verified client identity after the handshake, as the API server takes it from a client
/// certificate: CN is the user, every O a group. The API server uses the last CN when there are
/// several; such a certificate names two users at once, so it is refused here rather than guessed.
pub fn peer_cert(ssl: &SslRef) -> Option<PeerCert> {
    let cert = ssl.peer_certificate()?;
    let result = ssl.verify_result();
    if result != X509VerifyResult::OK {
        return Some(PeerCert::Rejected(result.error_string().to_string()));
    }
    let subject = cert.subject_name();
    let text = |nid| -> Vec<String> {
        subject
            .entries_by_nid(nid)
            .filter_map(|e| e.data().to_string().ok())
            .collect()
    };
    // Counted before decoding, so an undecodable CN cannot hide next to a readable one.
    let common_names = subject.entries_by_nid(Nid::COMMONNAME).count();
    if common_names > 1 {
        return Some(PeerCert::Rejected(format!(
            "the certificate names {common_names} common names; exactly one (the user name) is required"
        )));
    }
    match text(Nid::COMMONNAME).into_iter().next() {
        Some(cn) if !cn.is_empty() => Some(PeerCert::Verified(Arc::new(
            Principal::from_certificate(cn, text(Nid::ORGANIZATIONNAME)),
        ))),
        _ => Some(PeerCert::Rejected("certificate has no common name".into())),
    }
}

pub fn files_exist(files: &TlsFiles) -> bool {
    Path::new(&files.cert).exists() && Path::new(&files.key).exists()
}
