//! Logging: JSON lines on stdout by default.
//!
//! Every line written inside a reconcile carries the `reconcile` span with
//! the `GoServer`'s `namespace`, its name (`goserver`) and a `reconcile_id`,
//! so one reconcile can be followed through the log.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Shape of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global subscriber. `level` is a `tracing` filter directive
/// such as `info` or `gantry_operator=debug,kube=info`.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))
}
