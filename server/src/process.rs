//! The process: read the configuration, set up logging, serve until
//! SIGTERM. The binary's `main` is [`main`]; it is here, not in the binary,
//! so that a build with another global allocator (the allocation-counting
//! example the benchmark uses) runs exactly the same server. [`run`] is
//! that process around any server, for tests that need it to fail in ways
//! the real one cannot be made to.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use crate::config::Config;
use crate::context::Tracing;
use crate::error::error_chain;
use crate::server::{self, ServeError};
use crate::telemetry;

/// Exit status: 0 after a clean drain, 2 for an invalid configuration, 1
/// for any other failure.
pub fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gantry-server: {err}");
            return ExitCode::from(2);
        }
    };
    run(config, |config, tracing| async move {
        let listener = server::bind(&config).await?;
        server::serve(config, listener, tracing).await
    })
}

/// Sets up logging for `config`, runs `serve` on a new async runtime with
/// the tracer for request spans, and returns the exit status: 0 when
/// `serve` returns `Ok`, 1 for an error, a panic out of `serve`, or a
/// runtime or logging that cannot start.
///
/// A panic out of `serve` ends the process as an error does: after the
/// runtime has let go of the requests still running (which logs them as
/// cancelled), the log is flushed and the panic's message goes to stderr.
/// Unwinding out of `main` instead flushed nothing, so the panic's own
/// line, queued for the log writer, was lost with the lines before it.
pub fn run<S, F>(config: Config, serve: S) -> ExitCode
where
    S: FnOnce(Config, Tracing) -> F,
    F: Future<Output = Result<(), ServeError>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gantry-server: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter is built inside the runtime; it may need one.
    let telemetry = match runtime.block_on(async { telemetry::init(&config) }) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("gantry-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        log_level = config.log_level.as_str(),
        otlp = config.otlp_endpoint.is_some(),
        "starting"
    );
    let tracing = telemetry.tracing();
    // The hook has logged the panic (with its location) by the time it
    // is caught here.
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(serve(config, tracing))
    }));
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(error_chain(&err)),
        Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
    };
    let code = match failure {
        None => ExitCode::SUCCESS,
        Some(message) => {
            tracing::error!(error = %message, "gantry-server stopped");
            eprintln!("gantry-server: {message}");
            ExitCode::FAILURE
        }
    };
    // Requests that outlived the grace period must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    telemetry.shutdown();
    code
}

/// The text a panic was given, as `panic!` makes it.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
