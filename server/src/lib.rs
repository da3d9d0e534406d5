//! gantry-server: the reference HTTP server that a `GoServer` deploys.
//!
//! The flow, module by module: [`config`] reads and validates the
//! environment; [`telemetry`] sets up logs ([`log_output`]) and optional OTLP export;
//! [`server`] binds, connects the database ([`db`]) with backoff and serves
//! [`app::app`], the router with every route and middleware, over the
//! connections [`connections`] accepts, until a signal starts the drain. [`error`] makes every failure an RFC 9457 problem.

pub mod access_log;
pub mod allocations;
pub mod api;
pub mod app;
pub mod config;
pub mod connections;
pub mod context;
pub mod db;
pub mod error;
pub mod log_output;
pub mod metrics;
pub mod middleware;
pub mod process;
pub mod server;
pub mod state;
pub mod telemetry;

pub use app::app;
pub use config::Config;
pub use state::AppState;
