use super::*;
use serde_json::json;

const LIMITS: Limits = Limits {
    default_ttl: Duration::from_secs(120),
    max_ttl: Duration::from_secs(3600),
    expired_retention: Duration::from_secs(600),
};

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A DataExport with the given finalizer, deletion, phase (and Ready condition since t=100),
/// generation and observed generation.
fn de(
    finalizer: bool,
    deleting: bool,
    phase: Option<&str>,
    ttl: &str,
    kind: &str,
    generations: (i64, i64),
) -> DataExport {
    let mut v = json!({
        "apiVersion": "storage.deckhouse.io/v1alpha1", "kind": "DataExport",
        "metadata": {"name": "e", "namespace": "ns", "uid": "u", "generation": generations.0},
        "spec": {"ttl": ttl, "publish": false, "targetRef": {"kind": kind, "name": "t"}},
    });
    if finalizer {
        v["metadata"]["finalizers"] = json!([names::FINALIZER_DATAEXPORT]);
    }
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    if let Some(p) = phase {
        v["status"] = json!({
            "phase": p,
            "observedGeneration": generations.1,
            "conditions": [{"type": "Ready", "status": if p == "Ready" {"True"} else {"False"},
                            "reason": if p == "Expired" {"Expired"} else {"Pending"}, "message": "",
                            "lastTransitionTime": "1970-01-01T00:01:40Z"}],
        });
        if p == "Expired" {
            v["status"]["conditions"]
                .as_array_mut()
                .expect("conditions")
                .push(
                    json!({"type": "Expired", "status": "True", "reason": "Expired", "message": "",
                             "lastTransitionTime": "1970-01-01T00:01:40Z"}),
                );
        }
    }
    serde_json::from_value(v).expect("valid DataExport")
}

const PVC: &str = "PersistentVolumeClaim";
const VS: &str = "VolumeSnapshot";

