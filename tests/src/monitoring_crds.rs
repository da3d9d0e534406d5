//! The prometheus-operator CRDs (`monitoring.coreos.com`), as that project
//! publishes them, installed into the test cluster so that the objects the
//! chart renders for them are checked against their real schemas.
//!
//! The manifests come from the prometheus-operator Go module, fetched
//! through the Go module proxy like the control-plane binaries' sources
//! (`go mod download`, cached in the Go module cache), from the version
//! pinned here.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;

/// The prometheus-operator release whose CRDs the tests install.
pub const PROMETHEUS_OPERATOR: &str = "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/// The kinds installed, by the name of their manifest in the module's
/// `example/prometheus-operator-crd/`.
pub const KINDS: [&str; 2] = ["servicemonitors", "prometheusrules"];

/// Applies the CRDs of [`KINDS`] with kubectl (server-side, so concurrent
/// tests agree) and waits until they are served.
pub async fn install(client: &Client) -> Result<()> {
    let dir = crate::go_module::dir(PROMETHEUS_OPERATOR)?.join("example/prometheus-operator-crd");
    for kind in KINDS {
        let path = dir.join(format!("monitoring.coreos.com_{kind}.yaml"));
        crate::apply_crd_file(client, &path, &format!("{kind}.monitoring.coreos.com")).await?;
    }
    Ok(())
}

/// Deletes the `ServiceMonitor` CRD (and with it every `ServiceMonitor`),
/// and waits until it is gone: a cluster without prometheus-operator.
pub async fn uninstall_service_monitors(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::Api;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "servicemonitors.monitoring.coreos.com";
    match crds.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(err) => return Err(err).context("deleting the ServiceMonitor CRD"),
    }
    crate::wait_for_deletion(&crds, name, Duration::from_secs(60)).await
}
