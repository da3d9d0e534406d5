//! Gateway API types (`gateway.networking.k8s.io`), generated from the
//! release's own CRDs by `cargo xtask gateway-types` (see that command for
//! why they are not the gateway-api crate's).

/// The gateway-api release the types come from, as a Go module version;
/// the tests install its CRDs.
pub const RELEASE: &str = "sigs.k8s.io/gateway-api@v1.6.3";

#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod gateway;
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod httproute;

pub mod listeners;

pub use gateway::Gateway;
pub use httproute::HttpRoute;

/// Strips a Gateway to what [`listeners::serves_https`] reads, its listeners, before
/// it is cached: a cluster's Gateways are few, but their status and
/// annotations are the Gateway controller's and change often.
pub fn trim(gateway: &mut Gateway) {
    let meta = &mut gateway.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    gateway.status = None;
    let spec = &mut gateway.spec;
    spec.addresses = None;
    spec.allowed_listeners = None;
    spec.infrastructure = None;
    spec.tls = None;
    for listener in &mut spec.listeners {
        listener.tls = None;
        listener.allowed_routes = None;
    }
}

#[cfg(test)]
mod tests {
    /// The generated file names the release its types come from, and it is
    /// the one the tests install.
    #[test]
    fn the_types_come_from_the_release_the_tests_install() {
        for file in [include_str!("httproute.rs"), include_str!("gateway.rs")] {
            let header = file
                .lines()
                .take_while(|line| line.starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(header.contains(super::RELEASE), "{header}");
        }
    }
}
