//! Scale: N DataExports of N PVCs created at once reach Ready (or, without a simulated node, are
//! handed over), then expire (or are deleted) and every PV is returned. Prints the times (to the
//! first Ready — no reconcile waits for the others — and to all Ready) and the controller's peak
//! memory. Expiry goes through the live ttl edit: every export starts with a ttl long enough for
//! all to become Ready, then gets `ttl: 1s`. Ignored by default; run it with
//! `cargo test -p svdm-controller --test scale -- --ignored --nocapture` (N: env SVDM_SCALE_N,
//! default 300).

mod common;

use std::time::Instant;

use common::*;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use svdm_api::{DataExport, Phase, names};

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn make_pvcs(client: &Client, ns: &str, n: usize, node: bool) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let futs = (0..n).map(|i| {
        let pvcs = pvcs.clone();
        let pvs = pvs.clone();
        async move {
            let name = format!("data-{i}");
            let class = if node { "svdm-sim" } else { "svdm-test-static" };
            let mut spec = json!({
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}},
                "storageClassName": class,
                "volumeMode": "Block",
            });
            if !node {
                let pv_name = format!("{ns}-pv-{i}");
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": pv_name},
                    "spec": {
                        "capacity": {"storage": "16Mi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": class,
                        "volumeMode": "Block",
                        "csi": {"driver": "local.csi.svdm.dev", "volumeHandle": pv_name},
                        "claimRef": {"namespace": ns, "name": name},
                    }
                }))
                .expect("pv");
                pvs.create(&PostParams::default(), &pv).await.expect("pv");
                spec["volumeName"] = json!(pv_name);
            }
            let pvc: PersistentVolumeClaim =
                serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
                    .expect("pvc");
            pvcs.create(&PostParams::default(), &pvc)
                .await
                .expect("pvc");
        }
    });
    join_all(futs).await;
    wait_for("all PVCs Bound", 600, || async {
        let l = pvcs.list(&ListParams::default()).await.ok()?;
        (l.items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count()
            == n)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale benchmark; run with --ignored"]
async fn many_exports_at_once() {
    let Some(kc) = kubeconfig() else { return };
    let n: usize = std::env::var("SVDM_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let client = client(&kc).await;
    prepare_cluster(&client).await;
    let node = node_ready(&client).await;
    let ns = create_namespace(&client, "svdm-scale").await;
    let id = ns.clone();
    make_pvcs(&client, &ns, n, node).await;
    let ctl = start_controller(&kc, &id, None, &[]);
    let pid = ctl.child.id().expect("pid");

    let t0 = Instant::now();
    let futs = (0..n).map(|i| {
        let client = client.clone();
        let ns = ns.clone();
        let id = id.clone();
        async move {
            let ttl = "1h";
            create_export(
                &client,
                &ns,
                &format!("de-{i}"),
                &id,
                ttl,
                "PersistentVolumeClaim",
                &format!("data-{i}"),
            )
            .await
        }
    });
    join_all(futs).await;
    let des: Api<DataExport> = Api::namespaced(client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let exported = format!("{}=true", names::LABEL_PV_EXPORTED);
    let first_ready = std::cell::Cell::new(None);
    if node {
        wait_for("all Ready", 1800, || async {
            let l = des.list(&ListParams::default()).await.ok()?;
            let ready = l
                .items
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready))
                .count();
            if ready > 0 && first_ready.get().is_none() {
                first_ready.set(Some(t0.elapsed()));
            }
            (ready == n).then_some(())
        })
        .await;
    } else {
        wait_for("all handed over", 1800, || async {
            let l = pvs
                .list(&ListParams::default().labels(&exported))
                .await
                .ok()?;
            let done = l
                .items
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .and_then(|c| c.namespace.as_deref())
                        == Some(names::MODULE_NAMESPACE)
                })
                .count();
            (done == n).then_some(())
        })
        .await;
    }
    let up = t0.elapsed();

    let t1 = Instant::now();
    if node {
        // Nobody downloads: a ttl shortened on the live exports makes every one expire and
        // return its PV.
        let futs = (0..n).map(|i| {
            let des = des.clone();
            async move {
                des.patch(
                    &format!("de-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"ttl": "1s"}})),
                )
                .await
                .expect("shorten ttl");
            }
        });
        join_all(futs).await;
        wait_for("all Expired", 1800, || async {
            let l = des.list(&ListParams::default()).await.ok()?;
            let done = l
                .items
                .iter()
                .filter(|d| {
                    d.status.as_ref().and_then(|s| s.phase) == Some(Phase::Expired)
                        && d.finalizers().is_empty()
                })
                .count();
            (done == n).then_some(())
        })
        .await;
    } else {
        let futs = (0..n).map(|i| {
            let client = client.clone();
            let ns = ns.clone();
            async move { delete_export(&client, &ns, &format!("de-{i}")).await }
        });
        join_all(futs).await;
    }
    wait_for("all PVs returned", 1800, || async {
        let l = pvs
            .list(&ListParams::default().labels(&exported))
            .await
            .ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
    if !node {
        // Deleted exports let go of their finalizer last: wait, or the namespace would hang.
        wait_for("all DataExports gone", 600, || async {
            des.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        })
        .await;
    }
    let down = t1.elapsed();
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let first = first_ready
        .get()
        .map(|d| format!("first Ready after {:.1}s, ", d.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "scale: {n} exports ({}); {first}all up in {:.1}s, {} and returned in {:.1}s; controller peak RSS {} MiB",
        if node {
            "Ready"
        } else {
            "handed over, no node"
        },
        up.as_secs_f64(),
        if node {
            "ttl cut to 1s, all expired"
        } else {
            "deleted"
        },
        down.as_secs_f64(),
        rss / 1024
    );
    ctl.stop().await;
    if !node {
        for i in 0..n {
            delete_pv(&client, &format!("{ns}-pv-{i}")).await;
        }
    }
    delete_namespace(&client, &ns).await;
}
