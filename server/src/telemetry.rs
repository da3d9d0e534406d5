//! Logging and trace export.
//!
//! Log lines go to stdout, JSON by default (one object per line, with the
//! request span's fields, among them `trace_id`) or text for a terminal.
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, request spans are also exported
//! over OTLP/HTTP; the exporter reads the standard `OTEL_*` variables itself.
//! The exported trace id is the one in `traceparent` and in the log lines:
//! incoming traces are continued through a remote parent, and new ones take
//! the id the trace-context middleware already chose ([`RequestTraceIds`]).

use std::io::IsTerminal;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{Config, LogFormat, LogLevel};
use crate::context::{TraceContext, current_trace_id};

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP trace exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("a global logger is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

impl Telemetry {
    /// Flushes spans not yet exported. Blocking: call it outside the runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("gantry-server: trace export shutdown: {err}");
        }
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// Installs the global subscriber described by `config`.
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    let level = level_filter(config.log_level);
    // The libraries' own debug output is noise for someone debugging this server.
    let filter = Targets::new()
        .with_default(level)
        .with_target("sqlx", level.min(LevelFilter::WARN))
        .with_target("hyper", level.min(LevelFilter::INFO))
        .with_target("h2", level.min(LevelFilter::INFO))
        .with_target("opentelemetry", level.min(LevelFilter::WARN));
    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
        // Colours only for a terminal; a file or pipe gets plain text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    };
    let (otel, provider) = match &config.otlp_endpoint {
        Some(_) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(TelemetryError::Exporter)?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_id_generator(RequestTraceIds::default())
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("gantry-server")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("gantry-server");
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(provider),
            )
        }
        None => (None, None),
    };
    Registry::default()
        .with(otel)
        .with(fmt)
        .with(filter)
        .try_init()
        .map_err(TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

/// Makes new OpenTelemetry traces use the request's trace id.
#[derive(Debug, Default)]
struct RequestTraceIds(RandomIdGenerator);

impl IdGenerator for RequestTraceIds {
    fn new_trace_id(&self) -> TraceId {
        current_trace_id()
            .and_then(|hex| TraceId::from_hex(&hex).ok())
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Continues the caller's trace in the exported span, when there is one.
pub fn link_parent(span: &tracing::Span, ctx: &TraceContext) {
    let Some(parent) = &ctx.parent_span_id else {
        return;
    };
    let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(&ctx.trace_id), SpanId::from_hex(parent))
    else {
        return;
    };
    let flags = if ctx.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    // Fails only when no OpenTelemetry layer is installed, which is the normal case without OTLP.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}
