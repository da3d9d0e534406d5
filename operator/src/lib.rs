//! gantry-operator: keeps the children of every `GoServer` in the shape its
//! spec asks for.
//!
//! - [`crd`]: the resource types, the one source of the CRD schema.
//! - [`build`]: pure functions from a `GoServer` to its desired children.
//! - [`apply`]: server-side apply that writes only what differs.
//! - [`controller`]: fetch, validate, build, apply, prune, report.
//! - [`status`]: conditions and counters from the observed Deployment.
//! - [`telemetry`]: JSON logs with the reconcile's object and id.
//! - [`reference`]: the field reference in docs/, generated from the schema.

pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
pub mod error;
pub mod reference;
pub mod status;
pub mod telemetry;

use std::path::Path;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

pub use error::{Error, Result};

/// A client from `kubeconfig` (or the usual places when `None`), using
/// `context` instead of the current context when given.
pub async fn client(kubeconfig: Option<&Path>, context: Option<String>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options).await?
        }
        None if options.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
