//! The controller's wiring: the `GoServer` watch, a watch per child kind
//! mapped back to its `GoServer`, and the run until a signal.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::controller::Controller;
use kube::Client;
use tracing::{debug, info, warn};

use super::context::Context;
use super::{error_policy, reconcile};
use crate::build::ServiceMonitor;
use crate::cache::triggers::{goserver_of, routes_on, trigger};
use crate::cache::{self, Caches};
use crate::error::Error;
use crate::gateway::{Gateway, HttpRoute};
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
    let attached = store.clone();
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
    let cache::Streams {
        deployments,
        services,
        config_maps,
        ingresses,
        hpas,
        revisions,
        service_monitors,
        routes,
        gateways,
    } = streams;
    let running = controller
        .watches_stream(deployments.map_ok(trigger::<_, Deployment>), goserver_of)
        .watches_stream(services.map_ok(trigger::<_, Service>), goserver_of)
        .watches_stream(config_maps.map_ok(trigger::<_, ConfigMap>), goserver_of)
        .watches_stream(ingresses.map_ok(trigger::<_, Ingress>), goserver_of)
        .watches_stream(
            hpas.map_ok(trigger::<_, HorizontalPodAutoscaler>),
            goserver_of,
        )
        .watches_stream(
            revisions.map_ok(trigger::<_, ControllerRevision>),
            goserver_of,
        )
        .watches_stream(
            service_monitors
                .children
                .map_ok(trigger::<_, ServiceMonitor>),
            goserver_of,
        )
        .watches_stream(routes.children.map_ok(trigger::<_, HttpRoute>), goserver_of)
        // A Gateway's listeners give the scheme of the routes on it.
        .watches_stream(
            gateways.children.map_ok(trigger::<_, Gateway>),
            move |gateway| routes_on(&attached, &gateway),
        )
        // An optional kind installed or removed: every GoServer learns
        // whether it can have its child.
        .reconcile_all_on(futures::stream::select_all([
            service_monitors.changes,
            routes.changes,
            gateways.changes,
        ]))
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
