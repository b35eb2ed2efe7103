use super::*;

fn owner() -> Owner {
    Owner {
        namespace: "app".into(),
        name: "backup".into(),
        uid: "0b7c5d5e-1111-2222-3333-444455556666".into(),
    }
}

fn settings() -> Settings {
    Settings {
        exporter_image: "registry/exporter:1".into(),
        ingress_class: "nginx".into(),
        cluster_domain: "cluster.local".into(),
        publish_host: Some("data-exporter.example.com".into()),
        ..Default::default()
    }
}

#[test]
fn names_are_short_stable_and_distinct() {
    let a = object_name("uid-a");
    assert_eq!(a, object_name("uid-a"));
    assert_ne!(a, object_name("uid-b"));
    assert_eq!(a.len(), 16);
    assert!(a.starts_with("exp-"));
    assert!(snapshot_content_name("uid-a").ends_with(&a));
}

#[test]
fn dns_names_and_urls() {
    assert_eq!(
        service_dns_names("exp-1", "cluster.local"),
        [
            "exp-1",
            "exp-1.d8-storage-volume-data-manager",
            "exp-1.d8-storage-volume-data-manager.svc",
            "exp-1.d8-storage-volume-data-manager.svc.cluster.local"
        ]
    );
    assert_eq!(
        in_cluster_url("exp-1"),
        "https://exp-1.d8-storage-volume-data-manager.svc/"
    );
    assert_eq!(
        public_url("h.example", "app", "backup"),
        "https://h.example/app/backup/"
    );
}

#[test]
fn export_pvc_is_prebound_rwop() {
    let p = export_pvc(&owner(), "exp-1", "pv-1", VolumeMode::Block, None, None);
    let spec = p.spec.expect("spec");
    assert_eq!(spec.volume_name.as_deref(), Some("pv-1"));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOncePod".to_owned()]));
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(spec.storage_class_name.as_deref(), Some(""));
    let labels = p.metadata.labels.expect("labels");
    assert_eq!(
        labels.get(names::LABEL_MANAGED).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        p.metadata.namespace.as_deref(),
        Some(names::MODULE_NAMESPACE)
    );
    let ann = p.metadata.annotations.expect("annotations");
    assert_eq!(
        ann.get(names::ANN_OWNER_NAME).map(String::as_str),
        Some("backup")
    );
}

#[test]
fn filesystem_pod_is_least_privileged_and_read_only() {
    let pod = exporter_pod(
        &owner(),
        "exp-1",
        "exp-1",
        VolumeMode::Filesystem,
        &settings(),
    );
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("exporter"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    let c = &spec.containers[0];
    let args = c.args.clone().expect("args");
    assert_eq!(
        args,
        [
            "--mode=filesystem",
            "--source=/data",
            "--address=$(POD_IP)",
            "--port=8443",
            "--admin-port=8080",
            "--tls-cert=/etc/svdm/tls/tls.crt",
            "--tls-key=/etc/svdm/tls/tls.key",
            "--client-ca=/etc/svdm/tls/client-ca.crt",
            "--export-namespace=app",
            "--export-name=backup",
            "--lease-namespace=d8-storage-volume-data-manager",
            "--lease-name=exp-1"
        ]
    );
    let sc = c.security_context.clone().expect("sc");
    let caps = sc.capabilities.expect("caps");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(caps.add, Some(vec!["DAC_READ_SEARCH".to_owned()]));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
    let data = c
        .volume_mounts
        .as_ref()
        .and_then(|m| m.iter().find(|m| m.name == "data"))
        .expect("data mount");
    assert_eq!(data.mount_path, "/data");
    assert_eq!(data.read_only, Some(true));
    assert!(c.volume_devices.is_none());
    // Probes go to the admin port, which the Service does not publish (see service_and_secret).
    let rp = c.readiness_probe.clone().expect("readiness");
    let hg = rp.http_get.expect("http");
    assert_eq!(hg.scheme.as_deref(), Some("HTTP"));
    assert_eq!(hg.path.as_deref(), Some("/readyz"));
    assert_eq!(hg.port, IntOrString::Int(8080));
    let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["POD_IP", "POD_NAME"]);
}

#[test]
fn block_pod_uses_a_device_and_no_capabilities() {
    let pod = exporter_pod(&owner(), "exp-1", "exp-1", VolumeMode::Block, &settings());
    let c = &pod.spec.expect("spec").containers[0];
    assert_eq!(c.args.as_ref().expect("args")[1], "--source=/dev/svdm-data");
    assert_eq!(
        c.volume_devices.as_ref().expect("devices")[0].device_path,
        "/dev/svdm-data"
    );
    let caps = c
        .security_context
        .clone()
        .and_then(|s| s.capabilities)
        .expect("caps");
    assert_eq!(caps.add, None);
}

