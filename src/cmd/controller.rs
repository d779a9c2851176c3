//! `sluice controller`: wires the Kubernetes client, brokers, metrics, the admin server and
//! leader election around the controllers.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    admin,
    broker::Brokers,
    controller::{self, Context, Settings},
    dispatch::config::EgressConfig,
    leader::{self, LeaseSettings},
    telemetry::{
        health::{Health, Role},
        metrics::ControllerMetrics,
    },
    workload::dispatcher::Settings as DispatcherSettings,
};

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Namespace the operator runs in: holds the leader Lease and the default broker Secret.
    #[arg(long, env = "SLUICE_NAMESPACE", default_value = "sluice-system")]
    pub namespace: String,

    /// Secret (in --namespace) with the default broker connection: keys uri, managementUri.
    #[arg(long, env = "SLUICE_BROKER_SECRET", default_value = "sluice-broker")]
    pub broker_secret: String,

    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// How often every resource is re-checked against the broker (jittered).
    #[arg(long, env = "SLUICE_RESYNC", default_value = "5m", value_parser = super::parse_duration)]
    pub resync: Duration,

    /// Reconciles running at once, per kind.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Run the controllers only while holding the leader Lease.
    #[arg(long, env = "SLUICE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(long, default_value = "sluice-controller")]
    pub lease_name: String,

    /// Seconds the lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,

    /// Identity in the lease and in Events; defaults to the pod name or host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Image of the Webhooks' dispatcher pods (the operator's own image).
    #[arg(long, env = "SLUICE_DISPATCHER_IMAGE", default_value = concat!("ghcr.io/sluice-dev/sluice:", env!("CARGO_PKG_VERSION")))]
    pub dispatcher_image: String,

    #[arg(long, default_value = "IfNotPresent")]
    pub dispatcher_image_pull_policy: String,

    /// Log format of the dispatcher pods (plain or json).
    #[arg(long, default_value = "json")]
    pub dispatcher_log_format: String,

    /// CIDRs dispatchers may connect to although the egress guard refuses them by default
    /// (comma-separated; e.g. 127.0.0.0/8 for a local receiver).
    #[arg(long, env = "SLUICE_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<String>,

    /// Refuse private address ranges for every Webhook.
    #[arg(long, env = "SLUICE_EGRESS_REFUSE_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub egress_refuse_private: bool,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let brokers = Brokers::new(
        client.clone(),
        args.namespace.clone(),
        args.broker_secret.clone(),
        metrics.clone(),
        format!("sluice-controller {identity}"),
    );
    let health = Arc::new(Health::default());
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));

    let readiness = {
        let (health, brokers) = (health.clone(), brokers.clone());
        Arc::new(move || health.readiness(brokers.default_connected_once())) as admin::ReadinessCheck
    };
    let admin = tokio::spawn(admin::serve(args.admin_addr, Arc::new(registry), readiness, stop.clone()));
    tokio::spawn(brokers.clone().watch_default(stop.clone()));

    // An empty value (the chart's default, `--egress-allow=`) allows nothing extra.
    let egress_allow: Vec<String> = args.egress_allow.iter().filter(|c| !c.is_empty()).cloned().collect();
    for cidr in &egress_allow {
        cidr.parse::<ipnet::IpNet>().with_context(|| format!("--egress-allow {cidr:?} is not a CIDR"))?;
    }
    let dispatcher = DispatcherSettings {
        image: args.dispatcher_image.clone(),
        image_pull_policy: args.dispatcher_image_pull_policy.clone(),
        egress: EgressConfig { allow: egress_allow, refuse_private: args.egress_refuse_private },
        log_format: args.dispatcher_log_format.clone(),
    };
    let settings = Settings { resync: args.resync, concurrency: args.concurrency, dispatcher };
    let ctx = Context::new(client.clone(), &identity, metrics, brokers, settings);
    if args.leader_elect {
        let lease = LeaseSettings {
            namespace: args.namespace,
            name: args.lease_name,
            identity,
            duration_secs: args.lease_duration,
        };
        leader::lead(client, lease, health.clone(), stop.clone(), |token| {
            controller::run(ctx.clone(), health.clone(), token)
        })
        .await;
    } else {
        health.set_role(Role::Leader);
        controller::run(ctx, health, stop.clone()).await;
    }
    stop.cancel();
    admin.await.context("admin server task")?.context("admin server")?;
    info!("Stopped.");
    Ok(())
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_owned());
    format!("{host}-{}", std::process::id())
}

pub(crate) async fn stop_on_signal(stop: CancellationToken) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("Shutting down.");
    stop.cancel();
}
