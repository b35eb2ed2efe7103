//! Fault injection: the controller process exits right after each persisted step of the
//! handover and of the return (`--fault-after-step`); a restarted controller must end every run
//! with the user PVC Bound to its original PV, its reclaim policy restored and nothing left.

mod common;

use common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_handover_step_then_delete_returns_everything() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let mut covered = 0;
    for step in HANDOVER {
        let ns = create_namespace(&client, "svdm-fault").await;
        let id = ns.clone();
        let (pv, uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
        let crashing = start_controller(&kc, &id, Some(step), &[]);
        create_export(
            &client,
            &ns,
            "de1",
            &id,
            "1h",
            "PersistentVolumeClaim",
            "data",
        )
        .await;
        let code = crashing.wait_exit(90).await;
        assert_eq!(code, Some(3), "controller must stop right after {step}");
        // Restart: the handover resumes from the cluster state and completes.
        let ctl = start_controller(&kc, &id, None, &[]);
        wait_handed_over(&client, &pv, 90).await;
        delete_export(&client, &ns, "de1").await;
        wait_gone(&client, &ns, "de1", 90).await;
        assert_returned(&client, &ns, &pv, &uid, "Delete").await;
        ctl.stop().await;
        delete_pv(&client, &pv).await;
        delete_namespace(&client, &ns).await;
        covered += 1;
    }
    println!("handover crash points covered: {covered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_return_step_then_restart_returns_everything() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let mut covered = 0;
    for step in RETURN {
        let ns = create_namespace(&client, "svdm-fault").await;
        let id = ns.clone();
        let (pv, uid) = make_bound_pvc(&client, &ns, "Block").await;
        let ctl = start_controller(&kc, &id, None, &[]);
        create_export(
            &client,
            &ns,
            "de1",
            &id,
            "1h",
            "PersistentVolumeClaim",
            "data",
        )
        .await;
        wait_handed_over(&client, &pv, 90).await;
        ctl.stop().await;
        let crashing = start_controller(&kc, &id, Some(step), &[]);
        delete_export(&client, &ns, "de1").await;
        let code = crashing.wait_exit(90).await;
        assert_eq!(code, Some(3), "controller must stop right after {step}");
        let ctl = start_controller(&kc, &id, None, &[]);
        wait_gone(&client, &ns, "de1", 90).await;
        assert_returned(&client, &ns, &pv, &uid, "Delete").await;
        ctl.stop().await;
        delete_pv(&client, &pv).await;
        delete_namespace(&client, &ns).await;
        covered += 1;
    }
    println!("return crash points covered: {covered}");
}
