//! Dereference: the objects a `GoServer` names exist before anything is
//! built from it. Only metadata is requested: Secret values are never read.

use k8s_openapi::api::core::v1::Secret;
use tracing::warn;

use super::context::{Context, namespaced};
use crate::crd::GoServer;
use crate::error::{Error, Result};

/// Every Secret the spec references exists; a missing one is
/// [`Error::SecretNotFound`], looked at again a minute later (Secrets are
/// not watched).
pub(super) async fn secrets_exist(ctx: &Context, gs: &GoServer) -> Result<()> {
    let secrets = namespaced::<Secret>(ctx, gs)?;
    for secret in &gs.spec.secrets {
        match secrets.get_metadata_opt(&secret.name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::SecretNotFound {
                    name: secret.name.clone(),
                });
            }
            // Without `get` on Secrets the check cannot be made; the pods
            // then report a missing Secret themselves.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(
                    secret = %secret.name,
                    "not allowed to check that referenced Secrets exist; skipping the check"
                );
                break;
            }
            Err(e) => return Err(Error::kube(format!("get Secret {}", secret.name), e)),
        }
    }
    Ok(())
}
