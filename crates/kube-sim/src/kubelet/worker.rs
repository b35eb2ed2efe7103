//! One exporter pod run as a local process: volumes, environment, a ServiceAccount token and kubeconfig,
//! the process itself with restarts, readiness probes, status reporting and graceful termination.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::expand::{Sources, command_line, resolve_env};
use super::probe::{self, Check};
use super::volumes::{self, Materialised};
use super::{ContainerReport, pod_status};
use crate::Sim;
use crate::error::{Error, Result, io_err};

const TOKEN_SECONDS: i64 = 3600;
const REFRESH: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub struct Args {
    pub sim: Arc<Sim>,
    /// The host program that stands in for the container's entry point.
    pub program: PathBuf,
    pub pod: Pod,
    pub container: Container,
    pub ip: String,
}

struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    materialised: Vec<Materialised>,
    token_file: PathBuf,
    token: String,
    token_renew_at: Instant,
    log_path: PathBuf,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
    grace: Duration,
}

/// A probe with its timing, resolved against the pod.
#[derive(Clone)]
struct ProbeSpec {
    check: Check,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
}

impl ProbeSpec {
    fn new(p: &k8s_openapi::api::core::v1::Probe, container: &Container, ip: &str) -> Option<Self> {
        let secs =
            |v: Option<i32>, d: u64| Duration::from_secs(v.map(|s| s.max(0) as u64).unwrap_or(d));
        Some(Self {
            check: probe::resolve(p, container, ip)?,
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            failure_threshold: p.failure_threshold.map(|f| f.max(1) as u32).unwrap_or(3),
        })
    }

    async fn run(&self) -> Result<(), String> {
        let (check, timeout) = (self.check.clone(), self.timeout);
        tokio::task::spawn_blocking(move || probe::run(&check, timeout))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

fn pod_dir(sim: &Sim, pod: &Pod) -> PathBuf {
    sim.store
        .root()
        .join("pods")
        .join(pod.uid().unwrap_or_default())
}

async fn request_token(sim: &Sim, pod: &Pod) -> Result<Token> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        }),
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(sim.client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await?;
    let value = answer.status.and_then(|s| s.token).unwrap_or_default();
    if value.is_empty() {
        return Err(Error::NotReady(format!(
            "no token issued for service account {ns}/{sa}"
        )));
    }
    // Renew at 80% of the lifetime, as the kubelet does.
    let renew_at = Instant::now() + Duration::from_secs((TOKEN_SECONDS as u64) * 4 / 5);
    Ok(Token { value, renew_at })
}

fn write_file_atomic(path: &Path, content: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))
}

/// A kubeconfig that authenticates as the pod's ServiceAccount against the simulator's own API server.
pub fn pod_kubeconfig(cluster: &Value, namespace: &str, user: &str, token_file: &Path) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": cluster}],
        "users": [{"name": user, "user": {"tokenFile": token_file.to_string_lossy()}}],
        "contexts": [{"name": "pod", "context": {"cluster": "sim", "user": user, "namespace": namespace}}],
        "current-context": "pod"
    })
}

async fn prepare(a: &Args, sources: &Sources) -> Result<Prepared> {
    let sim = &a.sim;
    let pod = &a.pod;
    let dir = pod_dir(sim, pod);
    let kubelet_dir = dir.join("kubelet");
    std::fs::create_dir_all(&kubelet_dir).map_err(io_err("create", &kubelet_dir))?;
    let program = a.program.clone();

    let token = request_token(sim, pod).await?;
    let token_file = kubelet_dir.join("token");
    write_file_atomic(&token_file, token.value.as_bytes())?;
    let cluster = sim.cluster.as_ref().ok_or_else(|| {
        Error::Unsupported("the simulator has no kubeconfig cluster to hand to pods".into())
    })?;
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let kubeconfig = kubelet_dir.join("kubeconfig");
    write_file_atomic(
        &kubeconfig,
        serde_yaml::to_string(&pod_kubeconfig(cluster, &ns, &sa, &token_file))?.as_bytes(),
    )?;

    let (hosts, materialised) = volumes::prepare(sim, pod, &dir, sources, &token.value).await?;
    let mappings = volumes::mappings(&a.container, &hosts)?;

    let mut env = resolve_env(pod, &a.container, sources).await?;
    env.retain(|(k, _)| k != "KUBECONFIG");
    env.push((
        "KUBECONFIG".into(),
        kubeconfig.to_string_lossy().into_owned(),
    ));
    let args = command_line(&a.container, &env, &mappings);

    let log_dir = sim.store.root().join("logs").join(format!(
        "{ns}_{}_{}",
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ));
    std::fs::create_dir_all(&log_dir).map_err(io_err("create", &log_dir))?;
    let log_path = log_dir.join(format!("{}.log", a.container.name));

    let readiness =
        (a.container.readiness_probe.as_ref()).and_then(|p| ProbeSpec::new(p, &a.container, &a.ip));
    let liveness =
        (a.container.liveness_probe.as_ref()).and_then(|p| ProbeSpec::new(p, &a.container, &a.ip));
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Ok(Prepared {
        program,
        args,
        env,
        materialised,
        token_file,
        token: token.value,
        token_renew_at: token.renew_at,
        log_path,
        readiness,
        liveness,
        grace: Duration::from_secs(grace.max(0) as u64),
    })
}

