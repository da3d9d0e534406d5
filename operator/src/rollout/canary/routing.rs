//! What the route carries for the canary, and whether its Gateways took
//! it.

use kube::ResourceExt;

use crate::crd::GoServer;
use crate::gateway::HttpRoute;
use crate::rollout::decision::Routing;

/// What the route of `gs` carries for its canary and whether its Gateways
/// took it: every parent the spec names must report `Accepted=True` for
/// the route's current generation. A Gateway reports for the generation it
/// has programmed, so a route that a Gateway has not caught up with yet
/// (the weights just changed) is not accepted.
pub fn routing(gs: &GoServer, route: Option<&HttpRoute>) -> Routing {
    let Some(route) = route else {
        return Routing {
            canary_weight: None,
            accepted: Err("the HTTPRoute does not exist yet".to_owned()),
        };
    };
    let canary = crate::build::canary::name(&gs.name_any());
    let canary_weight = route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.backend_refs.iter().flatten())
        .find(|backend| backend.name == canary)
        .map(|backend| backend.weight.unwrap_or(1));
    let generation = route.metadata.generation;
    let own = gs.namespace().unwrap_or_default();
    let parents = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    let mut waiting = Vec::new();
    for wanted in gs.spec.route.iter().flat_map(|r| &r.parent_refs) {
        let namespace = wanted.namespace.as_deref().unwrap_or(&own);
        let name = format!("Gateway {namespace}/{}", wanted.name);
        let report = parents.iter().find(|p| {
            let r = &p.parent_ref;
            r.name == wanted.name
                && r.namespace.as_deref().unwrap_or(&own) == namespace
                && r.section_name == wanted.section_name
        });
        let accepted = report.and_then(|p| p.conditions.iter().find(|c| c.type_ == "Accepted"));
        match accepted {
            Some(c)
                if c.status == "True"
                    && generation.is_some()
                    && c.observed_generation >= generation => {}
            Some(c) if c.status == "False" && c.observed_generation >= generation => {
                waiting.push(format!("{name} refused it ({}: {})", c.reason, c.message));
            }
            _ => waiting.push(format!(
                "{name} has not accepted generation {} of the route",
                generation.unwrap_or_default()
            )),
        }
    }
    Routing {
        canary_weight,
        accepted: if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join("; "))
        },
    }
}
