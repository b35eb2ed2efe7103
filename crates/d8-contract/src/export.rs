//! The DataExport side of `d8 data export` (docs/development/D8-CLIENT.md §2, §4, §8): the object
//! as each client generation writes it, the wait loop that polls every 3 s and gives up after 61
//! sleeps, and the delete-and-recreate on the expiry signal that generation reads.

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::kubecfg::Access;
use crate::{Error, Result};

/// The API group of this module (and of d8 up to v0.33.6).
pub const GROUP: &str = "storage.deckhouse.io";
/// The newer storage-foundation module's group, which v0.33.14+ tries first.
pub const FOUNDATION_GROUP: &str = "storage-foundation.deckhouse.io";
/// Poll period and the attempt count after which d8 gives up.
pub const POLL: Duration = Duration::from_secs(3);
pub const MAX_ATTEMPTS: u32 = 60;
/// The ttl d8 sends when none is given, and on every recreate.
pub const DEFAULT_TTL: &str = "2m";

/// Which `d8` release's behaviour to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// v0.33.6 and earlier: `targetRef{kind,name}`, expiry from an `Expired=True` condition.
    V0_33_6,
    /// v0.33.14 and later against this group: the group resolved at run time, `targetRef` with
    /// `group` on recreate, expiry from either signal.
    V0_33_14,
}

impl std::str::FromStr for Generation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim_start_matches('v') {
            "0.33.6" => Ok(Generation::V0_33_6),
            "0.33.14" => Ok(Generation::V0_33_14),
            _ => Err(format!("{s:?}: known generations are v0.33.6 and v0.33.14")),
        }
    }
}

/// A volume as `KIND/NAME` names it on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static str,
    pub group: &'static str,
    /// The short form in auto-created names (`de-<short>-<volume>`).
    pub short: &'static str,
    pub name: String,
}

impl Target {
    /// `pvc/data`, `VolumeSnapshot/snap`, … (the kind is case-insensitive).
    pub fn parse(s: &str) -> Option<Target> {
        let (kind, name) = s.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let (kind, group, short) = match kind.to_ascii_lowercase().as_str() {
            "pvc" | "persistentvolumeclaim" => ("PersistentVolumeClaim", "", "pvc"),
            "vs" | "volumesnapshot" => ("VolumeSnapshot", "snapshot.storage.k8s.io", "vs"),
            "vd" | "virtualdisk" => ("VirtualDisk", "virtualization.deckhouse.io", "vd"),
            "vds" | "virtualdisksnapshot" => {
                ("VirtualDiskSnapshot", "virtualization.deckhouse.io", "vds")
            }
            _ => return None,
        };
        Some(Target {
            kind,
            group,
            short,
            name: name.to_owned(),
        })
    }

    /// The name d8 gives an export it creates itself for `list`/`download KIND/VOLUME`.
    pub fn auto_name(&self) -> String {
        format!("de-{}-{}", self.short, self.name)
    }

    fn from_kind(kind: &str, name: &str) -> Option<Target> {
        Target::parse(&format!("{kind}/{name}"))
    }
}

/// The DataExport body a generation sends on create (always `publish`, always a `status`
/// block, which the status subresource makes the API server ignore).
pub fn create_body(
    generation: Generation,
    group: &str,
    namespace: &str,
    name: &str,
    target: &Target,
    ttl: &str,
    publish: bool,
) -> Value {
    let mut target_ref = json!({"kind": target.kind, "name": target.name});
    if generation == Generation::V0_33_14 && !target.group.is_empty() {
        target_ref["group"] = json!(target.group);
    }
    json!({
        "apiVersion": format!("{group}/v1alpha1"),
        "kind": "DataExport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ttl": ttl, "publish": publish, "targetRef": target_ref},
        "status": {"url": "", "publicURL": "", "accessTimestamp": null}
    })
}

/// What a ready export gives the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub url: String,
    pub public_url: String,
    /// PEM, decoded from `status.ca`.
    pub ca: Vec<u8>,
    pub volume_mode: String,
    pub kind: String,
}