#[test]
fn the_plan_of_each_situation() {
    let deleting_pvc = Top {
        user_pvc_deleting: true,
    };
    let quiet = Top::default();
    let cases: Vec<(&str, DataExport, &Top, Plan)> = vec![
        (
            "deleted, held: Terminating first",
            de(true, true, Some("Ready"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::Release {
                show_terminating: true,
            },
        ),
        (
            "deleted, already Terminating",
            de(true, true, Some("Terminating"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::Release {
                show_terminating: false,
            },
        ),
        (
            "deleted, nothing held",
            de(false, true, Some("Ready"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::Forget,
        ),
        (
            "deleted wins over a deleting PVC",
            de(true, true, Some("Ready"), "5m", PVC, (1, 1)),
            &deleting_pvc,
            Plan::Release {
                show_terminating: true,
            },
        ),
        (
            "expiring: return, then Expired",
            de(true, false, Some("Expiring"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::FinishExpiry,
        ),
        (
            "expiring without finalizer (a crash after dropping it): still finish",
            de(false, false, Some("Expiring"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::FinishExpiry,
        ),
        (
            "expired: deleted after the retention",
            de(false, false, Some("Expired"), "5m", PVC, (1, 1)),
            &quiet,
            Plan::Settle {
                delete_at: Some(at(700)),
            },
        ),
        (
            "failed for this generation",
            de(true, false, Some("Failed"), "5m", PVC, (2, 2)),
            &quiet,
            Plan::Settle { delete_at: None },
        ),
        (
            "failed for an older generation: tried again",
            de(true, false, Some("Failed"), "5m", PVC, (3, 2)),
            &quiet,
            Plan::Export {
                ttl: Duration::from_secs(300),
            },
        ),
        (
            "new: the finalizer first",
            de(false, false, None, "5m", PVC, (1, 0)),
            &quiet,
            Plan::AddFinalizer,
        ),
        (
            "a ttl that does not parse",
            de(true, false, Some("Pending"), "5 minutes", PVC, (1, 1)),
            &quiet,
            Plan::Fail {
                reason: reason::VALIDATION_FAILED,
                message: status::effective_ttl(
                    Some("5 minutes"),
                    LIMITS.default_ttl,
                    LIMITS.max_ttl,
                )
                .expect_err("invalid")
                .to_string(),
            },
        ),
        (
            "the user deletes the PVC",
            de(true, false, Some("Ready"), "5m", PVC, (1, 1)),
            &deleting_pvc,
            Plan::ReturnForDeletedPvc,
        ),
        (
            "a snapshot export does not follow a PVC's deletion",
            de(true, false, Some("Ready"), "5m", VS, (1, 1)),
            &deleting_pvc,
            Plan::Export {
                ttl: Duration::from_secs(300),
            },
        ),
        (
            "ttl capped at the maximum",
            de(true, false, Some("Ready"), "48h", PVC, (1, 1)),
            &quiet,
            Plan::Export {
                ttl: LIMITS.max_ttl,
            },
        ),
        (
            "no ttl: the default",
            de(true, false, Some("Pending"), "", PVC, (1, 1)),
            &quiet,
            Plan::Export {
                ttl: LIMITS.default_ttl,
            },
        ),
    ];
    for (what, de, top, want) in cases {
        assert_eq!(decide(&de, top, &LIMITS), want, "{what}");
    }
}

fn ready_status(since: i64, reason_: &str, ready: bool) -> DataExportStatus {
    serde_json::from_value(json!({
        "phase": if ready { "Ready" } else { "Pending" },
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "reason": reason_,
                        "message": "", "lastTransitionTime": at(since).to_string()}],
    }))
    .expect("status")
}

fn exporter() -> Exporter {
    Exporter {
        pod_ready: true,
        pod_problem: None,
        route: Route::Ok,
        last_access: None,
        publish: Publish::Off,
    }
}

const TTL: Duration = Duration::from_secs(120);

#[test]
fn serving_decisions() {
    let pending = ready_status(100, reason::PENDING, false);
    let ready = ready_status(100, reason::SERVER_READY, true);

    // The pod first.
    let mut e = exporter();
    e.pod_ready = false;
    assert!(matches!(
        decide_serving(Some(&pending), &e, TTL, None, at(150)),
        ServePlan::Wait { outcome: Outcome::Pending { reason: reason::PENDING, .. }, retry } if retry == Duration::from_secs(5)
    ));
    e.pod_problem = Some("CrashLoopBackOff".into());
    assert!(matches!(
        decide_serving(Some(&pending), &e, TTL, None, at(150)),
        ServePlan::Wait {
            outcome: Outcome::Pending {
                reason: reason::EXPORTER_FAILED,
                ..
            },
            ..
        }
    ));
    // Then the route: not Ready while the client's path does not work.
    let mut e = exporter();
    e.route = Route::Waiting("no endpoint".into());
    assert_eq!(
        decide_serving(Some(&pending), &e, TTL, None, at(150)),
        ServePlan::Wait {
            outcome: Outcome::Pending {
                reason: reason::PENDING,
                message: "no endpoint".into()
            },
            retry: Duration::from_secs(1)
        }
    );
    // Becoming Ready: the ttl counts from now, the next look at most after the resync.
    assert_eq!(
        decide_serving(Some(&pending), &exporter(), TTL, None, at(150)),
        ServePlan::Show {
            outcome: Outcome::Ready {
                message: "the exporter is serving the data".into()
            },
            public_url: false,
            expires: at(270),
            next: RESYNC,
        }
    );
    // Serving: the route is not asked again; the ttl counts from the last access, never from
    // before Ready.
    let mut e = exporter();
    e.route = Route::Unchecked;
    e.last_access = Some(at(50));
    assert!(matches!(
        decide_serving(Some(&ready), &e, TTL, None, at(200)),
        ServePlan::Show { expires, next, .. } if expires == at(220) && next == Duration::from_secs(20)
    ));
    e.last_access = Some(at(210));
    assert!(matches!(
        decide_serving(Some(&ready), &e, TTL, None, at(300)),
        ServePlan::Show { expires, .. } if expires == at(330)
    ));
    assert_eq!(
        decide_serving(Some(&ready), &e, TTL, None, at(330)),
        ServePlan::Expire { last: at(210) }
    );
    // Not serving yet: never expired, whatever the clock says.
    assert!(matches!(
        decide_serving(Some(&pending), &exporter(), TTL, None, at(100_000)),
        ServePlan::Show { .. }
    ));
}

#[test]
fn publishing_decides_ready() {
    let ready = ready_status(100, reason::SERVER_READY, true);
    let refused = ready_status(100, reason::PUBLISH_FAILED, false);
    let mut e = exporter();
    e.route = Route::Unchecked;
    e.publish = Publish::Failed("no public host".into());
    assert!(matches!(
        decide_serving(Some(&ready), &e, TTL, None, at(150)),
        ServePlan::Show { outcome: Outcome::Pending { reason: reason::PUBLISH_FAILED, .. }, public_url: false, next, .. }
            if next == PUBLISH_RETRY
    ));
    // Refused publishing still serves in the cluster: its idle clock runs and it expires.
    assert!(matches!(
        decide_serving(Some(&refused), &e, TTL, None, at(1000)),
        ServePlan::Expire { .. }
    ));
    e.publish = Publish::Admitted;
    assert!(matches!(
        decide_serving(Some(&ready), &e, TTL, Some("data.example.com"), at(150)),
        ServePlan::Show {
            outcome: Outcome::Ready { .. },
            public_url: true,
            ..
        }
    ));
    // Admitted but no host (settings changed under it): not published.
    assert!(matches!(
        decide_serving(Some(&ready), &e, TTL, None, at(150)),
        ServePlan::Show {
            public_url: false,
            ..
        }
    ));
}

#[test]
fn the_route_is_checked_only_on_the_way_to_ready() {
    let pending = ready_status(100, reason::PENDING, false);
    let ready = ready_status(100, reason::SERVER_READY, true);
    let refused = ready_status(100, reason::PUBLISH_FAILED, false);
    assert!(needs_route_check(None, true));
    assert!(needs_route_check(Some(&pending), true));
    assert!(!needs_route_check(Some(&pending), false));
    assert!(!needs_route_check(Some(&ready), true));
    assert!(!needs_route_check(Some(&refused), true));
}
