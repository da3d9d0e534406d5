//! Gateway API types (`gateway.networking.k8s.io`), generated from the
//! release's own CRDs by `cargo xtask gateway-types` (see that command for
//! why they are not the gateway-api crate's).

/// The gateway-api release the types come from, as a Go module version;
/// the tests install its CRDs.
pub const RELEASE: &str = "sigs.k8s.io/gateway-api@v1.6.3";

#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod httproute;

pub use httproute::HttpRoute;

#[cfg(test)]
mod tests {
    /// The generated file names the release its types come from, and it is
    /// the one the tests install.
    #[test]
    fn the_types_come_from_the_release_the_tests_install() {
        let header = include_str!("httproute.rs")
            .lines()
            .take_while(|line| line.starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(header.contains(super::RELEASE), "{header}");
    }
}
