//! The status of a `GoServer`, computed from its observed Deployment.
//!
//! [`compute`] is pure: the controller hands it the Deployment it just
//! applied (or found) and, on a permanent error, that error; it returns the
//! whole status, keeping the `lastTransitionTime` of every condition whose
//! status did not change. The controller writes the result only when it
//! differs from what is stored.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::build::{self, ServiceMonitor};
use crate::cache::optional::{self, Presence};
use crate::crd::{
    CanaryPhase, CanaryStatus, GoServer, GoServerStatus, VerificationPhase, VerificationStatus,
};
use crate::error::Error;
use crate::gateway::HttpRoute;
use crate::rollout::{self, Decision};

pub const READY: &str = "Ready";
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const VERIFIED: &str = "Verified";
pub const SCALING: &str = "Scaling";
pub const MONITORED: &str = "Monitored";
pub const ROUTED: &str = "Routed";

/// Inputs of a status besides the `GoServer` itself.
pub struct Observed<'a> {
    /// The Deployment as the apiserver has it now, if it exists.
    pub deployment: Option<&'a Deployment>,
    /// The rollout state decided this reconcile; `None` when the reconcile
    /// stopped before (the stored one is kept).
    pub rollout: Option<&'a Decision>,
    /// A permanent error that stopped this reconcile.
    pub error: Option<&'a Error>,
    /// The `HorizontalPodAutoscaler`, when autoscaling is on and it exists.
    pub hpa: Option<&'a HorizontalPodAutoscaler>,
    /// Whether the cluster serves `ServiceMonitors`, and they are cached.
    pub service_monitors: Presence,
    /// Whether the cluster serves `HTTPRoutes`, and they are cached.
    pub routes: Presence,
    /// The `HTTPRoute`, when the spec has a route and it exists.
    pub route: Option<&'a HttpRoute>,
    /// Whether a Gateway listener the route attaches to speaks HTTPS.
    pub route_https: bool,
}

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
struct Rollout {
    desired: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    available: i32,
    observed: bool,
    deadline_exceeded: bool,
}