#[test]
fn pod_takes_scheduling_settings() {
    let mut s = settings();
    s.exporter_priority_class = Some("high".into());
    s.exporter_node_selector = BTreeMap::from([("a".into(), "b".into())]);
    s.exporter_tolerations = serde_json::from_str(r#"[{"operator":"Exists"}]"#).expect("tol");
    let spec = exporter_pod(&owner(), "n", "n", VolumeMode::Block, &s)
        .spec
        .expect("spec");
    assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
    assert_eq!(spec.tolerations.map(|t| t.len()), Some(1));
    assert!(spec.node_selector.is_some());
}

#[test]
fn service_and_secret() {
    let svc = service(&owner(), "exp-1");
    let ports = svc.spec.expect("spec").ports.expect("ports");
    // Only the data port: the admin port (health, metrics) is never published.
    assert_eq!(ports.len(), 1);
    let port = &ports[0];
    assert_eq!((port.port, port.name.as_deref()), (443, Some("https")));
    assert_eq!(port.target_port, Some(IntOrString::Int(8443)));
    let sec = tls_secret(&owner(), "exp-1", "C", "K", "CA", "CCA");
    let data = sec.data.expect("data");
    for k in ["tls.crt", "tls.key", "ca.crt", "client-ca.crt"] {
        assert!(data.contains_key(k), "{k}");
    }
}

#[test]
fn ingress_streams_big_downloads() {
    let ing = ingress(&owner(), "exp-1", &settings()).expect("configured");
    let ann = ing.metadata.annotations.expect("ann");
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/backend-protocol")
            .map(String::as_str),
        Some("HTTPS")
    );
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/proxy-body-size")
            .map(String::as_str),
        Some("0")
    );
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/proxy-buffering")
            .map(String::as_str),
        Some("off")
    );
    let spec = ing.spec.expect("spec");
    let rule = &spec.rules.expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("data-exporter.example.com"));
    let path = &rule.http.as_ref().expect("http").paths[0];
    assert_eq!(path.path.as_deref(), Some("/app/backup/"));
    assert_eq!(path.path_type, "Prefix");
    assert!(spec.tls.is_none());

    // The hop behind the ingress controller verifies the exporter by the exporter CA alone.
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/proxy-ssl-verify")
            .map(String::as_str),
        Some("on")
    );
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/proxy-ssl-secret")
            .map(String::as_str),
        Some("d8-storage-volume-data-manager/exporter-ca-bundle")
    );
    assert_eq!(
        ann.get("nginx.ingress.kubernetes.io/proxy-ssl-name")
            .map(String::as_str),
        Some("exp-1.d8-storage-volume-data-manager.svc")
    );
    assert!(
        !ann.keys().any(|k| k.starts_with("cert-manager.io/")),
        "one certificate for the host, made by the chart"
    );

    let mut s = settings();
    s.ingress_tls_secret = Some("wildcard".into());
    let tls = ingress(&owner(), "exp-1", &s)
        .and_then(|i| i.spec)
        .and_then(|s| s.tls);
    assert_eq!(
        tls.expect("tls")[0].secret_name.as_deref(),
        Some("wildcard")
    );

    s.publish_host = None;
    assert!(ingress(&owner(), "exp-1", &s).is_none());
}

#[test]
fn no_tls_towards_users_refuses_publishing() {
    let mut s = settings();
    s.ingress_tls_secret = None;
    s.ingress_tls_external = false;
    let message = publish_unavailable(&s).expect("refused");
    assert!(message.contains("plain HTTP"), "{message}");
    s.ingress_tls_external = true;
    assert_eq!(
        publish_unavailable(&s),
        None,
        "TLS ends in front of the ingress"
    );
    s.ingress_tls_external = false;
    s.ingress_tls_secret = Some("ingress-tls-certmanager".into());
    assert_eq!(publish_unavailable(&s), None);
}

#[test]
fn a_certificate_problem_refuses_publishing_with_its_cause() {
    let mut s = settings();
    s.ingress_tls_secret = Some("ingress-tls-customcertificate".into());
    assert_eq!(publish_unavailable(&s), None);
    s.publish_unavailable = Some(
        "the custom certificate Secret d8-system/data-exporter-tls (type kubernetes.io/tls) was not found"
            .into(),
    );
    let message = publish_unavailable(&s).expect("refused");
    assert!(message.contains("d8-system/data-exporter-tls"), "{message}");
    assert!(message.contains("status.url works"), "{message}");
    // Without a public host the missing host is the problem to report (ensure_ingress says so).
    s.publish_host = None;
    assert_eq!(publish_unavailable(&s), None);
}

#[test]
fn snapshot_copies_are_retained_and_bound_to_each_other() {
    let c = snapshot_content_copy(
        &owner(),
        "svdm-exp-1",
        "exp-1",
        "local.csi.svdm.dev",
        "snap-123",
        Some("Block"),
        Some("svdm-sim"),
    );
    assert_eq!(c["spec"]["deletionPolicy"], "Retain");
    assert_eq!(c["spec"]["source"]["snapshotHandle"], "snap-123");
    assert_eq!(c["spec"]["sourceVolumeMode"], "Block");
    assert_eq!(
        c["spec"]["volumeSnapshotRef"]["namespace"],
        names::MODULE_NAMESPACE
    );
    let vs = snapshot_copy(&owner(), "exp-1", "svdm-exp-1", Some("svdm-sim"));
    assert_eq!(
        vs["spec"]["source"]["volumeSnapshotContentName"],
        "svdm-exp-1"
    );
    let pvc = restored_pvc(
        &owner(),
        "exp-1",
        "exp-1",
        VolumeMode::Block,
        "svdm-sim",
        Quantity("1Gi".into()),
        "app/snap",
    );
    let spec = pvc.spec.expect("spec");
    assert_eq!(spec.data_source.expect("ds").kind, "VolumeSnapshot");
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
}
