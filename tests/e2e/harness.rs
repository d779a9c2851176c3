//! The e2e harness: the test bed's clients (admin kubeconfig for setup, the chart's
//! ServiceAccount token for the controller), the controller as a child process, RabbitMQ's
//! management API, temporary namespaces, and polling helpers.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use sluice::api::{EventTopic, Subscription};

/// Paths of the test bed, set by `make e2e`.
pub struct Env {
    pub root: PathBuf,
    pub testbed: PathBuf,
    pub bin_dir: PathBuf,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let testbed = std::env::var_os("SLUICE_TESTBED").map_or_else(|| root.join(".testbed"), PathBuf::from);
        let bin_dir = std::env::var_os("SLUICE_BIN_DIR").map_or_else(
            || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sluice/bin/current"),
            PathBuf::from,
        );
        assert!(
            testbed.join("sluice-sa.kubeconfig").exists(),
            "the test bed is not installed: run `make e2e` (it starts RabbitMQ and the control plane)"
        );
        let _ = rustls::crypto::ring::default_provider().install_default();
        Env { root, testbed, bin_dir }
    })
}

/// Tests share one broker and one control plane: run them one at a time even when the
/// harness is invoked without `--test-threads=1`.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client with the test bed's admin credentials, for setting tests up and checking them.
pub async fn admin() -> Client {
    let kubeconfig = Kubeconfig::read_from(env().testbed.join("kubeconfig")).expect("read admin kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("admin client")
}

/// Runs kubectl with the admin kubeconfig; returns (success, stdout + stderr).
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new(env().bin_dir.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", env().testbed.join("kubeconfig"))
        .output()
        .expect("run kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Polls `check` every 200ms until it returns `Some`, or panics after `timeout` saying what
/// was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// === namespaces ===

/// A namespace for one test, deleted by [`TestNamespace::delete`].
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

/// A namespaced API object the tests create and read back.
pub trait Object:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Object for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        static CLEANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !CLEANED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            clean_leftovers(client).await;
        }
        let name = format!("e2e-{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"sluice.dev/e2e": "true"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        Self { name, client: client.clone() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// The object as JSON, if it exists.
    pub async fn get_json<K: Object>(&self, name: &str) -> Option<Value> {
        let obj = self.api::<K>().get_opt(name).await.expect("get object")?;
        Some(serde_json::to_value(obj).expect("json"))
    }

    /// Waits for condition `type_` of `name` to have `status` and `reason`; returns its message.
    pub async fn wait_condition<K: Object>(&self, name: &str, type_: &str, status: &str, reason: &str) -> String {
        let what = format!("{name} {type_}={status} ({reason})");
        eventually(&what, Duration::from_secs(90), || async {
            let obj = self.get_json::<K>(name).await?;
            let (s, r, message) = condition(&obj, type_)?;
            (s == status && r == reason).then_some(message)
        })
        .await
    }

    /// Waits until `name` is gone.
    pub async fn gone<K: Object>(&self, name: &str) {
        eventually(&format!("{name} to be deleted"), Duration::from_secs(90), || async {
            self.get_json::<K>(name).await.is_none().then_some(())
        })
        .await;
    }

    /// `kubectl wait --for=condition=Ready` on `resource` (e.g. `eventtopic/orders`).
    pub fn wait_ready(&self, resource: &str) {
        let (ok, out) = kubectl(&["wait", "--for=condition=Ready", resource, "-n", &self.name, "--timeout=60s"]);
        assert!(ok, "kubectl wait for {resource}: {out}");
    }

    /// Deletes the Subscriptions, then the topics left in the namespace, waits until the
    /// (still running) controller has released them, then deletes the namespace.
    pub async fn teardown(self) {
        delete_all(&self.api::<Subscription>()).await;
        delete_all(&self.api::<EventTopic>()).await;
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()).await;
    }
}

async fn delete_all<K>(api: &Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let _ = api.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
    eventually("the namespace's resources to be deleted", Duration::from_secs(300), || async {
        api.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}

/// Removes what failed earlier runs left behind: e2e namespaces whose resources kept their
/// finalizers because the controller was gone.
pub async fn clean_leftovers(client: &Client) {
    let namespaces = Api::<Namespace>::all(client.clone());
    let list = namespaces.list(&ListParams::default().labels("sluice.dev/e2e=true")).await.expect("list namespaces");
    let rabbit = Rabbit::new();
    for ns in list {
        unfinalize(&Api::<EventTopic>::namespaced(client.clone(), &ns.name_any())).await;
        unfinalize(&Api::<Subscription>::namespaced(client.clone(), &ns.name_any())).await;
        let _ = namespaces.delete(&ns.name_any(), &DeleteParams::default()).await;
        rabbit.purge(&format!("sluice.{}.", ns.name_any())).await;
    }
}

async fn unfinalize<K>(api: &Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for obj in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let _ = api.patch(&obj.name_any(), &PatchParams::default(), &patch).await;
    }
}

pub fn random_suffix() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(6).map(|c| char::from(c).to_ascii_lowercase()).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

// === the controller process ===

/// How to start a controller.
pub struct ControllerOpts {
    pub lease: String,
    pub resync: &'static str,
    pub lease_duration: u64,
    /// The egress allowlist given to dispatchers (the tests' receivers listen on loopback).
    pub egress_allow: &'static str,
}

impl ControllerOpts {
    pub fn new(lease: &str) -> Self {
        Self { lease: format!("e2e-{lease}"), resync: "5m", lease_duration: 15, egress_allow: "127.0.0.0/8" }
    }
}

/// User and system CPU seconds process `pid` has used so far, from /proc.
#[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
pub fn cpu_split_of(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux counts these in clock ticks of 1/100 s (USER_HZ) on every architecture it runs.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A `sluice` process (controller or dispatcher) with its admin server on a free port and its
/// log in `.testbed/e2e-logs/`.
pub struct Controller {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
    http: reqwest::Client,
    /// The file_sd file that has the test bed's Prometheus scrape this process.
    target: Option<PathBuf>,
}

/// `sluice dispatcher`, the same kind of process as the controller.
pub type Dispatcher = Controller;

impl Controller {
    /// `sluice controller` with the chart's ServiceAccount token.
    pub fn start(opts: &ControllerOpts) -> Self {
        let env = env();
        let mut controller = Self::spawn(&opts.lease, |cmd, admin| {
            cmd.args(["controller", "--admin-addr", &admin.to_string(), "--lease-name", &opts.lease])
                .args(["--resync", opts.resync, "--lease-duration", &opts.lease_duration.to_string()])
                .args(["--identity", &format!("e2e-{}", admin.port())])
                .args(["--egress-allow", opts.egress_allow, "--dispatcher-log-format", "plain"])
                .env("KUBECONFIG", env.testbed.join("sluice-sa.kubeconfig"))
                .env("SLUICE_NAMESPACE", "sluice-system");
        });
        let dir = env.testbed.join("controllers");
        let target = dir.join(format!("e2e-{}.json", controller.admin.port()));
        let sd = json!([{"targets": [controller.admin.to_string()], "labels": {"instance": format!("e2e-{}", controller.admin.port())}}]);
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&target, sd.to_string()).is_ok() {
            controller.target = Some(target);
        }
        controller
    }

    /// `sluice dispatcher` with `config` (written to a file) and the signing `secret`.
    #[allow(dead_code, reason = "not every test binary that shares this harness runs a dispatcher")]
    pub fn dispatcher(config: &Value, secret: &str) -> Self {
        let env = env();
        let dir = env.testbed.join("e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let path = dir.join(format!("dispatch-{}.json", random_suffix()));
        std::fs::write(&path, serde_json::to_vec_pretty(config).expect("config")).expect("write config");
        Self::spawn("dispatcher", |cmd, admin| {
            cmd.args(["dispatcher", "--admin-addr", &admin.to_string(), "--config"])
                .arg(&path)
                .env("SLUICE_BROKER_URI", AMQP_URI)
                .env("SLUICE_SIGNING_SECRET", secret);
        })
    }

    /// The test bed's pod runner (the dispatcher pods' stand-in kubelet), with the admin
    /// kubeconfig, running this build's `sluice`.
    #[allow(dead_code, reason = "not every test binary that shares this harness runs dispatcher pods")]
    pub fn pod_runner() -> Self {
        let env = env();
        Self::spawn_program(env!("CARGO_BIN_EXE_sluice-podrunner"), "podrunner", |cmd, _| {
            cmd.env("KUBECONFIG", env.testbed.join("kubeconfig"))
                .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
                .arg("--state-dir")
                .arg(env.testbed.join("pods"));
        })
    }

    fn spawn(name: &str, configure: impl FnOnce(&mut Command, SocketAddr)) -> Self {
        Self::spawn_program(env!("CARGO_BIN_EXE_sluice"), name, configure)
    }

    fn spawn_program(program: &str, name: &str, configure: impl FnOnce(&mut Command, SocketAddr)) -> Self {
        let env = env();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let logs = env.testbed.join("e2e-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{name}-{}.log", admin.port()));
        let file = std::fs::File::create(&log).expect("log file");
        // setpriv execs sluice with a parent-death signal: a test or benchmark killed before
        // its Drop runs takes its processes with it instead of leaving them acting on the next
        // run's objects.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", program]);
        configure(&mut cmd, admin);
        let child = cmd
            .env("RUST_LOG", "info,sluice=debug")
            .env_remove("RUST_BACKTRACE")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sluice");
        Self { child, admin, log, http: reqwest::Client::new(), target: None }
    }

    /// Waits until `/readyz` answers 200.
    #[allow(dead_code, reason = "not every test binary that shares this harness runs a dispatcher")]
    pub async fn wait_ready(&self) {
        eventually("the process to be ready", Duration::from_secs(60), || self.ready()).await;
    }

    /// Resident set size of the process, in KiB (from /proc).
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Context switches of all the process's threads so far (voluntary + involuntary), from /proc.
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn context_switches(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.child.id());
        let threads = std::fs::read_dir(dir).into_iter().flatten().flatten();
        threads
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .flat_map(|status| {
                status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// User and system CPU seconds the process has used so far, from /proc.
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn cpu_split(&self) -> (f64, f64) {
        cpu_split_of(self.child.id())
    }

    /// Anonymous and file-backed resident memory, in KiB (from /proc): heap and stacks, and
    /// the pages of the binary and libraries (shared by every process of the same image).
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn rss_split_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
    }

    /// The process id.
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the process has used so far, from /proc.
    #[allow(dead_code, reason = "used by the benchmarks, which share this harness")]
    pub fn cpu_seconds(&self) -> f64 {
        let (user, system) = self.cpu_split();
        user + system
    }

    /// `/readyz`: `Some(body)` when it answers 200.
    pub async fn ready(&self) -> Option<String> {
        let resp = self.http.get(format!("http://{}/readyz", self.admin)).send().await.ok()?;
        if resp.status().is_success() { resp.text().await.ok() } else { None }
    }

    /// `/readyz` status and body, whatever they are.
    pub async fn readiness(&self) -> Option<(u16, String)> {
        let resp = self.http.get(format!("http://{}/readyz", self.admin)).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    pub async fn alive(&self) -> bool {
        self.http.get(format!("http://{}/healthz", self.admin)).send().await.is_ok_and(|r| r.status().is_success())
    }

    pub async fn wait_leader(&self) {
        eventually("the controller to lead and be ready", Duration::from_secs(60), || async {
            self.ready().await.filter(|b| b.contains("leader"))
        })
        .await;
    }

    /// The metrics text (Prometheus text format).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("scrape metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of the sample `series` (name plus labels exactly as exposed), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// SIGKILL: the process gets no chance to release anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        if let Some(target) = &self.target {
            let _ = std::fs::remove_file(target);
        }
    }
}

// === Prometheus ===

/// Fails unless `metrics` (text exposition) passes `promtool check metrics`.
pub fn promtool_check(metrics: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by make testbed-up)");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), metrics.as_bytes()).expect("write");
    let lint = promtool.wait_with_output().expect("promtool");
    assert!(
        lint.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// The test bed's Prometheus (`hack/testbed/prometheus.sh`), scraping every second.
pub const PROMETHEUS: &str = "http://127.0.0.1:9090";

/// The value of an instant PromQL query that yields one sample, `None` when it yields none.
#[allow(dead_code, reason = "not every test binary that shares this harness queries Prometheus")]
pub async fn prometheus(query: &str) -> Option<f64> {
    let url = url::Url::parse_with_params(&format!("{PROMETHEUS}/api/v1/query"), [("query", query)]).expect("url");
    let resp = reqwest::Client::new().get(url).send().await.expect("query Prometheus (is the test bed up?)");
    let body: Value = resp.json().await.expect("Prometheus answer");
    assert_eq!(body["status"], "success", "the query {query} failed: {body}");
    let result = body["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{query} yields {} series; sum it", result.len());
    result.first()?["value"][1].as_str()?.parse().ok()
}

// === RabbitMQ ===

/// The test bed broker's management API.
pub struct Rabbit {
    http: reqwest::Client,
}

pub const AMQP_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MGMT: &str = "http://127.0.0.1:15672/api";

impl Rabbit {
    pub fn new() -> Self {
        Self { http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client") }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let resp = self.http.get(format!("{MGMT}/{path}")).basic_auth("guest", Some("guest")).send().await.ok()?;
        if resp.status().is_success() { resp.json().await.ok() } else { None }
    }

    pub async fn exchange(&self, name: &str) -> Option<Value> {
        self.get(&format!("exchanges/%2f/{}", enc(name))).await
    }

    pub async fn queue(&self, name: &str) -> Option<Value> {
        self.get(&format!("queues/%2f/{}", enc(name))).await
    }

    pub async fn bindings(&self, exchange: &str, queue: &str) -> Vec<Value> {
        let path = format!("bindings/%2f/e/{}/q/{}", enc(exchange), enc(queue));
        self.get(&path).await.and_then(|v| v.as_array().cloned()).unwrap_or_default()
    }

    async fn delete_if_present(&self, path: &str) {
        let resp = self.http.delete(format!("{MGMT}/{path}")).basic_auth("guest", Some("guest")).send().await;
        let status = resp.unwrap_or_else(|e| panic!("DELETE {path}: {e}")).status();
        assert!(status.is_success() || status == reqwest::StatusCode::NOT_FOUND, "DELETE {path}: {status}");
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut request =
            self.http.request(method.clone(), format!("{MGMT}/{path}")).basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
    }

    pub async fn delete_exchange(&self, name: &str) {
        self.send(reqwest::Method::DELETE, &format!("exchanges/%2f/{}", enc(name)), None).await;
    }

    pub async fn delete_queue(&self, name: &str) {
        self.send(reqwest::Method::DELETE, &format!("queues/%2f/{}", enc(name)), None).await;
    }

    /// Deletes every queue, exchange and policy whose name starts with `prefix`.
    pub async fn purge(&self, prefix: &str) {
        let names = |v: Option<Value>| -> Vec<String> {
            v.and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|o| o["name"].as_str().map(str::to_owned))
                .filter(|n| n.starts_with(prefix) || n.starts_with(&format!("sluice.closing:{prefix}")))
                .collect()
        };
        // Something else (a controller still finishing a Delete policy) may remove an object
        // between the listing and the delete: a 404 here is the outcome we want anyway.
        for q in names(self.get("queues/%2f?columns=name").await) {
            self.delete_if_present(&format!("queues/%2f/{}", enc(&q))).await;
        }
        for x in names(self.get("exchanges/%2f?columns=name").await) {
            self.delete_if_present(&format!("exchanges/%2f/{}", enc(&x))).await;
        }
        for p in names(self.get("policies/%2f").await) {
            self.delete_if_present(&format!("policies/%2f/{}", enc(&p))).await;
        }
    }

    pub async fn policy(&self, name: &str) -> Option<Value> {
        self.get(&format!("policies/%2f/{}", enc(name))).await
    }

    pub async fn put_policy(&self, name: &str, body: Value) {
        self.send(reqwest::Method::PUT, &format!("policies/%2f/{}", enc(name)), Some(body)).await;
    }

    pub async fn delete_policy(&self, name: &str) {
        self.send(reqwest::Method::DELETE, &format!("policies/%2f/{}", enc(name)), None).await;
    }

    /// Deletes every binding from `exchange` to `queue`.
    pub async fn unbind(&self, exchange: &str, queue: &str) {
        for b in self.bindings(exchange, queue).await {
            let key = b["properties_key"].as_str().unwrap_or_default();
            let path = format!("bindings/%2f/e/{}/q/{}/{}", enc(exchange), enc(queue), enc(key));
            self.send(reqwest::Method::DELETE, &path, None).await;
        }
    }

    /// Routing keys (or header matches) of the bindings from `exchange` to `queue`, sorted.
    pub async fn binding_keys(&self, exchange: &str, queue: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .bindings(exchange, queue)
            .await
            .iter()
            .map(|b| b["routing_key"].as_str().unwrap_or_default().to_owned())
            .collect();
        keys.sort();
        keys
    }

    pub async fn declare_exchange(&self, name: &str, kind: &str) {
        let body = json!({"type": kind, "durable": true});
        self.send(reqwest::Method::PUT, &format!("exchanges/%2f/{}", enc(name)), Some(body)).await;
    }

    /// Stops the broker process (data kept), the way an operator would. The guard starts it
    /// again when dropped, so a failing test never leaves the broker down for the next one.
    #[must_use]
    pub fn stop() -> BrokerOutage {
        run_script("rabbitmq.sh", "down");
        BrokerOutage { over: false }
    }

    /// Kills the broker with SIGKILL, as the kernel's OOM killer or a node failure would: no
    /// graceful shutdown, nothing flushed. Its guard starts it again, as [`Rabbit::stop`]'s.
    #[must_use]
    pub fn crash() -> BrokerOutage {
        run_script("rabbitmq.sh", "crash");
        BrokerOutage { over: false }
    }

    /// The running broker's version, e.g. `4.3.6`.
    pub async fn version(&self) -> String {
        let overview = self.get("overview").await.expect("GET /api/overview");
        overview["rabbitmq_version"].as_str().expect("rabbitmq_version").to_owned()
    }

    /// The deprecated features in use on the broker (RabbitMQ 3.13 and later).
    pub async fn deprecated_features_used(&self) -> Value {
        self.get("deprecated-features/used").await.expect("GET /api/deprecated-features/used")
    }

    pub fn start() {
        run_script("rabbitmq.sh", "up");
    }
}

/// A broker outage in progress; see [`Rabbit::stop`].
pub struct BrokerOutage {
    over: bool,
}

impl BrokerOutage {
    pub fn end(mut self) {
        Rabbit::start();
        self.over = true;
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if !self.over {
            Rabbit::start();
        }
    }
}

fn run_script(script: &str, arg: &str) {
    let status = Command::new("bash")
        .arg(env().root.join("hack/testbed").join(script))
        .arg(arg)
        .status()
        .expect("run test bed script");
    assert!(status.success(), "{script} {arg} failed");
}

fn enc(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// === resources ===

/// The status of condition `type_` on a resource's JSON, as (status, reason, message).
pub fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"), s("message"))
    })
}

/// Events about `name` in `namespace`, as (type, reason, note).
pub async fn events_for(client: &Client, namespace: &str, name: &str) -> Vec<(String, String, String)> {
    event_list(client, namespace, name).await.into_iter().map(|(t, r, n, _)| (t, r, n)).collect()
}

/// How many times Events with `reason` were recorded about `name`, counting the repeats the
/// recorder folds into a series.
pub async fn event_count(client: &Client, namespace: &str, name: &str, reason: &str) -> i32 {
    event_list(client, namespace, name).await.iter().filter(|e| e.1 == reason).map(|e| e.3).sum()
}

async fn event_list(client: &Client, namespace: &str, name: &str) -> Vec<(String, String, String, i32)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default(), count)
        })
        .collect()
}

