//! Authentication and authorization decided by a real kube-apiserver (the local control plane from
//! `e2e/testenv.sh up`): ServiceAccount tokens from TokenRequest, RBAC Roles with resourceNames, client
//! certificates signed by the cluster CA, and the activity Lease.
//!
//! Without `TESTENV_KUBECONFIG` this test prints a note and passes, unless `CI` is set: then it fails.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;
use svdm_testenv::{Testenv, wait_for};

use common::*;

const EXPORT: &str = "exp-data";
const CERT_GROUP: &str = "svdm-exporter-test-downloaders";

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap_or_else(|e| panic!("object: {e}"));
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"))
}

async fn token(client: &kube::Client, ns: &str, sa: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = api
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap_or_else(|e| panic!("token for {ns}/{sa}: {e}"));
    out.status.and_then(|s| s.token).unwrap_or_default()
}

fn downloader_role(name: &str, resource_name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "rules": [{
            "apiGroups": ["storage.deckhouse.io"],
            "resources": ["dataexports/download"],
            "verbs": ["get"],
            "resourceNames": [resource_name],
        }]
    })
}

fn binding(name: &str, role: &str, subject: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [subject],
    })
}

fn sa_subject(ns: &str, name: &str) -> serde_json::Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

/// A kubeconfig for the exporter process that authenticates as its own ServiceAccount, as in a pod.
fn exporter_kubeconfig(env: &Testenv, token: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let kc = Kubeconfig::read_from(&env.admin_kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .unwrap_or_else(|| panic!("no cluster"));
    let server = cluster.server.unwrap_or_default();
    let ca = cluster.certificate_authority_data.unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    let p = dir.join("exporter.kubeconfig");
    write(&p, text);
    p
}

async fn renew_time(leases: &Api<Lease>) -> Option<(String, String)> {
    let l = leases.get("exp-lease").await.ok()?;
    let spec = l.spec?;
    Some((
        spec.holder_identity?,
        serde_json::to_string(&spec.renew_time?).ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_api_server_decides() {
    let Some(env) = Testenv::require("auth_cluster") else {
        return;
    };
    let admin = env.admin().await.unwrap_or_else(|e| panic!("{e}"));
    let ns = env
        .namespace("svdm-exporter-auth")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let other = env
        .namespace("svdm-exporter-auth-other")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let crb_name = format!("{}-auth-delegator", ns.name);
    let result = tokio::spawn(checks(
        env.clone(),
        admin.clone(),
        ns.name.clone(),
        other.name.clone(),
        crb_name.clone(),
    ))
    .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&crb_name, &DeleteParams::default())
        .await;
    let _ = ns.delete().await;
    let _ = other.delete().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn checks(env: Testenv, admin: kube::Client, ns: String, other: String, crb_name: String) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    for name in ["exporter", "allowed", "nobody", "wrong-name", "revoked"] {
        create(&sas, json!({"metadata": {"name": name}})).await;
    }
    create(
        &Api::<ServiceAccount>::namespaced(admin.clone(), &other),
        json!({"metadata": {"name": "elsewhere"}}),
    )
    .await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), &ns);
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &ns);
    create(&roles, downloader_role("downloader", EXPORT)).await;
    create(
        &roles,
        downloader_role("downloader-of-another-export", "different-export"),
    )
    .await;
    create(
        &roles,
        json!({"metadata": {"name": "lease-writer"}, "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "patch", "update"]}]}),
    )
    .await;
    create(
        &rbs,
        binding("allowed", "downloader", sa_subject(&ns, "allowed")),
    )
    .await;
    create(
        &rbs,
        binding(
            "wrong-name",
            "downloader-of-another-export",
            sa_subject(&ns, "wrong-name"),
        ),
    )
    .await;
    create(
        &rbs,
        binding(
            "cert-group",
            "downloader",
            json!({"kind": "Group", "name": CERT_GROUP, "apiGroup": "rbac.authorization.k8s.io"}),
        ),
    )
    .await;
    create(
        &rbs,
        binding(
            "exporter-lease",
            "lease-writer",
            sa_subject(&ns, "exporter"),
        ),
    )
    .await;
    // The same permission, but in another namespace.
    create(
        &Api::<Role>::namespaced(admin.clone(), &other),
        downloader_role("downloader", EXPORT),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), &other),
        binding("elsewhere", "downloader", sa_subject(&other, "elsewhere")),
    )
    .await;
    // The exporter's own identity may create TokenReviews and SubjectAccessReviews.
    create(
        &Api::<ClusterRoleBinding>::all(admin.clone()),
        json!({
            "metadata": {"name": crb_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [sa_subject(&ns, "exporter")],
        }),
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    create(
        &leases,
        json!({"metadata": {"name": "exp-lease"}, "spec": {}}),
    )
    .await;

    let exporter_token = token(&admin, &ns, "exporter").await;
    let allowed = token(&admin, &ns, "allowed").await;
    let nobody = token(&admin, &ns, "nobody").await;
    let wrong_name = token(&admin, &ns, "wrong-name").await;
    let revoked = token(&admin, &ns, "revoked").await;
    let elsewhere = token(&admin, &other, "elsewhere").await;

    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f.txt"), "payload\n");
    let big: Vec<u8> = (0..16_000_000u32).map(|i| (i % 241) as u8).collect();
    write(&vol.path().join("big"), &big);
    let kubeconfig = exporter_kubeconfig(&env, &exporter_token, vol.path());
    let ca_path = std::env::var("TESTENV_CA").unwrap_or_else(|_| panic!("TESTENV_CA not set"));
    let ca_key_path =
        std::env::var("TESTENV_CA_KEY").unwrap_or_else(|_| panic!("TESTENV_CA_KEY not set"));
    let mut opts = Opts::fs(vol.path());
    opts.no_auth = false;
    opts.export = (ns.clone(), EXPORT.into());
    opts.env.push((
        "KUBECONFIG".into(),
        kubeconfig.to_string_lossy().into_owned(),
    ));
    opts.env.push(("POD_NAME".into(), "exporter-pod-1".into()));
    opts.args.extend(
        [
            "--client-ca",
            &ca_path,
            "--lease-namespace",
            &ns,
            "--lease-name",
            "exp-lease",
            "--activity-interval",
            "1s",
        ]
        .map(String::from),
    );
    let ex = tokio::task::block_in_place(|| Exporter::start(opts));
    let c = ex.client();
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |t: &str| {
        tokio::task::block_in_place(|| {
            c.req(
                "GET",
                "/api/v1/files/f.txt",
                &[("Authorization", &bearer(t))],
            )
        })
    };

    // Allowed: the ServiceAccount with get on dataexports/download for this export's name.
    let r = get(&allowed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "payload\n");
    for _ in 0..5 {
        assert_eq!(get(&allowed).status, 200);
    }
    // Public prefix too.
    let r = tokio::task::block_in_place(|| {
        c.req(
            "GET",
            &format!("/{ns}/{EXPORT}/api/v1/files/f.txt"),
            &[("Authorization", &bearer(&allowed))],
        )
    });
    assert_eq!(r.status, 200);

    // Denied: no permission, permission for another export name, permission in another namespace.
    for (who, t) in [
        ("nobody", &nobody),
        ("wrong-name", &wrong_name),
        ("elsewhere", &elsewhere),
    ] {
        let r = get(t);
        assert_eq!(r.status, 403, "{who}: {}", r.text());
        let text = r.text();
        assert!(
            text.contains(&format!("cannot get dataexports/download \"{EXPORT}\" in namespace \"{ns}\" (storage.deckhouse.io)")),
            "{who}: {text}"
        );
        assert!(text.contains("system:serviceaccount:"), "{text}");
    }
    // Garbage, revoked (its ServiceAccount deleted), Basic, none: 401 with a challenge.
    let r = get("not-a-real-token");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"storage-volume-data-manager\"")
    );
    sas.delete("revoked", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "revoked token rejected",
        Duration::from_secs(20),
        || async { (get(&revoked).status == 401).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let r = tokio::task::block_in_place(|| {
        c.req(
            "GET",
            "/api/v1/files/f.txt",
            &[("Authorization", "Basic dXNlcjpwYXNz")],
        )
    });
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        tokio::task::block_in_place(|| c.get("/api/v1/files/f.txt")).status,
        401
    );

    // Client certificates signed by the cluster CA: CN is the user, O the groups.
    let cluster_ca = svdm_pki::CertPair {
        cert_pem: std::fs::read_to_string(&ca_path).unwrap_or_default(),
        key_pem: std::fs::read_to_string(&ca_key_path).unwrap_or_default(),
    };
    let cert_for = |cn: &str, org: &str| {
        svdm_pki::issue(
            &cluster_ca,
            &svdm_pki::LeafSpec {
                common_name: cn,
                organizations: &[org],
                dns_names: &[],
                ip_addresses: &[],
                usage: svdm_pki::Usage::Client,
                validity: DAY,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let member = Client::new(
        &ex.ca_pem,
        ex.addr,
        Some(&cert_for("cert-user", CERT_GROUP)),
    );
    let r = tokio::task::block_in_place(|| member.get("/api/v1/files/f.txt"));
    assert_eq!(r.status, 200, "{}", r.text());
    let stranger = Client::new(
        &ex.ca_pem,
        ex.addr,
        Some(&cert_for("cert-stranger", "nobody-group")),
    );
    let r = tokio::task::block_in_place(|| stranger.get("/api/v1/files/f.txt"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("user \"cert-stranger\" cannot get"),
        "{}",
        r.text()
    );

    // CN=alice,CN=bob in a group that may download: which user is it? The API server would say bob;
    // the exporter refuses the certificate instead of picking one.
    let two_names = client_cert_with_names(&cluster_ca, &["alice", "bob"], &[CERT_GROUP]);
    let r = tokio::task::block_in_place(|| {
        Client::new(&ex.ca_pem, ex.addr, Some(&two_names)).get("/api/v1/files/f.txt")
    });
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("common names"), "{}", r.text());

    // Range requests in a row cost no review each: the cache answers.
    let metrics = tokio::task::block_in_place(|| ex.admin_get("/metrics")).text();
    assert!(
        metrics.contains("kind=\"token\",result=\"hit\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("kind=\"access\",result=\"hit\""),
        "{metrics}"
    );

    // Activity: the Lease carries our holder identity and a renewTime once a request succeeded.
    let first = wait_for("lease renewed", Duration::from_secs(15), || async {
        renew_time(&leases)
            .await
            .filter(|(h, _)| h == "exporter-pod-1")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Failed and unauthenticated requests are not activity.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let settled = renew_time(&leases).await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(get(&nobody).status, 403);
        assert_eq!(get("garbage").status, 401);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        renew_time(&leases).await,
        settled,
        "failed requests renewed the lease"
    );
    assert!(settled.is_some() && first.0 == "exporter-pod-1");

    // A slow transfer is activity while its bytes flow.
    let before = renew_time(&leases).await;
    let flowing = tokio::task::block_in_place(|| {
        use std::io::{Read, Write};
        let mut s = c.connect();
        let head = format!(
            "GET /api/v1/files/big HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {allowed}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap_or_default();
        let mut buf = vec![0u8; 1 << 20];
        let mut seen = Vec::new();
        let mut total = 0usize;
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(1500));
            // Drain a bit; the server refills the socket and marks activity as chunks go out.
            for _ in 0..4 {
                total += s.read(&mut buf).unwrap_or(0);
            }
            seen.push(total);
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        total + rest.len()
    });
    assert!(flowing > big.len(), "download incomplete: {flowing}");
    let after = renew_time(&leases).await;
    assert_ne!(before, after, "a flowing transfer did not renew the lease");

    let logs = ex.log_text();
    for t in [&allowed, &nobody, &exporter_token, &revoked] {
        assert!(!logs.contains(t.as_str()), "a token leaked into the log");
    }
    assert!(
        logs.contains("user=\"system:serviceaccount:"),
        "access log lacks the user"
    );
}

/// `svdm_exporter_auth_api_calls_total` for TokenReviews with this outcome.
fn token_reviews(ex: &Exporter, outcome: &str) -> u64 {
    let text = ex.admin_get("/metrics").text();
    let needle = format!("kind=\"tokenreview\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| {
            l.split_once(&needle)
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Established TCP connections of process `pid` to `port` on the local machine.
fn connections_to(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // remote address, state (01 = ESTABLISHED), inode
            f.len() > 9
                && f[3] == "01"
                && f[2].rsplit(':').next() == Some(&format!("{port:04X}"))
                && inodes.contains(f[9])
        })
        .count()
}

/// Runs `body` with a fresh namespace (and the name of a ClusterRoleBinding it may create), then
/// deletes both whatever happened, and re-raises a failure.
async fn in_test_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Testenv, kube::Client, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(env) = Testenv::require("auth_cluster") else {
        return;
    };
    let admin = env.admin().await.unwrap_or_else(|e| panic!("{e}"));
    let ns = env
        .namespace(prefix)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let crb_name = format!("{}-auth-delegator", ns.name);
    let result = tokio::spawn(body(
        env.clone(),
        admin.clone(),
        ns.name.clone(),
        crb_name.clone(),
    ))
    .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&crb_name, &DeleteParams::default())
        .await;
    let _ = ns.delete().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// An exporter for EXPORT in `ns` running as its own ServiceAccount (auth-delegator through
/// `crb_name`), serving `vol`, and the token of ServiceAccount `allowed`, which may download it
/// through the RoleBinding `allowed`.
async fn export_with_a_downloader(
    env: &Testenv,
    admin: &kube::Client,
    ns: &str,
    crb_name: &str,
    vol: &std::path::Path,
    args: &[&str],
) -> (Exporter, String) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    for name in ["exporter", "allowed"] {
        create(&sas, json!({"metadata": {"name": name}})).await;
    }
    create(
        &Api::<Role>::namespaced(admin.clone(), ns),
        downloader_role("downloader", EXPORT),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), ns),
        binding("allowed", "downloader", sa_subject(ns, "allowed")),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(admin.clone()),
        json!({
            "metadata": {"name": crb_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [sa_subject(ns, "exporter")],
        }),
    )
    .await;
    let exporter_token = token(admin, ns, "exporter").await;
    let allowed = token(admin, ns, "allowed").await;
    let kubeconfig = exporter_kubeconfig(env, &exporter_token, vol);
    let mut opts = Opts::fs(vol);
    opts.no_auth = false;
    opts.export = (ns.to_owned(), EXPORT.into());
    opts.env.push((
        "KUBECONFIG".into(),
        kubeconfig.to_string_lossy().into_owned(),
    ));
    opts.args.extend(args.iter().map(|a| a.to_string()));
    let ex = tokio::task::block_in_place(|| Exporter::start(opts));
    (ex, allowed)
}

/// Issue 10, item 2: unauthenticated requests cannot be multiplied into API-server load. The same bad
/// token costs one TokenReview (negative cache), an oversized token none, and a flood of distinct
/// random tokens only the budget (burst plus rate), answered 503 with Retry-After beyond it, over a
/// handful of pooled connections — while an authorized user keeps downloading throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_traffic_costs_bounded_reviews() {
    in_test_namespace("svdm-exporter-flood", flood_checks).await;
}

async fn flood_checks(env: Testenv, admin: kube::Client, ns: String, crb_name: String) {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f.txt"), "payload\n");
    let api_port: u16 = std::env::var("TESTENV_API_URL")
        .ok()
        .and_then(|u| u.rsplit(':').next().and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("TESTENV_API_URL has no port"));
    // A short positive cache: the authorized user's token is re-reviewed during the flood, as a
    // known token outside the budget.
    let (ex, allowed) = export_with_a_downloader(
        &env,
        &admin,
        &ns,
        &crb_name,
        vol.path(),
        &["--auth-cache-ttl", "1s"],
    )
    .await;
    let bearer = |t: &str| format!("Bearer {t}");

    tokio::task::block_in_place(|| {
        let mut conn = ex.client().keep_alive();
        assert_eq!(
            conn.req(
                "GET",
                "/api/v1/files/f.txt",
                &[("Authorization", &bearer(&allowed))]
            )
            .status,
            200
        );

        // The same bad token 200 times: one review.
        let before = token_reviews(&ex, "rejected");
        for _ in 0..200 {
            let r = conn.req(
                "GET",
                "/api/v1/files/f.txt",
                &[("Authorization", "Bearer the-same-bad-token")],
            );
            assert_eq!(r.status, 401);
        }
        let same = token_reviews(&ex, "rejected") - before;
        assert!(
            same <= 1,
            "200 requests with one bad token made {same} TokenReviews"
        );

        // An oversized token: refused without a review.
        let before = token_reviews(&ex, "rejected") + token_reviews(&ex, "error");
        let huge = "x".repeat(16 * 1024);
        let r = conn.req(
            "GET",
            "/api/v1/files/f.txt",
            &[("Authorization", &bearer(&huge))],
        );
        assert_eq!(r.status, 401);
        assert!(r.text().contains("longer than 8 KiB"), "{}", r.text());
        assert_eq!(
            token_reviews(&ex, "rejected") + token_reviews(&ex, "error"),
            before
        );

        // 1000 distinct random tokens from 16 connections, while the authorized user keeps going.
        let before = token_reviews(&ex, "rejected");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let legit = {
            let client = ex.client();
            let allowed = allowed.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = client.keep_alive();
                let mut codes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = conn.req(
                        "GET",
                        "/api/v1/files/f.txt",
                        &[("Authorization", &format!("Bearer {allowed}"))],
                    );
                    codes.push(r.status);
                    std::thread::sleep(Duration::from_millis(100));
                }
                codes
            })
        };
        let started = Instant::now();
        let peak_connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flood: Vec<_> = (0..16)
            .map(|t| {
                let client = ex.client();
                let peak = peak_connections.clone();
                let pid = ex.pid();
                std::thread::spawn(move || {
                    let mut conn = client.keep_alive();
                    let mut codes = std::collections::BTreeMap::new();
                    for i in 0..(1000 / 16 + usize::from(t < 1000 % 16)) {
                        let fake = format!("Bearer random-{t}-{i}-{}", rand_suffix());
                        let r = conn.req("GET", "/api/v1/files/f.txt", &[("Authorization", &fake)]);
                        if r.status == 503 {
                            assert_eq!(r.header("retry-after"), Some("1"));
                        }
                        *codes.entry(r.status).or_insert(0usize) += 1;
                        if i % 8 == 0 {
                            peak.fetch_max(
                                connections_to(pid, api_port),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                        }
                    }
                    codes
                })
            })
            .collect();
        let mut codes = std::collections::BTreeMap::new();
        for t in flood {
            for (k, v) in t.join().unwrap_or_default() {
                *codes.entry(k).or_insert(0) += v;
            }
        }
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let legit_codes = legit.join().unwrap_or_default();
        let random = token_reviews(&ex, "rejected") - before;
        let peak = peak_connections.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "1000 random tokens in {took:?}: {codes:?}; {random} TokenReviews; at most {peak} connections to the API server; the authorized user got {legit_codes:?}"
        );
        assert_eq!(codes.values().sum::<usize>(), 1000);
        // Burst 5, 2 per second.
        let allowed_reviews = 5 + (2.0 * took.as_secs_f64()).ceil() as u64 + 1;
        assert!(
            random <= allowed_reviews,
            "1000 random tokens made {random} TokenReviews in {took:?} (budget {allowed_reviews})"
        );
        assert!(codes.get(&503).copied().unwrap_or(0) > 0, "{codes:?}");
        assert!(
            legit_codes.iter().all(|c| *c == 200) && !legit_codes.is_empty(),
            "the authorized user was not served throughout: {legit_codes:?}"
        );
        assert!(
            peak <= 4 + 1,
            "{peak} connections to the API server at once"
        );
    });
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Issue 10, item 8: a long transfer is re-authorized while it runs. A slow download whose permission
/// stays completes across several re-checks; once the RoleBinding is deleted, the next re-check ends
/// the running download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_permission_ends_a_running_download() {
    in_test_namespace("svdm-exporter-revoke", revoke_checks).await;
}

