//! The controller's wiring: the `GoServer` watch, a watch per kind of the
//! table in [`crate::cache`] mapped back to its `GoServers`, and the run
//! until a signal.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::Client;
use kube::runtime::controller::Controller;
use tracing::{debug, info, warn};

use super::context::Context;
use super::{error_policy, reconcile};
use crate::cache::{self, Caches};
use crate::error::Error;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::options::RunOptions;

/// How long reconciles in flight may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the controller until SIGINT or SIGTERM. `health` turns ready once
/// the `GoServer` watch and every child cache have listed everything;
/// reconciles are counted in `metrics`.
pub async fn run(client: Client, options: &RunOptions, metrics: Arc<Metrics>, health: Arc<Health>) {
    let namespace = options.namespace.as_deref();
    info!(
        namespace = namespace.unwrap_or("*"),
        "gantry-operator starting"
    );
    let (caches, streams) = Caches::new(&client, namespace);
    let (store, goservers) = cache::goservers(&client, namespace);
    metrics.export_goservers(store.clone());
    let watched = store.clone();
    let controller = Controller::for_stream(goservers, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency));
    // A delivery answered wakes its GoServer, whose next status write
    // records it.
    let (wake, woken) = mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        caches.clone(),
        store.clone(),
        options,
        wake,
    ));
    tokio::spawn(async move {
        if cache::ready(&store).await && caches.wait_until_ready().await {
            health.set_ready(true);
            info!("watches synced, ready");
        }
    });
    let running = streams
        .watched_by(controller, &watched)
        .reconcile_on(woken)
        .trigger_backoff(cache::NoTriggerBackoff)
        .graceful_shutdown_on(crate::signal::shutdown())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                // Told at info by the reconcile itself; the watch brings the news.
                Err(kube::runtime::controller::Error::ReconcilerFailed(
                    Error::Outdated { .. },
                    object,
                )) => debug!(object = %object, "reconcile skipped"),
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        });
    // A graceful shutdown waits for the reconciles in flight; one waiting
    // on an apiserver that cannot be reached would hold the process until
    // the kubelet's SIGKILL. They get a grace period, then are dropped:
    // nothing a reconcile writes depends on it finishing.
    let overdue = async {
        crate::signal::shutdown().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = running => {}
        () = overdue => warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "reconciles still running after the shutdown grace period; stopping without them"
        ),
    }
    info!("gantry-operator stopped");
}