/// One look at the object, as the wait loop takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    Ready(Ready),
    /// The generation's expiry signal: delete and recreate.
    Expired,
    /// Not ready; what d8 would show.
    Waiting(String),
}

fn conditions(obj: &Value) -> Vec<&Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().collect())
        .unwrap_or_default()
}

fn field<'a>(c: &'a Value, name: &str) -> &'a str {
    c.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The checks of one wait-loop iteration (docs/development/D8-CLIENT.md §4), or the error that
/// ends the loop.
pub fn look(generation: Generation, obj: &Value) -> std::result::Result<Look, String> {
    let conds = conditions(obj);
    let legacy_expired = conds
        .iter()
        .any(|c| field(c, "type") == "Expired" && field(c, "status") == "True");
    let ready = conds.iter().find(|c| field(c, "type") == "Ready");
    let ready_expired =
        ready.is_some_and(|c| field(c, "status") == "False" && field(c, "reason") == "Expired");
    let expired = match generation {
        Generation::V0_33_6 => legacy_expired,
        Generation::V0_33_14 => legacy_expired || ready_expired,
    };
    if expired {
        return Ok(Look::Expired);
    }
    // No Ready condition at all counts as "not not-ready": the URL checks decide.
    if let Some(c) = ready
        && field(c, "status") != "True"
    {
        return Ok(Look::Waiting(format!(
            "{} ({})",
            field(c, "message"),
            field(c, "reason")
        )));
    }
    let status = |f: &str| {
        obj.pointer(&format!("/status/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let url = status("url");
    if url.is_empty() {
        return Ok(Look::Waiting("waiting for internal URL".into()));
    }
    let publish = obj
        .pointer("/spec/publish")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let public_url = status("publicURL");
    if publish && public_url.is_empty() {
        return Ok(Look::Waiting("waiting for public URL".into()));
    }
    let kind = obj
        .pointer("/spec/targetRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if Target::from_kind(&kind, "x").is_none() {
        return Err(format!("invalid volume kind {kind:?}"));
    }
    let volume_mode = status("volumeMode");
    if volume_mode != "Filesystem" && volume_mode != "Block" {
        return Err(format!("invalid volume mode {volume_mode:?}"));
    }
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(status("ca"))
        .map_err(|e| format!("status.ca is not base64: {e}"))?;
    Ok(Look::Ready(Ready {
        url,
        public_url,
        ca,
        volume_mode,
        kind,
    }))
}

/// DataExports of one namespace in the group a generation resolved.
pub struct Exports {
    pub api: Api<DynamicObject>,
    pub generation: Generation,
    pub group: String,
    pub namespace: String,
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Which group a generation talks to: v0.33.6 knows only this module's; v0.33.14+ tries
/// storage-foundation first (discovery plus a `get` access review) and falls back to ours.
pub async fn resolve_group(access: &Access, generation: Generation, ns: &str) -> Result<String> {
    if generation == Generation::V0_33_6 {
        return Ok(GROUP.to_owned());
    }
    let groups = access
        .client
        .list_api_groups()
        .await
        .map_err(|e| Error::step("resolve the API group (discovery)", e.to_string()))?;
    for group in [FOUNDATION_GROUP, GROUP] {
        if !groups.groups.iter().any(|g| g.name == group) {
            continue;
        }
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": group, "resource": "dataexports",
                                            "verb": "get", "namespace": ns}}
        });
        let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
            Api::all(access.client.clone());
        let review = serde_json::from_value(review)
            .map_err(|e| Error::step("resolve the API group", e.to_string()))?;
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Error::step("resolve the API group (access review)", e.to_string()))?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(group.to_owned());
        }
    }
    Err(Error::step(
        "resolve the API group",
        "neither storage-foundation.deckhouse.io nor storage.deckhouse.io DataExports may be read",
    ))
}

