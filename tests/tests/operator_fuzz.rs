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

use futures::StreamExt;
use gantry_e2e::TestNamespace;
use gantry_e2e::mutate::{Mutation, mutations};
use gantry_e2e::snapshot::{self, Namespaced, Snapshot};
use gantry_operator::build;
use gantry_operator::crd::GoServer;
use kube::api::PostParams;
use kube::{Api, CustomResourceExt};
use serde_json::{Value, json};

/// Dry runs in flight at once.
const CONCURRENT: usize = 8;

/// The seed: examples/full.yaml's GoServer with examples/verified.yaml's
/// verification, canary steps, a `ServiceMonitor` and an `HTTPRoute`, so
/// that every part of the spec is present (the canary's children built
/// with their baseline).
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
    spec["monitoring"] = serde_json::json!({
        "serviceMonitor": true,
        "interval": "30s",
        "labels": {"release": "kube-prometheus"},
    });
    spec["rollout"]["strategy"] = serde_json::json!("Canary");
    spec["rollout"]["steps"] =
        serde_json::json!([{"weight": 10, "pause": "10m"}, {"weight": 50, "pause": "1h"}]);
    spec["route"] = serde_json::json!({
        "parentRefs": [{"name": "public", "namespace": "edge", "sectionName": "https"}],
        "hostnames": ["hello.example.com"],
        "path": {"type": "PathPrefix", "value": "/api"},
        "timeouts": {"request": "10s", "backendRequest": "5s"},
    });
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
async fn dry_run<K: Namespaced>(ns: &TestNamespace, object: &K) -> Result<K, String> {
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
        // With the Canary strategy, its children too: the first step's.
        let canary = gantry_operator::rollout::canary::steps(&gs).map(|steps| build::CanaryRun {
            revision: revision.clone(),
            weight: steps[0].weight,
            replicas: build::canary::replicas(gs.spec.replicas, steps[0].weight),
            baseline: true,
        });
        build::build_with_canary(&gs, revision, canary)
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
        service_monitor,
        route,
        revision: _,
        canary,
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
    if let Some(monitor) = &service_monitor {
        strip("ServiceMonitor", dry_run(ns, monitor).await.map(|_| ()));
    }
    if let Some(route) = &route {
        strip("HTTPRoute", dry_run(ns, route).await.map(|_| ()));
    }
    if let Some(canary) = &canary {
        strip(
            "canary Deployment",
            dry_run(ns, &canary.deployment).await.map(|_| ()),
        );
        strip(
            "canary Service",
            dry_run(ns, &canary.service).await.map(|_| ()),
        );
        if let Some(baseline) = &canary.baseline {
            strip(
                "baseline Deployment",
                dry_run(ns, &baseline.deployment).await.map(|_| ()),
            );
            strip(
                "baseline Service",
                dry_run(ns, &baseline.service).await.map(|_| ()),
            );
        }
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
    // ServiceMonitors and HTTPRoutes are dry-run against their projects'
    // own CRDs.
    gantry_e2e::monitoring_crds::install(&ns.client)
        .await
        .expect("installing the prometheus-operator CRDs");
    gantry_e2e::gateway_crds::install(&ns.client)
        .await
        .expect("installing the Gateway API CRDs");
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

/// Edits applied to a live `GoServer` in the default suite; `--faults`
/// applies more.
const LIVE_SAMPLED: usize = 4;
const LIVE_FULL: usize = 24;

/// Edits that leave the children as they are, by design: `path what`,
/// or a path for every edit of it.
const NO_EFFECT: &[&str] = &[
    // Ignored while autoscaling is set, as the seed has it.
    "spec.replicas",
    // The seed's values are the defaults (the operator's for probe paths,
    // Kubernetes' for maxSurge).
    "spec.rollout.maxSurge deleted",
    "spec.probes.liveness.path deleted",
    "spec.probes.readiness.path deleted",
    "spec.probes.startup.path deleted",
    // Canary steps matter only with the Canary strategy, which needs the
    // verification the live seed has not.
    "spec.rollout.steps",
];

fn no_effect(m: &Mutation) -> bool {
    let edit = format!("{} {}", m.path, m.what);
    NO_EFFECT.iter().any(|e| *e == m.path || *e == edit)
}

/// The children the operator's build step makes of an admitted spec, as
/// the apiserver would store them (a dry-run create fills in its
/// defaults): what the live children should match.
async fn built(ns: &TestNamespace, spec: &Value) -> Vec<Value> {
    let gs: GoServer = serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        // Another name than the live one's, whose children exist: a dry-run
        // create of those would only say so.
        "metadata": {"name": "fuzz-built", "namespace": ns.name, "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": spec,
    }))
    .expect("an admitted spec reads as a GoServer");
    let revision = build::spec_revision(&gs).expect("a revision");
    let children = build::build(&gs, revision).expect("children");
    let mut out = vec![
        stored(ns, &children.deployment).await,
        stored(ns, &children.service).await,
        stored(ns, &children.config_map).await,
    ];
    if let Some(ingress) = &children.ingress {
        out.push(stored(ns, ingress).await);
    }
    if let Some(hpa) = &children.hpa {
        out.push(stored(ns, hpa).await);
    }
    if let Some(monitor) = &children.service_monitor {
        out.push(stored(ns, monitor).await);
    }
    if let Some(route) = &children.route {
        out.push(stored(ns, route).await);
    }
    for child in &mut out {
        // Not the spec's: the HPA moves the count.
        if children.hpa.is_some()
            && let Some(spec) = child["spec"].as_object_mut()
        {
            spec.remove("replicas");
        }
    }
    out
}

