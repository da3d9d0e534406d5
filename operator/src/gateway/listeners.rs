//! Which scheme a route is served with: that of the Gateway listeners it
//! attaches to, read from the Gateway cache.

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::gateway::{self, Gateway};
use crate::cache::{self, Cached};
use crate::crd::GoServer;
use crate::error::{Error, Result};

/// Whether the route of `gs` is served over HTTPS: a listener it attaches
/// to speaks HTTPS. A parent reference with a `sectionName` attaches to that
/// listener; without one, to every listener whose hostname admits the
/// route's first hostname. A Gateway that is not cached (the kind is not
/// served, not listed yet, or there is no such Gateway) tells nothing, and
/// the route counts as HTTP.
pub fn serves_https(gs: &GoServer, gateways: &Store<Cached<Gateway>>) -> Result<bool> {
    let Some(route) = &gs.spec.route else {
        return Ok(false);
    };
    let Some(host) = route.hostnames.first() else {
        return Ok(false);
    };
    let own = gs.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    for parent in &route.parent_refs {
        let namespace = parent.namespace.as_deref().unwrap_or(&own);
        let Some(gateway) = cache::get(gateways, namespace, &parent.name)? else {
            continue;
        };
        if https_listener(
            &gateway.spec.listeners,
            parent.section_name.as_deref(),
            host,
        ) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether one of `listeners` that a route for `host` attaches to (the one
/// called `section`, if named) speaks HTTPS.
fn https_listener(
    listeners: &[gateway::GatewayListeners],
    section: Option<&str>,
    host: &str,
) -> bool {
    listeners
        .iter()
        .filter(|l| section.is_none_or(|s| l.name == s))
        .filter(|l| admits(l.hostname.as_deref(), host))
        .any(|l| l.protocol == "HTTPS")
}

/// Whether a listener's hostname admits a route's: no hostname admits
/// every one, `*.example.com` every name below `example.com` (but not
/// `example.com` itself), and any other only itself. A wildcard route
/// hostname is admitted by a listener whose own wildcard covers it.
fn admits(listener: Option<&str>, host: &str) -> bool {
    let Some(listener) = listener else {
        return true;
    };
    match listener.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => listener == host,
    }
}

#[cfg(test)]
mod tests {
    fn listeners(listeners: serde_json::Value) -> Vec<super::super::gateway::GatewayListeners> {
        serde_json::from_value(listeners).expect("listeners")
    }

    #[test]
    fn the_scheme_is_that_of_the_listeners_the_route_attaches_to() {
        let both = listeners(serde_json::json!([
            {"name": "http", "protocol": "HTTP", "port": 80},
            {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.example.com"},
        ]));
        // Without a sectionName: any listener that admits the host.
        assert!(super::https_listener(&both, None, "a.example.com"));
        assert!(!super::https_listener(&both, None, "a.example.org"));
        // The wildcard does not admit the bare domain.
        assert!(!super::https_listener(&both, None, "example.com"));
        // With one: only that listener.
        assert!(!super::https_listener(&both, Some("http"), "a.example.com"));
        assert!(super::https_listener(
            &both,
            Some("https"),
            "b.a.example.com"
        ));
        assert!(!super::https_listener(&both, Some("nope"), "a.example.com"));
        let exact = listeners(serde_json::json!([
            {"name": "tls", "protocol": "HTTPS", "port": 443, "hostname": "a.example.com"},
        ]));
        assert!(super::https_listener(&exact, None, "a.example.com"));
        assert!(!super::https_listener(&exact, None, "b.example.com"));
        // A TLS passthrough listener carries no HTTPRoute.
        let tls = listeners(serde_json::json!([
            {"name": "tls", "protocol": "TLS", "port": 443},
        ]));
        assert!(!super::https_listener(&tls, None, "a.example.com"));
    }
}
