//! Fault injection: the controller process exits right after each persisted step of the
//! handover and of the return (`--fault-after-step`); a restarted controller must end every run
//! with the user PVC Bound to its original PV, its reclaim policy restored, nothing left, and
//! the volume's data unchanged (sha256 before the export and after the return). The volumes are
//! provisioned by the simulated node, so the exporter really mounts them; Filesystem and Block
//! alternate so both modes go through the handover and the return.

mod common;

use common::*;
use kube::Client;

const HANDOVER: &[&str] = &[
    "protect-user-pvc",
    "record-pv",
    "create-export-pvc",
    "bind-pv-to-export-pvc",
    "serve",
];
const RETURN: &[&str] = &[
    "delete-exporter-objects",
    "delete-export-pvc",
    "rebind-pv-to-user-pvc",
    "restore-reclaim-policy",
    "unprotect-user-pvc",
    "clear-pv-record",
];

#[test]
fn crash_points_cover_every_persisting_step() {
    let mut all: Vec<&str> = HANDOVER.to_vec();
    all.extend_from_slice(RETURN);
    assert_eq!(all, svdm_controller::handover::PERSISTING_STEPS);
}

/// Volume mode of the i-th crash point.
fn mode(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "Filesystem"
    } else {
        "Block"
    }
}

/// The simulated node and its StorageClass are needed for real data on the volumes.
async fn sim_storage_available(client: &Client) -> bool {
    let classes: kube::Api<k8s_openapi::api::storage::v1::StorageClass> =
        kube::Api::all(client.clone());
    matches!(classes.get_opt("svdm-sim").await, Ok(Some(_))) && node_ready(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_handover_step_then_delete_returns_everything() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !sim_storage_available(&client).await {
        eprintln!("note: no simulated node/CSI driver (e2e/stack.sh up); fault test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let mut covered = 0;
    for (i, step) in HANDOVER.iter().enumerate() {
        let ns = create_namespace(&client, "svdm-fault").await;
        let id = ns.clone();
        let (pv, uid) = make_provisioned_pvc(&client, &ns, mode(i)).await;
        let before = write_volume_data(&client, &pv, mode(i)).await;
        let crashing = start_controller(&kc, &id, Some(step), &[]);
        export_pvc(&client, &ns, "de1", &id).await;
        let code = crashing.wait_exit(90).await;
        assert_eq!(code, Some(3), "controller must stop right after {step}");
        // Restart: the handover resumes from the cluster state and completes.
        let ctl = start_controller(&kc, &id, None, &[]);
        wait_handed_over(&client, &pv, 90).await;
        delete_export_and_wait(&client, &ns, "de1", 90).await;
        assert_returned(&client, &ns, &pv, &uid, "Delete").await;
        let after = volume_checksum(&client, &pv, mode(i)).await;
        assert_eq!(
            after,
            before,
            "{} data changed across a crash after {step}",
            mode(i)
        );
        ctl.stop().await;
        // The PVC goes with the namespace; reclaim Delete lets the simulator remove the volume.
        delete_namespace(&client, &ns).await;
        covered += 1;
    }
    println!("handover crash points covered: {covered} (data sha256 unchanged in each)");
    assert_eq!(covered, HANDOVER.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_return_step_then_restart_returns_everything() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    if !sim_storage_available(&client).await {
        eprintln!("note: no simulated node/CSI driver (e2e/stack.sh up); fault test skipped");
        return;
    }
    prepare_cluster(&client).await;
    let mut covered = 0;
    for (i, step) in RETURN.iter().enumerate() {
        let ns = create_namespace(&client, "svdm-fault").await;
        let id = ns.clone();
        let (pv, uid) = make_provisioned_pvc(&client, &ns, mode(i + 1)).await;
        let before = write_volume_data(&client, &pv, mode(i + 1)).await;
        let ctl = start_controller(&kc, &id, None, &[]);
        export_pvc(&client, &ns, "de1", &id).await;
        wait_handed_over(&client, &pv, 90).await;
        ctl.stop().await;
        let crashing = start_controller(&kc, &id, Some(step), &[]);
        delete_export(&client, &ns, "de1").await;
        let code = crashing.wait_exit(90).await;
        assert_eq!(code, Some(3), "controller must stop right after {step}");
        let ctl = start_controller(&kc, &id, None, &[]);
        wait_gone(&client, &ns, "de1", 90).await;
        assert_returned(&client, &ns, &pv, &uid, "Delete").await;
        let after = volume_checksum(&client, &pv, mode(i + 1)).await;
        assert_eq!(
            after,
            before,
            "{} data changed across a crash after {step}",
            mode(i + 1)
        );
        ctl.stop().await;
        delete_namespace(&client, &ns).await;
        covered += 1;
    }
    println!("return crash points covered: {covered} (data sha256 unchanged in each)");
    assert_eq!(covered, RETURN.len());
}