/// `object` as a dry-run create returns it, in the snapshot's form.
async fn stored<K: Namespaced>(ns: &TestNamespace, object: &K) -> Value {
    match dry_run(ns, object).await {
        Ok(stored) => snapshot::child_view(&serde_json::to_value(stored).unwrap()),
        Err(refused) => json!({"refused": refused}),
    }
}

/// The children a spec leads to, whatever the path to it: the revision
/// history (`ControllerRevisions`, the `ConfigMaps` of old revisions, the
/// Deployment's revision counter) depends on the path and is left out.
fn children_of(snapshot: &Snapshot) -> Snapshot {
    let autoscaled = snapshot::count(snapshot, "HorizontalPodAutoscaler") > 0;
    let deployment = snapshot
        .get("Deployment/fuzz")
        .map(Value::to_string)
        .unwrap_or_default();
    snapshot
        .iter()
        .filter(|(key, _)| {
            !key.starts_with("ControllerRevision/") && key.as_str() != snapshot::GOSERVER
        })
        .filter(|(key, _)| {
            // Only the ConfigMap the pods load.
            key.strip_prefix("ConfigMap/")
                .is_none_or(|name| deployment.contains(&format!("\"{name}\"")))
        })
        .map(|(key, value)| {
            let mut value = value.clone();
            if let Some(annotations) = value["annotations"].as_object_mut() {
                annotations.remove("deployment.kubernetes.io/revision");
            }
            // With an HPA the replica count is the HPA's, and it moves on
            // the HPA's own schedule.
            if autoscaled && let Some(spec) = value["spec"].as_object_mut() {
                spec.remove("replicas");
            }
            (key.clone(), value)
        })
        .collect()
}

/// A live `GoServer` the test edits, and the operator keeping it.
struct Live {
    ns: TestNamespace,
    _operator: operator_support::Operator,
}

impl Live {
    /// A namespace with the seed's Secret, an operator, and the seed.
    async fn start(seed: &Value) -> Self {
        let ns = TestNamespace::new("op-fuzz-live").await;
        // The seed's ServiceMonitor and HTTPRoute are children like any
        // other: their kinds are served before the operator starts.
        gantry_e2e::monitoring_crds::install(&ns.client)
            .await
            .expect("installing the prometheus-operator CRDs");
        gantry_e2e::gateway_crds::install(&ns.client)
            .await
            .expect("installing the Gateway API CRDs");
        let operator = operator_support::Operator::start(&ns).await;
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
            json!({"metadata": {"name": "hello-db"}, "stringData": {"password": "x"}}),
        )
        .unwrap();
        ns.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let gs: GoServer = serde_json::from_value(json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
            "metadata": {"name": "fuzz"}, "spec": seed,
        }))
        .unwrap();
        ns.api::<GoServer>()
            .create(&PostParams::default(), &gs)
            .await
            .unwrap();
        Self {
            ns,
            _operator: operator,
        }
    }

    /// Replaces the spec and waits until the operator has acted on it:
    /// Ready when `ready`, else only reconciled (a spec may leave pods
    /// that cannot start, such as one naming a ServiceAccount that does
    /// not exist). The children it left.
    async fn set(&self, spec: &Value, ready: bool) -> Result<Snapshot, String> {
        let api: Api<GoServer> = self.ns.api();
        // The operator's status writes move the resourceVersion between
        // the read and the write: read again on a conflict.
        let gs = loop {
            let mut gs = api.get("fuzz").await.map_err(|e| e.to_string())?;
            gs.spec = serde_json::from_value(spec.clone()).map_err(|e| e.to_string())?;
            match api.replace("fuzz", &PostParams::default(), &gs).await {
                Ok(gs) => break gs,
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(format!("replacing the spec: {e}")),
            }
        };
        let generation = gs.metadata.generation;
        gantry_e2e::wait_until(
            "the edit to be reconciled",
            operator_support::DEADLINE,
            || async {
                let (gs, snapshot) = snapshot::take(&self.ns, "fuzz").await;
                let gs = gs.ok_or("the GoServer is gone")?;
                let seen = gs.status.as_ref().and_then(|s| s.observed_generation) == generation;
                let settled = seen
                    && (!ready
                        || operator_support::has_condition(&gs, "Ready", "True")
                        || operator_support::has_condition(&gs, "Degraded", "True"));
                if settled {
                    Ok(Some(snapshot))
                } else {
                    Err(format!(
                        "status {}",
                        serde_json::to_string(&gs.status).unwrap_or_default()
                    ))
                }
            },
        )
        .await
        .map_err(|e| format!("{e:#}"))
    }
}

