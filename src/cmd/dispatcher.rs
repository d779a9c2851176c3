//! `sluice dispatcher`: delivers one Webhook's events. Configuration from a file (the
//! Webhook's ConfigMap, mounted), secrets from the environment (Secret references): the broker
//! URI and the signing secrets. Secrets never reach logs.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    admin,
    api::Webhook,
    dispatch::{
        config::DispatchConfig,
        egress::EgressPolicy,
        metrics::DispatcherMetrics,
        report::{Reporter, Stats},
        signing::{KeyRing, SigningKey},
        worker,
    },
};

#[derive(clap::Args)]
pub struct DispatcherArgs {
    /// The dispatch configuration (JSON) the operator rendered.
    #[arg(long, env = "SLUICE_DISPATCH_CONFIG", default_value = "/etc/sluice/dispatch.json")]
    pub config: String,

    /// AMQP URI of the broker holding the Subscriptions' queues.
    #[arg(long, env = "SLUICE_BROKER_URI", hide_env_values = true)]
    pub broker_uri: String,

    /// The signing secret (`whsec_...`).
    #[arg(long, env = "SLUICE_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: String,

    /// The previous signing secret, still used alongside the current one until
    /// --previous-secret-expires (unix seconds) during a rotation.
    #[arg(long, env = "SLUICE_PREVIOUS_SIGNING_SECRET", hide_env_values = true)]
    pub previous_signing_secret: Option<String>,

    #[arg(long, env = "SLUICE_PREVIOUS_SECRET_EXPIRES")]
    pub previous_secret_expires: Option<i64>,

    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// This pod's name: delivery status is reported to the Webhook under it. Without it
    /// (a dispatcher run by hand) nothing is reported.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

// The derived Debug would print the secrets.
impl std::fmt::Debug for DispatcherArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherArgs")
            .field("config", &self.config)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

pub async fn run(args: DispatcherArgs) -> anyhow::Result<()> {
    let (config, checksum) = DispatchConfig::load(&args.config)?;
    let mut keys = KeyRing::new(SigningKey::parse(&args.signing_secret).context("the signing secret")?);
    if let (Some(previous), Some(expires)) = (&args.previous_signing_secret, args.previous_secret_expires) {
        keys = keys.with_previous(SigningKey::parse(previous).context("the previous signing secret")?, expires);
    }
    let allow = config
        .egress
        .allow
        .iter()
        .map(|cidr| cidr.parse().with_context(|| format!("egress allowlist entry {cidr:?} is not a CIDR")))
        .collect::<anyhow::Result<_>>()?;
    let egress = EgressPolicy { allow, refuse_private: config.egress.refuse_private };
    let mut registry = Registry::default();
    let metrics = DispatcherMetrics::register(&mut registry);
    let stats = Arc::new(Stats::default());
    let (namespace, webhook) = (config.namespace.clone(), config.webhook.clone());
    let dispatcher =
        worker::Dispatcher::new(config, keys, egress, metrics, stats.clone()).context("the HTTP client")?;

    let stop = CancellationToken::new();
    tokio::spawn(super::controller::stop_on_signal(stop.clone()));
    let readiness = {
        let dispatcher = dispatcher.clone();
        Arc::new(move || {
            if dispatcher.connected() {
                Ok("connected to the broker")
            } else if dispatcher.paused() {
                Ok("delivery paused")
            } else {
                Err("not connected to the broker")
            }
        }) as admin::ReadinessCheck
    };
    let admin = tokio::spawn(admin::serve(args.admin_addr, Arc::new(registry), readiness, stop.clone()));
    let reporting = CancellationToken::new();
    let reporter = match args.pod_name {
        Some(pod) => {
            let client = kube::Client::try_default().await.context("no Kubernetes configuration to report status")?;
            let api = kube::Api::<Webhook>::namespaced(client, &namespace);
            let reporter = Reporter { api, webhook, pod, config: checksum, stats };
            Some(tokio::spawn(reporter.run(reporting.clone())))
        }
        None => None,
    };
    dispatcher.run(args.broker_uri, stop.clone()).await;
    stop.cancel();
    // The last report counts the in-flight deliveries that finished while stopping.
    reporting.cancel();
    if let Some(reporter) = reporter {
        reporter.await.context("status reporter task")?;
    }
    admin.await.context("admin server task")?.context("admin server")?;
    info!("Stopped.");
    Ok(())
}
