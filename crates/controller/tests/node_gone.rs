//! "Node gone": the exporter's node stops answering during an export, against the real control
//! plane (node lifecycle controller, PodGC, PV binder).
//!
//! The test runs its own simulated node (the `svdm-kube-sim` binary next to the controller's):
//! a private name, a NoSchedule taint only the test controller's exporter pods tolerate,
//! `--pinned-only` with a StorageClass pinned to it, its own prefixes (198.18.60.x pods,
//! 127.0.61.x services) and its own block in /etc/hosts, so it never meets the shared `sim-node-1` or
//! the kube-sim test's nodes. It checks that
//! 1. while the node is NotReady the DataExport says so (Ready=False, ExporterFailed, naming
//!    the node);
//! 2. deleting the DataExport then does not give the PV back while the exporter pod (which may
//!    still mount it) exists, and says what it waits for (status and a Warning Event);
//! 3. once the Node object is deleted the return completes: the user PVC is Bound to its PV,
//!    the reclaim policy is restored, nothing of the module is left, the data is unchanged.

mod common;

use std::time::{Duration, Instant};

use common::private_node::PrivateNode;
use common::*;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use svdm_api::{DataExport, Phase, conditions, names};

fn ready_condition(de: &DataExport) -> Option<(String, String, String)> {
    let st = de.status.as_ref()?;
    let c = conditions::find(&st.conditions, conditions::READY)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_on_a_lost_node_is_reported_and_returned_once_the_node_is_deleted() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let started = Instant::now();
    let name = format!("svdm-nodegone-{}", unique());
    let ns = create_namespace(&client, "svdm-nodegone").await;
    let dir = scratch_dir(&ns);
    let mut node =
        PrivateNode::start(&client, &kc, &name, &dir, ("198.18.60", "127.0.61"), &[]).await;
    let ctl = start_controller(
        &kc,
        &ns,
        None,
        &["--exporter-tolerations-json", &node.tolerations()],
    );

    let outcome = std::panic::AssertUnwindSafe(scenario(&client, &ns, &ctl, &mut node))
        .catch_unwind()
        .await;

    // Leave nothing behind, whatever happened: with the node and its Node object gone, the
    // controller can finish any return still under way.
    node.stop().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes.delete(&name, &DeleteParams::default()).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let _ = des.delete("de1", &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && matches!(des.get_opt("de1").await, Ok(Some(_))) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ctl_log = log_of(&ctl);
    ctl.stop().await;
    delete_namespace(&client, &ns).await;
    let sim_log = node.log_tail(40);
    node.remove(&client).await;
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!("node-gone scenario passed in {:.0?}", started.elapsed());
        }
        Err(panic) => {
            eprintln!("---- simulator log (tail) ----\n{sim_log}");
            eprintln!("---- controller log ----\n{ctl_log}");
            std::panic::resume_unwind(panic);
        }
    }
}

async fn scenario(client: &Client, ns: &str, ctl: &Controller, private: &mut PrivateNode) {
    let nodes: Api<Node> = Api::all(client.clone());
    let (node, class) = (private.name.clone(), private.class.clone());
    let node = node.as_str();

    // A volume on the private node with data on it.
    let (pv, user_uid) = make_provisioned_pvc_of_class(client, ns, "Filesystem", &class).await;
    let before = write_volume_data(client, &pv, "Filesystem").await;

    create_export(client, ns, "de1", ns, "1h", "PersistentVolumeClaim", "data").await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), ns);
    wait_for("export Ready on the private node", 90, || async {
        let de = des.get("de1").await.ok()?;
        (de.status?.phase == Some(Phase::Ready)).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), names::MODULE_NAMESPACE);
    let pod_name = svdm_controller::objects::object_name(
        &des.get("de1").await.expect("de").uid().expect("uid"),
    );
    let pod = pods.get(&pod_name).await.expect("exporter pod");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node),
        "the exporter must run on the private node"
    );

    // 1. The node goes away: the export reports it, naming the node.
    private.stop().await;
    let t0 = Instant::now();
    let (_, reason, message) = wait_for("ExporterFailed naming the lost node", 120, || async {
        let de = des.get("de1").await.ok()?;
        let (status, reason, message) = ready_condition(&de)?;
        (status == "False" && message.contains(&format!("is on node {node} which is not ready")))
            .then_some((status, reason, message))
    })
    .await;
    assert_eq!(reason, "ExporterFailed", "{message}");
    println!(
        "lost node reported {:.0?} after the simulator stopped: {message}",
        t0.elapsed()
    );

    // 2. Delete the DataExport while the node is gone: the return waits and says why.
    delete_export(client, ns, "de1").await;
    let (phase, message) = wait_for("deletion waiting for the lost node", 60, || async {
        let de = des.get("de1").await.ok()?;
        let phase = de.status.as_ref()?.phase;
        let (_, _, message) = ready_condition(&de)?;
        message
            .contains(&format!("on unreachable node {node} to terminate"))
            .then_some((phase, message))
    })
    .await;
    assert_eq!(phase, Some(Phase::Terminating));
    assert!(
        message.contains("delete the Node if it is gone for good"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for("a Warning Event about the lost node", 30, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("de1")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains(&format!("unreachable node {node}")))
            })
            .then_some(())
    })
    .await;
    // Held for a while: the PV stays with the export and the pod is still there.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let hold = Instant::now() + Duration::from_secs(10);
    while Instant::now() < hold {
        let p = pvs.get(&pv).await.expect("pv");
        let claim_ns = p
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.namespace.clone());
        assert_eq!(
            claim_ns.as_deref(),
            Some(names::MODULE_NAMESPACE),
            "the PV went back while the exporter pod may still mount it"
        );
        assert_eq!(
            p.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
            Some("Retain")
        );
        let pod = pods.get_opt(&pod_name).await.expect("get pod");
        assert!(
            pod.is_some(),
            "the exporter pod on the lost node was removed while its Node still exists"
        );
        assert!(des.get_opt("de1").await.expect("get de").is_some());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // 3. The Node object is deleted (the machine is gone for good): the return completes.
    let t1 = Instant::now();
    nodes
        .delete(node, &DeleteParams::default())
        .await
        .expect("delete node");
    wait_gone(client, ns, "de1", 90).await;
    println!("returned {:.0?} after the Node was deleted", t1.elapsed());
    assert_returned(client, ns, &pv, &user_uid, "Delete").await;
    assert!(pods.get_opt(&pod_name).await.expect("get pod").is_none());
    let after = volume_checksum(client, &pv, "Filesystem").await;
    assert_eq!(after, before, "data changed");
    let log = log_of(ctl);
    assert!(
        !log.contains("inconsistent"),
        "controller reported an inconsistency:\n{log}"
    );
}
