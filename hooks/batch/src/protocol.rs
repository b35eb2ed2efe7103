//! The addon-operator batch-hook protocol (`hook list`, `hook config`, `hook run N`).
//!
//! Inputs arrive as files named by environment variables (binding contexts, values, config values);
//! outputs are files too: a JSON Patch array for values, newline-delimited object-patch operations for
//! Kubernetes, newline-delimited metric operations. See `deckhouse-conventions.md` §3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// Values key of the module; every values patch path starts with `/<VALUES_KEY>/`.
pub const VALUES_KEY: &str = "storageVolumeDataManager";

/// Why a hook run failed. Reported to addon-operator as `{"message": ...}` on stderr.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("certificate: {0}")]
    Pki(#[from] svdm_pki::PkiError),
    #[error("{0}")]
    Invalid(String),
}

/// One binding context. In batch hooks every kubernetes and schedule binding is grouped, so contexts
/// carry the snapshots of all kubernetes bindings and no single object.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct BindingContext {
    #[serde(default)]
    pub binding: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub snapshots: BTreeMap<String, Vec<SnapshotItem>>,
}

/// One snapshot entry: the jq filter result when the binding has a filter, else the object.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SnapshotItem {
    #[serde(default, rename = "filterResult")]
    pub filter_result: Option<Value>,
    #[serde(default)]
    pub object: Option<Value>,
}

impl SnapshotItem {
    /// What a hook sees of the item (an empty filter result counts as absent, as in module-sdk).
    pub fn value(&self) -> Option<&Value> {
        match &self.filter_result {
            Some(Value::Object(m)) if m.is_empty() => self.object.as_ref(),
            Some(Value::Null) | None => self.object.as_ref(),
            Some(v) => Some(v),
        }
    }
}

/// Everything a hook run reads.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub contexts: Vec<BindingContext>,
    pub values: Value,
    pub config_values: Value,
}

impl Input {
    /// The newest snapshot of a binding. Every grouped context carries full snapshots, so the last
    /// context that has the binding is current.
    pub fn snapshot(&self, name: &str) -> Vec<&Value> {
        self.contexts
            .iter()
            .rev()
            .find_map(|c| c.snapshots.get(name))
            .map(|items| items.iter().filter_map(SnapshotItem::value).collect())
            .unwrap_or_default()
    }

    /// The binding names of this run (`beforeHelm`, `afterDeleteHelm`, a schedule name, ...).
    pub fn bindings(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|c| c.binding.as_str())
    }

    /// A module value by JSON pointer relative to the module key, e.g. `/internal/webhookCert`.
    pub fn module_value(&self, pointer: &str) -> Option<&Value> {
        self.values
            .get(VALUES_KEY)
            .and_then(|m| m.pointer(pointer))
            .filter(|v| !v.is_null())
    }

    /// A global value by JSON pointer, e.g. `/discovery/clusterDomain`.
    pub fn global_value(&self, pointer: &str) -> Option<&Value> {
        self.values
            .get("global")
            .and_then(|g| g.pointer(pointer))
            .filter(|v| !v.is_null())
    }
}

/// Everything a hook run produces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub values_patches: Vec<Value>,
    pub kube_operations: Vec<Value>,
    pub metrics: Vec<Value>,
}

impl Output {
    /// Sets a module value (`add` replaces an existing member in JSON Patch).
    pub fn set_value(&mut self, pointer: &str, value: Value) {
        self.values_patches
            .push(json!({"op": "add", "path": format!("/{VALUES_KEY}{pointer}"), "value": value}));
    }

    /// Removes a module value; addon-operator applies patches strictly, so only when it exists.
    pub fn remove_value(&mut self, input: &Input, pointer: &str) {
        let exists = input
            .values
            .get(VALUES_KEY)
            .and_then(|m| m.pointer(pointer))
            .is_some();
        if exists {
            self.values_patches
                .push(json!({"op": "remove", "path": format!("/{VALUES_KEY}{pointer}")}));
        }
    }

    /// Sets a gauge in a metric group (the group's earlier values are expired by addon-operator).
    pub fn set_gauge(&mut self, group: &str, name: &str, value: f64, labels: Value) {
        self.metrics.push(
            json!({"group": group, "name": name, "action": "set", "value": value, "labels": labels}),
        );
    }

