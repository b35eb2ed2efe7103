//! What the kubelet computes before it starts a container: the environment (`env`, `envFrom`, `valueFrom`),
//! `$(VAR)` expansion of command and args, and (the simulator's one shortcut) container paths in arguments
//! rewritten to host paths.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, Client};

use crate::error::{Error, Result};

/// Kubernetes `$(VAR)` expansion: `$(NAME)` is replaced when `NAME` is known and kept verbatim otherwise,
/// `$$` is an escaped `$`, any other `$` is literal.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container path (`mountPath` or `devicePath`) and the host path it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMapping {
    pub container: String,
    pub host: String,
}

fn map_path(value: &str, mappings: &[PathMapping]) -> Option<String> {
    // Longest container path first, so `/data/sub` wins over `/data`.
    let mut sorted: Vec<&PathMapping> = mappings.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.container.len()));
    for m in sorted {
        let prefix = m.container.trim_end_matches('/');
        if value == m.container || value == prefix {
            return Some(m.host.clone());
        }
        if let Some(rest) = value.strip_prefix(prefix)
            && rest.starts_with('/')
        {
            return Some(format!("{}{}", m.host.trim_end_matches('/'), rest));
        }
    }
    None
}

/// Rewrite an argument that names a container path: the whole token (`/data/x`) or the value of a
/// `--flag=/data/x` token.
pub fn map_arg(arg: &str, mappings: &[PathMapping]) -> String {
    if let Some(mapped) = map_path(arg, mappings) {
        return mapped;
    }
    if let Some((flag, value)) = arg.split_once('=')
        && let Some(mapped) = map_path(value, mappings)
    {
        return format!("{flag}={mapped}");
    }
    arg.to_string()
}

/// The value of a downward-API `fieldRef` the simulator supports.
pub fn field_ref(pod: &Pod, field_path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"))
                .map(|k| (k, &meta.labels));
            let annotation = other
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"))
                .map(|k| (k, &meta.annotations));
            label
                .or(annotation)
                .and_then(|(k, map)| map.as_ref()?.get(k).cloned())
        }
    }
}

/// Reads Secrets and ConfigMaps of one namespace on demand.
pub struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
}

impl Sources {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
        }
    }

    pub async fn secret(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        Ok(self.secrets.get_opt(name).await?.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            data
        }))
    }

    pub async fn config_map(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        Ok(self.config_maps.get_opt(name).await?.map(|c| {
            let mut data: BTreeMap<String, Vec<u8>> = c
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            data.extend(
                c.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            data
        }))
    }
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Unsupported(format!("{what} is not UTF-8")))
}

