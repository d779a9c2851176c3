//! Command-line interface: `sluice controller`, `sluice dispatcher` and `sluice crdgen`.

pub mod controller;
pub mod crdgen;
pub mod dispatcher;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Sluice: RabbitMQ event topology and signed webhook delivery for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Log filter, in RUST_LOG syntax (e.g. `info,sluice=debug`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: reconcile Sluice resources into RabbitMQ topology.
    Controller(controller::ControllerArgs),
    /// Deliver one Webhook's events (the operator runs this in the Webhook's Deployment).
    Dispatcher(dispatcher::DispatcherArgs),
    /// Write the CustomResourceDefinitions as YAML.
    Crdgen(crdgen::CrdgenArgs),
}

/// Parses a Go duration flag such as `5m` or `90s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::api::GoDuration::new(text).duration().map_err(|e| e.to_string())
}