// === AMQP ===

/// A publisher/consumer on the test bed broker, publisher confirms on.
pub struct Amqp {
    conn: lapin::Connection,
    pub channel: lapin::Channel,
}

impl Amqp {
    pub async fn connect() -> Self {
        let conn = lapin::Connection::connect(AMQP_URI, lapin::ConnectionProperties::default()).await.expect("amqp");
        let channel = conn.create_channel().await.expect("channel");
        channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.expect("confirms");
        Self { conn, channel }
    }

    /// Publishes persistent JSON events `{prefix}-{0..n}` as the publishing contract says (the
    /// id as `message_id`, a `timestamp`) and waits until the broker confirmed every one as routed.
    pub async fn publish(&self, exchange: &str, routing_key: &str, prefix: &str, n: usize) {
        let mut confirms = Vec::with_capacity(n);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for i in 0..n {
            let id = format!("{prefix}-{i}");
            let props = lapin::BasicProperties::default()
                .with_timestamp(now)
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into());
            let body = format!(r#"{{"id":"{id}"}}"#);
            let options = lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = self
                .channel
                .basic_publish(exchange.into(), routing_key.into(), options, body.as_bytes(), props)
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.expect("confirm");
            assert!(matches!(confirmation, lapin::Confirmation::Ack(None)), "published and routed: {confirmation:?}");
        }
    }

