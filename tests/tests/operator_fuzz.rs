//! Schema-driven mutation of the `GoServer`, as Acto tests operators.
//!
//! Admission: every mutation of a rich seed spec that the CRD's schema
//! describes ([`gantry_e2e::mutate`]) goes to the apiserver as a dry-run
//! create. A mutation the schema forbids must be refused with the field
//! named; one it allows may be refused only by a validation rule, also
//! naming a field. Every spec admitted is then built by the operator's own
//! build step (in this process: a panic fails the test) and each child is
//! sent as a dry-run create too: a `GoServer` the apiserver admits but
//! whose Deployment, Service, ConfigMap, Ingress or HPA it would refuse is
//! a spec that passes admission and can never run, which is the bug this
//! finds.

mod operator_support;

use std::fmt::Debug;

use futures::StreamExt;
use gantry_e2e::TestNamespace;
use gantry_e2e::mutate::{Mutation, mutations};
use gantry_operator::build;
use gantry_operator::crd::GoServer;
use kube::api::PostParams;
use kube::{Api, CustomResourceExt, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Dry runs in flight at once.
const CONCURRENT: usize = 8;

/// The seed: examples/full.yaml's GoServer with examples/verified.yaml's
/// verification, so that every part of the spec is present.
fn seed() -> Value {
    let root = gantry_e2e::operator::root();
    let documents = |file: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        serde_norway::Deserializer::from_str(&text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|v| v["kind"] == "GoServer")
            .collect()
    };
    let mut spec = documents("examples/full.yaml")[0]["spec"].clone();
    spec["rollout"]["verification"] =
        documents("examples/verified.yaml")[0]["spec"]["rollout"]["verification"].clone();
    spec
}

fn spec_schema() -> Value {
    let crd = serde_json::to_value(GoServer::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// What became of one mutation.
enum Outcome {
    /// Admitted, and every child it builds would be admitted too.
    Admitted,
    /// Refused, with the message.
    Refused(String),
}

/// A dry-run create of `object` in `ns`.
async fn dry_run<K>(ns: &TestNamespace, object: &K) -> Result<K, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    ns.api::<K>()
        .create(&params, object)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => format!("{} {}", status.code, status.message),
            other => other.to_string(),
        })
}

/// Sends `m` through admission, and its children after it; a finding, if
/// any.
async fn check(ns: &TestNamespace, m: &Mutation) -> (Outcome, Option<String>) {
    let gs: GoServer = match serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "fuzz"},
        "spec": m.spec,
    })) {
        Ok(gs) => gs,
        // The Rust type cannot hold it (a string where a number goes):
        // send it as it is, the apiserver must refuse it.
        Err(_) => return raw(ns, m).await,
    };
    match dry_run(ns, &gs).await {
        Err(message) => {
            let finding = refusal_finding(m, &message);
            (Outcome::Refused(message), finding)
        }
        Ok(_) if !m.valid => (
            Outcome::Admitted,
            Some(format!(
                "{} {}: admitted, but the schema forbids it",
                m.path, m.what
            )),
        ),
        Ok(admitted) => (
            Outcome::Admitted,
            Box::pin(children_finding(ns, m, admitted)).await,
        ),
    }
}

/// A mutation the Rust type cannot represent, sent as raw JSON.
async fn raw(ns: &TestNamespace, m: &Mutation) -> (Outcome, Option<String>) {
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::discovery::ApiResource::erase::<GoServer>(&()),
    );
    let object: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "fuzz"},
        "spec": m.spec,
    }))
    .unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => (
            Outcome::Admitted,
            Some(format!(
                "{} {}: admitted, yet the operator's types cannot read it",
                m.path, m.what
            )),
        ),
        Err(kube::Error::Api(status)) => {
            let message = format!("{} {}", status.code, status.message);
            let finding = refusal_finding(m, &message);
            (Outcome::Refused(message), finding)
        }
        Err(e) => (Outcome::Refused(e.to_string()), Some(e.to_string())),
    }
}

/// A refusal must be a 422 naming the field (or, for a rule across
/// fields, naming some field of the spec).
fn refusal_finding(m: &Mutation, message: &str) -> Option<String> {
    if !message.starts_with("422 ") {
        return Some(format!("{} {}: refused with {message}", m.path, m.what));
    }
    let named = if m.valid {
        message.contains("spec.")
    } else {
        message.contains(&m.path)
    };
    (!named).then(|| {
        format!(
            "{} {}: refused without naming the field: {message}",
            m.path, m.what
        )
    })
}