impl Rollout {
    fn of(deployment: &Deployment) -> Self {
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
    fn complete(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.replicas <= self.updated
            && self.available >= self.updated
    }
}

/// One condition before its transition time is known.
struct Verdict {
    type_: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

impl Verdict {
    fn new(
        type_: &'static str,
        status: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The status `gs` should have.
pub fn compute(gs: &GoServer, observed: &Observed<'_>, now: &Time) -> GoServerStatus {
    let old = gs.status.clone().unwrap_or_default();
    let generation = gs.metadata.generation;
    let name = gs.metadata.name.as_deref().unwrap_or_default();
    let rollout = observed.deployment.map(Rollout::of);
    // On an early error the rollout state stays as stored.
    let (revision, last_good_revision, failed_revision, verification, history, canary, outbox) =
        match observed.rollout {
            Some(d) => (
                Some(d.revision.clone()),
                d.last_good_revision.clone(),
                d.failed_revision.clone(),
                d.verification.clone(),
                d.history.clone(),
                d.canary.clone(),
                d.outbox.clone(),
            ),
            None => (
                old.revision.clone(),
                old.last_good_revision.clone(),
                old.failed_revision.clone(),
                old.verification.clone(),
                old.history.clone(),
                old.canary.clone(),
                old.outbox.clone(),
            ),
        };
    let (verified, rollout_degraded) = verification_verdicts(
        gs,
        revision.as_deref(),
        failed_revision.as_deref(),
        verification.as_ref(),
    );
    let rollout_degraded = rollout_degraded.or_else(|| {
        canary_aborted(
            revision.as_deref(),
            failed_revision.as_deref(),
            verification.as_ref(),
            canary.as_ref(),
        )
    });

    let mut verdicts = vec![
        ready(observed, rollout.as_ref()),
        available(observed.deployment),
        progressing(revision.as_deref(), rollout.as_ref()),
        match (observed.error, rollout_degraded) {
            (None, Some(verdict)) => verdict,
            _ => degraded(gs, observed, rollout.as_ref()),
        },
    ];
    verdicts.extend(verified);
    if gs.spec.autoscaling.is_some() {
        verdicts.push(scaling(observed.hpa));
    }
    if gs.spec.route.is_some() {
        verdicts.push(routed(observed.routes, observed.route));
    }
    if let Some(monitoring) = gs.spec.monitoring.as_ref().filter(|m| m.service_monitor) {
        verdicts.push(monitored(name, &monitoring.path, observed.service_monitors));
    }
    let conditions = verdicts
        .into_iter()
        .map(|v| {
            let transition = old
                .conditions
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == v.status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: v.type_.to_owned(),
                status: v.status.to_owned(),
                reason: v.reason,
                message: v.message,
                last_transition_time: transition,
                observed_generation: generation,
            }
        })
        .collect();

    GoServerStatus {
        observed_generation: generation,
        conditions,
        desired_replicas: rollout.as_ref().map(|r| r.desired),
        replicas: rollout.as_ref().map(|r| r.replicas),
        ready_replicas: rollout.as_ref().map(|r| r.ready),
        updated_replicas: rollout.as_ref().map(|r| r.updated),
        replica_summary: rollout
            .as_ref()
            .map(|r| format!("{}/{}", r.ready, r.desired)),
        selector: Some(build::selector_string(name)),
        url: build::url(gs, observed.route_https),
        revision,
        last_good_revision,
        failed_revision,
        verification,
        history,
        canary,
        outbox,
    }
}

/// `Degraded` while a canary that failed a step stays at weight 0 (no
/// `autoRollback`): the spec asks for a revision that does not serve.
fn canary_aborted(
    revision: Option<&str>,
    failed_revision: Option<&str>,
    verification: Option<&VerificationStatus>,
    canary: Option<&CanaryStatus>,
) -> Option<Verdict> {
    let canary = canary.filter(|c| c.phase == CanaryPhase::Aborted)?;
    let v = verification
        .filter(|v| v.revision == canary.revision && v.phase == VerificationPhase::Failed)?;
    if failed_revision.is_some() {
        return None;
    }
    Some(Verdict::new(
        DEGRADED,
        "True",
        "CanaryFailed",
        format!(
            "canary {} failed ({}); {} serves all traffic, and the canary stays at weight 0 \
             until the spec changes",
            canary.revision,
            v.message,
            revision.unwrap_or("the stable revision")
        ),
    ))
}

/// The `Verified` condition (absent without verification), and a
/// `Degraded` verdict when a revision failed: `RolledBack` when the good
/// one is back in force, `VerificationFailed` when the failed one stays.
fn verification_verdicts(
    gs: &GoServer,
    revision: Option<&str>,
    failed_revision: Option<&str>,
    verification: Option<&VerificationStatus>,
) -> (Option<Verdict>, Option<Verdict>) {
    let verification_set = gs
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.verification.is_some());
    let Some(v) = verification.filter(|_| verification_set) else {
        return (None, None);
    };
    let status = match v.phase {
        VerificationPhase::Passed => "True",
        VerificationPhase::Failed => "False",
        // It will not pass as written: a person must edit a query.
        _ if v.reason == rollout::INVALID_QUERY => "False",
        _ => "Unknown",
    };
    let message = if v.message.is_empty() {
        format!("revision {}", v.revision)
    } else {
        format!("revision {}: {}", v.revision, v.message)
    };
    let verified = Verdict::new(VERIFIED, status, &v.reason, message);
    let degraded = match failed_revision {
        Some(failed) => {
            let in_force = revision.unwrap_or("the last verified revision");
            let message = if v.revision == failed && v.reason == "RolledBack" {
                // Rolled back by request (see `rollout::request`).
                format!("revision {failed} was rolled back by request; {in_force} is in force")
            } else {
                let why = if v.revision == failed {
                    v.message.as_str()
                } else {
                    "see its history entry"
                };
                format!(
                    "revision {failed} failed verification ({why}); {in_force} is back in force"
                )
            };
            Some(Verdict::new(DEGRADED, "True", "RolledBack", message))
        }
        None if v.phase == VerificationPhase::Failed && revision == Some(v.revision.as_str()) => {
            Some(Verdict::new(
                DEGRADED,
                "True",
                "VerificationFailed",
                format!("revision {} failed verification: {}", v.revision, v.message),
            ))
        }
        None if v.reason == rollout::INVALID_QUERY => Some(Verdict::new(
            DEGRADED,
            "True",
            rollout::INVALID_QUERY,
            format!(
                "revision {} cannot be verified: {}; edit the query",
                v.revision, v.message
            ),
        )),
        None if v.overdue_at.is_some() && v.phase != VerificationPhase::Passed => {
            let since = v
                .overdue_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some(Verdict::new(
                DEGRADED,
                "True",
                "VerificationOverdue",
                format!(
                    "revision {} has had no verdict since its deadline ({since}) and stays in                      force unverified: {}: {}",
                    v.revision, v.reason, v.message
                ),
            ))
        }
        None => None,
    };
    (Some(verified), degraded)
}

const DEADLINE_MESSAGE: &str =
    "the rollout did not finish within the Deployment's progress deadline";

fn ready(observed: &Observed<'_>, rollout: Option<&Rollout>) -> Verdict {
    match (observed.error, rollout) {
        (Some(err), _) => Verdict::new(READY, "False", err.reason(), err.to_string()),
        (None, None) => Verdict::new(
            READY,
            "False",
            "DeploymentMissing",
            "the Deployment does not exist yet",
        ),
        (None, Some(r)) if r.deadline_exceeded => {
            Verdict::new(READY, "False", "ProgressDeadlineExceeded", DEADLINE_MESSAGE)
        }
        (None, Some(r)) if r.complete() && r.ready >= r.desired => Verdict::new(
            READY,
            "True",
            "Ready",
            format!("{} of {} replicas ready", r.ready, r.desired),
        ),
        (None, Some(r)) => Verdict::new(
            READY,
            "False",
            "RolloutInProgress",
            format!(
                "{} of {} replicas updated, {} ready",
                r.updated, r.desired, r.ready
            ),
        ),
    }
}

/// Mirrors the Deployment's own `Available` condition.
fn available(deployment: Option<&Deployment>) -> Verdict {
    let condition = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"));
    match condition {
        Some(c) => Verdict::new(
            AVAILABLE,
            match c.status.as_str() {
                "True" => "True",
                "False" => "False",
                _ => "Unknown",
            },
            c.reason.as_deref().unwrap_or("Unknown"),
            c.message.clone().unwrap_or_default(),
        ),
        None => Verdict::new(
            AVAILABLE,
            "Unknown",
            "DeploymentPending",
            "the Deployment reports no availability yet",
        ),
    }
}

/// True while a rollout is under way.
fn progressing(revision: Option<&str>, rollout: Option<&Rollout>) -> Verdict {
    match rollout {
        Some(r) if r.deadline_exceeded => Verdict::new(
            PROGRESSING,
            "False",
            "ProgressDeadlineExceeded",
            "the rollout stalled",
        ),
        Some(r) if r.complete() => Verdict::new(
            PROGRESSING,
            "False",
            "RolloutComplete",
            format!("revision {} is rolled out", revision.unwrap_or("unknown")),
        ),
        Some(r) => Verdict::new(
            PROGRESSING,
            "True",
            "RollingOut",
            format!("{} of {} replicas updated", r.updated, r.desired),
        ),
        None => Verdict::new(
            PROGRESSING,
            "Unknown",
            "DeploymentMissing",
            "the Deployment does not exist yet",
        ),
    }
}

/// A permanent error, a stalled rollout, or a route the cluster cannot
/// have.
fn degraded(gs: &GoServer, observed: &Observed<'_>, rollout: Option<&Rollout>) -> Verdict {
    match (observed.error, rollout) {
        (Some(err), _) => Verdict::new(DEGRADED, "True", err.reason(), err.to_string()),
        (None, Some(r)) if r.deadline_exceeded => Verdict::new(
            DEGRADED,
            "True",
            "ProgressDeadlineExceeded",
            DEADLINE_MESSAGE,
        ),
        _ if gs.spec.route.is_some() && observed.routes == Presence::Missing => {
            Verdict::new(DEGRADED, "True", GATEWAY_API_MISSING, gateway_api_missing())
        }
        _ => Verdict::new(DEGRADED, "False", "AsExpected", ""),
    }
}

/// Whether the `HorizontalPodAutoscaler` can do its work, from its own
/// `AbleToScale` and `ScalingActive` conditions. It never holds `Ready`:
/// the pods serve whether or not they can be scaled, and a cluster without
/// a metrics API would otherwise never see a `GoServer` Ready.
fn scaling(hpa: Option<&HorizontalPodAutoscaler>) -> Verdict {
    let conditions = hpa
        .and_then(|h| h.status.as_ref())
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let failing = ["AbleToScale", "ScalingActive"]
        .into_iter()
        .filter_map(find)
        .find(|c| c.status == "False");
    if let Some(c) = failing {
        return Verdict::new(
            SCALING,
            "False",
            c.reason.as_deref().unwrap_or(&c.type_),
            format!(
                "the HorizontalPodAutoscaler reports {}=False: {}",
                c.type_,
                c.message.as_deref().unwrap_or("no message")
            ),
        );
    }
    match (hpa, find("AbleToScale"), find("ScalingActive")) {
        (None, _, _) => Verdict::new(
            SCALING,
            "Unknown",
            "AutoscalerMissing",
            "the HorizontalPodAutoscaler does not exist yet",
        ),
        (Some(_), Some(_), Some(_)) => Verdict::new(
            SCALING,
            "True",
            "ScalingActive",
            "the HorizontalPodAutoscaler can scale the Deployment",
        ),
        (Some(_), _, _) => Verdict::new(
            SCALING,
            "Unknown",
            "AutoscalerPending",
            "the HorizontalPodAutoscaler has not reported yet",
        ),
    }
}

/// Whether Prometheus is told where to scrape: the `ServiceMonitor` exists,
/// or why it does not. Like `Scaling`, it never holds `Ready`: the pods
/// serve whether or not anything scrapes them.
fn monitored(name: &str, path: &str, presence: Presence) -> Verdict {
    let (api_version, plural) = optional::api_resource::<ServiceMonitor>();
    match presence {
        Presence::Ready => Verdict::new(
            MONITORED,
            "True",
            "ServiceMonitorApplied",
            format!("the ServiceMonitor {name} scrapes {path} on the Service's http port"),
        ),
        Presence::Missing => Verdict::new(
            MONITORED,
            "False",
            "ServiceMonitorCRDMissing",
            format!(
                "the cluster does not serve {plural} ({api_version}): install \
                 prometheus-operator's CRDs; the ServiceMonitor is created once they \
                 are, without a restart"
            ),
        ),
        Presence::Pending => Verdict::new(
            MONITORED,
            "Unknown",
            "ServiceMonitorPending",
            format!("waiting to learn whether the cluster serves {plural} ({api_version})"),
        ),
    }
}

const GATEWAY_API_MISSING: &str = "GatewayAPIMissing";

fn gateway_api_missing() -> String {
    let (api_version, plural) = optional::api_resource::<HttpRoute>();
    format!(
        "the cluster does not serve {plural} ({api_version}): install the Gateway API CRDs \
         (standard channel); the HTTPRoute is created once they are, without a restart"
    )
}

/// Whether the route's Gateways accepted it, from the `HTTPRoute`'s status,
/// which each Gateway's controller writes for the parents it manages. It
/// never holds `Ready`: the Service serves whatever a Gateway does.
fn routed(presence: Presence, route: Option<&HttpRoute>) -> Verdict {
    match (presence, route) {
        (Presence::Missing, _) => {
            return Verdict::new(ROUTED, "False", GATEWAY_API_MISSING, gateway_api_missing());
        }
        (Presence::Pending, _) | (Presence::Ready, None) => {
            return Verdict::new(
                ROUTED,
                "Unknown",
                "RoutePending",
                "the HTTPRoute does not exist yet",
            );
        }
        (Presence::Ready, Some(_)) => {}
    }
    let parents = route
        .and_then(|r| r.status.as_ref())
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    let gateway = |p: &crate::gateway::httproute::HttpRouteStatusParents| {
        let r = &p.parent_ref;
        let mut name = r
            .namespace
            .as_ref()
            .map_or_else(|| r.name.clone(), |ns| format!("{ns}/{}", r.name));
        if let Some(section) = &r.section_name {
            name = format!("{name} (listener {section})");
        }
        name
    };
    // A refusal by any Gateway, or a reference it cannot resolve, is told
    // first: it is what needs doing.
    for parent in parents {
        for type_ in ["Accepted", "ResolvedRefs"] {
            if let Some(c) = parent
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "False")
            {
                return Verdict::new(
                    ROUTED,
                    "False",
                    &c.reason,
                    format!(
                        "Gateway {} reports {type_}=False: {}",
                        gateway(parent),
                        c.message
                    ),
                );
            }
        }
    }
    let accepted: Vec<String> = parents
        .iter()
        .filter(|p| {
            p.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")
        })
        .map(gateway)
        .collect();
    if accepted.is_empty() {
        Verdict::new(
            ROUTED,
            "Unknown",
            "NotYetAccepted",
            "no Gateway has accepted the HTTPRoute yet: is a Gateway controller running for its parents?",
        )
    } else {
        Verdict::new(
            ROUTED,
            "True",
            "Accepted",
            format!("accepted by Gateway {}", accepted.join(", ")),
        )
    }
}

/// The condition `type_` of a status, if present.
pub fn condition<'a>(status: &'a GoServerStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::build::tests::goserver;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[allow(clippy::needless_pass_by_value)] // callers pass `json!` literals
    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "hello", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    fn decision(revision: &str) -> Decision {
        Decision {
            revision: revision.to_owned(),
            ..Decision::default()
        }
    }

