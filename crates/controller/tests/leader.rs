//! Leader election: of two replicas only the Lease holder reconciles; when it dies the other
//! takes over and finishes the work.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

async fn holder(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let Some(kc) = kubeconfig() else { return };
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let ns = create_namespace(&client, "svdm-leader").await;
    let id = ns.clone();
    let lease = "svdm-controller-test";
    let flags = [
        "--leader-election",
        "--leader-election-namespace",
        ns.as_str(),
        "--leader-election-name",
        lease,
    ];
    let a = start_controller(&kc, &id, None, &flags);
    let a_pid = a.child.id().expect("pid");
    wait_for("first replica leads", 30, || async {
        holder(&client, &ns, lease)
            .await
            .filter(|h| h.ends_with(&format!("_{a_pid}")))
    })
    .await;
    let b = start_controller(&kc, &id, None, &flags);
    let b_pid = b.child.id().expect("pid");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        holder(&client, &ns, lease)
            .await
            .is_some_and(|h| h.ends_with(&format!("_{a_pid}"))),
        "the standby must not take a live lease"
    );
    let (pv, uid) = make_bound_pvc(&client, &ns, "Filesystem").await;
    export_pvc(&client, &ns, "de1", &id).await;
    wait_handed_over(&client, &pv, 60).await;
    assert!(
        !log_of(&b).contains("protect-user-pvc done"),
        "the standby reconciled"
    );

    // The leader dies without releasing; the standby takes over after the lease expires.
    a.stop().await;
    wait_for("standby leads", 40, || async {
        holder(&client, &ns, lease)
            .await
            .filter(|h| h.ends_with(&format!("_{b_pid}")))
    })
    .await;
    delete_export_and_wait(&client, &ns, "de1", 60).await;
    assert_returned(&client, &ns, &pv, &uid, "Delete").await;
    b.stop().await;
    delete_pv(&client, &pv).await;
    delete_namespace(&client, &ns).await;
}