async fn revoke_checks(env: Testenv, admin: kube::Client, ns: String, crb_name: String) {
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Sparse, so the exporter reads it at memory speed and the client alone sets the pace.
    let size: u64 = 256 << 20;
    std::fs::File::create(vol.path().join("big"))
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ex, allowed) = export_with_a_downloader(
        &env,
        &admin,
        &ns,
        &crb_name,
        vol.path(),
        &["--reauthorize-interval", "1s", "--auth-cache-ttl", "500ms"],
    )
    .await;
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &ns);
    use std::io::{Read, Write};
    // Reads a download of `big` slowly (a 64 KiB window, a pause per read) for `secs` seconds (or to the end); returns the
    // bytes of body received and whether the response ended early.
    let slow_download = |secs: u64| {
        let mut s = ex.client().connect();
        let _ = nix::sys::socket::setsockopt(
            s.get_ref(),
            nix::sys::socket::sockopt::RcvBuf,
            &(64 * 1024),
        );
        let head = format!(
            "GET /api/v1/files/big HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {allowed}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap_or_default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let started = Instant::now();
        let mut ended = false;
        while started.elapsed() < Duration::from_secs(secs) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    ended = true;
                    break;
                }
                Ok(n) => got += n,
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        (got, ended)
    };
    // Permission kept: several re-checks pass, the transfer goes on.
    let (got, ended) = tokio::task::block_in_place(|| slow_download(5));
    assert!(!ended, "a permitted download was cut after {got} bytes");
    assert!(got > 1 << 20, "only {got} bytes in 5 s");

    // Permission revoked while a download runs: it ends at the next re-check.
    let (got, ended, took_after) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let started = Instant::now();
                let (got, ended) = slow_download(30);
                (got, ended, started.elapsed())
            });
            std::thread::sleep(Duration::from_secs(2));
            let rt = tokio::runtime::Handle::current();
            rt.block_on(async {
                rbs.delete("allowed", &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            });
            reader.join().unwrap_or((0, false, Duration::ZERO))
        })
    });
    eprintln!("after the revocation the download ended: {ended}, {got} bytes in {took_after:?}");
    assert!(
        ended,
        "the download went on for 30 s after its permission was revoked"
    );
    assert!((got as u64) < size);
    assert!(
        took_after < Duration::from_secs(15),
        "it took {took_after:?} to end"
    );
    assert!(ex.log_text().contains("transfer ended after"));
}
