//! Logging and trace export.
//!
//! Log lines go to stdout, JSON by default (one object per line, with the
//! request's fields from [`crate::access_log`], among them `trace_id`) or
//! text for a terminal,
//! formatted and written as [`crate::log_output`] describes.
//! Request spans come from one OpenTelemetry tracer ([`Telemetry::tracer`]),
//! which the trace-context middleware uses for every request whether or not
//! anything is exported: it is what chooses trace and span ids. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the tracer's provider also exports
//! those spans over OTLP/HTTP; the exporter reads the standard `OTEL_*`
//! variables itself.
//!
//! A panic is logged like any other error, as an ERROR line `panic`
//! (inside the request's span when a request panics, so with its trace
//! id), instead of as bare text on stderr; and since the process may end
//! right after it, the hook writes the log out at once rather than leave
//! the line to the log writer's next batch. Lines logged before the end of
//! the process are written when [`Telemetry`] is dropped, however that
//! comes about: a return, an error, a panic unwinding past it.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{Config, LogFormat, LogLevel};
use crate::context::Tracing;
use crate::log_output::{JsonLines, JsonSpanFields, LogWriter};

/// The name request spans are recorded under.
const TRACER_NAME: &str = "gantry-server";

/// Keeps the trace exporter and the log writer alive;
/// [`Telemetry::shutdown`] flushes both, and dropping it flushes the log.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Whether spans are exported (OTLP is on).
    exports: bool,
    log: Option<LogWriter>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP trace exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the log writer thread")]
    LogWriter(#[source] std::io::Error),
    #[error("a global logger is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

impl Default for Telemetry {
    /// Spans with ids and no export: what a server without OTLP uses, and
    /// what tests that build the router directly get.
    fn default() -> Self {
        Self {
            provider: SdkTracerProvider::builder().build(),
            exports: false,
            log: None,
        }
    }
}

impl Telemetry {
    /// The trace-context middleware, with the tracer for request spans.
    pub fn tracing(&self) -> Tracing {
        Tracing::new(self.provider.tracer(TRACER_NAME), self.exports)
    }

    /// Flushes spans not yet exported and (as dropping does) log lines not
    /// yet written. Blocking: call it outside the runtime.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("gantry-server: trace export shutdown: {err}");
        }
    }
}

/// Only the log: the tracer provider may still be shared by the router of
/// a test that took [`Telemetry::tracing`] from a default `Telemetry`, and
/// its spans must keep their ids. It shuts itself down when the last
/// tracer goes.
impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.flush();
        }
    }
}

/// The resource detected from the standard variables (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`: the operator sets them to the `GoServer`'s
/// name, its image tag and its revision), named `gantry-server` only when
/// neither names the service: the SDK's fallback, `unknown_service:<exe>`,
/// says nothing.
fn named(detected: opentelemetry_sdk::Resource) -> opentelemetry_sdk::Resource {
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if !unnamed {
        return detected;
    }
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(
            detected
                .iter()
                .map(|(key, value)| opentelemetry::KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(TRACER_NAME)
        .build()
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// Installs the global subscriber described by `config`, and the panic
/// hook that logs panics through it.
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    let level = level_filter(config.log_level);
    // The libraries' own debug output is noise for someone debugging this server.
    let filter = Targets::new()
        .with_default(level)
        .with_target("sqlx", level.min(LevelFilter::WARN))
        .with_target("hyper", level.min(LevelFilter::INFO))
        .with_target("h2", level.min(LevelFilter::INFO))
        .with_target("opentelemetry", level.min(LevelFilter::WARN));
    let log = LogWriter::stdout().map_err(TelemetryError::LogWriter)?;
    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .with_writer(log.clone())
            .boxed(),
        // Colours only for a terminal; a file or pipe gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(log.clone())
            .boxed(),
    };
    let mut telemetry = match &config.otlp_endpoint {
        Some(_) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(TelemetryError::Exporter)?;
            Telemetry {
                provider: SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(named(opentelemetry_sdk::Resource::builder().build()))
                    .build(),
                exports: true,
                log: None,
            }
        }
        None => Telemetry::default(),
    };
    Registry::default()
        .with(fmt)
        .with(filter)
        .try_init()
        .map_err(TelemetryError::AlreadyInstalled)?;
    log_panics(log.clone());
    telemetry.log = Some(log);
    Ok(telemetry)
}

/// Replaces the panic hook (which printed to stderr) with one that logs
/// the panic and writes the log out; see the module documentation. A
/// panic is rare enough that writing on the panicking thread costs
/// nothing that matters.
fn log_panics(log: LogWriter) {
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic");
        log.flush();
    }));
}

#[cfg(test)]
mod tests {
    use opentelemetry::{Key, KeyValue, Value};
    use opentelemetry_sdk::Resource;

    use super::named;

    fn service_name(resource: &Resource) -> Option<Value> {
        resource.get(&Key::from_static_str("service.name"))
    }

    #[test]
    fn the_service_keeps_the_name_it_is_given() {
        let given = Resource::builder_empty()
            .with_service_name("web")
            .with_attributes([KeyValue::new("gantry.revision", "web-0123456789")])
            .build();
        let resource = named(given);
        assert_eq!(service_name(&resource), Some("web".into()));
        assert_eq!(
            resource.get(&Key::from_static_str("gantry.revision")),
            Some("web-0123456789".into())
        );
    }

    #[test]
    fn an_unnamed_service_is_gantry_server_and_keeps_its_attributes() {
        let fallback = Resource::builder_empty()
            .with_service_name("unknown_service:gantry-server")
            .with_attributes([KeyValue::new("service.version", "2.1.0")])
            .build();
        let resource = named(fallback);
        assert_eq!(service_name(&resource), Some("gantry-server".into()));
        assert_eq!(
            resource.get(&Key::from_static_str("service.version")),
            Some("2.1.0".into())
        );
    }
}
