//! The test bed's pod runner: a stand-in kubelet for Sluice's dispatcher pods.
//!
//! The test bed has no container runtime. kwok simulates every other pod; the dispatcher
//! pods (label `app.kubernetes.io/name=sluice-dispatcher`) are left to this runner, which
//! starts each one as a local process the way a kubelet would run its container:
//! - the container's args on the local `sluice` binary (the image is the operator's own);
//! - env from values, Secrets, ConfigMaps and the downward API; ConfigMap volumes written to
//!   a directory and the mount paths in args/env pointed there;
//! - the pod's ServiceAccount as a bound token (TokenRequest) in a kubeconfig, so the
//!   dispatcher runs with exactly its RBAC;
//! - its own admin port (pods have their own network namespace; processes share one);
//! - restart on exit with backoff, liveness kills, readiness from `/readyz` written to the
//!   pod's status (so Deployments count ready replicas for real);
//! - graceful deletion: SIGTERM, the grace period, SIGKILL, then the pod object is removed.
//!
//! It also writes a Prometheus file_sd target list of the running dispatchers. One runner
//! at a time holds the `sluice-podrunner` Lease; others stand by.

use std::{
    collections::{BTreeMap, HashMap},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use sluice::{
    leader::{self, LeaseSettings},
    telemetry::health::Health,
};
use tokio::{process::Command, sync::Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Parser, Debug)]
struct Args {
    /// The `sluice` binary dispatcher containers run.
    #[arg(long, env = "SLUICE_BIN")]
    bin: PathBuf,
    /// Where pod files (config volumes, kubeconfigs, logs) and the Prometheus targets go.
    #[arg(long, default_value = ".testbed/pods")]
    state_dir: PathBuf,
    /// Label selector of the pods this runner runs.
    #[arg(long, default_value = "app.kubernetes.io/name=sluice-dispatcher")]
    selector: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice::telemetry::init_logging(sluice::telemetry::LogFormat::Plain, "info,kube=warn");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.context("no kubeconfig")?;
    std::fs::create_dir_all(&args.state_dir)?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;
    let bin = std::fs::canonicalize(&args.bin).with_context(|| format!("{}", args.bin.display()))?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(()) = async { term.as_mut()?.recv().await } => {}
            }
            stop.cancel();
        });
    }
    let identity = format!("podrunner-{}", std::process::id());
    let lease =
        LeaseSettings { namespace: "default".into(), name: "sluice-podrunner".into(), identity, duration_secs: 6 };
    let runner = Arc::new(Runner {
        client: client.clone(),
        bin,
        state_dir,
        pods: Mutex::default(),
        ports: std::sync::Mutex::default(),
    });
    let selector = args.selector.clone();
    leader::lead(client, lease, Arc::new(Health::default()), stop.clone(), move |token| {
        let (runner, selector) = (runner.clone(), selector.clone());
        async move { runner.run(&selector, token).await }
    })
    .await;
    Ok(())
}

struct Runner {
    client: Client,
    bin: PathBuf,
    state_dir: PathBuf,
    /// Running pods by UID, with the token that stops each one.
    pods: Mutex<HashMap<String, Running>>,
    /// The admin port of each running container, by namespace and pod name.
    ports: std::sync::Mutex<BTreeMap<(String, String), u16>>,
}

