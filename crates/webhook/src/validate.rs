//! Admission decisions for DataExports, free of I/O.
//!
//! The server turns an AdmissionRequest into a [`Review`], asks [`cluster_query`] which target the
//! decision depends on, lets the facts layer gather a [`ClusterView`] for it, and calls
//! [`validate`]. Everything a decision depends on is in those arguments, so every rule is tested
//! here without a cluster or HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use svdm_api::names;
use svdm_api::{TargetKind, ttl};

/// Module settings the rules depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// ttl applied when `spec.ttl` is omitted.
    pub default_ttl: Duration,
    /// Largest ttl a user may ask for.
    pub max_ttl: Duration,
    /// Whether publishing is configured (a public host is set).
    pub publish_configured: bool,
}

/// The admission operation, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// What the rules need from an AdmissionRequest.
#[derive(Clone, Debug)]
pub struct Review {
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub sub_resource: Option<String>,
    /// The object as the API server would persist it (absent on DELETE).
    pub object: Option<Value>,
    /// The stored object (UPDATE and DELETE).
    pub old_object: Option<Value>,
}

/// The outcome of a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why it was denied (empty when allowed).
    pub message: String,
    /// Admission warnings shown to the user (kubectl prints them as `Warning: …`).
    pub warnings: Vec<String>,
    /// A short PascalCase reason for logs.
    pub reason: &'static str,
}

impl Decision {
    fn allow(reason: &'static str, warnings: Vec<String>) -> Self {
        Decision {
            allowed: true,
            message: String::new(),
            warnings,
            reason,
        }
    }

    fn deny(reason: &'static str, message: impl Into<String>, warnings: Vec<String>) -> Self {
        Decision {
            allowed: false,
            message: message.into(),
            warnings,
            reason,
        }
    }
}

/// A lookup of one object whose absence matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// The cluster could not be asked (timeout, API error); the webhook fails closed.
    Failed(String),
}

/// What the rules need to know about the target PVC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvcFacts {
    pub name: String,
    pub phase: Option<String>,
    pub volume_name: Option<String>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
    /// The DataExport recorded on the PVC by the controller (owner annotations), if any.
    pub owner_namespace: Option<String>,
    pub owner_name: Option<String>,
}

/// A pod in the target's namespace and the claims it mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    pub phase: Option<String>,
    /// Names of the PVCs the pod uses (including generic ephemeral volumes' `<pod>-<volume>`).
    pub claims: Vec<String>,
}

/// A PersistentVolume the module has taken over (labelled exported), with its labels and
/// annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Another DataExport in the target's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFacts {
    pub name: String,
    pub target_kind: String,
    pub target_name: String,
    pub phase: Option<String>,
    pub expired: bool,
    pub deleting: bool,
}

/// What the rules need to know about a target VolumeSnapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub name: String,
    pub ready_to_use: Option<bool>,
    pub error: Option<String>,
    pub deleting: bool,
}

/// The cluster state one review is decided against, gathered by the facts layer for the target
/// named by [`cluster_query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub pvc: Lookup<PvcFacts>,
    pub snapshot: Lookup<SnapshotFacts>,
    /// Pods in the namespace (any phase; the rules skip finished ones).
    pub pods: Vec<PodFacts>,
    /// DataExports in the namespace.
    pub exports: Vec<ExportFacts>,
    /// PVs labelled exported (any namespace).
    pub exported_pvs: Vec<PvFacts>,
}

impl Default for ClusterView {
    fn default() -> Self {
        ClusterView {
            pvc: Lookup::NotFound,
            snapshot: Lookup::NotFound,
            pods: Vec::new(),
            exports: Vec::new(),
            exported_pvs: Vec::new(),
        }
    }
}

/// The cluster object a decision depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetQuery {
    pub namespace: String,
    pub kind: TargetKind,
    pub name: String,
}

/// The fields of a DataExport the rules read, taken leniently from JSON so an odd object gets a
/// message instead of a parse error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ExportSpec {
    deleting: bool,
    has_target_ref: bool,
    kind: Option<String>,
    name: Option<String>,
    group: Option<String>,
    ttl: Option<Value>,
    publish: bool,
}