impl Exports {
    pub fn new(access: &Access, generation: Generation, group: &str, namespace: &str) -> Self {
        let gvk = GroupVersionKind::gvk(group, "v1alpha1", "DataExport");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "dataexports");
        Exports {
            api: Api::namespaced_with(access.client.clone(), namespace, &ar),
            generation,
            group: group.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// Create; AlreadyExists counts as success and the existing object is used as it is.
    pub async fn create(
        &self,
        name: &str,
        target: &Target,
        ttl: &str,
        publish: bool,
    ) -> Result<()> {
        let body = create_body(
            self.generation,
            &self.group,
            &self.namespace,
            name,
            target,
            ttl,
            publish,
        );
        let obj: DynamicObject = serde_json::from_value(body)
            .map_err(|e| Error::step("create the DataExport", e.to_string()))?;
        match self.api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 409) => Ok(()),
            Err(e) => Err(Error::step(
                format!("create DataExport {}/{name}", self.namespace),
                e.to_string(),
            )),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Value> {
        let obj = self.api.get(name).await.map_err(|e| {
            Error::step(
                format!("kube Get dataexport with restart {}/{name}", self.namespace),
                e.to_string(),
            )
        })?;
        serde_json::to_value(obj).map_err(|e| Error::step("read the DataExport", e.to_string()))
    }

    /// Delete with default propagation; NotFound is an error, as d8 reports it.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| {
                Error::step(
                    format!("delete DataExport {}/{name}", self.namespace),
                    e.to_string(),
                )
            })
    }

    /// The upgrade-only merge patch of `spec.publish` (sent before the wait loop).
    pub async fn ensure_published(&self, name: &str, publish: bool) -> Result<()> {
        if !publish {
            return Ok(());
        }
        let obj = self.get(name).await?;
        if obj.pointer("/spec/publish").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"publish": true}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| Error::step("patch spec.publish to true", e.to_string()))
    }

    /// The wait loop: poll every 3 s until ready, recreating an expired object with ttl `2m`
    /// and the same target and publish; give up after 61 sleeps.
    pub async fn wait_ready(&self, name: &str) -> Result<Ready> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let obj = self.get(name).await?;
            match look(self.generation, &obj) {
                Err(e) => return Err(Error::step(format!("wait for DataExport {name}"), e)),
                Ok(Look::Ready(r)) => {
                    eprintln!(
                        "d8: DataExport {}/{name} ready after {attempt} polls ({:.1}s): {}",
                        self.namespace,
                        started.elapsed().as_secs_f64(),
                        r.url
                    );
                    return Ok(r);
                }
                Ok(Look::Expired) => {
                    let target = obj
                        .pointer("/spec/targetRef/kind")
                        .and_then(Value::as_str)
                        .zip(obj.pointer("/spec/targetRef/name").and_then(Value::as_str))
                        .and_then(|(k, n)| Target::from_kind(k, n))
                        .ok_or_else(|| {
                            Error::step(format!("recreate DataExport {name}"), "no targetRef")
                        })?;
                    let publish = obj
                        .pointer("/spec/publish")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    // d8 does not wait for the delete: an object that lingers makes the
                    // create an AlreadyExists (swallowed), and a later Get NotFound ends it.
                    self.delete(name).await?;
                    self.create(name, &target, DEFAULT_TTL, publish).await?;
                    eprintln!("d8: DataExport {name} expired; recreated, waiting…");
                }
                Ok(Look::Waiting(why)) => {
                    if attempt > 0 && attempt.is_multiple_of(5) {
                        eprintln!("d8: Still waiting for DataExport {name}: status={why}");
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(Error::step(
                            format!("wait for DataExport {name}"),
                            format!(
                                "not ready after {attempt} attempts: {why}; see d8 k -n {} get de {name} -o yaml",
                                self.namespace
                            ),
                        ));
                    }
                }
            }
            attempt += 1;
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(status: Value, publish: bool) -> Value {
        json!({"spec": {"publish": publish, "targetRef": {"kind": "PersistentVolumeClaim", "name": "d"}},
               "status": status})
    }

    fn ready_status() -> Value {
        json!({"url": "https://e.ns.svc/", "ca": "Q0E=", "volumeMode": "Filesystem",
               "conditions": [{"type": "Ready", "status": "True", "reason": "ServerReady", "message": "ok"}]})
    }

    #[test]
    fn targets_and_auto_names() {
        let t = Target::parse("PVC/data").expect("pvc");
        assert_eq!(
            (t.kind, t.group, t.auto_name().as_str()),
            ("PersistentVolumeClaim", "", "de-pvc-data")
        );
        let t = Target::parse("volumesnapshot/s1").expect("vs");
        assert_eq!(
            (t.kind, t.group, t.auto_name().as_str()),
            ("VolumeSnapshot", "snapshot.storage.k8s.io", "de-vs-s1")
        );
        assert!(Target::parse("pod/x").is_none());
        assert!(Target::parse("pvc/").is_none());
        assert!(Target::parse("data").is_none());
    }

    #[test]
    fn create_bodies_per_generation() {
        let vs = Target::parse("vs/s1").expect("vs");
        let old = create_body(Generation::V0_33_6, GROUP, "ns", "n", &vs, "2m", false);
        assert_eq!(
            old["spec"],
            json!({"ttl": "2m", "publish": false, "targetRef": {"kind": "VolumeSnapshot", "name": "s1"}})
        );
        assert_eq!(
            old["status"],
            json!({"url": "", "publicURL": "", "accessTimestamp": null})
        );
        let new = create_body(Generation::V0_33_14, GROUP, "ns", "n", &vs, "5m", true);
        assert_eq!(new["spec"]["targetRef"]["group"], "snapshot.storage.k8s.io");
        let pvc = Target::parse("pvc/d").expect("pvc");
        let new = create_body(Generation::V0_33_14, GROUP, "ns", "n", &pvc, "5m", true);
        assert!(
            new["spec"]["targetRef"].get("group").is_none(),
            "empty group is omitted"
        );
    }

    #[test]
    fn the_wait_loop_checks() {
        let g = Generation::V0_33_6;
        assert!(
            matches!(look(g, &obj(ready_status(), false)), Ok(Look::Ready(r)) if r.ca == b"CA")
        );
        // Published: the public URL is required too.
        assert_eq!(
            look(g, &obj(ready_status(), true)),
            Ok(Look::Waiting("waiting for public URL".into()))
        );
        let mut s = ready_status();
        s["conditions"][0] =
            json!({"type": "Ready", "status": "False", "reason": "Pending", "message": "starting"});
        assert_eq!(
            look(g, &obj(s, false)),
            Ok(Look::Waiting("starting (Pending)".into()))
        );
        // No Ready condition at all: the URL checks decide.
        let mut s = ready_status();
        s["conditions"] = json!([]);
        assert!(matches!(
            look(g, &obj(s.clone(), false)),
            Ok(Look::Ready(_))
        ));
        s["url"] = json!("");
        assert_eq!(
            look(g, &obj(s, false)),
            Ok(Look::Waiting("waiting for internal URL".into()))
        );
        let mut s = ready_status();
        s["volumeMode"] = json!("");
        assert!(
            look(g, &obj(s, false)).is_err(),
            "a ready export without a volume mode is fatal"
        );
    }

    #[test]
    fn each_generation_reads_its_expiry_signal() {
        let ready_expired = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Expired", "message": "idle"}]});
        let legacy = json!({"conditions": [{"type": "Expired", "status": "True", "reason": "Expired"},
                                           {"type": "Ready", "status": "False", "reason": "Expired"}]});
        assert_eq!(
            look(Generation::V0_33_6, &obj(legacy.clone(), false)),
            Ok(Look::Expired)
        );
        assert_eq!(
            look(Generation::V0_33_14, &obj(legacy, false)),
            Ok(Look::Expired)
        );
        assert_eq!(
            look(Generation::V0_33_14, &obj(ready_expired.clone(), false)),
            Ok(Look::Expired)
        );
        // v0.33.6 does not read Ready's reason: without the Expired condition it waits.
        assert_eq!(
            look(Generation::V0_33_6, &obj(ready_expired, false)),
            Ok(Look::Waiting("idle (Expired)".into()))
        );
        // The volume still on its way back: no signal yet, for either.
        let returning = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Returning", "message": "m"}]});
        for g in [Generation::V0_33_6, Generation::V0_33_14] {
            assert_eq!(
                look(g, &obj(returning.clone(), false)),
                Ok(Look::Waiting("m (Returning)".into()))
            );
        }
    }
}
