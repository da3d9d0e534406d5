//! gantry-operator: keeps the children of every `GoServer` in the shape its
//! spec asks for. docs/architecture.md draws the flow through these modules.
//!
//! - [`crd`]: the resource types, the one source of the CRD schema.
//! - [`build`]: pure functions from a `GoServer` to its desired children.
//! - [`cache`]: reflector stores of the children, fed by the controller's watches.
//! - [`apply`]: the applier: server-side apply of what differs from the
//!   caches, the replica handover, pruning; reports each change.
//! - [`controller`]: fetch, validate, build, apply, report.
//! - [`client`]: the kube client, with every request counted.
//! - [`audit`]: requests named like the audit log (method, resource, verb).
//! - [`clock`]: the time written into status: the apiserver's.
//! - [`rollout`]: verification of each revision against Prometheus, rollback.
//! - [`notify`]: telling decisions: their Events and webhook deliveries.
//! - [`status`]: conditions and counters from the observed Deployment.
//! - [`telemetry`]: JSON logs with the reconcile's object and id.
//! - [`metrics`], [`http`]: Prometheus metrics, `/healthz`, `/readyz`.
//! - [`options`]: how the operator runs ([`RunOptions`]).
//! - [`leader`]: Lease-based leader election, so only one replica writes.
//! - [`reference`]: the field reference in docs/, generated from the schema.

pub mod apply;
pub mod audit;
pub mod build;
pub mod cache;
pub mod client;
pub mod clock;
pub mod controller;
pub mod crd;
pub mod error;
pub mod fault;
pub mod gateway;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod options;
pub mod reference;
pub mod rollout;
mod signal;
pub mod status;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use kube::config::Config;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use options::{LeaderElection, RunOptions};

use crate::http::{AppState, Health};
use crate::metrics::Metrics;

/// Runs the operator until SIGINT or SIGTERM.
///
/// With leader election, the process stands by until it holds the Lease,
/// then runs the controller while renewing. It returns an error (the
/// process exits non-zero) when leadership is lost: the controller's
/// caches and queues belong to a term that is over, and a restart, which
/// the Deployment does, is the simplest way to start clean as a standby.
pub async fn run(config: Config, options: RunOptions) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let client = client::counted(config, &metrics).map_err(|e| Error::kube("build a client", e))?;
    let health = Arc::new(Health::default());
    if let Some(address) = options.http_address.as_deref() {
        http::serve(
            address,
            AppState {
                health: Arc::clone(&health),
                metrics: Arc::clone(&metrics),
            },
        )
        .await?;
    }
    let Some(election) = options.leader_election.as_ref() else {
        metrics.set_leader(true);
        controller::watches::run(client, &options, metrics, health).await;
        return Ok(());
    };
    let elector = leader::Elector::new(
        client.clone(),
        &election.namespace,
        &election.name,
        &election.identity,
    );
    // A standby is ready: during a rolling update the new replica must
    // become Ready while the old one still leads, or the rollout would wait
    // forever for a replica that only becomes leader once the old one is
    // gone. Readiness says "this process is healthy and can take over",
    // not "this process writes"; `gantry_leader` says that.
    health.set_ready(true);
    info!(
        identity = elector.identity(),
        lease = %format!("{}/{}", election.namespace, election.name),
        "waiting to lead"
    );
    let leadership = tokio::select! {
        leadership = elector.acquire() => leadership,
        () = signal::shutdown() => {
            info!("stopped while standing by");
            return Ok(());
        }
    };
    info!(identity = elector.identity(), "leading");
    metrics.set_leader(true);
    let outcome = tokio::select! {
        () = controller::watches::run(client, &options, Arc::clone(&metrics), health) => Ok(()),
        lost = leadership.keep() => Err(lost),
    };
    metrics.set_leader(false);
    match outcome {
        Ok(()) => {
            // Stopped by a signal: hand over now rather than make the
            // standby wait for the lease to run out.
            // Bounded: with the apiserver out of reach the release would
            // wait as long as the client lets a request wait.
            match tokio::time::timeout(RELEASE_TIMEOUT, leadership.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => warn!(error = %err, "could not release the leader Lease"),
                Err(_) => warn!(
                    timeout_seconds = RELEASE_TIMEOUT.as_secs(),
                    "could not release the leader Lease in time; the standby takes over when it expires"
                ),
            }
            Ok(())
        }
        Err(lost) => Err(lost),
    }
}

/// How long releasing the leader Lease may take on the way out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
