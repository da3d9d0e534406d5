//! The name-conflict guard: a child of the name that another owner
//! controls is never taken over.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use super::applier::Applier;
use crate::build::{self};
use crate::cache::Named;
use crate::crd::GoServer;
use crate::error::{Error, Result};

impl Applier<'_> {
    /// Stops before the first write when the cached `GoServer` may not be
    /// the live one. The sign is a child of its name that another object
    /// controls. Either the `GoServer` was deleted and created again under
    /// the same name while its watch lagged (the stale-state test found
    /// that writing then hands the new object's children to the old one,
    /// and the garbage collector deletes them), or the child is an earlier
    /// object's, waiting for the garbage collector, and is adopted. One GET
    /// of the `GoServer`, asked only then, tells the two apart.
    pub(super) async fn check_current(
        &self,
        name: &str,
        with_canary: bool,
        with_baseline: bool,
    ) -> Result<()> {
        let namespace = self.namespace()?;
        let uid = self.gs.uid();
        let own = uid.as_deref();
        let canary = build::canary::name(name);
        let baseline = build::canary::baseline_name(name);
        let mut names = vec![(Named::Primary, name)];
        if with_canary {
            names.push((Named::Canary, canary.as_str()));
        }
        if with_baseline {
            names.push((Named::Baseline, baseline.as_str()));
        }
        let claims = self.caches.claims(namespace, &names, own);
        // Another GoServer's child under a name this one needs: one's
        // canary is named like the other (`web-canary`). Whichever came
        // second waits, saying so.
        if let Some((claim, owner)) = claims.iter().find_map(|claim| {
            let owner = claim.foreign.as_ref()?;
            (owner.kind == GoServer::kind(&()) && owner.name != name).then_some((claim, owner))
        }) {
            return Err(Error::NameConflict {
                kind: claim.kind,
                name: claim.name.clone(),
                owner: owner.name.clone(),
            });
        }
        if claims.iter().all(|claim| claim.foreign.is_none()) {
            return Ok(());
        }
        let live = self
            .api::<GoServer>()?
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get GoServer {name}"), e))?;
        let live = match &live {
            None => "none".to_owned(),
            Some(live) if live.uid() != uid => {
                format!("uid {}", live.uid().unwrap_or_default())
            }
            Some(live) if live.metadata.deletion_timestamp.is_some() => {
                "it being deleted".to_owned()
            }
            Some(_) => return Ok(()),
        };
        Err(Error::Outdated {
            name: name.to_owned(),
            uid: uid.unwrap_or_default(),
            live,
        })
    }
}

/// Whether the `GoServer` with `uid` is the controller among `owners`.
pub fn owned_by(owners: &[OwnerReference], uid: Option<&str>) -> bool {
    uid.is_some_and(|uid| {
        owners
            .iter()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}
