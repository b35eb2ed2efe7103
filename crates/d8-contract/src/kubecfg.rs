//! What d8 takes from the kubeconfig (docs/development/D8-CLIENT.md §1, §6): `$KUBECONFIG` or
//! `~/.kube/config` and its current context only (d8 has no `--kubeconfig`/`--context` flags); for
//! the data plane the credentials client-go would send — a bearer token (inline or `tokenFile`), a
//! client certificate in the TLS handshake, or Basic — and the trust of the kubeconfig's *inline*
//! CA (`certificate-authority-data`; a CA given as a file path is dropped, as d8 drops it).

use std::path::PathBuf;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::ExposeSecret;

use crate::{Error, Result};

/// How the data plane authenticates.
#[derive(Clone)]
pub enum Credentials {
    Bearer(String),
    /// PEM certificate chain and PKCS#8 key, presented in the TLS handshake.
    ClientCert {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
    Basic {
        user: String,
        password: String,
    },
    /// An exec or auth-provider plugin, or nothing: d8's list and download fail with "No auth".
    None,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Credentials::Bearer(_) => "Bearer(…)",
            Credentials::ClientCert { .. } => "ClientCert(…)",
            Credentials::Basic { .. } => "Basic(…)",
            Credentials::None => "None",
        })
    }
}

/// The user's kubeconfig, read as d8 reads it.
#[derive(Clone)]
pub struct Access {
    pub client: kube::Client,
    /// The current context's namespace.
    pub context_namespace: Option<String>,
    pub credentials: Credentials,
    /// The kubeconfig's inline CA (PEM), trusted on data connections too.
    pub ca_data: Option<Vec<u8>>,
    pub insecure: bool,
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::step("read the kubeconfig", format!("{what} {path}: {e}")))
}

fn b64(data: &str, what: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| Error::step("read the kubeconfig", format!("{what} is not base64: {e}")))
}

impl Access {
    /// `$KUBECONFIG` (its first file) or `~/.kube/config`.
    pub async fn from_env() -> Result<Self> {
        let path = std::env::var_os("KUBECONFIG")
            .map(|v| {
                std::env::split_paths(&v)
                    .next()
                    .unwrap_or_else(|| PathBuf::from(v))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
            .ok_or_else(|| Error::step("read the kubeconfig", "no KUBECONFIG and no HOME"))?;
        Self::from_path(&path).await
    }

    pub async fn from_path(path: &std::path::Path) -> Result<Self> {
        let step = "read the kubeconfig";
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| Error::step(step, format!("{}: {e}", path.display())))?;
        let ctx_name = kc.current_context.clone().unwrap_or_default();
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.clone())
            .ok_or_else(|| Error::step(step, format!("no current context {ctx_name:?}")))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| Error::step(step, format!("no cluster {:?}", ctx.cluster)))?;
        let user = ctx
            .user
            .as_ref()
            .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u))
            .and_then(|a| a.auth_info.clone())
            .unwrap_or_default();

        let credentials = if user.exec.is_some() || user.auth_provider.is_some() {
            // client-go would run the plugin for API calls, but d8's data-plane client never
            // gets its token (docs/development/D8-CLIENT.md §6): no Authorization header at
            // all.
            Credentials::None
        } else if let Some(t) = &user.token {
            Credentials::Bearer(t.expose_secret().trim().to_owned())
        } else if let Some(f) = &user.token_file {
            Credentials::Bearer(
                String::from_utf8_lossy(&read_file(f, "tokenFile")?)
                    .trim()
                    .to_owned(),
            )
        } else if let (Some(u), Some(p)) = (&user.username, &user.password) {
            Credentials::Basic {
                user: u.clone(),
                password: p.expose_secret().to_owned(),
            }
        } else {
            let cert = match (&user.client_certificate_data, &user.client_certificate) {
                (Some(d), _) => Some(b64(d, "client-certificate-data")?),
                (None, Some(p)) => Some(read_file(p, "client-certificate")?),
                _ => None,
            };
            let key = match (&user.client_key_data, &user.client_key) {
                (Some(d), _) => Some(b64(d.expose_secret(), "client-key-data")?),
                (None, Some(p)) => Some(read_file(p, "client-key")?),
                _ => None,
            };
            match (cert, key) {
                (Some(cert), Some(key)) => Credentials::ClientCert { cert, key },
                _ => Credentials::None,
            }
        };
        let ca_data = cluster
            .certificate_authority_data
            .as_deref()
            .map(|d| b64(d, "certificate-authority-data"))
            .transpose()?;
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);

        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::step(step, e.to_string()))?;
        let client =
            kube::Client::try_from(config).map_err(|e| Error::step(step, e.to_string()))?;
        Ok(Access {
            client,
            context_namespace: ctx.namespace,
            credentials,
            ca_data,
            insecure,
        })
    }

    fn tls(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let mut b = builder;
        if let Some(ca) = &self.ca_data {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| Error::step("kubeconfig CA", e.to_string()))?;
            b = b.tls_certs_merge(certs);
        }
        if let Credentials::ClientCert { cert, key } = &self.credentials {
            let id = reqwest::Identity::from_pkcs8_pem(cert, key)
                .map_err(|e| Error::step("kubeconfig client certificate", e.to_string()))?;
            b = b.identity(id);
        }
        Ok(b.tls_danger_accept_invalid_certs(self.insecure))
    }

    /// A client for the API server's address space (the publish probe): the kubeconfig's trust only.
    pub fn api_http_client(&self) -> Result<reqwest::ClientBuilder> {
        let mut b = reqwest::Client::builder().http1_only();
        if let Some(ca) = &self.ca_data {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| Error::step("kubeconfig CA", e.to_string()))?;
            b = b.tls_certs_only(certs);
        }
        if let Credentials::ClientCert { cert, key } = &self.credentials {
            let id = reqwest::Identity::from_pkcs8_pem(cert, key)
                .map_err(|e| Error::step("kubeconfig client certificate", e.to_string()))?;
            b = b.identity(id);
        }
        Ok(b.tls_danger_accept_invalid_certs(self.insecure))
    }

    /// A data-plane client: the system roots, plus `extra_ca` (status.ca on the internal path),
    /// plus the kubeconfig's inline CA; the user's client certificate when that is the credential.
    /// `connect_to` dials another address for a host name (the test aid of [`crate::transfer`]).
    pub fn data_client(
        &self,
        extra_ca: Option<&[u8]>,
        connect_to: Option<(&str, std::net::SocketAddr)>,
    ) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().http1_only();
        if let Some((host, addr)) = connect_to {
            b = b.resolve(host, addr);
        }
        if let Some(ca) = extra_ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| Error::step("status.ca", format!("not a PEM bundle: {e}")))?;
            b = b.tls_certs_merge(certs);
        }
        self.tls(b)?
            .build()
            .map_err(|e| Error::step("data-plane client", e.to_string()))
    }

    /// Adds the credentials client-go would add to a data-plane request.
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::Bearer(t) => req.bearer_auth(t),
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password)),
            Credentials::ClientCert { .. } | Credentials::None => req,
        }
    }
}
