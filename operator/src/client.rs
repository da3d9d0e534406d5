//! The Kubernetes client: configuration from a kubeconfig (or the pod's
//! service account), and a tower layer that counts every request the
//! operator sends, by HTTP method, resource and verb, into
//! `gantry_kubernetes_requests_total`.
//!
//! The count is what proves the controller cheap: a reconcile of an
//! unchanged `GoServer` must add nothing to it but the metadata GETs of
//! referenced Secrets.

use std::path::Path;
use std::sync::Arc;

use axum::http::{Request, Response};
use kube::Client;
use kube::client::{Body, ClientBuilder};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use tower::util::{MapRequestLayer, MapResponseLayer};

use crate::audit::classify;
use crate::metrics::Metrics;

/// The client configuration from `kubeconfig` (or the usual places when
/// `None`), using `context` instead of the current context when given.
pub async fn config(kubeconfig: Option<&Path>, context: Option<String>) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    Ok(match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        None if options.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    })
}

/// A client whose every request is counted in `metrics`.
pub fn counted(config: Config, metrics: &Arc<Metrics>) -> kube::Result<Client> {
    let metrics = Arc::clone(metrics);
    let layer = MapRequestLayer::new(move |request: Request<Body>| {
        metrics.requested(&classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        ));
        request
    });
    // Every answer's `Date` sets the clock the status is written in.
    let clock = MapResponseLayer::new(|response: Response<_>| {
        if let Some(date) = response
            .headers()
            .get(axum::http::header::DATE)
            .and_then(|d| d.to_str().ok())
        {
            crate::clock::observe(date);
        }
        response
    });
    let builder = ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .with_layer(&clock);
    Ok(match crate::fault::crash_after_write() {
        Some(crash) => builder.with_layer(&crash).build(),
        None => builder.build(),
    })
}
