//! `gantry-operator`: the command line. Parses flags, sets up logging and the
//! Kubernetes client, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gantry_operator::telemetry::{self, LogFormat};
use gantry_operator::{LeaderElection, RunOptions};

/// Keeps the Deployment, Service, `ConfigMap`, Ingress and HPA of every
/// `GoServer` (goservers.gantry.dev) in the shape its spec asks for.
#[derive(Parser)]
#[command(name = "gantry-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Kubeconfig file to use. Without it the client looks at $KUBECONFIG,
    /// then ~/.kube/config, then the pod's in-cluster service account.
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,

    /// Watch and manage goservers in this namespace only. Default: all
    /// namespaces (the operator then needs cluster-wide permissions).
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "GANTRY_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    namespace: Option<String>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives such as `info,gantry_operator=debug`.
    #[arg(
        long,
        global = true,
        env = "GANTRY_LOG_LEVEL",
        default_value = "info",
        value_name = "FILTER"
    )]
    log_level: String,

    /// Log line format.
    #[arg(long, global = true, env = "GANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Address of the HTTP port serving /healthz, /readyz and /metrics.
    /// Loopback by default, on 8081 so that it does not collide with a
    /// server on 8080 beside it; in a pod use 0.0.0.0:<port> (the chart does).
    /// Port 0 picks a free port (logged); an empty value disables the port.
    #[arg(
        long,
        global = true,
        env = "GANTRY_HTTP_ADDRESS",
        default_value = "127.0.0.1:8081",
        value_name = "HOST:PORT"
    )]
    http_address: String,

    /// Write only while holding a coordination.k8s.io Lease, so several
    /// replicas can run and one of them works. Standbys stay ready.
    #[arg(long, global = true)]
    leader_elect: bool,

    /// Namespace of the leader Lease. Default: the `POD_NAMESPACE` variable
    /// (the chart sets it from the downward API).
    #[arg(long, global = true, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the leader Lease; replicas with the same name elect one leader.
    #[arg(
        long,
        global = true,
        default_value = "gantry-operator",
        value_name = "NAME"
    )]
    leader_election_id: String,

    /// This replica's name: the leader-election identity and the instance
    /// in Events. The chart sets it from the downward API; without it the
    /// host name and process id are used.
    #[arg(long, global = true, env = "POD_NAME", value_name = "NAME")]
    pod_name: Option<String>,

    /// `GoServers` reconciled at the same time (0: no limit). Reconciles of
    /// one `GoServer` never overlap.
    #[arg(
        long,
        global = true,
        env = "GANTRY_CONCURRENCY",
        default_value_t = 8,
        value_name = "N"
    )]
    concurrency: u16,

    /// Prometheus that rollout verification asks when a GoServer names
    /// none (`spec.rollout.verification.prometheus.url`).
    #[arg(long, global = true, env = "GANTRY_PROMETHEUS_URL", value_name = "URL")]
    prometheus_url: Option<String>,

    /// File holding a bearer token for --prometheus-url. It is read at every
    /// query and sent to that URL only, never to one a GoServer names.
    #[arg(
        long,
        global = true,
        env = "GANTRY_PROMETHEUS_TOKEN_FILE",
        value_name = "PATH"
    )]
    prometheus_token_file: Option<PathBuf>,

    /// File holding the key that signs verification webhook calls
    /// (Standard Webhooks `webhook-signature`, HMAC-SHA256 over the id, the
    /// time and the body; and, for receivers of earlier releases,
    /// `X-Gantry-Signature` over the body alone). A file starting with
    /// `whsec_` holds the key in base64.
    #[arg(
        long,
        global = true,
        env = "GANTRY_WEBHOOK_SIGNING_KEY_FILE",
        value_name = "PATH"
    )]
    webhook_signing_key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the goservers.gantry.dev custom resource definition as YAML and exit.
    Crd,
    /// Print the field reference (Markdown, generated from the schema) and exit.
    Reference,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Reference) = cli.command {
        print!("{}", gantry_operator::reference::markdown());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Crd) = cli.command {
        return match gantry_operator::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    telemetry::init(&cli.log_level, cli.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pod_name = cli.pod_name.clone().filter(|n| !n.is_empty());
    let leader_election = if cli.leader_elect {
        let namespace = cli.leader_election_namespace.clone().ok_or_else(|| {
            anyhow::anyhow!("--leader-elect needs --leader-election-namespace or $POD_NAMESPACE")
        })?;
        Some(LeaderElection {
            namespace,
            name: cli.leader_election_id.clone(),
            identity: gantry_operator::leader::identity(pod_name.as_deref()),
        })
    } else {
        None
    };
    let options = RunOptions {
        namespace: cli.namespace.clone(),
        http_address: Some(cli.http_address.clone()).filter(|a| !a.is_empty()),
        leader_election,
        instance: pod_name,
        concurrency: cli.concurrency,
        prometheus_url: cli.prometheus_url.clone().filter(|u| !u.is_empty()),
        prometheus_token_file: cli.prometheus_token_file.clone(),
        webhook_signing_key_file: cli.webhook_signing_key_file.clone(),
    };
    runtime.block_on(async {
        let config =
            gantry_operator::client::config(cli.kubeconfig.as_deref(), cli.context.clone()).await?;
        gantry_operator::run(config, options).await?;
        Ok(())
    })
}
