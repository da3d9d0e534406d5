//! The replica handover: when autoscaling takes over, `spec.replicas`
//! moves to a field manager of its own, so that the HPA's count stays.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::info;

use super::applier::Applier;
use crate::build::FIELD_MANAGER;
use crate::error::{Error, Result};

/// Field manager that keeps `spec.replicas` when autoscaling takes over.
pub const REPLICAS_HANDOVER_MANAGER: &str = "gantry-replicas-handover";

impl Applier<'_> {
    /// When autoscaling is switched on, the operator stops applying
    /// `spec.replicas` so the HPA owns it. Server-side apply removes a field
    /// its only owner stops applying, and the Deployment would fall back to
    /// one replica until the HPA acted: an outage for a server that ran at
    /// ten. So, once, while `gantry` still owns the field, the current count
    /// is applied under a second manager; dropping it from gantry's apply
    /// then leaves the value in place, and the HPA scales from there.
    pub(super) async fn hand_over_replicas(&self, live: &Deployment) -> Result<()> {
        let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
            return Ok(());
        };
        if !owns_replicas(live, FIELD_MANAGER) {
            return Ok(());
        }
        let name = live.name_any();
        let handover = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": replicas},
        });
        self.api::<Deployment>()?
            .patch(
                &name,
                &PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force(),
                &Patch::Apply(&handover),
            )
            .await
            .map_err(|e| Error::from_write("Deployment", &name, e))?;
        info!(child = %name, replicas, "replicas handed over to autoscaling");
        Ok(())
    }
}

/// Whether `manager` holds `spec.replicas` of `deployment` through apply.
pub fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn deployment_managed_by(entries: &Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "managedFields": entries}}))
            .unwrap()
    }

    #[test]
    fn replicas_ownership_is_read_from_apply_entries_only() {
        let applied = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
        ]));
        assert!(owns_replicas(&applied, "gantry"));
        assert!(!owns_replicas(&applied, "kube-controller-manager"));

        // After the handover gantry's apply no longer lists the field, and
        // an Update by the HPA's controller does not count as gantry's.
        let handed_over = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "gantry", "operation": "Update",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": REPLICAS_HANDOVER_MANAGER, "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]));
        assert!(!owns_replicas(&handed_over, "gantry"));
        assert!(owns_replicas(&handed_over, REPLICAS_HANDOVER_MANAGER));
    }
}
