use clap::Parser;
use sluice::{
    cmd::{Cli, Command},
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, &cli.log);
    // One TLS crypto provider for every client (kube, reqwest, lapin).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Controller(args) => sluice::cmd::controller::run(args).await,
        Command::Dispatcher(args) => sluice::cmd::dispatcher::run(args).await,
        Command::Crdgen(args) => sluice::cmd::crdgen::run(&args),
    }
}
