//! The conditions computed from observed facts, literal by literal.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::build::tests::goserver;
use crate::cache::optional::Presence;
use crate::crd::GoServerStatus;
use crate::error::Error;
use crate::gateway::HttpRoute;
use crate::rollout::Decision;

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
    let observed = Inputs {
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
    let observed = Inputs {
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
    let observed = Inputs {
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
    let observed = Inputs {
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
    let observed = Inputs {
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
    let observed = Inputs {
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
        let observed = Inputs {
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
    let observed = Inputs {
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
        let observed = Inputs {
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
            "Gateway edge/other reports Accepted=False: namespace web is not allowed".to_owned()
        )
    );
    let served = status_with(Presence::Ready, None);
    assert_eq!(condition(&served, DEGRADED).unwrap().status, "False");

    // No route asked for: neither condition says anything of it.
    let plain = goserver(json!({"image": "h"}));
    let observed = Inputs {
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
        let observed = Inputs {
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
    let observed = Inputs {
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

#[test]
fn a_running_canary_is_summarised_for_kubectl_get() {
    let gs = goserver(json!({
        "image": "hello:2",
        "route": {"parentRefs": [{"name": "public"}]},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
        },
    }));
    let canary = |phase: &str, step: i32, weight: i32| -> crate::crd::CanaryStatus {
        serde_json::from_value(json!({
            "revision": "hello-new", "phase": phase, "step": step, "weight": weight,
        }))
        .unwrap()
    };
    assert_eq!(
        canary_summary(&gs, Some(&canary("Progressing", 1, 50))).as_deref(),
        Some("step 2/2, 50%")
    );
    assert_eq!(
        canary_summary(&gs, Some(&canary("Promoting", 1, 50))).as_deref(),
        Some("step 2/2, 50%")
    );
    // Done or aborted: the column is empty again.
    assert_eq!(canary_summary(&gs, Some(&canary("Promoted", 1, 0))), None);
    assert_eq!(canary_summary(&gs, Some(&canary("Aborted", 0, 0))), None);
    assert_eq!(canary_summary(&gs, None), None);
}
