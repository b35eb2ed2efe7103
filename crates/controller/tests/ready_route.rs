//! Ready means downloadable: a client that knows only `status.url` and `status.ca` can transfer
//! the moment it sees `Ready=True`, even when the Service path takes its time.
//!
//! The exporter runs on a private simulated node whose kube-proxy stand-in applies every
//! EndpointSlice change 6 s late (`--proxy-delay-ms`), as a slow kube-proxy would. The contract
//! client then does what d8 does — poll every 3 s, and download at once on Ready, with no retry —
//! and the download must succeed; and Ready must have come no earlier than the delay after the
//! exporter pod itself was ready (the old rule, which this test failed on).

mod common;

use std::time::Instant;

use common::private_node::PrivateNode;
use common::*;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use svdm_api::{DataExport, conditions, names};
use svdm_d8_contract::export::{Exports, GROUP, Generation};
use svdm_d8_contract::kubecfg::Access;
use svdm_d8_contract::transfer::{Aids, Endpoint};

const PROXY_DELAY_SECS: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_a_slow_service_path_and_the_first_download_works() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let name = format!("svdm-slowroute-{}", unique());
    let ns = create_namespace(&client, "svdm-slowroute").await;
    let dir = scratch_dir(&ns);
    let delay = (PROXY_DELAY_SECS * 1000).to_string();
    let node = PrivateNode::start(
        &client,
        &kc,
        &name,
        &dir,
        ("198.18.62", "127.0.63"),
        &["--proxy-delay-ms", &delay],
    )
    .await;
    let ctl = start_controller(
        &kc,
        &ns,
        None,
        &["--exporter-tolerations-json", &node.tolerations()],
    );
    let outcome = std::panic::AssertUnwindSafe(scenario(&client, &kc, &ns, &node))
        .catch_unwind()
        .await;
    let _ = Api::<DataExport>::namespaced(client.clone(), &ns)
        .delete("de1", &Default::default())
        .await;
    wait_gone(&client, &ns, "de1", 90).await;
    let ctl_log = log_of(&ctl);
    ctl.stop().await;
    delete_namespace(&client, &ns).await;
    let sim_log = node.log_tail(40);
    node.remove(&client).await;
    if let Err(panic) = outcome {
        eprintln!("---- simulator log (tail) ----\n{sim_log}");
        eprintln!("---- controller log ----\n{ctl_log}");
        std::panic::resume_unwind(panic);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn scenario(client: &kube::Client, kc: &str, ns: &str, node: &PrivateNode) {
    let (pv, _) = make_provisioned_pvc_of_class(client, ns, "Filesystem", &node.class).await;
    let root = volume_location(client, &pv, "Filesystem").await;
    let payload = pseudo_random(7, 200_000);
    std::fs::write(root.join("first.bin"), &payload).expect("write data");

    create_export(client, ns, "de1", ns, "1h", "PersistentVolumeClaim", "data").await;
    // From here on, only what d8 does: poll, and on Ready download at once.
    let access = Access::from_path(std::path::Path::new(kc))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let exports = Exports::new(&access, Generation::V0_33_6, GROUP, ns);
    let t0 = Instant::now();
    let ready = exports
        .wait_ready("de1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ep = std::sync::Arc::new(
        Endpoint::new(&access, &ready, false, &Aids::default()).unwrap_or_else(|e| panic!("{e}")),
    );
    let out = scratch_dir(ns).join("first.bin");
    ep.download("/first.bin", &out)
        .await
        .unwrap_or_else(|e| panic!("the first download right after Ready failed: {e}"));
    assert_eq!(std::fs::read(&out).expect("read"), payload);
    println!(
        "Ready and downloaded {:.1?} after the DataExport was created",
        t0.elapsed()
    );

    // Ready came after the route, not with the pod.
    let de = Api::<DataExport>::namespaced(client.clone(), ns)
        .get("de1")
        .await
        .expect("de");
    let ready_at = conditions::find(
        &de.status.as_ref().expect("status").conditions,
        conditions::READY,
    )
    .expect("Ready")
    .last_transition_time
    .0;
    let pods: Api<Pod> = Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let pod = pods
        .get(&svdm_controller::objects::object_name(
            &de.uid().expect("uid"),
        ))
        .await
        .expect("exporter pod");
    let pod_ready_at = pod
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time)
        .expect("pod Ready")
        .0;
    let gap = ready_at.duration_since(pod_ready_at);
    println!("exporter pod Ready at {pod_ready_at}, DataExport Ready at {ready_at} ({gap:#})");
    // Timestamps have one-second resolution.
    assert!(
        gap.as_secs() + 1 >= PROXY_DELAY_SECS,
        "Ready came {gap:#} after the pod was ready, before the Service routed to it ({PROXY_DELAY_SECS}s late)"
    );
}