async fn env_var_value(
    var: &EnvVar,
    pod: &Pod,
    sources: &Sources,
    known: &[(String, String)],
) -> Result<Option<String>> {
    if let Some(value) = &var.value {
        let lookup = |name: &str| {
            known
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        return Ok(Some(expand(value, &lookup)));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(f) = &from.field_ref {
        return field_ref(pod, &f.field_path).map(Some).ok_or_else(|| {
            Error::NotReady(format!(
                "env {}: field {} has no value yet",
                var.name, f.field_path
            ))
        });
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        return match sources
            .secret(&r.name)
            .await?
            .and_then(|mut d| d.remove(&r.key))
        {
            Some(v) => Ok(Some(utf8(v, &format!("secret {} key {}", r.name, r.key))?)),
            None if optional => Ok(None),
            None => Err(Error::NotReady(format!(
                "env {}: secret {} key {} not found",
                var.name, r.name, r.key
            ))),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        return match sources
            .config_map(&r.name)
            .await?
            .and_then(|mut d| d.remove(&r.key))
        {
            Some(v) => Ok(Some(utf8(
                v,
                &format!("configmap {} key {}", r.name, r.key),
            )?)),
            None if optional => Ok(None),
            None => Err(Error::NotReady(format!(
                "env {}: configmap {} key {} not found",
                var.name, r.name, r.key
            ))),
        };
    }
    Err(Error::Unsupported(format!(
        "env {}: unsupported valueFrom (only fieldRef, secretKeyRef, configMapKeyRef)",
        var.name
    )))
}

/// The container's environment as the kubelet builds it: `envFrom` first, then `env` in order, each value
/// expanded against the variables defined before it.
pub async fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(d) => d,
                None if r.optional.unwrap_or(false) => continue,
                None => {
                    return Err(Error::NotReady(format!(
                        "envFrom: secret {} not found",
                        r.name
                    )));
                }
            }
        } else if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(d) => d,
                None if r.optional.unwrap_or(false) => continue,
                None => {
                    return Err(Error::NotReady(format!(
                        "envFrom: configmap {} not found",
                        r.name
                    )));
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let value = utf8(v, &format!("envFrom key {k}"))?;
            set(&mut env, format!("{prefix}{k}"), value);
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_var_value(var, pod, sources, &env).await? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The program and arguments to run for the container: `command` (the image entrypoint when absent) and
/// `args`, `$(VAR)`-expanded against `env`, with container paths mapped to host paths. The first element of
/// `command` names a binary inside the image; it is replaced by `binary`.
pub fn command_line(
    container: &Container,
    env: &[(String, String)],
    mappings: &[PathMapping],
) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let command = container.command.clone().unwrap_or_default();
    command
        .into_iter()
        .skip(1)
        .chain(container.args.clone().unwrap_or_default())
        .map(|arg| map_arg(&expand(&arg, &lookup), mappings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.0.1.10".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_kubernetes() {
        assert_eq!(
            expand("--address=$(POD_IP)", &lookup),
            "--address=127.0.1.10"
        );
        assert_eq!(expand("$(UNKNOWN)-x", &lookup), "$(UNKNOWN)-x");
        assert_eq!(expand("$$(POD_IP)", &lookup), "$(POD_IP)");
        assert_eq!(expand("a$$b", &lookup), "a$b");
        assert_eq!(expand("cost $5", &lookup), "cost $5");
        assert_eq!(expand("open $(POD_IP", &lookup), "open $(POD_IP");
        assert_eq!(expand("[$(EMPTY)]", &lookup), "[]");
        assert_eq!(expand("trailing $", &lookup), "trailing $");
    }

    fn mappings() -> Vec<PathMapping> {
        vec![
            PathMapping {
                container: "/data".into(),
                host: "/sim/volumes/vol-1".into(),
            },
            PathMapping {
                container: "/etc/svdm/tls".into(),
                host: "/sim/pods/u/volumes/tls".into(),
            },
            PathMapping {
                container: "/etc/svdm/tls/ca".into(),
                host: "/sim/pods/u/volumes/ca".into(),
            },
            PathMapping {
                container: "/dev/svdm-data".into(),
                host: "/dev/loop3".into(),
            },
        ]
    }

    #[test]
    fn maps_container_paths_in_args() {
        let m = mappings();
        assert_eq!(map_arg("--source=/data", &m), "--source=/sim/volumes/vol-1");
        assert_eq!(map_arg("/data/sub/file", &m), "/sim/volumes/vol-1/sub/file");
        assert_eq!(
            map_arg("--tls-cert=/etc/svdm/tls/tls.crt", &m),
            "--tls-cert=/sim/pods/u/volumes/tls/tls.crt"
        );
        assert_eq!(
            map_arg("--ca=/etc/svdm/tls/ca/ca.crt", &m),
            "--ca=/sim/pods/u/volumes/ca/ca.crt"
        );
        assert_eq!(
            map_arg("--source=/dev/svdm-data", &m),
            "--source=/dev/loop3"
        );
        // Prefixes must end at a path boundary, and other values stay as they are.
        assert_eq!(map_arg("--source=/database", &m), "--source=/database");
        assert_eq!(map_arg("--port=8443", &m), "--port=8443");
        assert_eq!(map_arg("--mode=filesystem", &m), "--mode=filesystem");
    }

    #[test]
    fn command_line_expands_then_maps() {
        let container = Container {
            name: "exporter".into(),
            command: Some(vec!["/usr/bin/exporter".into(), "serve".into()]),
            args: Some(vec![
                "--address=$(POD_IP)".into(),
                "--source=/data".into(),
                "--x=$$(POD_IP)".into(),
            ]),
            ..Default::default()
        };
        let env = vec![("POD_IP".to_string(), "127.0.1.10".to_string())];
        assert_eq!(
            command_line(&container, &env, &mappings()),
            vec![
                "serve",
                "--address=127.0.1.10",
                "--source=/sim/volumes/vol-1",
                "--x=$(POD_IP)"
            ]
        );
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"nodeName": "sim-node-1", "serviceAccountName": "sa", "containers": []},
            "status": {"podIP": "127.0.1.10"}
        }))
        .expect("valid pod");
        assert_eq!(field_ref(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(field_ref(&pod, "metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(
            field_ref(&pod, "status.podIP").as_deref(),
            Some("127.0.1.10")
        );
        assert_eq!(
            field_ref(&pod, "spec.nodeName").as_deref(),
            Some("sim-node-1")
        );
        assert_eq!(
            field_ref(&pod, "spec.serviceAccountName").as_deref(),
            Some("sa")
        );
        assert_eq!(
            field_ref(&pod, "metadata.labels['app']").as_deref(),
            Some("x")
        );
        assert_eq!(field_ref(&pod, "status.nothing"), None);
    }
}
