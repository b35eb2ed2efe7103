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
use openssl::stack::Stack;
use openssl::x509::X509VerifyResult;
use openssl::x509::{X509Name, X509NameRef};

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
/// they cannot drift apart. Returns the client CA names too when client certificates are to be asked
/// for: a handshake switched to a reloaded context takes its verification settings from there (see
/// [`TlsReloader::acceptor`]).
fn builder(files: &TlsFiles) -> Result<(SslAcceptorBuilder, Option<Vec<X509Name>>), TlsError> {
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
    let mut client_cas = None;
    if let Some(ca) = files.client_ca.as_ref().filter(|ca| usable_client_ca(ca)) {
        ssl("client CA", b.set_ca_file(ca))?;
        let names = ssl("client CA", X509Name::load_client_ca_file(ca))?;
        let owned = names
            .iter()
            .map(|n| n.to_owned())
            .collect::<Result<Vec<_>, _>>();
        client_cas = Some(ssl("client CA", owned)?);
        b.set_client_ca_list(names);
        b.set_verify_callback(SslVerifyMode::PEER, accept_for_later);
    }
    Ok((b, client_cas))
}

/// Request but do not require a certificate, and let the handshake finish even when it does not
/// verify: the request then gets a 401 with an explanation instead of an opaque TLS alert.
fn accept_for_later(_preverified: bool, _ctx: &mut openssl::x509::X509StoreContextRef) -> bool {
    true
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

/// A server context and, when client certificates are asked for, the CA names sent with the request.
#[derive(Clone)]
struct Current {
    ctx: SslContext,
    client_cas: Option<Arc<Vec<X509Name>>>,
}

fn build_current(files: &TlsFiles) -> Result<Current, TlsError> {
    let (b, cas) = builder(files)?;
    Ok(Current {
        ctx: b.build().into_context(),
        client_cas: cas.map(Arc::new),
    })
}

pub fn build_context(files: &TlsFiles) -> Result<SslContext, TlsError> {
    Ok(build_current(files)?.ctx)
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
    current: RwLock<Current>,
    seen: Mutex<Fingerprint>,
}

impl TlsReloader {
    pub fn new(files: TlsFiles) -> Result<Arc<TlsReloader>, TlsError> {
        let seen = fingerprint(&files);
        let current = build_current(&files)?;
        Ok(Arc::new(TlsReloader {
            files,
            current: RwLock::new(current),
            seen: Mutex::new(seen),
        }))
    }

    fn current(&self) -> Current {
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
        match build_current(&self.files) {
            Ok(current) => {
                let asks = current.client_cas.is_some();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = current;
                log::info!(
                    "TLS certificate reloaded (client certificates {})",
                    if asks { "requested" } else { "not requested" }
                );
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
    ///
    /// Each handshake switches to the newest context. OpenSSL takes the certificate and the trust
    /// store from the switched-to context but keeps the verify mode and the client CA list the
    /// connection was created with, so those are set here too: otherwise a client CA that appears or
    /// changes after start would never be asked for (or would be announced under its old name).
    pub fn acceptor(self: &Arc<Self>) -> Result<SslAcceptor, TlsError> {
        let (mut b, _) = builder(&self.files)?;
        let me = self.clone();
        b.set_client_hello_callback(move |ssl: &mut SslRef, _alert| {
            let current = me.current();
            ssl.set_ssl_context(&current.ctx)?;
            match &current.client_cas {
                Some(names) => {
                    let mut list = Stack::new()?;
                    for n in names.iter() {
                        let name: &X509NameRef = n;
                        list.push(name.to_owned()?)?;
                    }
                    ssl.set_client_ca_list(list);
                    ssl.set_verify_callback(SslVerifyMode::PEER, accept_for_later);
                }
                None => ssl.set_verify(SslVerifyMode::NONE),
            }
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