    /// Publishes one persistent event with id `id`, `body`, and optionally a content type and an
    /// `event-version` header, and waits until the broker confirmed it as routed.
    pub async fn publish_event(
        &self,
        exchange: &str,
        routing_key: &str,
        id: &str,
        body: &[u8],
        content_type: Option<&str>,
        version: Option<&str>,
    ) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut props =
            lapin::BasicProperties::default().with_timestamp(now).with_delivery_mode(2).with_message_id(id.into());
        if let Some(content_type) = content_type {
            props = props.with_content_type(content_type.into());
        }
        if let Some(version) = version {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert("event-version".into(), lapin::types::AMQPValue::LongString(version.into()));
            props = props.with_headers(headers);
        }
        let options = lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(matches!(confirm, lapin::Confirmation::Ack(None)), "published and routed: {confirm:?}");
    }

    /// Takes every message out of `queue` and returns, for each, its id and its
    /// `x-sluice-reason` header, in order.
    pub async fn drain_reasons(&self, queue: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let options = lapin::options::BasicGetOptions { no_ack: true };
        while let Some(m) = self.channel.basic_get(queue.into(), options).await.expect("get") {
            let props = &m.delivery.properties;
            let id = props.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
            let reason = props.headers().as_ref().and_then(|h| match h.inner().get("x-sluice-reason") {
                Some(lapin::types::AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            });
            out.push((id, reason.unwrap_or_default()));
        }
        out
    }

    /// Ready messages in `queue`, exactly, from the broker (not from the statistics).
    pub async fn count(&self, queue: &str) -> u32 {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        self.channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
            .message_count()
    }

    /// Takes every message out of `queue` and returns their ids, in order.
    pub async fn drain(&self, queue: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let options = lapin::options::BasicGetOptions { no_ack: true };
        while let Some(m) = self.channel.basic_get(queue.into(), options).await.expect("get") {
            let id = m.delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned());
            ids.push(id.unwrap_or_default());
        }
        ids
    }

    /// Takes the next message of `queue` on a connection of its own (waiting up to
    /// `within` for one), then closes the connection without settling it, as a reader that
    /// crashed holding the message. Returns the message's headers, or None if none came.
    pub async fn die_holding(queue: &str, within: Duration) -> Option<lapin::types::FieldTable> {
        let reader = Self::connect().await;
        let message = reader.next_message(queue, within).await;
        let headers = message.as_ref().map(|m| m.properties.headers().clone().unwrap_or_default());
        drop(message);
        reader.close().await;
        headers
    }

    /// Takes the next message of `queue` (waiting up to `within`) and rejects it with
    /// requeue, as a reader that cannot handle it now. Returns whether one came.
    pub async fn reject_requeue(&self, queue: &str, within: Duration) -> bool {
        let Some(m) = self.next_message(queue, within).await else { return false };
        let requeue = lapin::options::BasicRejectOptions { requeue: true };
        m.acker.reject(requeue).await.expect("reject");
        true
    }

    /// Takes the next message of `queue` for good (waiting up to `within`), acknowledged;
    /// returns its headers.
    pub async fn take(&self, queue: &str, within: Duration) -> Option<lapin::types::FieldTable> {
        let m = self.next_message(queue, within).await?;
        m.acker.ack(lapin::options::BasicAckOptions::default()).await.expect("ack");
        Some(m.properties.headers().clone().unwrap_or_default())
    }

    async fn next_message(&self, queue: &str, within: Duration) -> Option<lapin::message::Delivery> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let options = lapin::options::BasicGetOptions { no_ack: false };
            if let Some(m) = self.channel.basic_get(queue.into(), options).await.expect("get") {
                return Some(m.delivery);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// The text value of header `name`, if it is one.
pub fn text_header(headers: &lapin::types::FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The ids `{prefix}-0` .. `{prefix}-{n-1}`, sorted as strings for comparison with drains.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    v.sort();
    v
}