    /// Drops every value of a metric group (sending a group's metrics expires its earlier values,
    /// so this is only needed when nothing of the group is sent).
    pub fn expire_group(&mut self, group: &str) {
        self.metrics
            .push(json!({"group": group, "action": "expire"}));
    }

    /// Appends an object-patch operation (`Delete`, `JSONPatch`, `MergePatch`, ...).
    pub fn kube(&mut self, operation: Value) {
        self.kube_operations.push(operation);
    }
}

/// A hook of this binary.
pub trait Hook {
    /// Display name, unique in the binary.
    fn name(&self) -> &'static str;
    /// The `HookConfig` object of `hook config` (without `metadata`, which is filled in).
    fn config(&self) -> Value;
    /// One run.
    fn run(&self, input: &Input, output: &mut Output) -> Result<(), HookError>;
}

/// Text of `hook list`.
pub fn list_text(hooks: &[&dyn Hook]) -> String {
    let mut out = format!("Found {} items:\n", hooks.len());
    for (i, h) in hooks.iter().enumerate() {
        out.push_str(&format!("{i} - {}\n", h.name()));
    }
    out
}

/// JSON of `hook config` (module-sdk `BatchHookConfig`, version v1).
pub fn config_json(hooks: &[&dyn Hook]) -> Value {
    let configs: Vec<Value> = hooks
        .iter()
        .map(|h| {
            let mut c = h.config();
            if let Value::Object(m) = &mut c {
                m.insert("configVersion".into(), json!("v1"));
                m.insert(
                    "metadata".into(),
                    json!({"name": h.name(), "path": format!("svdm-hooks/{}", h.name())}),
                );
            }
            c
        })
        .collect();
    json!({"version": "v1", "hooks": configs})
}

/// Where the protocol's files are (environment variables with module-sdk's fallbacks).
#[derive(Clone, Debug)]
pub struct Paths {
    pub binding_context: PathBuf,
    pub values: PathBuf,
    pub config_values: PathBuf,
    pub values_patch: PathBuf,
    pub kubernetes_patch: PathBuf,
    pub metrics: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Paths {
            binding_context: var("BINDING_CONTEXT_PATH", "in/binding_context.json"),
            values: var("VALUES_PATH", "in/values_path.json"),
            config_values: var("CONFIG_VALUES_PATH", "in/config_values_path.json"),
            values_patch: var("VALUES_JSON_PATCH_PATH", "out/values.json"),
            kubernetes_patch: var("KUBERNETES_PATCH_PATH", "out/kubernetes.json"),
            metrics: var("METRICS_PATH", "out/metrics.json"),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, HookError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Value::Null),
        Err(source) => {
            return Err(HookError::Read {
                path: path.into(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|source| HookError::Json {
        path: path.into(),
        source,
    })
}

/// Reads the inputs of a run.
pub fn read_input(paths: &Paths) -> Result<Input, HookError> {
    let contexts = match read_json(&paths.binding_context)? {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v).map_err(|source| HookError::Json {
            path: paths.binding_context.clone(),
            source,
        })?,
    };
    Ok(Input {
        contexts,
        values: read_json(&paths.values)?,
        config_values: read_json(&paths.config_values)?,
    })
}

fn write(path: &Path, text: &str) -> Result<(), HookError> {
    std::fs::write(path, text).map_err(|source| HookError::Write {
        path: path.into(),
        source,
    })
}

fn ndjson(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

/// Writes the outputs of a run. Empty outputs leave the pre-created files empty ("no changes").
pub fn write_output(paths: &Paths, output: &Output) -> Result<(), HookError> {
    if !output.values_patches.is_empty() {
        write(
            &paths.values_patch,
            &Value::Array(output.values_patches.clone()).to_string(),
        )?;
    }
    if !output.kube_operations.is_empty() {
        write(&paths.kubernetes_patch, &ndjson(&output.kube_operations))?;
    }
    if !output.metrics.is_empty() {
        write(&paths.metrics, &ndjson(&output.metrics))?;
    }
    Ok(())
}
