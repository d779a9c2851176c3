//! Logs, metrics and health: what the process tells the outside world about itself.

pub mod exposition;
pub mod health;
pub mod metrics;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Plain => registry.with(fmt::layer().with_target(false)).init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).init(),
    }
}
