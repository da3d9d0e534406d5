//! The Gateway API CRDs (standard channel), as the `sigs.k8s.io/gateway-api`
//! Go module publishes them, for the tests of `spec.route`: the same
//! release the operator's types are generated from.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};

/// The kinds installed, by their plural: routes attach to Gateways, which
/// belong to a `GatewayClass`.
pub const KINDS: [&str; 3] = ["gatewayclasses", "gateways", "httproutes"];

/// Applies the CRDs of [`KINDS`] with kubectl (server-side, so concurrent
/// tests agree) and waits until they are served.
pub async fn install(client: &Client) -> Result<()> {
    let dir = crate::go_module::dir(gantry_operator::gateway::RELEASE)?.join("config/crd/standard");
    for kind in KINDS {
        let path = dir.join(format!("gateway.networking.k8s.io_{kind}.yaml"));
        crate::apply_crd_file(client, &path, &format!("{kind}.gateway.networking.k8s.io")).await?;
    }
    Ok(())
}

/// Deletes the CRDs (and every object of them) and waits until they are
/// gone: a cluster without the Gateway API.
pub async fn uninstall(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in KINDS {
        let name = format!("{kind}.gateway.networking.k8s.io");
        match crds
            .delete(&name, &kube::api::DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(err) => return Err(err).with_context(|| format!("deleting {name}")),
        }
        crate::wait_for_deletion(&crds, &name, Duration::from_secs(60)).await?;
    }
    Ok(())
}