impl ExportSpec {
    fn from_object(obj: &Value) -> Self {
        let spec = obj.get("spec");
        let target = spec.and_then(|s| s.get("targetRef"));
        let str_of = |v: Option<&Value>, key: &str| {
            v.and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        ExportSpec {
            deleting: obj
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null()),
            has_target_ref: target.is_some_and(Value::is_object),
            kind: str_of(target, "kind"),
            name: str_of(target, "name"),
            group: str_of(target, "group"),
            ttl: spec
                .and_then(|s| s.get("ttl"))
                .filter(|v| !v.is_null())
                .cloned(),
            publish: spec
                .and_then(|s| s.get("publish"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// The target with the group normalised (absent = the kind's own group), for comparison.
    fn normalized_target(&self) -> (Option<&str>, Option<&str>, String) {
        let kind = self.kind.as_deref();
        let group = match (self.group.as_deref(), parse_kind(kind)) {
            (Some(g), _) => g.to_owned(),
            (None, Some(k)) => k.group().to_owned(),
            (None, None) => String::new(),
        };
        (kind, self.name.as_deref(), group)
    }

    fn describe_target(&self) -> String {
        format!(
            "{}/{}",
            self.kind.as_deref().unwrap_or("<no kind>"),
            self.name.as_deref().unwrap_or("<no name>")
        )
    }
}

fn parse_kind(kind: Option<&str>) -> Option<TargetKind> {
    match kind? {
        "PersistentVolumeClaim" => Some(TargetKind::PersistentVolumeClaim),
        "VolumeSnapshot" => Some(TargetKind::VolumeSnapshot),
        _ => None,
    }
}

/// Which target the cluster must be asked about, if the decision needs the cluster at all.
/// Only a CREATE that passes the checks needing no cluster does; everything else is decided from
/// the request alone, so a bad request costs no API call.
pub fn cluster_query(settings: &Settings, review: &Review) -> Option<TargetQuery> {
    if review.operation != Operation::Create
        || review.sub_resource.is_some()
        || review.namespace == names::MODULE_NAMESPACE
    {
        return None;
    }
    let spec = ExportSpec::from_object(review.object.as_ref()?);
    let kind = check_target_ref(&spec).ok()?;
    check_ttl(settings, spec.ttl.as_ref(), &mut Vec::new()).ok()?;
    Some(TargetQuery {
        namespace: review.namespace.clone(),
        kind,
        name: spec.name.unwrap_or_default(),
    })
}

/// Decides a review. `view` is the cluster state for [`cluster_query`]'s target, or `None` when it
/// could not be gathered (a CREATE is then denied: the webhook fails closed).
pub fn validate(settings: &Settings, review: &Review, view: Option<&ClusterView>) -> Decision {
    match review.operation {
        Operation::Delete | Operation::Connect => Decision::allow("NotValidated", Vec::new()),
        _ if review.sub_resource.is_some() => Decision::allow("Subresource", Vec::new()),
        Operation::Create => validate_create(settings, review, view),
        Operation::Update => validate_update(settings, review),
    }
}

fn validate_create(settings: &Settings, review: &Review, view: Option<&ClusterView>) -> Decision {
    let Some(obj) = review.object.as_ref() else {
        return Decision::deny(
            "NoObject",
            "the admission request carries no object",
            Vec::new(),
        );
    };
    let spec = ExportSpec::from_object(obj);
    let mut warnings = Vec::new();

    if review.namespace == names::MODULE_NAMESPACE {
        return Decision::deny(
            "ModuleNamespace",
            format!(
                "DataExports cannot be created in {}, the module's own namespace; create it in the namespace of the PVC or VolumeSnapshot",
                names::MODULE_NAMESPACE
            ),
            warnings,
        );
    }

    let kind = match check_target_ref(&spec) {
        Ok(kind) => kind,
        Err(d) => return d,
    };
    let target_name = spec.name.clone().unwrap_or_default();

    if let Err(message) = check_ttl(settings, spec.ttl.as_ref(), &mut warnings) {
        return Decision::deny("InvalidTTL", message, warnings);
    }
    if spec.publish && !settings.publish_configured {
        warnings.push(publish_warning());
    }

    let Some(view) = view else {
        return Decision::deny(
            "ClusterStateUnavailable",
            "the DataExport webhook has not loaded the cluster state yet; retry in a few seconds",
            warnings,
        );
    };

    let result = match kind {
        TargetKind::PersistentVolumeClaim => {
            check_pvc(&review.namespace, &review.name, &target_name, view)
        }
        TargetKind::VolumeSnapshot => {
            check_snapshot(&review.namespace, &target_name, view).map(|()| None)
        }
    };
    match result {
        Ok(None) => Decision::allow("Valid", warnings),
        Ok(Some(warning)) => {
            warnings.push(warning);
            Decision::allow("RecreatedWhileReturning", warnings)
        }
        Err((reason, message)) => Decision::deny(reason, message, warnings),
    }
}

fn validate_update(settings: &Settings, review: &Review) -> Decision {
    let Some(obj) = review.object.as_ref() else {
        return Decision::allow("NoObject", Vec::new());
    };
    let new = ExportSpec::from_object(obj);
    let old = review.old_object.as_ref().map(ExportSpec::from_object);
    // The controller's own writes while an export is torn down (finalizer removal) must never be
    // blocked, whatever else the object looks like.
    if new.deleting || old.as_ref().is_some_and(|o| o.deleting) {
        return Decision::allow("BeingDeleted", Vec::new());
    }
    let mut warnings = Vec::new();
    let Some(old) = old else {
        // Without the stored object immutability cannot be judged; the CRD rule still holds.
        return Decision::allow("NoOldObject", warnings);
    };

    if new.normalized_target() != old.normalized_target() {
        return Decision::deny(
            "TargetRefImmutable",
            format!(
                "spec.targetRef is immutable (it is {}, the update sets {}); delete this DataExport and create a new one",
                old.describe_target(),
                new.describe_target()
            ),
            warnings,
        );
    }
    if new.ttl != old.ttl
        && let Err(message) = check_ttl(settings, new.ttl.as_ref(), &mut warnings)
    {
        return Decision::deny("InvalidTTL", message, warnings);
    }
    if new.publish && !old.publish && !settings.publish_configured {
        warnings.push(publish_warning());
    }
    Decision::allow("Valid", warnings)
}

fn publish_warning() -> String {
    "publishing is not configured in the module settings; the export will not get a publicURL"
        .to_owned()
}

fn check_target_ref(spec: &ExportSpec) -> Result<TargetKind, Decision> {
    let deny = |reason, msg: String| Err(Decision::deny(reason, msg, Vec::new()));
    if !spec.has_target_ref {
        return deny(
            "MissingTargetRef",
            "spec.targetRef is required: set kind (PersistentVolumeClaim or VolumeSnapshot) and name".to_owned(),
        );
    }
    let Some(kind) = parse_kind(spec.kind.as_deref()) else {
        return deny(
            "UnsupportedKind",
            format!(
                "spec.targetRef.kind {:?} is not supported; use PersistentVolumeClaim or VolumeSnapshot",
                spec.kind.as_deref().unwrap_or("")
            ),
        );
    };
    if let Some(group) = spec.group.as_deref()
        && group != kind.group()
    {
        let expected = match kind {
            TargetKind::PersistentVolumeClaim => "\"\" (the core group) or omit it".to_owned(),
            TargetKind::VolumeSnapshot => format!("{} or omit it", kind.group()),
        };
        return deny(
            "GroupMismatch",
            format!(
                "spec.targetRef.group {group:?} does not match kind {}; use {expected}",
                kind.as_str()
            ),
        );
    }
    if spec.name.as_deref().unwrap_or("").is_empty() {
        return deny(
            "MissingTargetName",
            format!(
                "spec.targetRef.name is required: the name of the {} to export",
                kind.as_str()
            ),
        );
    }
    Ok(kind)
}

/// Checks `spec.ttl` (when set) and warns when it is omitted.
fn check_ttl(
    settings: &Settings,
    value: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Some(value) = value else {
        warnings.push(format!(
            "spec.ttl is not set; the module default of {} applies (the export ends after {} without use)",
            ttl::format(settings.default_ttl),
            ttl::format(settings.default_ttl)
        ));
        return Ok(());
    };
    let Some(s) = value.as_str() else {
        return Err(format!(
            "spec.ttl must be a string such as 30s, 5m or 1h30m, not {value}"
        ));
    };
    let d = ttl::parse(s).map_err(|e| format!("spec.{e}"))?;
    if d > settings.max_ttl {
        return Err(format!(
            "spec.ttl {s} exceeds the maximum of {} allowed by the module settings; use a shorter ttl",
            ttl::format(settings.max_ttl)
        ));
    }
    Ok(())
}

type Denial = (&'static str, String);

fn check_pvc(
    namespace: &str,
    own_name: &str,
    pvc_name: &str,
    view: &ClusterView,
) -> Result<Option<String>, Denial> {
    // Another live export of the same PVC is the most useful thing to say, and it also explains a
    // PVC that shows Lost because its volume is handed over.
    if let Some(other) = view.exports.iter().find(|e| {
        e.name != own_name
            && e.target_kind == TargetKind::PersistentVolumeClaim.as_str()
            && e.target_name == pvc_name
            && !e.expired
            && !e.deleting
    }) {
        let phase = other
            .phase
            .as_deref()
            .map(|p| format!(" (phase {p})"))
            .unwrap_or_default();
        return Err((
            "AlreadyExported",
            format!(
                "PVC {pvc_name} is already exported by DataExport {}{phase}; use that export, or delete it and wait until the volume is returned",
                other.name
            ),
        ));
    }

    let pvc = match &view.pvc {
        Lookup::Found(pvc) => pvc,
        Lookup::NotFound => {
            return Err((
                "TargetNotFound",
                format!(
                    "PersistentVolumeClaim {pvc_name} not found in namespace {namespace}; check spec.targetRef.name"
                ),
            ));
        }
        Lookup::Failed(err) => {
            return Err((
                "ClusterStateUnavailable",
                format!(
                    "cannot check PersistentVolumeClaim {pvc_name}: {err}; retry in a few seconds"
                ),
            ));
        }
    };

    let held_by = view.exported_pvs.iter().find(|pv| {
        pv.labels.get(names::LABEL_PV_EXPORTED).map(String::as_str) == Some("true")
            && (pvc.volume_name.as_deref() == Some(pv.name.as_str())
                || (pv
                    .annotations
                    .get(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE)
                    .map(String::as_str)
                    == Some(namespace)
                    && pv
                        .annotations
                        .get(names::ANN_PV_ORIGINAL_CLAIM_NAME)
                        .map(String::as_str)
                        == Some(pvc_name)))
    });
    if let Some(pv) = held_by {
        // `d8` deletes an expired DataExport and at once recreates it under the same name, maybe
        // before the controller has handed the volume back. That is not a second export: let it
        // wait for the volume instead of failing the client.
        if pv
            .annotations
            .get(names::ANN_OWNER_NAMESPACE)
            .map(String::as_str)
            == Some(namespace)
            && pv
                .annotations
                .get(names::ANN_OWNER_NAME)
                .map(String::as_str)
                == Some(own_name)
        {
            return Ok(Some(format!(
                "the volume of PVC {pvc_name} is still being returned from the previous DataExport {own_name}; this export starts once it is back"
            )));
        }
        let owner = match (
            pv.annotations.get(names::ANN_OWNER_NAMESPACE),
            pv.annotations.get(names::ANN_OWNER_NAME),
        ) {
            (Some(ns), Some(name)) if ns == namespace => format!("DataExport {name}"),
            (Some(ns), Some(name)) => format!("DataExport {ns}/{name}"),
            _ => "another DataExport".to_owned(),
        };
        return Err((
            "AlreadyExported",
            format!(
                "the volume {} of PVC {pvc_name} is still held by {owner} (exported or being returned); wait until it is returned to the PVC, then retry",
                pv.name
            ),
        ));
    }
    if pvc
        .finalizers
        .iter()
        .any(|f| f == names::FINALIZER_PVC_PROTECTION)
    {
        let owner = match (pvc.owner_namespace.as_deref(), pvc.owner_name.as_deref()) {
            (Some(ns), Some(name)) if ns == namespace && name == own_name => {
                return Ok(Some(format!(
                    "the volume of PVC {pvc_name} is still being returned from the previous DataExport {own_name}; this export starts once it is back"
                )));
            }
            (Some(ns), Some(name)) if ns == namespace => format!("DataExport {name}"),
            (Some(ns), Some(name)) => format!("DataExport {ns}/{name}"),
            _ => "an export".to_owned(),
        };
        return Err((
            "AlreadyExported",
            format!(
                "PVC {pvc_name} is still protected by {owner}, which has not returned its volume yet; wait until the PVC is Bound again, then retry"
            ),
        ));
    }
    if pvc.deleting {
        return Err((
            "TargetDeleting",
            format!("PVC {pvc_name} is being deleted and cannot be exported"),
        ));
    }
    match pvc.phase.as_deref() {
        Some("Bound") => {}
        Some("Pending") | None => {
            return Err((
                "TargetNotBound",
                format!(
                    "PVC {pvc_name} is Pending, not Bound; only a bound PVC can be exported (a WaitForFirstConsumer volume binds when a pod first uses it)"
                ),
            ));
        }
        Some(phase) => {
            return Err((
                "TargetNotBound",
                format!("PVC {pvc_name} is {phase}, not Bound; only a bound PVC can be exported"),
            ));
        }
    }

    let mut users: Vec<&str> = view
        .pods
        .iter()
        .filter(|p| !matches!(p.phase.as_deref(), Some("Succeeded" | "Failed")))
        .filter(|p| p.claims.iter().any(|c| c == pvc_name))
        .map(|p| p.name.as_str())
        .collect();
    if !users.is_empty() {
        users.sort_unstable();
        return Err(("TargetInUse", pods_message(pvc_name, &users)));
    }
    Ok(None)
}

fn pods_message(pvc_name: &str, pods: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut list = pods
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if pods.len() > SHOWN {
        list.push_str(&format!(" and {} more", pods.len() - SHOWN));
    }
    let (noun, pronoun) = if pods.len() == 1 {
        ("pod", "it")
    } else {
        ("pods", "them")
    };
    format!(
        "PVC {pvc_name} is used by {noun} {list}; stop {pronoun} or export a VolumeSnapshot instead"
    )
}

fn check_snapshot(namespace: &str, name: &str, view: &ClusterView) -> Result<(), Denial> {
    let snap = match &view.snapshot {
        Lookup::Found(s) => s,
        Lookup::NotFound => {
            return Err((
                "TargetNotFound",
                format!(
                    "VolumeSnapshot {name} not found in namespace {namespace}; check spec.targetRef.name"
                ),
            ));
        }
        Lookup::Failed(err) => {
            return Err((
                "ClusterStateUnavailable",
                format!("cannot check VolumeSnapshot {name}: {err}; retry in a few seconds"),
            ));
        }
    };
    if snap.deleting {
        return Err((
            "TargetDeleting",
            format!("VolumeSnapshot {name} is being deleted and cannot be exported"),
        ));
    }
    if snap.ready_to_use != Some(true) {
        let detail = snap
            .error
            .as_deref()
            .map(|e| format!(" (snapshot error: {e})"))
            .unwrap_or_default();
        return Err((
            "TargetNotReady",
            format!(
                "VolumeSnapshot {name} is not ready to use yet{detail}; create the DataExport once status.readyToUse is true"
            ),
        ));
    }
    Ok(())
}

/// Decides a Pod review (the optional Pod webhook): a new pod must not mount a PVC whose volume
/// is handed over to an export, where it could only hang in ContainerCreating. Everything else,
/// including any doubt, is allowed; the webhook is registered with failurePolicy Ignore.
/// `exported_pvs` is `None` while the cache is not loaded.
pub fn validate_pod(
    operation: Operation,
    namespace: &str,
    pod: &PodFacts,
    exported_pvs: Option<&[PvFacts]>,
) -> Decision {
    if operation != Operation::Create {
        return Decision::allow("NotValidated", Vec::new());
    }
    let Some(pvs) = exported_pvs else {
        return Decision::allow("ClusterStateUnavailable", Vec::new());
    };
    for claim in &pod.claims {
        let held = pvs.iter().find(|pv| {
            pv.labels.get(names::LABEL_PV_EXPORTED).map(String::as_str) == Some("true")
                && pv
                    .annotations
                    .get(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE)
                    .map(String::as_str)
                    == Some(namespace)
                && pv
                    .annotations
                    .get(names::ANN_PV_ORIGINAL_CLAIM_NAME)
                    .map(String::as_str)
                    == Some(claim.as_str())
        });
        if let Some(pv) = held {
            let owner = match (
                pv.annotations.get(names::ANN_OWNER_NAMESPACE),
                pv.annotations.get(names::ANN_OWNER_NAME),
            ) {
                (Some(ns), Some(name)) if ns == namespace => format!("DataExport {name}"),
                (Some(ns), Some(name)) => format!("DataExport {ns}/{name}"),
                _ => "a DataExport".to_owned(),
            };
            return Decision::deny(
                "PVCUnderExport",
                format!(
                    "PVC {claim} is being exported by {owner} and its volume is handed over to the export; delete the DataExport or wait until it expires, then create the pod again"
                ),
                Vec::new(),
            );
        }
    }
    Decision::allow("Valid", Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            default_ttl: Duration::from_secs(120),
            max_ttl: Duration::from_secs(24 * 3600),
            publish_configured: true,
        }
    }

    fn export(name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "storage.deckhouse.io/v1alpha1",
            "kind": "DataExport",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        })
    }

    fn pvc_export(ttl: Option<&str>) -> Value {
        let mut spec = json!({"targetRef": {"kind": "PersistentVolumeClaim", "name": "data"}, "publish": false});
        if let Some(t) = ttl {
            spec["ttl"] = json!(t);
        }
        export("de", spec)
    }

    fn create(obj: Value) -> Review {
        Review {
            operation: Operation::Create,
            namespace: "ns".into(),
            name: "de".into(),
            sub_resource: None,
            object: Some(obj),
            old_object: None,
        }
    }

    fn update(old: Value, new: Value) -> Review {
        Review {
            operation: Operation::Update,
            old_object: Some(old),
            ..create(new)
        }
    }

    fn bound_pvc() -> PvcFacts {
        PvcFacts {
            name: "data".into(),
            phase: Some("Bound".into()),
            volume_name: Some("pv-1".into()),
            ..Default::default()
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            pvc: Lookup::Found(bound_pvc()),
            ..Default::default()
        }
    }

    fn pod(name: &str, phase: &str, claims: &[&str]) -> PodFacts {
        PodFacts {
            name: name.into(),
            phase: Some(phase.into()),
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn denied(d: &Decision, reason: &str, needle: &str) {
        assert!(!d.allowed, "expected a denial, got {d:?}");
        assert_eq!(d.reason, reason, "{d:?}");
        assert!(
            d.message.contains(needle),
            "message {:?} lacks {needle:?}",
            d.message
        );
    }

    #[test]
    fn valid_pvc_export_is_allowed_without_warnings() {
        let d = validate(&settings(), &create(pvc_export(Some("10m"))), Some(&view()));
        assert_eq!(d, Decision::allow("Valid", vec![]));
    }

    #[test]
    fn omitted_ttl_warns_with_the_default() {
        let d = validate(&settings(), &create(pvc_export(None)), Some(&view()));
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("default of 2m"), "{:?}", d.warnings);
    }

    #[test]
    fn publish_without_a_public_host_warns_but_allows() {
        let s = Settings {
            publish_configured: false,
            ..settings()
        };
        let mut obj = pvc_export(Some("5m"));
        obj["spec"]["publish"] = json!(true);
        let d = validate(&s, &create(obj.clone()), Some(&view()));
        assert!(d.allowed);
        assert_eq!(d.warnings, vec![publish_warning()]);
        // Configured: no warning.
        let d = validate(&settings(), &create(obj), Some(&view()));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn kind_and_group_pairs() {
        let v = ClusterView {
            snapshot: Lookup::Found(SnapshotFacts {
                name: "snap".into(),
                ready_to_use: Some(true),
                ..Default::default()
            }),
            ..view()
        };
        let cases = [
            (
                json!({"kind": "PersistentVolumeClaim", "name": "data"}),
                None,
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "name": "data", "group": ""}),
                None,
            ),
            (json!({"kind": "VolumeSnapshot", "name": "snap"}), None),
            (
                json!({"kind": "VolumeSnapshot", "name": "snap", "group": "snapshot.storage.k8s.io"}),
                None,
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "name": "data", "group": "snapshot.storage.k8s.io"}),
                Some("GroupMismatch"),
            ),
            (
                json!({"kind": "VolumeSnapshot", "name": "snap", "group": ""}),
                Some("GroupMismatch"),
            ),
            (
                json!({"kind": "VolumeSnapshotContent", "name": "c", "group": "snapshot.storage.k8s.io"}),
                Some("UnsupportedKind"),
            ),
            (
                json!({"kind": "VirtualDisk", "name": "vd"}),
                Some("UnsupportedKind"),
            ),
            (json!({"name": "data"}), Some("UnsupportedKind")),
            (
                json!({"kind": "PersistentVolumeClaim"}),
                Some("MissingTargetName"),
            ),
            (
                json!({"kind": "PersistentVolumeClaim", "name": ""}),
                Some("MissingTargetName"),
            ),
        ];
        for (target, want) in cases {
            let obj = export("de", json!({"targetRef": target, "ttl": "1m"}));
            let d = validate(&settings(), &create(obj), Some(&v));
            match want {
                None => assert!(d.allowed, "{target}: {d:?}"),
                Some(reason) => {
                    assert!(!d.allowed, "{target}: {d:?}");
                    assert_eq!(d.reason, reason, "{target}");
                }
            }
        }
        let d = validate(
            &settings(),
            &create(export("de", json!({"ttl": "1m"}))),
            Some(&v),
        );
        denied(&d, "MissingTargetRef", "spec.targetRef is required");
    }