fn spawn(p: &Prepared, cwd: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log_path)
        .map_err(io_err("open", &p.log_path))?;
    let err_log = log.try_clone().map_err(io_err("open", &p.log_path))?;
    let mut cmd = tokio::process::Command::new(&p.program);
    cmd.args(&p.args)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(io_err("start", &p.program))?;
    if let Some(pid) = child.id() {
        let pid_file = cwd.join("kubelet").join("pid");
        if let Err(e) = std::fs::write(&pid_file, pid.to_string()) {
            log::warn!("cannot record pid in {}: {e}", pid_file.display());
        }
    }
    Ok(child)
}

/// Forget the recorded pid once the process is reaped, so a reused pid is never mistaken for ours.
fn clear_pid(cwd: &Path) {
    let _ = std::fs::remove_file(cwd.join("kubelet").join("pid"));
}

/// Kill a process group a previous simulator run left behind (it died without stopping its pods): the
/// recorded pid, if it still runs one of the programs this simulator starts.
pub(super) fn kill_leftover(cwd: &Path, config: &crate::Config) {
    let Ok(pid) = std::fs::read_to_string(cwd.join("kubelet").join("pid")) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return;
    };
    if config.runs_program(&exe) {
        log::info!("killing process {pid} left over from a previous run");
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// SIGTERM the process group, wait up to `grace`, then SIGKILL.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        log::info!("process {pid} outlived its grace period; killing it");
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

struct Reporter<'a> {
    a: &'a Args,
    api: Api<Pod>,
    started: String,
    last: Option<Value>,
}

impl Reporter<'_> {
    async fn report(&mut self, phase: &str, c: ContainerReport) {
        let status = pod_status(&self.a.pod, &self.a.ip, phase, &self.started, Some(c));
        if self.last.as_ref() == Some(&status) {
            return;
        }
        let name = self.a.pod.name_any();
        match self
            .api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(status.clone()),
            )
            .await
        {
            Ok(_) => self.last = Some(status),
            Err(e) => log::warn!("pod {name}: cannot update status: {e}"),
        }
    }
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"waiting": {"reason": reason, "message": message}})
}

