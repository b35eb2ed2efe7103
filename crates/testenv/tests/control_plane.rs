//! Proof that the local control plane is the real thing the module depends on: the PV binder
//! binds, the garbage collector collects, tokens authenticate (TokenReview) and RBAC answers
//! SubjectAccessReviews. Needs `e2e/testenv.sh up` (fails in CI without it).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, Pod, ServiceAccount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use svdm_testenv::{Testenv, wait_for};

const T: Duration = Duration::from_secs(60);

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

#[tokio::test]
async fn pv_binder_binds_a_claim_to_a_matching_volume() {
    let Some(env) = Testenv::require("pv_binder_binds_a_claim_to_a_matching_volume") else {
        return;
    };
    let client = env.admin().await.expect("admin client");
    let ns = env.namespace("cp-bind").await.expect("namespace");
    // A storage class name of its own, so no other test's volume can match.
    let class = format!("manual-{}", ns.name);
    let pv_name = format!("pv-{}", ns.name);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = PersistentVolume {
        metadata: meta(&pv_name),
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity("1Gi".into()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(class.clone()),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                path: "/nonexistent".into(),
                type_: None,
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    };
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create PV");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let pvc = PersistentVolumeClaim {
        metadata: meta("data"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(class),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create PVC");

    let bound_to = wait_for("PVC to be Bound by the PV controller", T, || async {
        let pvc = pvcs.get("data").await.ok()?;
        let phase = pvc.status?.phase?;
        (phase == "Bound")
            .then(|| pvc.spec.and_then(|s| s.volume_name))
            .flatten()
    })
    .await
    .expect("bound");
    assert_eq!(bound_to, pv_name);
    let pv = pvs.get(&pv_name).await.expect("PV");
    let claim = pv
        .spec
        .and_then(|s| s.claim_ref)
        .expect("claimRef set by the binder");
    assert_eq!(claim.name.as_deref(), Some("data"));
    assert!(claim.uid.is_some(), "the binder records the claim's uid");

    pvcs.delete("data", &DeleteParams::default())
        .await
        .expect("delete PVC");
    wait_for("PV to be Released", T, || async {
        let phase = pvs.get(&pv_name).await.ok()?.status?.phase?;
        (phase == "Released").then_some(())
    })
    .await
    .expect("released");
    pvs.delete(&pv_name, &DeleteParams::default())
        .await
        .expect("delete PV");
    ns.delete().await.expect("delete namespace");
}

#[tokio::test]
async fn garbage_collector_removes_dependents_of_a_deleted_owner() {
    let Some(env) = Testenv::require("garbage_collector_removes_dependents") else {
        return;
    };
    let client = env.admin().await.expect("admin client");
    let ns = env.namespace("cp-gc").await.expect("namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("owner"),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("owner");
    let mut dependent = ConfigMap {
        metadata: meta("dependent"),
        ..ConfigMap::default()
    };
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().expect("uid"),
        ..OwnerReference::default()
    }]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("dependent");
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_for(
        "the garbage collector to delete the dependent",
        T,
        || async {
            match cms.get_opt("dependent").await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await
    .expect("dependent collected");
    ns.delete().await.expect("delete namespace");
}

#[tokio::test]
async fn tokens_authenticate_through_token_review() {
    let Some(env) = Testenv::require("tokens_authenticate_through_token_review") else {
        return;
    };
    let client = env.admin().await.expect("admin client");
    let ns = env.namespace("cp-authn").await.expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: meta("reader"),
            ..ServiceAccount::default()
        },
    )
    .await
    .expect("service account");
    let token = sas
        .create_token_request(
            "reader",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token
        .expect("token");

    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: String| {
        let reviews = reviews.clone();
        async move {
            reviews
                .create(
                    &PostParams::default(),
                    &TokenReview {
                        spec: TokenReviewSpec {
                            token,
                            ..TokenReviewSpec::default()
                        },
                        ..TokenReview::default()
                    },
                )
                .await
                .expect("token review")
                .status
                .expect("review status")
        }
    };
    let ok = review(token.clone()).await;
    assert_eq!(ok.authenticated, Some(true), "{ok:?}");
    let user = ok.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:reader", ns.name).as_str())
    );
    assert!(
        user.groups
            .unwrap_or_default()
            .iter()
            .any(|g| g == "system:serviceaccounts")
    );

    let bad = review("garbage-token".into()).await;
    assert_ne!(bad.authenticated, Some(true));

    // The token really works for requests, and an unprivileged user is refused by RBAC.
    let sa_client = env.client_with_token(&token).await.expect("sa client");
    let err = Api::<Pod>::namespaced(sa_client, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("an unbound service account may not list pods");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
    ns.delete().await.expect("delete namespace");
}

#[tokio::test]
async fn rbac_answers_subject_access_reviews_for_the_download_subresource() {
    let Some(env) = Testenv::require("rbac_answers_subject_access_reviews") else {
        return;
    };
    let client = env.admin().await.expect("admin client");
    let ns = env.namespace("cp-authz").await.expect("namespace");
    let user = "alice";
    let sars: Api<SubjectAccessReview> = Api::all(client.clone());
    let can_download = |name: &'static str| {
        let sars = sars.clone();
        let ns = ns.name.clone();
        async move {
            let sar = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.to_owned()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some("storage.deckhouse.io".into()),
                        resource: Some("dataexports".into()),
                        subresource: Some("download".into()),
                        verb: Some("get".into()),
                        namespace: Some(ns),
                        name: Some(name.into()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            sars.create(&PostParams::default(), &sar)
                .await
                .ok()?
                .status
                .map(|s| s.allowed)
        }
    };
    assert_eq!(
        can_download("mine").await,
        Some(false),
        "nothing grants it yet"
    );

    let roles: Api<Role> = Api::namespaced(client.clone(), &ns.name);
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("download-mine"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["storage.deckhouse.io".into()]),
                    resources: Some(vec!["dataexports/download".into()]),
                    resource_names: Some(vec!["mine".into()]),
                    verbs: vec!["get".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client, &ns.name)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("alice-download-mine"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "download-mine".into(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "User".into(),
                    name: user.into(),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .expect("binding");
    // RBAC reaches the authorizer through an informer: poll.
    wait_for("the binding to take effect", T, || async {
        (can_download("mine").await == Some(true)).then_some(())
    })
    .await
    .expect("allowed after binding");
    assert_eq!(
        can_download("theirs").await,
        Some(false),
        "resourceNames limit the grant to one export"
    );
    ns.delete().await.expect("delete namespace");
}

#[tokio::test]
async fn static_users_have_exactly_their_documented_rights() {
    let Some(env) = Testenv::require("static_users_have_exactly_their_documented_rights") else {
        return;
    };
    let editor = env
        .client_for(&env.editor_kubeconfig)
        .await
        .expect("editor client");
    let nobody = env
        .client_for(&env.nobody_kubeconfig)
        .await
        .expect("nobody client");
    Api::<Pod>::namespaced(editor.clone(), &env.editor_namespace)
        .list(&ListParams::default())
        .await
        .expect("the editor may list pods in its namespace");
    let denied = Api::<Pod>::namespaced(editor, "default")
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref e)) if e.code == 403),
        "{denied:?}"
    );
    let denied = Api::<Pod>::namespaced(nobody, &env.editor_namespace)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref e)) if e.code == 403),
        "{denied:?}"
    );
}
