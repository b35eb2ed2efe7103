//! Certificate issuing shared by the hooks (webhook certificate, exporter CA), the controller
//! (one leaf per exporter) and the tests (throw-away CAs and client certificates).
//!
//! Keys are ECDSA P-256: small, fast to generate per exporter, and accepted by Go, openssl and
//! every ingress. Callers decide validity and renewal through [`CertInfo::needs_renewal`].

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a certificate could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid DNS name {0:?} for a certificate")]
    DnsName(String),
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("cannot parse certificate: {0}")]
    Parse(String),
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// Parameters of a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec<'a> {
    pub common_name: &'a str,
    /// Organisations (Kubernetes maps O to groups for client certificates).
    pub organizations: &'a [&'a str],
    pub dns_names: &'a [String],
    pub ip_addresses: &'a [IpAddr],
    pub usage: Usage,
    pub validity: Duration,
}

fn validity_window(validity: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    // Back-date by an hour so a client whose clock is slightly behind accepts a fresh certificate.
    let now = SystemTime::now();
    let not_before = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    let not_after = now.checked_add(validity).unwrap_or(now);
    (not_before.into(), not_after.into())
}

/// Creates a self-signed CA certificate.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity_window(validity);
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a leaf certificate signed by `ca`.
pub fn issue(ca: &CertPair, spec: &LeafSpec<'_>) -> Result<CertPair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for org in spec.organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, spec.common_name);
    params.distinguished_name = dn;
    for name in spec.dns_names {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| PkiError::DnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for ip in spec.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match spec.usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity_window(spec.validity);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What the module needs to know about an existing certificate to decide whether to reuse it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub is_ca: bool,
}

impl CertInfo {
    /// True when the certificate expires within `margin` of `now`.
    pub fn needs_renewal(&self, now: SystemTime, margin: Duration) -> bool {
        now.checked_add(margin)
            .is_none_or(|deadline| self.not_after <= deadline)
    }

    /// True when the certificate names exactly `dns_names` (order ignored).
    pub fn covers_exactly(&self, dns_names: &[String]) -> bool {
        let mut have = self.dns_names.clone();
        let mut want = dns_names.to_vec();
        have.sort();
        want.sort();
        have == want
    }
}

/// Reads expiry and names of the first certificate in a PEM bundle.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0));
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()))
                    }
                    16 => ip_addresses
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_after,
        dns_names,
        ip_addresses,
        is_ca: cert.is_ca(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn leaf_carries_the_requested_names() {
        let ca = generate_ca("svdm test CA", 365 * DAY).expect("ca");
        let names = vec!["exp-1.d8-storage-volume-data-manager.svc".to_owned()];
        let ips = ["127.0.0.1".parse().expect("ip")];
        let leaf = issue(
            &ca,
            &LeafSpec {
                common_name: "exp-1",
                organizations: &[],
                dns_names: &names,
                ip_addresses: &ips,
                usage: Usage::Server,
                validity: 30 * DAY,
            },
        )
        .expect("leaf");
        let info = inspect(&leaf.cert_pem).expect("inspect");
        assert_eq!(info.dns_names, names);
        assert_eq!(info.ip_addresses, ips);
        assert!(!info.is_ca);
        assert!(inspect(&ca.cert_pem).expect("ca info").is_ca);
        assert!(info.covers_exactly(&names));
        assert!(!info.covers_exactly(&["other".to_owned()]));
    }

    #[test]
    fn renewal_is_due_inside_the_margin() {
        let ca = generate_ca("short", 10 * DAY).expect("ca");
        let info = inspect(&ca.cert_pem).expect("info");
        let now = SystemTime::now();
        assert!(!info.needs_renewal(now, DAY));
        assert!(info.needs_renewal(now, 11 * DAY));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inspect("not a certificate").is_err());
        let bad_ca = CertPair {
            cert_pem: "x".into(),
            key_pem: "y".into(),
        };
        let spec = LeafSpec {
            common_name: "a",
            organizations: &[],
            dns_names: &[],
            ip_addresses: &[],
            usage: Usage::Client,
            validity: DAY,
        };
        assert!(issue(&bad_ca, &spec).is_err());
    }
}
