//! The process: read the configuration, set up logging, serve until
//! SIGTERM. The binary's `main` is [`main`]; it is here, not in the binary,
//! so that a build with another global allocator (the allocation-counting
//! example the benchmark uses) runs exactly the same server. [`run`] is
//! that process around any server, for tests that need it to fail in ways
//! the real one cannot be made to.

use std::future::Future;
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
/// `serve` returns `Ok`, 1 for an error or a runtime or logging that
/// cannot start.
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
    // A panic is logged like any other error, inside the request's span (so
    // with its trace id), instead of as bare text on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        log_level = config.log_level.as_str(),
        otlp = config.otlp_endpoint.is_some(),
        "starting"
    );
    let result = runtime.block_on(serve(config, telemetry.tracing()));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = error_chain(&err);
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
