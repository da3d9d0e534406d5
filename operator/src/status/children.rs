//! `Scaling`, `Monitored` and `Routed`: the conditions of the optional
//! children.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use super::draft::{Draft, MONITORED, ROUTED, SCALING};
use crate::build::ServiceMonitor;
use crate::cache::optional::{self, Presence};
use crate::gateway::HttpRoute;

/// Whether the `HorizontalPodAutoscaler` can do its work, from its own
/// `AbleToScale` and `ScalingActive` conditions. It never holds `Ready`:
/// the pods serve whether or not they can be scaled, and a cluster without
/// a metrics API would otherwise never see a `GoServer` Ready.
pub(super) fn scaling(hpa: Option<&HorizontalPodAutoscaler>) -> Draft {
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
        return Draft::new(
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
        (None, _, _) => Draft::new(
            SCALING,
            "Unknown",
            "AutoscalerMissing",
            "the HorizontalPodAutoscaler does not exist yet",
        ),
        (Some(_), Some(_), Some(_)) => Draft::new(
            SCALING,
            "True",
            "ScalingActive",
            "the HorizontalPodAutoscaler can scale the Deployment",
        ),
        (Some(_), _, _) => Draft::new(
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
pub(super) fn monitored(name: &str, path: &str, presence: Presence) -> Draft {
    let (api_version, plural) = optional::api_resource::<ServiceMonitor>();
    match presence {
        Presence::Ready => Draft::new(
            MONITORED,
            "True",
            "ServiceMonitorApplied",
            format!("the ServiceMonitor {name} scrapes {path} on the Service's http port"),
        ),
        Presence::Missing => Draft::new(
            MONITORED,
            "False",
            "ServiceMonitorCRDMissing",
            format!(
                "the cluster does not serve {plural} ({api_version}): install \
                 prometheus-operator's CRDs; the ServiceMonitor is created once they \
                 are, without a restart"
            ),
        ),
        Presence::Pending => Draft::new(
            MONITORED,
            "Unknown",
            "ServiceMonitorPending",
            format!("waiting to learn whether the cluster serves {plural} ({api_version})"),
        ),
    }
}

pub(super) const GATEWAY_API_MISSING: &str = "GatewayAPIMissing";

pub(super) fn gateway_api_missing() -> String {
    let (api_version, plural) = optional::api_resource::<HttpRoute>();
    format!(
        "the cluster does not serve {plural} ({api_version}): install the Gateway API CRDs \
         (standard channel); the HTTPRoute is created once they are, without a restart"
    )
}

/// Whether the route's Gateways accepted it, from the `HTTPRoute`'s status,
/// which each Gateway's controller writes for the parents it manages. It
/// never holds `Ready`: the Service serves whatever a Gateway does.
pub(super) fn routed(presence: Presence, route: Option<&HttpRoute>) -> Draft {
    match (presence, route) {
        (Presence::Missing, _) => {
            return Draft::new(ROUTED, "False", GATEWAY_API_MISSING, gateway_api_missing());
        }
        (Presence::Pending, _) | (Presence::Ready, None) => {
            return Draft::new(
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
                return Draft::new(
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
        Draft::new(
            ROUTED,
            "Unknown",
            "NotYetAccepted",
            "no Gateway has accepted the HTTPRoute yet: is a Gateway controller running for its parents?",
        )
    } else {
        Draft::new(
            ROUTED,
            "True",
            "Accepted",
            format!("accepted by Gateway {}", accepted.join(", ")),
        )
    }
}
