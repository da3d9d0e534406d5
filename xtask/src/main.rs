//! `cargo xtask`: the project's tasks, from building the local control plane
//! to running every test. Each subcommand lives in a module of its own; this
//! file only parses the command line and dispatches.

mod api_fuzz;
mod bench;
mod bench_judge;
mod bench_operator;
mod bench_server;
mod cluster;
mod crds;
mod cycles;
mod demo;
mod deps;
mod gateway_types;
mod image;
mod judge_record;
mod loopback;
mod machine;
mod pki;
mod previews;
mod proc;
mod test;
mod toolchain;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Gantry project tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build (once, cached) and run a local Kubernetes control plane.
    Cluster {
        #[command(subcommand)]
        command: cluster::Command,
    },
    /// Everything CI runs: fmt, clippy, unit tests, the e2e suite on a fresh
    /// control plane; ends with one `N passed, N failed` line.
    Test(test::Args),
    /// The quick start: cluster, CRDs, operator, a sample GoServer, its status.
    Demo(demo::Args),
    /// Regenerate crds/ from the Rust types.
    Crds(crds::Args),
    /// Regenerate the Gateway API types from the pinned release's CRDs.
    GatewayTypes(gateway_types::Args),
    /// Side-by-side benchmarks against peer implementations.
    Bench(bench::Args),
    /// Build an OCI image from the Dockerfile with buildah.
    Image(image::Args),
    /// PNG previews of the Grafana dashboards in docs/previews/, rendered
    /// from real data of a test Prometheus.
    Previews(previews::Args),
    /// List the loops of modules that use each other, in every crate of the
    /// workspace (`cargo xtask test` fails on any).
    Loops,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cluster { command } => cluster::run(&command),
        Command::Test(args) => Ok(test::run(&args)),
        Command::Demo(args) => demo::run(&args),
        Command::Crds(args) => crds::run(&args),
        Command::GatewayTypes(args) => gateway_types::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Previews(args) => previews::run(&args),
        Command::Loops => cycles::run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