    #[test]
    fn ttl_rules() {
        for bad in ["1d", "5", "abc", "0s", "-5m"] {
            let d = validate(&settings(), &create(pvc_export(Some(bad))), Some(&view()));
            denied(&d, "InvalidTTL", "ttl");
        }
        let d = validate(&settings(), &create(pvc_export(Some("25h"))), Some(&view()));
        denied(&d, "InvalidTTL", "exceeds the maximum of 24h");
        let d = validate(&settings(), &create(pvc_export(Some("24h"))), Some(&view()));
        assert!(d.allowed, "{d:?}");
        let mut obj = pvc_export(None);
        obj["spec"]["ttl"] = json!(300);
        let d = validate(&settings(), &create(obj), Some(&view()));
        denied(&d, "InvalidTTL", "must be a string");
    }

    #[test]
    fn missing_and_unreadable_targets() {
        let v = ClusterView {
            pvc: Lookup::NotFound,
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "TargetNotFound",
            "PersistentVolumeClaim data not found in namespace ns",
        );
        let v = ClusterView {
            pvc: Lookup::Failed("timed out".into()),
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(&d, "ClusterStateUnavailable", "timed out");
        // No view at all: fail closed.
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), None);
        denied(&d, "ClusterStateUnavailable", "retry");
    }

    #[test]
    fn pvc_must_be_bound_and_alive() {
        for (phase, needle) in [
            (Some("Pending"), "is Pending, not Bound"),
            (None, "is Pending, not Bound"),
            (Some("Lost"), "is Lost, not Bound"),
        ] {
            let v = ClusterView {
                pvc: Lookup::Found(PvcFacts {
                    phase: phase.map(str::to_owned),
                    ..bound_pvc()
                }),
                ..Default::default()
            };
            let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
            denied(&d, "TargetNotBound", needle);
        }
        let v = ClusterView {
            pvc: Lookup::Found(PvcFacts {
                deleting: true,
                ..bound_pvc()
            }),
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(&d, "TargetDeleting", "being deleted");
    }

    #[test]
    fn pvc_used_by_running_pods_names_them() {
        let v = ClusterView {
            pods: vec![
                pod("web-0", "Running", &["data"]),
                pod("done", "Succeeded", &["data"]),
                pod("crashed", "Failed", &["data"]),
                pod("other", "Running", &["logs"]),
            ],
            ..view()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "TargetInUse",
            "PVC data is used by pod web-0; stop it or export a VolumeSnapshot instead",
        );
        // Pending pods (scheduled or not) count: they will mount it.
        let v = ClusterView {
            pods: (0..7)
                .map(|i| pod(&format!("web-{i}"), "Pending", &["data"]))
                .collect(),
            ..view()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "TargetInUse",
            "pods web-0, web-1, web-2, web-3, web-4 and 2 more; stop them",
        );
        // Finished pods only: allowed.
        let v = ClusterView {
            pods: vec![pod("done", "Succeeded", &["data"])],
            ..view()
        };
        assert!(validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v)).allowed);
    }

    #[test]
    fn second_export_of_a_pvc_is_denied_naming_the_first() {
        let other = ExportFacts {
            name: "first".into(),
            target_kind: "PersistentVolumeClaim".into(),
            target_name: "data".into(),
            phase: Some("Ready".into()),
            ..Default::default()
        };
        let v = ClusterView {
            exports: vec![other.clone()],
            pvc: Lookup::Found(PvcFacts {
                phase: Some("Lost".into()),
                ..bound_pvc()
            }),
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "AlreadyExported",
            "already exported by DataExport first (phase Ready)",
        );

        // Expired, being deleted, other targets, snapshots and the object itself do not count.
        let ignored = [
            ExportFacts {
                expired: true,
                ..other.clone()
            },
            ExportFacts {
                deleting: true,
                ..other.clone()
            },
            ExportFacts {
                target_name: "logs".into(),
                ..other.clone()
            },
            ExportFacts {
                target_kind: "VolumeSnapshot".into(),
                ..other.clone()
            },
            ExportFacts {
                name: "de".into(),
                ..other.clone()
            },
        ];
        for e in ignored {
            let v = ClusterView {
                exports: vec![e.clone()],
                ..view()
            };
            let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
            assert!(d.allowed, "{e:?}: {d:?}");
        }
    }

    #[test]
    fn volume_still_held_by_an_export_is_denied() {
        let mut pv = PvFacts {
            name: "pv-1".into(),
            ..Default::default()
        };
        pv.labels
            .insert(names::LABEL_PV_EXPORTED.into(), "true".into());
        pv.annotations
            .insert(names::ANN_OWNER_NAMESPACE.into(), "ns".into());
        pv.annotations
            .insert(names::ANN_OWNER_NAME.into(), "old".into());
        let v = ClusterView {
            exported_pvs: vec![pv.clone()],
            ..view()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "AlreadyExported",
            "volume pv-1 of PVC data is still held by DataExport old",
        );

        // Found through the original-claim annotations even if the PVC names another volume.
        let mut by_claim = PvFacts {
            name: "pv-9".into(),
            ..Default::default()
        };
        by_claim
            .labels
            .insert(names::LABEL_PV_EXPORTED.into(), "true".into());
        by_claim
            .annotations
            .insert(names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE.into(), "ns".into());
        by_claim
            .annotations
            .insert(names::ANN_PV_ORIGINAL_CLAIM_NAME.into(), "data".into());
        let v = ClusterView {
            exported_pvs: vec![by_claim.clone()],
            ..view()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(&d, "AlreadyExported", "held by another DataExport");

        // Same claim name in another namespace: not ours.
        by_claim.annotations.insert(
            names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE.into(),
            "elsewhere".into(),
        );
        let v = ClusterView {
            exported_pvs: vec![by_claim],
            ..view()
        };
        assert!(validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v)).allowed);

        // The same name as the export still returning the volume: d8's delete-and-recreate of an
        // expired export. Allowed with a warning, even while the PVC is Lost and protected.
        let mut r = create(pvc_export(Some("1m")));
        r.name = "old".into();
        let v = ClusterView {
            exported_pvs: vec![pv.clone()],
            pvc: Lookup::Found(PvcFacts {
                phase: Some("Lost".into()),
                finalizers: vec![names::FINALIZER_PVC_PROTECTION.into()],
                ..bound_pvc()
            }),
            ..Default::default()
        };
        let d = validate(&settings(), &r, Some(&v));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, "RecreatedWhileReturning");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("still being returned from the previous DataExport old"))
        );

        // The protection finalizer alone also means the volume is not back yet.
        let v = ClusterView {
            pvc: Lookup::Found(PvcFacts {
                finalizers: vec![names::FINALIZER_PVC_PROTECTION.into()],
                ..bound_pvc()
            }),
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(
            &d,
            "AlreadyExported",
            "protected by an export, which has not returned",
        );
        let v = ClusterView {
            pvc: Lookup::Found(PvcFacts {
                finalizers: vec![names::FINALIZER_PVC_PROTECTION.into()],
                owner_namespace: Some("ns".into()),
                owner_name: Some("old".into()),
                ..bound_pvc()
            }),
            ..Default::default()
        };
        let d = validate(&settings(), &create(pvc_export(Some("1m"))), Some(&v));
        denied(&d, "AlreadyExported", "protected by DataExport old");
        let mut r = create(pvc_export(Some("1m")));
        r.name = "old".into();
        let d = validate(&settings(), &r, Some(&v));
        assert_eq!(d.reason, "RecreatedWhileReturning", "{d:?}");
    }

    #[test]
    fn snapshot_rules() {
        let obj = export(
            "de",
            json!({"targetRef": {"kind": "VolumeSnapshot", "name": "snap"}, "ttl": "1m"}),
        );
        let with = |s: Lookup<SnapshotFacts>| ClusterView {
            snapshot: s,
            ..Default::default()
        };
        let ready = SnapshotFacts {
            name: "snap".into(),
            ready_to_use: Some(true),
            ..Default::default()
        };
        let d = validate(
            &settings(),
            &create(obj.clone()),
            Some(&with(Lookup::Found(ready.clone()))),
        );
        assert!(d.allowed, "{d:?}");
        let d = validate(
            &settings(),
            &create(obj.clone()),
            Some(&with(Lookup::NotFound)),
        );
        denied(
            &d,
            "TargetNotFound",
            "VolumeSnapshot snap not found in namespace ns",
        );
        let d = validate(
            &settings(),
            &create(obj.clone()),
            Some(&with(Lookup::Failed(
                "the snapshot API is not installed".into(),
            ))),
        );
        denied(&d, "ClusterStateUnavailable", "not installed");
        let not_ready = SnapshotFacts {
            ready_to_use: None,
            error: Some("driver failed".into()),
            ..ready.clone()
        };
        let d = validate(
            &settings(),
            &create(obj.clone()),
            Some(&with(Lookup::Found(not_ready))),
        );
        denied(
            &d,
            "TargetNotReady",
            "not ready to use yet (snapshot error: driver failed)",
        );
        let d = validate(
            &settings(),
            &create(obj.clone()),
            Some(&with(Lookup::Found(SnapshotFacts {
                ready_to_use: Some(false),
                ..ready.clone()
            }))),
        );
        denied(&d, "TargetNotReady", "readyToUse is true");
        let d = validate(
            &settings(),
            &create(obj),
            Some(&with(Lookup::Found(SnapshotFacts {
                deleting: true,
                ..ready
            }))),
        );
        denied(&d, "TargetDeleting", "being deleted");
    }

    #[test]
    fn module_namespace_is_refused() {
        let mut r = create(pvc_export(Some("1m")));
        r.namespace = names::MODULE_NAMESPACE.into();
        let d = validate(&settings(), &r, Some(&view()));
        denied(&d, "ModuleNamespace", "module's own namespace");
    }

    #[test]
    fn update_of_publish_ttl_and_metadata_passes_without_cluster_checks() {
        let old = pvc_export(Some("5m"));
        let mut new = old.clone();
        new["spec"]["publish"] = json!(true);
        new["spec"]["ttl"] = json!("1h");
        new["metadata"]["labels"] = json!({"a": "b"});
        new["metadata"]["finalizers"] = json!([names::FINALIZER_DATAEXPORT]);
        let d = validate(&settings(), &update(old, new), None);
        assert_eq!(d, Decision::allow("Valid", vec![]));
    }

    #[test]
    fn update_flipping_publish_without_public_host_warns() {
        let s = Settings {
            publish_configured: false,
            ..settings()
        };
        let old = pvc_export(Some("5m"));
        let mut new = old.clone();
        new["spec"]["publish"] = json!(true);
        let d = validate(&s, &update(old, new.clone()), None);
        assert!(d.allowed);
        assert_eq!(d.warnings, vec![publish_warning()]);
        // Already published: no repeated warning on unrelated updates.
        let d = validate(&s, &update(new.clone(), new), None);
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn update_changing_target_ref_is_denied() {
        let old = pvc_export(Some("5m"));
        let mut new = old.clone();
        new["spec"]["targetRef"]["name"] = json!("other");
        let d = validate(&settings(), &update(old.clone(), new), None);
        denied(
            &d,
            "TargetRefImmutable",
            "it is PersistentVolumeClaim/data, the update sets PersistentVolumeClaim/other",
        );
        let mut new = old.clone();
        new["spec"]["targetRef"] = json!({"kind": "VolumeSnapshot", "name": "data"});
        denied(
            &validate(&settings(), &update(old.clone(), new), None),
            "TargetRefImmutable",
            "immutable",
        );
        // Spelling out the default group is not a change.
        let mut new = old.clone();
        new["spec"]["targetRef"]["group"] = json!("");
        assert!(validate(&settings(), &update(old, new), None).allowed);
    }

    #[test]
    fn update_checks_a_changed_ttl_only() {
        let old = pvc_export(Some("5m"));
        let mut new = old.clone();
        new["spec"]["ttl"] = json!("48h");
        denied(
            &validate(&settings(), &update(old.clone(), new), None),
            "InvalidTTL",
            "exceeds",
        );
        let mut new = old.clone();
        new["spec"]["ttl"] = json!("soon");
        denied(
            &validate(&settings(), &update(old, new), None),
            "InvalidTTL",
            "not a Go duration",
        );
        // A ttl that a lowered max no longer allows does not block unrelated updates.
        let s = Settings {
            max_ttl: Duration::from_secs(60),
            ..settings()
        };
        let old = pvc_export(Some("5m"));
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"x": "y"});
        assert!(validate(&s, &update(old.clone(), new), None).allowed);
        // Removing the ttl: default applies, with a warning.
        let mut new = old.clone();
        new["spec"].as_object_mut().map(|m| m.remove("ttl"));
        let d = validate(&settings(), &update(old, new), None);
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn updates_of_objects_being_deleted_always_pass() {
        let mut old = pvc_export(Some("5m"));
        old["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        old["metadata"]["finalizers"] = json!([names::FINALIZER_DATAEXPORT]);
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!([]);
        // Even a (nonsensical) target change or bad ttl must not wedge finalizer removal.
        new["spec"]["targetRef"]["name"] = json!("other");
        new["spec"]["ttl"] = json!("bad");
        let d = validate(&settings(), &update(old, new), None);
        assert_eq!(d, Decision::allow("BeingDeleted", vec![]));
    }

    #[test]
    fn delete_connect_and_subresources_are_not_validated() {
        let mut r = create(pvc_export(Some("bad")));
        r.operation = Operation::Delete;
        r.object = None;
        assert!(validate(&settings(), &r, None).allowed);
        r.operation = Operation::Connect;
        assert!(validate(&settings(), &r, None).allowed);
        let mut r = update(pvc_export(Some("5m")), pvc_export(Some("bad")));
        r.sub_resource = Some("status".into());
        assert!(validate(&settings(), &r, None).allowed);
        assert_eq!(cluster_query(&settings(), &r), None);
    }

    #[test]
    fn cluster_query_names_the_target_of_a_create_only() {
        let q = cluster_query(&settings(), &create(pvc_export(None)));
        assert_eq!(
            q,
            Some(TargetQuery {
                namespace: "ns".into(),
                kind: TargetKind::PersistentVolumeClaim,
                name: "data".into()
            })
        );
        assert_eq!(
            cluster_query(&settings(), &update(pvc_export(None), pvc_export(None))),
            None
        );
        // Decided without the cluster: bad ttl, module namespace.
        assert_eq!(
            cluster_query(&settings(), &create(pvc_export(Some("48h")))),
            None
        );
        let mut r = create(pvc_export(None));
        r.namespace = names::MODULE_NAMESPACE.into();
        assert_eq!(cluster_query(&settings(), &r), None);
        assert_eq!(
            cluster_query(
                &settings(),
                &create(export(
                    "de",
                    json!({"targetRef": {"kind": "Pod", "name": "x"}})
                ))
            ),
            None
        );
        let mut r = create(pvc_export(None));
        r.object = None;
        assert_eq!(cluster_query(&settings(), &r), None);
    }

    fn exported_pv(claim_ns: &str, claim: &str, owner: Option<(&str, &str)>) -> PvFacts {
        let mut pv = PvFacts {
            name: "pv-1".into(),
            ..Default::default()
        };
        pv.labels
            .insert(names::LABEL_PV_EXPORTED.into(), "true".into());
        pv.annotations.insert(
            names::ANN_PV_ORIGINAL_CLAIM_NAMESPACE.into(),
            claim_ns.into(),
        );
        pv.annotations
            .insert(names::ANN_PV_ORIGINAL_CLAIM_NAME.into(), claim.into());
        if let Some((ns, name)) = owner {
            pv.annotations
                .insert(names::ANN_OWNER_NAMESPACE.into(), ns.into());
            pv.annotations
                .insert(names::ANN_OWNER_NAME.into(), name.into());
        }
        pv
    }

    #[test]
    fn pod_mounting_a_pvc_under_export_is_refused_naming_the_export() {
        let p = pod("web-0", "Pending", &["cfg", "data"]);
        let pvs = [exported_pv("ns", "data", Some(("ns", "backup")))];
        let d = validate_pod(Operation::Create, "ns", &p, Some(&pvs));
        denied(
            &d,
            "PVCUnderExport",
            "PVC data is being exported by DataExport backup",
        );
        let pvs = [exported_pv("ns", "data", None)];
        let d = validate_pod(Operation::Create, "ns", &p, Some(&pvs));
        denied(&d, "PVCUnderExport", "by a DataExport");
    }

    #[test]
    fn pod_rules_allow_everything_else() {
        let p = pod("web-0", "Pending", &["data"]);
        // Another namespace's claim of the same name, another claim, no label.
        let mut unlabelled = exported_pv("ns", "data", None);
        unlabelled.labels.clear();
        for pvs in [
            vec![exported_pv("other", "data", None)],
            vec![exported_pv("ns", "logs", None)],
            vec![unlabelled],
            vec![],
        ] {
            assert!(validate_pod(Operation::Create, "ns", &p, Some(&pvs)).allowed);
        }
        let pvs = [exported_pv("ns", "data", None)];
        // Not loaded yet, or not a CREATE: allowed.
        assert!(validate_pod(Operation::Create, "ns", &p, None).allowed);
        assert!(validate_pod(Operation::Update, "ns", &p, Some(&pvs)).allowed);
        assert!(validate_pod(Operation::Delete, "ns", &p, Some(&pvs)).allowed);
    }
}
