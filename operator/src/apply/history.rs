//! Revision history: each revision recorded as a `ControllerRevision`, the
//! oldest pruned past the spec's limit.

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::PostParams;
use tracing::info;

use super::applier::Applier;
use super::change::{Action, Change};
use super::guard::owned_by;
use crate::build::FIELD_MANAGER;
use crate::build::revision::{CONFIG_MAP_ANNOTATION, REVISION_NUMBER_LABEL};
use crate::build::{self, REVISION_LABEL, Revision};
use crate::error::{Error, Result};
use crate::status;

/// `ControllerRevisions` kept when `rollout.revisionHistoryLimit` is unset.
pub const DEFAULT_REVISION_HISTORY: usize = 10;

/// A `ControllerRevision` of the `GoServer`, as the cache has it.
pub(super) struct Recorded {
    pub(super) name: String,
    /// Its number: the newest is the highest.
    pub(super) number: i64,
    /// The config its revision ran with.
    pub(super) config_map: Option<String>,
}

impl Applier<'_> {
    /// The `ControllerRevisions` of this `GoServer` in the cache, newest first.
    pub(super) fn revisions(&self) -> Vec<Recorded> {
        let uid = self.gs.uid();
        let namespace = self.gs.namespace();
        let mut owned: Vec<Recorded> = self
            .caches
            .revisions
            .state()
            .iter()
            .filter(|r| {
                r.namespace() == namespace && owned_by(r.owner_references(), uid.as_deref())
            })
            .map(|r| {
                let number = r
                    .labels()
                    .get(REVISION_NUMBER_LABEL)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let config_map = r.annotations().get(CONFIG_MAP_ANNOTATION).cloned();
                Recorded {
                    name: r.name_any(),
                    number,
                    config_map,
                }
            })
            .collect();
        owned.sort_by(|a, b| b.number.cmp(&a.number).then_with(|| a.name.cmp(&b.name)));
        owned
    }

    /// Records `revision` as a `ControllerRevision`, numbered after the
    /// newest one, unless it is recorded already. Its data never changes
    /// (the apiserver refuses that), so an existing record is left alone.
    pub(super) async fn record(
        &self,
        revision: &Revision,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let existing = self.revisions();
        if existing.iter().any(|r| r.name == revision.name) {
            return Ok(());
        }
        let api = self.api::<ControllerRevision>()?;
        let number = existing.first().map_or(1, |r| r.number.saturating_add(1));
        let record = build::controller_revision(self.gs, revision, number)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &record).await {
            Ok(_) => {}
            // Not cached, but there all the same: a cache behind our write.
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(e) => return Err(Error::from_write("ControllerRevision", &revision.name, e)),
        }
        info!(child = %revision.name, number, "revision recorded");
        changes.push(Change::of::<ControllerRevision>(
            Action::Created,
            self.namespace()?,
            &revision.name,
        ));
        Ok(())
    }

    /// Deletes `ControllerRevisions` beyond `revisionHistoryLimit` (never
    /// the one in force, the canary's or the last verified one) and, once the rollout is
    /// complete, every `ConfigMap` of this `GoServer` that no kept revision
    /// uses. Until then old pods may still restart and need theirs.
    pub(super) async fn prune_history(
        &self,
        in_force: &Revision,
        canary: Option<&str>,
        config_maps: &[String],
        live: &Deployment,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let limit = self
            .gs
            .spec
            .rollout
            .as_ref()
            .and_then(|r| r.revision_history_limit)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(DEFAULT_REVISION_HISTORY)
            .max(1);
        let last_good = self
            .gs
            .status
            .as_ref()
            .and_then(|s| s.last_good_revision.clone());
        let mut referenced = config_maps.to_vec();
        for (
            i,
            Recorded {
                name,
                config_map: used,
                ..
            },
        ) in self.revisions().into_iter().enumerate()
        {
            let protected = name == in_force.name
                || Some(&name) == last_good.as_ref()
                || Some(name.as_str()) == canary;
            if i < limit || protected {
                referenced.extend(used);
                continue;
            }
            self.prune::<ControllerRevision, _>(&self.caches.revisions, &name, changes)
                .await?;
        }
        let runs_in_force = live
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(REVISION_LABEL))
            == Some(&in_force.name);
        if !(runs_in_force && status::rollout_complete(live)) {
            return Ok(());
        }
        let namespace = self.namespace()?;
        let prefix = build::config_map_prefix(&self.gs.name_any());
        let legacy = prefix.trim_end_matches('-').to_owned();
        let uid = self.gs.uid();
        let unused: Vec<String> = self
            .caches
            .config_maps
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace))
            .filter(|c| owned_by(c.owner_references(), uid.as_deref()))
            .map(|c| c.name_any())
            .filter(|n| n.starts_with(&prefix) || *n == legacy)
            .filter(|n| !referenced.contains(n))
            .collect();
        for name in unused {
            self.prune::<ConfigMap, _>(&self.caches.config_maps, &name, changes)
                .await?;
        }
        Ok(())
    }
}
