//! The Deployment's rollout facts: complete, past its progress deadline,
//! and how far its replicas are, each only for the generation the status
//! was written for.

use k8s_openapi::api::apps::v1::Deployment;

/// Whether every replica of `deployment` runs its current template and is
/// available: `kubectl rollout status`'s test.
pub fn rollout_complete(deployment: &Deployment) -> bool {
    Rollout::of(deployment).complete()
}

/// Whether the Deployment gave up on its progress deadline.
pub fn deadline_exceeded(deployment: &Deployment) -> bool {
    Rollout::of(deployment).deadline_exceeded
}

/// Rollout facts read from a Deployment.
pub(super) struct Rollout {
    pub(super) desired: i32,
    pub(super) replicas: i32,
    pub(super) ready: i32,
    pub(super) updated: i32,
    pub(super) available: i32,
    pub(super) observed: bool,
    pub(super) deadline_exceeded: bool,
}

impl Rollout {
    pub(super) fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let observed = match (deployment.metadata.generation, status.observed_generation) {
            (Some(generation), Some(seen)) => seen >= generation,
            _ => false,
        };
        // Only a status written for the current template says anything
        // about it: right after a new template, the apply's own answer and
        // the cache still carry the previous template's deadline.
        let deadline_exceeded = observed
            && status.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
        Self {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            observed,
            deadline_exceeded,
        }
    }

    /// The same test as `kubectl rollout status`.
    pub(super) fn complete(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.replicas <= self.updated
            && self.available >= self.updated
    }
}