struct Running {
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Runner {
    async fn run(self: Arc<Self>, selector: &str, stop: CancellationToken) {
        info!(selector, "Running dispatcher pods.");
        let pods = Api::<Pod>::all(self.client.clone());
        let mut events =
            watcher(pods, watcher::Config::default().labels(selector)).default_backoff().touched_objects().boxed();
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => break,
                next = events.next() => next,
            };
            match next {
                Some(Ok(pod)) => self.clone().sync(pod).await,
                Some(Err(e)) => warn!(error = %e, "Pod watch error."),
                None => break,
            }
        }
        let running: Vec<Running> = self.pods.lock().await.drain().map(|(_, r)| r).collect();
        for r in running {
            r.stop.cancel();
            let _ = r.done.await;
        }
        info!("Pod runner stopped.");
    }

    async fn sync(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let mut pods = self.pods.lock().await;
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        if pod.metadata.deletion_timestamp.is_some() {
            if let Some(r) = pods.remove(&uid) {
                r.stop.cancel();
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = r.done.await;
                    this.remove_pod(&pod).await;
                });
            } else {
                drop(pods);
                self.remove_pod(&pod).await;
            }
            return;
        }
        if !bound || pods.contains_key(&uid) {
            return;
        }
        let stop = CancellationToken::new();
        let this = self.clone();
        let token = stop.clone();
        let done = tokio::spawn(async move { this.supervise(pod, token).await });
        pods.insert(uid, Running { stop, done });
    }

    /// Runs the pod's container until the pod is deleted: restarts it when it exits or
    /// fails its liveness probe, reports readiness to the pod's status.
    async fn supervise(self: Arc<Self>, pod: Pod, stop: CancellationToken) {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let dir = self.state_dir.join(format!("{namespace}_{name}"));
        let mut restarts = 0i32;
        let mut backoff = Duration::from_millis(500);
        while !stop.is_cancelled() {
            let started = match self.start(&pod, &dir).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(pod = %name, error = format!("{e:#}"), "Cannot start the container; retrying.");
                    self.report(&pod, false, restarts, Some(&format!("{e:#}"))).await;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let Started { mut child, port, grace } = started;
            info!(pod = %format!("{namespace}/{name}"), port, restarts, "Container started.");
            self.set_port(&namespace, &name, Some(port));
            let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap_or_default();
            let (mut ready, mut live_failures) = (false, 0u32);
            self.report(&pod, false, restarts, None).await;
            let exited = loop {
                tokio::select! {
                    () = stop.cancelled() => break false,
                    status = child.wait() => {
                        warn!(pod = %name, status = ?status.ok(), "Container exited.");
                        break true;
                    }
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let probe = |path: &str| http.get(format!("http://127.0.0.1:{port}{path}")).send();
                let now_ready = probe("/readyz").await.is_ok_and(|r| r.status().is_success());
                if now_ready != ready {
                    ready = now_ready;
                    self.report(&pod, ready, restarts, None).await;
                }
                live_failures =
                    if probe("/healthz").await.is_ok_and(|r| r.status().is_success()) { 0 } else { live_failures + 1 };
                if live_failures >= 6 {
                    warn!(pod = %name, "Liveness probe failed; restarting the container.");
                    let _ = child.kill().await;
                    break true;
                }
            };
            if !exited {
                terminate(&mut child, grace).await;
            }
            self.set_port(&namespace, &name, None);
            self.report(&pod, false, restarts, None).await;
            if stop.is_cancelled() {
                break;
            }
            restarts += 1;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Starts the pod's first container as a local process.
    async fn start(&self, pod: &Pod, dir: &Path) -> anyhow::Result<Started> {
        let namespace = pod.namespace().unwrap_or_default();
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let container = spec.containers.first().context("pod without containers")?;
        std::fs::create_dir_all(dir)?;

        // ConfigMap volumes become directories; their mount paths are rewritten to them.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for volume in spec.volumes.iter().flatten() {
            let Some(source) = &volume.config_map else { continue };
            let map = Api::<ConfigMap>::namespaced(self.client.clone(), &namespace).get(&source.name).await?;
            let target = dir.join("volumes").join(&volume.name);
            std::fs::create_dir_all(&target)?;
            for (key, value) in map.data.unwrap_or_default() {
                std::fs::write(target.join(key), value)?;
            }
            for mount in container.volume_mounts.iter().flatten().filter(|m| m.name == volume.name) {
                mounts.push((mount.mount_path.clone(), target.clone()));
            }
        }
        let local = |text: &str| {
            mounts.iter().find(|(path, _)| text.starts_with(path.as_str())).map_or_else(
                || text.to_owned(),
                |(path, target)| format!("{}{}", target.display(), &text[path.len()..]),
            )
        };

        let mut env = self.env(pod, container, &namespace).await?;
        for value in env.values_mut() {
            *value = local(value);
        }
        let port = free_port()?;
        env.insert("SLUICE_ADMIN_ADDR".into(), format!("127.0.0.1:{port}"));
        env.insert("KUBECONFIG".into(), self.kubeconfig(pod, dir).await?.display().to_string());

        let args: Vec<String> = container.args.iter().flatten().map(|a| local(a)).collect();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("container.log"))?;
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.bin)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().context("spawn the container process")?;
        std::fs::write(dir.join("port"), port.to_string())?;
        std::fs::write(dir.join("pid"), child.id().unwrap_or_default().to_string())?;
        let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).try_into().unwrap_or(30));
        Ok(Started { child, port, grace })
    }

    /// The container's environment, resolved the way the kubelet does.
    async fn env(&self, pod: &Pod, container: &Container, namespace: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        Some(match field.field_path.as_str() {
                            "metadata.name" => pod.name_any(),
                            "metadata.namespace" => namespace.to_owned(),
                            "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
                            other => anyhow::bail!("downward API field {other} is not supported by the pod runner"),
                        })
                    } else if let Some(key) = &from.secret_key_ref {
                        let secret =
                            Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(&key.name).await?;
                        let value = secret.and_then(|s| s.data).and_then(|d| d.get(&key.key).cloned());
                        match value {
                            Some(v) => Some(String::from_utf8(v.0)?),
                            None if key.optional == Some(true) => None,
                            None => anyhow::bail!("Secret {namespace}/{} key {} not found", key.name, key.key),
                        }
                    } else if let Some(key) = &from.config_map_key_ref {
                        let map =
                            Api::<ConfigMap>::namespaced(self.client.clone(), namespace).get_opt(&key.name).await?;
                        let value = map.and_then(|m| m.data).and_then(|d| d.get(&key.key).cloned());
                        match value {
                            Some(v) => Some(v),
                            None if key.optional == Some(true) => None,
                            None => anyhow::bail!("ConfigMap {namespace}/{} key {} not found", key.name, key.key),
                        }
                    } else {
                        None
                    }
                }
                (None, None) => Some(String::new()),
            };
            if let Some(value) = value {
                env.insert(var.name.clone(), value);
            }
        }
        Ok(env)
    }

    /// A kubeconfig with a token bound to this pod for its ServiceAccount.
    async fn kubeconfig(&self, pod: &Pod, dir: &Path) -> anyhow::Result<PathBuf> {
        let namespace = pod.namespace().unwrap_or_default();
        let account =
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(48 * 3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), &namespace);
        let token: TokenRequest = accounts
            .create_subresource("token", &account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("token for ServiceAccount {namespace}/{account}"))?;
        let token = token.status.context("no token issued")?.token;
        let admin = kube::config::Kubeconfig::read().context("read the runner's kubeconfig")?;
        let cluster = admin.clusters.first().and_then(|c| c.cluster.clone()).context("kubeconfig without cluster")?;
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testbed", "cluster": {
                "server": cluster.server,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "testbed", "user": account, "namespace": namespace}}],
            "current-context": "pod",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(path)
    }

    /// Writes the pod's phase, readiness and restart count, as the kubelet would.
    async fn report(&self, pod: &Pod, ready: bool, restarts: i32, waiting: Option<&str>) {
        let api = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let now = Timestamp::now().to_string();
        let ready_text = if ready { "True" } else { "False" };
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let state = match waiting {
            Some(message) => json!({"waiting": {"reason": "CreateContainerError", "message": message}}),
            None => json!({"running": {"startedAt": now}}),
        };
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.status.as_ref().and_then(|s| s.start_time.clone()).map_or(json!(now), |t| json!(t)),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready_text, "lastTransitionTime": now},
                {"type": "Ready", "status": ready_text, "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": container.map(|c| c.name.clone()).unwrap_or_default(),
                "image": container.and_then(|c| c.image.clone()).unwrap_or_default(),
                "imageID": "",
                "ready": ready,
                "started": waiting.is_none(),
                "restartCount": restarts,
                "state": state,
            }],
        }});
        if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            warn!(pod = %pod.name_any(), error = %e, "Cannot update the pod status.");
        }
    }

    /// Removes a pod whose container has stopped (the kubelet's final delete).
    async fn remove_pod(&self, pod: &Pod) {
        let api = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => info!(pod = %pod.name_any(), "Pod removed."),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => warn!(pod = %pod.name_any(), error = %e, "Cannot remove the pod."),
        }
    }

    /// Records a container's admin port and rewrites the Prometheus file_sd target list.
    fn set_port(&self, namespace: &str, pod: &str, port: Option<u16>) {
        let Ok(mut ports) = self.ports.lock() else { return };
        let key = (namespace.to_owned(), pod.to_owned());
        match port {
            Some(p) => ports.insert(key, p),
            None => ports.remove(&key),
        };
        let targets: Vec<_> = ports
            .iter()
            .map(|((namespace, pod), port)| {
                json!({"targets": [format!("127.0.0.1:{port}")], "labels": {"namespace": namespace, "pod": pod}})
            })
            .collect();
        let (path, tmp) = (self.state_dir.join("targets.json"), self.state_dir.join("targets.json.tmp"));
        if std::fs::write(&tmp, serde_json::to_vec_pretty(&targets).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }
}

struct Started {
    child: tokio::process::Child,
    port: u16,
    grace: Duration,
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