    fn done() -> Deployment {
        deployment(json!({
            "observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}],
        }))
    }

    #[test]
    fn finished_rollout_is_ready() {
        let gs = goserver(
            json!({"image": "h", "ingress": {"host": "a.example.com", "tls": {"secretName": "t"}}}),
        );
        let dep = done();
        let rollout = decision("hello-abc");
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let status = compute(&gs, &observed, &time(100));
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value,
            json!({
                "observedGeneration": 3,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Ready", "message": "2 of 2 replicas ready",
                     "lastTransitionTime": "1970-01-01T00:01:40Z", "observedGeneration": 3},
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok",
                     "lastTransitionTime": "1970-01-01T00:01:40Z", "observedGeneration": 3},
                    {"type": "Progressing", "status": "False", "reason": "RolloutComplete", "message": "revision hello-abc is rolled out",
                     "lastTransitionTime": "1970-01-01T00:01:40Z", "observedGeneration": 3},
                    {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
                     "lastTransitionTime": "1970-01-01T00:01:40Z", "observedGeneration": 3},
                ],
                "desiredReplicas": 2,
                "replicas": 2,
                "readyReplicas": 2,
                "updatedReplicas": 2,
                "replicaSummary": "2/2",
                "selector": "app.kubernetes.io/instance=hello,app.kubernetes.io/name=hello",
                "url": "https://a.example.com/",
                "revision": "hello-abc",
            })
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut gs = goserver(json!({"image": "h"}));
        let dep = done();
        let rollout = decision("hello-abc");
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let first = compute(&gs, &observed, &time(100));
        gs.status = Some(first.clone());
        let second = compute(&gs, &observed, &time(200));
        assert_eq!(first, second);
    }

    #[test]
    fn rollout_in_progress() {
        let gs = goserver(json!({"image": "h"}));
        let dep = deployment(
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 1}),
        );
        let rollout = decision("hello-new");
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let status = compute(&gs, &observed, &time(1));
        let ready = condition(&status, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RolloutInProgress")
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().status, "True");
        assert_eq!(condition(&status, AVAILABLE).unwrap().status, "Unknown");
        assert_eq!(status.replica_summary.as_deref(), Some("2/2"));
    }

    #[test]
    fn permanent_error_is_degraded() {
        let mut gs = goserver(json!({"image": "h"}));
        gs.status = Some(GoServerStatus {
            revision: Some("hello-old".to_owned()),
            ..GoServerStatus::default()
        });
        let err = Error::SecretNotFound {
            name: "db".to_owned(),
        };
        let observed = Observed {
            deployment: None,
            rollout: None,
            error: Some(&err),
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let status = compute(&gs, &observed, &time(1));
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "SecretNotFound");
        assert!(degraded.message.contains("\"db\""), "{}", degraded.message);
        assert_eq!(condition(&status, READY).unwrap().status, "False");
        assert_eq!(status.revision.as_deref(), Some("hello-old"));
    }

    #[test]
    fn stalled_rollout_is_degraded() {
        let gs = goserver(json!({"image": "h"}));
        let dep = deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        }));
        let observed = Observed {
            deployment: Some(&dep),
            rollout: None,
            error: None,
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let status = compute(&gs, &observed, &time(1));
        assert_eq!(
            condition(&status, DEGRADED).unwrap().reason,
            "ProgressDeadlineExceeded"
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().status, "False");
    }

    /// The previous template's deadline is not the new one's: a Deployment
    /// whose status was written for an older generation (the apply's own
    /// answer right after a new template, or a lagging cache) has not yet
    /// judged the new template at all. Taking its `ProgressDeadlineExceeded`
    /// for the new revision's failed a good revision for good.
    #[test]
    fn a_deadline_of_an_older_generation_is_not_the_new_ones() {
        let stalled = |observed_generation: i64| {
            deployment(json!({
                "observedGeneration": observed_generation, "replicas": 2, "updatedReplicas": 0,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
            }))
        };
        // The fixture's Deployment is at generation 2.
        assert!(!deadline_exceeded(&stalled(1)));
        assert!(deadline_exceeded(&stalled(2)));
        let gs = goserver(json!({"image": "h"}));
        let dep = stalled(1);
        let observed = Observed {
            deployment: Some(&dep),
            rollout: None,
            error: None,
            hpa: None,
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        let status = compute(&gs, &observed, &time(1));
        assert_eq!(condition(&status, DEGRADED).unwrap().reason, "AsExpected");
        assert_eq!(
            condition(&status, PROGRESSING).unwrap().reason,
            "RollingOut"
        );
    }

    #[test]
    fn an_autoscaler_that_cannot_scale_is_reported_without_holding_ready() {
        let gs = goserver(json!({"image": "h", "autoscaling": {"maxReplicas": 3}}));
        let dep = done();
        let rollout = decision("hello-abc");
        let hpa = |conditions: serde_json::Value| -> HorizontalPodAutoscaler {
            serde_json::from_value(json!({
                "metadata": {"name": "hello"},
                "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "hello"}},
                "status": {"desiredReplicas": 1, "conditions": conditions},
            }))
            .unwrap()
        };
        let scaling_of = |hpa: Option<&HorizontalPodAutoscaler>| {
            let observed = Observed {
                deployment: Some(&dep),
                rollout: Some(&rollout),
                error: None,
                hpa,
                service_monitors: Presence::Pending,
                routes: Presence::Pending,
                route: None,
                route_https: false,
            };
            let status = compute(&gs, &observed, &time(1));
            assert_eq!(condition(&status, READY).unwrap().status, "True");
            let c = condition(&status, SCALING).unwrap().clone();
            (c.status, c.reason, c.message)
        };

        let failing = hpa(json!([
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
             "message": "missing request for cpu in container server", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]));
        assert_eq!(
            scaling_of(Some(&failing)),
            (
                "False".to_owned(),
                "FailedGetResourceMetric".to_owned(),
                "the HorizontalPodAutoscaler reports ScalingActive=False: missing request for cpu in container server".to_owned()
            )
        );
        let working = hpa(json!([
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]));
        assert_eq!(scaling_of(Some(&working)).0, "True");
        assert_eq!(scaling_of(Some(&hpa(json!([])))).1, "AutoscalerPending");
        assert_eq!(scaling_of(None).1, "AutoscalerMissing");

        // No Scaling condition without autoscaling.
        let plain = goserver(json!({"image": "h"}));
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: Some(&working),
            service_monitors: Presence::Pending,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        assert!(condition(&compute(&plain, &observed, &time(1)), SCALING).is_none());
    }

    #[test]
    fn a_route_reports_its_gateways_and_a_missing_gateway_api_degrades() {
        let gs = goserver(json!({"image": "h", "route": {"parentRefs": [{"name": "public"}]}}));
        let dep = done();
        let rollout = decision("hello-abc");
        let route = |parents: serde_json::Value| -> HttpRoute {
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "hello"},
                "spec": {},
                "status": {"parents": parents},
            }))
            .unwrap()
        };
        let status_with = |routes, route: Option<&HttpRoute>| {
            let observed = Observed {
                deployment: Some(&dep),
                rollout: Some(&rollout),
                error: None,
                hpa: None,
                service_monitors: Presence::Pending,
                routes,
                route,
                route_https: false,
            };
            compute(&gs, &observed, &time(1))
        };
        let routed = |routes, route: Option<&HttpRoute>| {
            let status = status_with(routes, route);
            assert_eq!(condition(&status, READY).unwrap().status, "True");
            let c = condition(&status, ROUTED).unwrap().clone();
            (c.status, c.reason, c.message)
        };

        // No Gateway API: Degraded, saying what to install, and still Ready.
        let status = status_with(Presence::Missing, None);
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "GatewayAPIMissing")
        );
        assert!(
            degraded
                .message
                .contains("httproutes (gateway.networking.k8s.io/v1)"),
            "{}",
            degraded.message
        );
        assert_eq!(routed(Presence::Missing, None).0, "False");
        assert_eq!(routed(Presence::Ready, None).1, "RoutePending");

        let parent = |name: &str, conditions: serde_json::Value| json!({"controllerName": "example.com/gateway", "parentRef": {"name": name, "namespace": "edge"}, "conditions": conditions});
        let accepted = json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let refused = json!([{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "namespace web is not allowed", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        assert_eq!(
            routed(Presence::Ready, Some(&route(json!([])))).1,
            "NotYetAccepted"
        );
        assert_eq!(
            routed(
                Presence::Ready,
                Some(&route(json!([parent("public", accepted.clone())])))
            ),
            (
                "True".to_owned(),
                "Accepted".to_owned(),
                "accepted by Gateway edge/public".to_owned()
            )
        );
        assert_eq!(
            routed(
                Presence::Ready,
                Some(&route(json!([
                    parent("public", accepted),
                    parent("other", refused)
                ])))
            ),
            (
                "False".to_owned(),
                "NotAllowedByListeners".to_owned(),
                "Gateway edge/other reports Accepted=False: namespace web is not allowed"
                    .to_owned()
            )
        );
        let served = status_with(Presence::Ready, None);
        assert_eq!(condition(&served, DEGRADED).unwrap().status, "False");

        // No route asked for: neither condition says anything of it.
        let plain = goserver(json!({"image": "h"}));
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: None,
            service_monitors: Presence::Missing,
            routes: Presence::Missing,
            route: None,
            route_https: false,
        };
        let status = compute(&plain, &observed, &time(1));
        assert!(condition(&status, ROUTED).is_none());
        assert_eq!(condition(&status, DEGRADED).unwrap().status, "False");
    }

    #[test]
    fn a_wanted_service_monitor_is_reported_without_holding_ready() {
        let gs = goserver(json!({"image": "h", "monitoring": {"serviceMonitor": true}}));
        let dep = done();
        let rollout = decision("hello-abc");
        let monitored = |presence| {
            let observed = Observed {
                deployment: Some(&dep),
                rollout: Some(&rollout),
                error: None,
                hpa: None,
                service_monitors: presence,
                routes: Presence::Pending,
                route: None,
                route_https: false,
            };
            let status = compute(&gs, &observed, &time(1));
            assert_eq!(condition(&status, READY).unwrap().status, "True");
            let c = condition(&status, MONITORED).unwrap().clone();
            (c.status, c.reason, c.message)
        };
        assert_eq!(
            monitored(Presence::Missing),
            (
                "False".to_owned(),
                "ServiceMonitorCRDMissing".to_owned(),
                "the cluster does not serve servicemonitors (monitoring.coreos.com/v1): \
                 install prometheus-operator's CRDs; the ServiceMonitor is created once \
                 they are, without a restart"
                    .to_owned()
            )
        );
        assert_eq!(monitored(Presence::Pending).0, "Unknown");
        let (status, reason, message) = monitored(Presence::Ready);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "ServiceMonitorApplied")
        );
        assert!(message.contains("/metrics"), "{message}");

        // Nothing to report when no monitor is wanted.
        let off = goserver(json!({"image": "h", "monitoring": {"serviceMonitor": false}}));
        let observed = Observed {
            deployment: Some(&dep),
            rollout: Some(&rollout),
            error: None,
            hpa: None,
            service_monitors: Presence::Missing,
            routes: Presence::Pending,
            route: None,
            route_https: false,
        };
        assert!(condition(&compute(&off, &observed, &time(1)), MONITORED).is_none());
    }
}