/// Builds the admitted `gs` as the operator would and dry-runs each child.
async fn children_finding(ns: &TestNamespace, m: &Mutation, mut gs: GoServer) -> Option<String> {
    // The operator sees a stored object: with a namespace and a UID.
    gs.metadata.namespace = Some(ns.name.clone());
    gs.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    let children = std::panic::catch_unwind(|| {
        build::validate(&gs)?;
        let revision = build::spec_revision(&gs)?;
        build::build(&gs, revision)
    });
    let children = match children {
        Err(_) => return Some(format!("{} {}: the build step panicked", m.path, m.what)),
        // The operator refuses it with a permanent error naming the field:
        // admitted but reported, not silent. Still worth knowing.
        Ok(Err(e)) => {
            return (!e.to_string().contains("spec.")).then(|| {
                format!(
                    "{} {}: the operator refuses it without naming a field: {e}",
                    m.path, m.what
                )
            });
        }
        Ok(Ok(children)) => children,
    };
    let build::Children {
        deployment,
        service,
        config_map,
        ingress,
        hpa,
        revision: _,
    } = children;
    let mut refused = Vec::new();
    let mut strip = |kind: &str, result: Result<(), String>| {
        if let Err(message) = result {
            refused.push(format!("{kind}: {message}"));
        }
    };
    // Owner references name a UID that does not exist: a dry run does not
    // check them, so they can stay.
    strip("Deployment", dry_run(ns, &deployment).await.map(|_| ()));
    strip("Service", dry_run(ns, &service).await.map(|_| ()));
    strip("ConfigMap", dry_run(ns, &config_map).await.map(|_| ()));
    if let Some(ingress) = &ingress {
        strip("Ingress", dry_run(ns, ingress).await.map(|_| ()));
    }
    if let Some(hpa) = &hpa {
        strip(
            "HorizontalPodAutoscaler",
            dry_run(ns, hpa).await.map(|_| ()),
        );
    }
    (!refused.is_empty()).then(|| {
        format!(
            "{} {}: admitted, but its children would be refused: {}",
            m.path,
            m.what,
            refused.join("; ")
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_schema_mutation_is_refused_naming_its_field_or_can_run() {
    let ns = TestNamespace::new("op-fuzz").await;
    operator_support::install_crd(&ns.client).await;
    let seed = seed();
    let all = mutations(&spec_schema(), &seed);
    let (valid, invalid) = all.iter().fold(
        (0, 0),
        |(v, i), m| {
            if m.valid { (v + 1, i) } else { (v, i + 1) }
        },
    );
    // The seed itself runs.
    let unchanged = Mutation {
        path: "spec".to_owned(),
        what: "unchanged".to_owned(),
        spec: seed.clone(),
        valid: true,
    };
    let (outcome, finding) = Box::pin(check(&ns, &unchanged)).await;
    assert!(matches!(outcome, Outcome::Admitted), "the seed was refused");
    assert_eq!(finding, None, "the seed");

    let results: Vec<(Outcome, Option<String>)> = futures::stream::iter(&all)
        .map(|m| Box::pin(check(&ns, m)))
        .buffered(CONCURRENT)
        .collect()
        .await;
    let admitted = results
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Admitted))
        .count();
    let refused_valid: Vec<String> = all
        .iter()
        .zip(&results)
        .filter_map(|(m, (o, _))| match o {
            Outcome::Refused(message) if m.valid => {
                Some(format!("{} {}: {message}", m.path, m.what))
            }
            _ => None,
        })
        .collect();
    let findings: Vec<&String> = results.iter().filter_map(|(_, f)| f.as_ref()).collect();
    println!(
        "{} mutations ({valid} allowed by the schema, {invalid} not): {admitted} admitted, {} refused, {} findings",
        all.len(),
        all.len() - admitted,
        findings.len()
    );
    println!("refused by a rule though the schema allows them:");
    for line in &refused_valid {
        println!("  {line}");
    }
    assert!(findings.is_empty(), "{findings:#?}");
}