/// Run the pod until told to stop; `stop` carries the grace period.
pub async fn run(a: Args, mut stop: oneshot::Receiver<Duration>) {
    let ns = a.pod.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", a.pod.name_any());
    let mut rep = Reporter {
        a: &a,
        api: Api::namespaced(a.sim.client.clone(), &ns),
        started: Timestamp::now().to_string(),
        last: None,
    };
    let cname = a.container.name.clone();
    let report =
        |state: Value, ready: bool, restarts: i32, last_state: Option<Value>| ContainerReport {
            name: cname.clone(),
            state,
            ready,
            restart_count: restarts,
            last_state,
        };
    rep.report(
        "Pending",
        report(waiting("ContainerCreating", ""), false, 0, None),
    )
    .await;

    let sources = Sources::new(a.sim.client.clone(), &ns);
    let mut prepared = loop {
        match prepare(&a, &sources).await {
            Ok(p) => break p,
            Err(e) => {
                log::info!("pod {key}: not started yet: {e}");
                let reason = if matches!(e, Error::Unsupported(_)) {
                    "CreateContainerConfigError"
                } else {
                    "ContainerCreating"
                };
                rep.report(
                    "Pending",
                    report(waiting(reason, &e.to_string()), false, 0, None),
                )
                .await;
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => continue,
                    _ = &mut stop => return,
                }
            }
        }
    };
    let cwd = pod_dir(&a.sim, &a.pod);
    let restart_policy = a
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let mut restarts = 0;
    let mut last_state: Option<Value> = None;
    let mut backoff = BACKOFF_START;

    kill_leftover(&cwd, &a.sim.config);
    loop {
        let started_at = Timestamp::now().to_string();
        let mut child = match spawn(&prepared, &cwd) {
            Ok(child) => child,
            Err(e) => {
                log::warn!("pod {key}: {e}");
                rep.report(
                    "Pending",
                    report(
                        waiting("RunContainerError", &e.to_string()),
                        false,
                        restarts,
                        last_state.clone(),
                    ),
                )
                .await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => { backoff = (backoff * 2).min(BACKOFF_MAX); continue }
                    _ = &mut stop => return,
                }
            }
        };
        log::info!(
            "pod {key}: started {} {:?} (pid {:?})",
            prepared.program.display(),
            prepared.args,
            child.id()
        );
        let running = json!({"running": {"startedAt": started_at}});
        let mut ready = prepared.readiness.is_none();
        rep.report(
            "Running",
            report(running.clone(), ready, restarts, last_state.clone()),
        )
        .await;

        let mut failures = 0u32;
        let mut live_failures = 0u32;
        let start = Instant::now();
        let mut next_probe = start
            + prepared
                .readiness
                .as_ref()
                .map(|p| p.initial_delay)
                .unwrap_or_default();
        let mut next_live = start
            + prepared
                .liveness
                .as_ref()
                .map(|p| p.initial_delay)
                .unwrap_or_default();
        let mut refresh = tokio::time::interval(REFRESH);
        let exit = loop {
            tokio::select! {
                exit = child.wait() => break exit,
                grace = &mut stop => {
                    let grace = grace.unwrap_or_default();
                    log::info!("pod {key}: stopping (grace {grace:?})");
                    terminate(&mut child, grace).await;
                    clear_pid(&cwd);
                    return;
                }
                _ = tokio::time::sleep_until(next_probe), if prepared.readiness.is_some() => {
                    let Some(spec) = prepared.readiness.clone() else { continue };
                    let (period, threshold) = (spec.period, spec.failure_threshold);
                    let outcome = spec.run().await;
                    let was = ready;
                    match outcome {
                        Ok(()) => { failures = 0; ready = true; }
                        Err(e) => {
                            failures += 1;
                            if !was || failures >= threshold { ready = false; }
                            log::debug!("pod {key}: readiness probe failed: {e}");
                        }
                    }
                    if ready != was {
                        log::info!("pod {key}: ready={ready}");
                        rep.report("Running", report(running.clone(), ready, restarts, last_state.clone())).await;
                    }
                    // Until the first success, probe every second instead of every period (faster tests).
                    next_probe = Instant::now() + if ready { period } else { Duration::from_secs(1).min(period) };
                }
                _ = tokio::time::sleep_until(next_live), if prepared.liveness.is_some() => {
                    let Some(spec) = prepared.liveness.clone() else { continue };
                    next_live = Instant::now() + spec.period;
                    match spec.run().await {
                        Ok(()) => live_failures = 0,
                        Err(e) => {
                            live_failures += 1;
                            log::info!("pod {key}: liveness probe failed ({live_failures}/{}): {e}", spec.failure_threshold);
                            if live_failures >= spec.failure_threshold {
                                log::info!("pod {key}: container failed liveness; restarting it");
                                terminate(&mut child, prepared.grace).await;
                                break child.wait().await;
                            }
                        }
                    }
                }
                _ = refresh.tick() => {
                    if Instant::now() >= prepared.token_renew_at {
                        match request_token(&a.sim, &a.pod).await {
                            Ok(t) => {
                                if let Err(e) = write_file_atomic(&prepared.token_file, t.value.as_bytes()) {
                                    log::warn!("pod {key}: {e}");
                                }
                                prepared.token = t.value;
                                prepared.token_renew_at = t.renew_at;
                            }
                            Err(e) => log::warn!("pod {key}: token renewal failed: {e}"),
                        }
                    }
                    for m in &prepared.materialised {
                        match volumes::refresh(m, &a.pod, &sources, &prepared.token).await {
                            Ok(true) => log::info!("pod {key}: volume {} updated", m.volume.name),
                            Ok(false) => {}
                            Err(e) => log::debug!("pod {key}: volume {} not refreshed: {e}", m.volume.name),
                        }
                    }
                }
            }
        };
        clear_pid(&cwd);
        let code = match exit {
            Ok(status) => status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
            }),
            Err(e) => {
                log::warn!("pod {key}: cannot wait for the process: {e}");
                128
            }
        };
        log::info!("pod {key}: process exited with code {code}");
        let terminated = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at,
            "finishedAt": Timestamp::now().to_string()
        }});
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if !restart {
            let phase = if code == 0 { "Succeeded" } else { "Failed" };
            rep.report(
                phase,
                report(terminated, false, restarts, last_state.clone()),
            )
            .await;
            let _ = stop.await;
            return;
        }
        restarts += 1;
        last_state = Some(terminated);
        let msg = format!(
            "back-off {}s restarting failed container",
            backoff.as_secs()
        );
        rep.report(
            "Running",
            report(
                waiting("CrashLoopBackOff", &msg),
                false,
                restarts,
                last_state.clone(),
            ),
        )
        .await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => { backoff = (backoff * 2).min(BACKOFF_MAX); }
            _ = &mut stop => return,
        }
    }
}
