//! Authentication answers that need no API call, and the API-down path (503, never 500), with the
//! exporter pointed at a Kubernetes API that does not answer. Decisions made by a real API server are
//! tested in `auth_cluster.rs`.

mod common;

use std::net::TcpListener;

use common::*;

fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    // A port that was free a moment ago: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: exporter-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    let p = dir.join("kubeconfig");
    write(&p, kc);
    p
}

/// A client certificate for user `alice` in group `team`, signed by `ca`.
fn alice_signed_by(ca: &svdm_pki::CertPair) -> svdm_pki::CertPair {
    svdm_pki::issue(
        ca,
        &svdm_pki::LeafSpec {
            common_name: "alice",
            organizations: &["team"],
            dns_names: &[],
            ip_addresses: &[],
            usage: svdm_pki::Usage::Client,
            validity: DAY,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An exporter with authentication on, pointed at an API server that refuses connections, trusting
/// client certificates from the CA in `client_ca` (a file in `vol`, which also holds the volume).
fn offline_exporter(vol: &std::path::Path, client_ca: &std::path::Path) -> Exporter {
    let kc = unreachable_kubeconfig(vol);
    let mut opts = Opts::fs(vol);
    opts.no_auth = false;
    opts.env
        .push(("KUBECONFIG".into(), kc.to_string_lossy().into_owned()));
    opts.args.push("--client-ca".into());
    opts.args.push(client_ca.to_string_lossy().into_owned());
    Exporter::start(opts)
}

#[test]
fn challenges_and_api_outage() {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "data");
    let client_pki = server_pki();
    let client_ca = vol.path().join("client-ca.crt");
    write(&client_ca, &client_pki.ca.cert_pem);
    let ex = offline_exporter(vol.path(), &client_ca);
    let c = ex.client();
    let challenge = "Bearer realm=\"storage-volume-data-manager\"";

    let r = c.get("/api/v1/files/f");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(challenge));
    let r = c.req(
        "GET",
        "/api/v1/files/f",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(challenge));
    assert!(r.text().contains("Basic authentication is not supported"));
    let r = c.req("HEAD", "/api/v1/files/f", &[("Authorization", "Bearer")]);
    assert_eq!(r.status, 401);
    // Health endpoints need no credentials, on the admin port; the data port (the one the Service and
    // Ingress publish) does not serve them or the metrics at all.
    assert_eq!(ex.admin_get("/healthz").status, 200);
    assert_eq!(ex.admin_get("/readyz").status, 200);
    for path in ["/healthz", "/readyz", "/metrics", "/ns1/exp1/metrics"] {
        let r = c.get(path);
        assert_eq!(r.status, 404, "{path} on the data port");
        assert!(!r.text().contains("svdm_exporter"), "{path}");
    }

    // API unreachable: 503 with a retry hint, not 500.
    let r = c.req(
        "GET",
        "/api/v1/files/f",
        &[("Authorization", "Bearer some-token-value")],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("retry"));

    // A client certificate from an unknown CA does not abort the handshake; it gets a 401 that says why.
    let stranger = server_pki();
    let stranger_client = svdm_pki::issue(
        &stranger.ca,
        &svdm_pki::LeafSpec {
            common_name: "mallory",
            organizations: &["system:masters"],
            dns_names: &[],
            ip_addresses: &[],
            usage: svdm_pki::Usage::Client,
            validity: DAY,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c2 = Client::new(&ex.ca_pem, ex.addr, Some(&stranger_client));
    let r = c2.get("/api/v1/files/f");
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("client certificate not accepted"),
        "{}",
        r.text()
    );
    // A trusted client certificate gets as far as the access review (API down: 503).
    let trusted = alice_signed_by(&client_pki.ca);
    let c3 = Client::new(&ex.ca_pem, ex.addr, Some(&trusted));
    assert_eq!(c3.get("/api/v1/files/f").status, 503);
    // The same CA, but two common names: the API server would take the last one (bob); a certificate
    // that names two users is refused before any review. One CN, written by the same builder, works
    // as the issuer's certificates do.
    for (cns, want) in [(&["alice", "bob"][..], 401), (&["bob"][..], 503)] {
        let cert = client_cert_with_names(&client_pki.ca, cns, &["team"]);
        let r = Client::new(&ex.ca_pem, ex.addr, Some(&cert)).get("/api/v1/files/f");
        assert_eq!(r.status, want, "{cns:?}: {}", r.text());
        if want == 401 {
            assert!(r.text().contains("2 common names"), "{}", r.text());
        }
    }
    let logs = ex.log_text();
    assert!(!logs.contains("some-token-value"), "token leaked into logs");
    assert!(!logs.contains("dXNlcjpwYXNz"));
}

/// The client CA file is followed on its own (issue 10, item 8): a CA that appears after start, and a
/// CA replaced by another, take effect for new connections within the reload period, without the
/// server certificate changing. Offline, a certificate the exporter accepts gets as far as the access
/// review (503, the API server is unreachable); one it does not accept gets 401.
#[test]
fn client_ca_changes_are_followed() {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "data");
    let ca_file = vol.path().join("client-ca.crt");
    write(&ca_file, "");
    let ex = offline_exporter(vol.path(), &ca_file);
    let first = server_pki().ca;
    let second = server_pki().ca;
    let (from_first, from_second) = (alice_signed_by(&first), alice_signed_by(&second));
    let status_with = |cert: &svdm_pki::CertPair| {
        Client::new(&ex.ca_pem, ex.addr, Some(cert))
            .get("/api/v1/files/f")
            .status
    };
    let eventually = |cert: &svdm_pki::CertPair, want: u16, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = status_with(cert);
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: still {got}, wanted {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    // No CA yet: certificates are not even asked for.
    assert_eq!(status_with(&from_first), 401);
    // The CA appears (written in place, as a ConfigMap-fed file may be).
    write(&ca_file, &first.cert_pem);
    eventually(&from_first, 503, "a CA that appeared after start");
    assert_eq!(status_with(&from_second), 401);
    // It is replaced by another one.
    write(&ca_file, &second.cert_pem);
    eventually(&from_second, 503, "a replaced CA");
    assert_eq!(status_with(&from_first), 401, "the old CA is still trusted");
}