/// Accepted edits of a live `GoServer`, each applied from the seed and
/// reverted, then applied one after the other: every edit changes some
/// child (consistency) unless it changes nothing after defaulting or is
/// documented to have no effect; reverting restores the children exactly
/// (rollback); a spec reached from another edit has the children it has
/// when reached from the seed (differential).
#[tokio::test(flavor = "multi_thread")]
// One story, told in order: seed, edits and reverts, then the edits again.
#[allow(clippy::too_many_lines)]
async fn accepted_edits_change_children_and_revert_exactly() {
    let mut seed = seed();
    // No verification (a live revision would wait for Prometheus), so no
    // canary either.
    for field in ["verification", "strategy", "steps"] {
        seed["rollout"].as_object_mut().unwrap().remove(field);
    }
    let live = Live::start(&seed).await;
    let defaulted = |spec: &Value| {
        let ns = &live.ns;
        let spec = spec.clone();
        async move {
            let gs: GoServer = serde_json::from_value(json!({
                "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
                "metadata": {"name": "fuzz-dry"}, "spec": spec,
            }))
            .ok()?;
            dry_run(ns, &gs)
                .await
                .ok()
                .map(|gs| serde_json::to_value(gs.spec).unwrap())
        }
    };
    let seed_defaulted = defaulted(&seed).await.expect("the seed is admitted");
    let seed_built = Box::pin(built(&live.ns, &seed_defaulted)).await;
    let start = children_of(&live.set(&seed, true).await.expect("the seed runs"));

    // Edits the apiserver admits, drawn at random (the seed is printed).
    let mut admitted = Vec::new();
    for m in mutations(&spec_schema(), &seed)
        .into_iter()
        .filter(|m| m.valid)
    {
        if let Some(spec) = defaulted(&m.spec).await {
            admitted.push((m, spec));
        }
    }
    let count = if gantry_e2e::faults::full() {
        LIVE_FULL
    } else {
        LIVE_SAMPLED
    };
    let picked: Vec<&(Mutation, Value)> = gantry_e2e::faults::pick(admitted.len() as u64, count)
        .into_iter()
        .map(|i| &admitted[usize::try_from(i - 1).unwrap()])
        .collect();
    println!(
        "{} edits admitted; applying {:?}",
        admitted.len(),
        picked
            .iter()
            .map(|(m, _)| format!("{} {}", m.path, m.what))
            .collect::<Vec<_>>()
    );

    let mut findings = Vec::new();
    let mut reached = Vec::new();
    for (m, spec) in &picked {
        let whole = live
            .set(&m.spec, false)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", m.path, m.what));
        // A spec the operator refuses with a permanent error (a Secret
        // that does not exist) leaves the children as they were, and says
        // why in Degraded.
        let refused = whole[snapshot::GOSERVER]["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Degraded"
                    && c["status"] == "True"
                    && c["message"].as_str().is_some_and(|m| !m.is_empty())
            });
        let edited = children_of(&whole);
        // Consistency: an edit that changes the spec changes a child, in
        // the build step and then live.
        let edit_built = Box::pin(built(&live.ns, spec)).await;
        let builds_other = edit_built != seed_built;
        if !builds_other && *spec != seed_defaulted && !no_effect(m) {
            findings.push(format!(
                "{} {}: admitted and kept, yet the build step ignores it",
                m.path, m.what
            ));
        }
        if builds_other == (edited == start) && !(refused && edited == start) {
            findings.push(format!(
                "{} {}: the build step {} the children, the live ones {}:{}",
                m.path,
                m.what,
                if builds_other { "changes" } else { "keeps" },
                if edited == start { "stayed" } else { "changed" },
                snapshot::difference(&start, &edited)
            ));
        }
        let back = children_of(
            &live
                .set(&seed, true)
                .await
                .unwrap_or_else(|e| panic!("back to the seed from {} {}: {e}", m.path, m.what)),
        );
        if back != start {
            findings.push(format!(
                "{} {}: reverting did not restore the children:{}",
                m.path,
                m.what,
                snapshot::difference(&start, &back)
            ));
        }
        // A refused spec keeps whatever children came before it.
        reached.push((!refused).then_some(edited));
    }
    // The same specs again, each straight from the one before.
    for (i, (m, _)) in picked.iter().enumerate().skip(1) {
        let again = children_of(&live.set(&m.spec, false).await.expect("an edit again"));
        if reached[i].as_ref().is_some_and(|r| *r != again) {
            findings.push(format!(
                "{} {}: reached from {} {} it has other children than from the seed:{}",
                m.path,
                m.what,
                picked[i - 1].0.path,
                picked[i - 1].0.what,
                snapshot::difference(reached[i].as_ref().unwrap_or(&again), &again)
            ));
        }
    }
    assert!(findings.is_empty(), "{findings:#?}");
}
