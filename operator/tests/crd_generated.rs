//! crds/ must be what the Rust types generate: the file is what users and
//! the Helm chart install.

use std::path::Path;

#[test]
fn committed_crd_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/goservers.gantry.dev.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; run `cargo xtask crds`", path.display()));
    let generated = gantry_operator::crd::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "crds/goservers.gantry.dev.yaml is stale: run `cargo xtask crds` and commit the result"
    );
}
