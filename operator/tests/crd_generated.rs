//! crds/ and docs/reference.md must be what the Rust types generate: the
//! CRD file is what users and the Helm chart install, the reference is what
//! they read.

use std::path::Path;

fn committed(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; run `cargo xtask crds`", path.display()))
}

#[test]
fn committed_crd_matches_the_types() {
    let generated = gantry_operator::crd::crd_yaml().expect("the CRD serializes");
    assert!(
        committed("crds/goservers.gantry.dev.yaml") == generated,
        "crds/goservers.gantry.dev.yaml is stale: run `cargo xtask crds` and commit the result"
    );
}

#[test]
fn committed_reference_matches_the_schema() {
    assert!(
        committed("docs/reference.md") == gantry_operator::reference::markdown(),
        "docs/reference.md is stale: run `cargo xtask crds` and commit the result"
    );
}
