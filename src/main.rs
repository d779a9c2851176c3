use clap::Parser;
use sluice::{
    cmd::{Cli, Command},
    telemetry,
};

// mimalloc: fewer CPU cycles per allocation than glibc's, and it hands freed memory back, so a
// dispatcher's resident set shrinks again after a burst (measured by make bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, &cli.log);
    // One TLS crypto provider for every client (kube, reqwest, lapin).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A dispatcher is one event loop: its deliveries hop between threads otherwise, which cost
    // more CPU than they save; replicas scale it out. The controller uses every core.
    let runtime = match &cli.command {
        Command::Dispatcher(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(async {
        match cli.command {
            Command::Controller(args) => sluice::cmd::controller::run(args).await,
            Command::Dispatcher(args) => sluice::cmd::dispatcher::run(args).await,
            Command::Crdgen(args) => sluice::cmd::crdgen::run(&args),
        }
    })
}
