//! The Helm chart `charts/gantry-operator` against the real control plane
//! and the real helm:
//!
//! - `helm lint --strict` is clean, the values schema refuses bad values,
//!   and the chart's CRD is the generated one;
//! - the rendered chart follows the rules it promises (least-privilege RBAC
//!   with no wildcard and no Secret verb, Leases only in the release
//!   namespace, restricted pods, the standard labels) and the apiserver
//!   accepts it in a namespace enforcing the `restricted` Pod Security
//!   Standard, without a warning;
//! - installed, its ServiceAccount's token is all the operator needs to
//!   bring the example GoServer to Ready, its permissions are exactly the
//!   checked-in `tests/expected/chart-can-i-*.txt`, and uninstalling it
//!   leaves the CRD, the GoServers and their workloads running, which a
//!   second install adopts without restarting a pod.
//!
//! Cluster-scoped objects (`ClusterRole`, `ClusterRoleBinding`) are named after
//! a unique release, so these tests run beside the others; the shared CRD is
//! never deleted.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gantry_e2e::chart::{Release, chart_dir, service_account_token};
use gantry_e2e::operator::{OperatorProcess, root};
use gantry_e2e::{TestNamespace, bin_dir, wait_for, wait_for_deletion, wait_until};
use gantry_operator::build::ServiceMonitor;
use gantry_operator::crd::GoServer;
use gantry_operator::gateway::HttpRoute;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);
const CRD_NAME: &str = "goservers.gantry.dev";
/// The labels every object of the chart carries.
const STANDARD_LABELS: [&str; 6] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];

/// Runs a tool of the cluster's bin dir (helm, kubectl), with `stdin` fed
/// in when given.
fn tool(name: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin_dir().join(name))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for the tool")
}

/// Runs a tool that must succeed; returns its standard output.
fn ok(name: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = tool(name, args, stdin);
    assert!(
        out.status.success(),
        "{name} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `helm template` of the chart as release `release` in `namespace`.
fn render(release: &str, namespace: &str, set: &[&str]) -> String {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for value in set {
        args.extend(["--set", value]);
    }
    ok("helm", &args, None)
}

/// The rendered objects as JSON, converted by kubectl (YAML in, JSON
/// out), and the documents of kinds this cluster has no CRD for
/// (ServiceMonitor), which kubectl cannot convert, as text.
fn objects(rendered: &str) -> (Vec<Value>, Vec<String>) {
    let (foreign, known): (Vec<&str>, Vec<&str>) = rendered
        .split("\n---")
        .filter(|doc| doc.contains("kind:"))
        .partition(|doc| doc.contains("\nkind: ServiceMonitor\n"));
    let json = ok(
        "kubectl",
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(&known.join("\n---")),
    );
    let objects = serde_json::Deserializer::from_str(&json)
        .into_iter::<Value>()
        .map(|v| v.expect("kubectl printed JSON"))
        .collect();
    (objects, foreign.into_iter().map(str::to_owned).collect())
}

/// The one rendered document of `kind`, as text.
fn document_of_kind<'a>(rendered: &'a str, kind: &str) -> &'a str {
    rendered
        .split("\n---")
        .find(|doc| doc.contains(&format!("\nkind: {kind}\n")))
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Everything the chart promises about its RBAC, as a list of violations.
fn rbac_violations(objects: &[Value], release_namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let what = format!("{} {}", role["kind"], role["metadata"]["name"]);
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |field: &str| -> Vec<String> {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                if strings(field).iter().any(|v| v.contains('*')) {
                    problems.push(format!("{what}: wildcard in {field}: {rule}"));
                }
            }
            if rule.get("nonResourceURLs").is_some() {
                problems.push(format!("{what}: non-resource URLs: {rule}"));
            }
            let resources = strings("resources");
            if resources
                .iter()
                .any(|r| r.split('/').next() == Some("secrets"))
            {
                problems.push(format!("{what}: a verb on Secrets: {rule}"));
            }
            if resources.iter().any(|r| r.starts_with("leases")) {
                let namespace = role["metadata"]["namespace"].as_str();
                if role["kind"] != "Role" || namespace != Some(release_namespace) {
                    problems.push(format!(
                        "{what}: Leases outside the release namespace {release_namespace}: {rule}"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn helm_lint_strict_is_clean() {
    let chart = chart_dir().display().to_string();
    let out = ok("helm", &["lint", "--strict", &chart], None);
    for bad in ["[WARNING]", "[ERROR]"] {
        assert!(!out.contains(bad), "helm lint --strict reported:\n{out}");
    }
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn chart_crd_is_the_generated_one() {
    let generated = std::fs::read(root().join("crds").join("goservers.gantry.dev.yaml"))
        .expect("reading crds/goservers.gantry.dev.yaml");
    let in_chart = std::fs::read(chart_dir().join("crds").join("goservers.gantry.dev.yaml"))
        .expect("reading the chart's crds/goservers.gantry.dev.yaml");
    assert!(
        generated == in_chart,
        "charts/gantry-operator/crds/goservers.gantry.dev.yaml differs from \
         crds/goservers.gantry.dev.yaml; regenerate both with `cargo xtask crds`"
    );
}

#[test]
fn chart_rules_are_the_monitoring_rules() {
    let source = std::fs::read(root().join("deploy/monitoring/rules.yaml"))
        .expect("reading deploy/monitoring/rules.yaml");
    let in_chart = std::fs::read(chart_dir().join("files/rules.yaml"))
        .expect("reading the chart's files/rules.yaml");
    assert!(
        source == in_chart,
        "charts/gantry-operator/files/rules.yaml differs from \
         deploy/monitoring/rules.yaml; copy it with `cargo xtask crds`"
    );
}

/// The chart's `ServiceMonitor` and `PrometheusRule` meet the real
/// prometheus-operator CRDs (from its published manifests): a server-side
/// dry run admits both, and refuses a `ServiceMonitor` whose interval is
/// no duration, so the schema they were checked against is enforced.
#[tokio::test]
async fn monitoring_objects_meet_the_real_crds() {
    let ns = TestNamespace::new("chart-monitoring").await;
    gantry_e2e::monitoring_crds::install(&ns.client)
        .await
        .expect("installing the prometheus-operator CRDs");
    let rendered = render(
        "gantry",
        &ns.name,
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    let find = |kind: &str| {
        rendered
            .split("\n---")
            .find(|doc| doc.contains(&format!("\nkind: {kind}\n")))
            .unwrap_or_else(|| panic!("no {kind} rendered"))
            .to_owned()
    };
    let (monitor, rule) = (find("ServiceMonitor"), find("PrometheusRule"));
    let dry_run = [
        "apply",
        "--dry-run=server",
        "--namespace",
        &ns.name,
        "-f",
        "-",
    ];
    let admitted = ok(
        "kubectl",
        &dry_run,
        Some(&format!("{monitor}\n---\n{rule}")),
    );
    for kind in ["servicemonitor", "prometheusrule"] {
        assert!(
            admitted.contains(&format!(
                "{kind}.monitoring.coreos.com/gantry-gantry-operator"
            )),
            "{admitted}"
        );
    }

    assert!(monitor.contains("interval: 30s"), "{monitor}");
    let broken = monitor.replace("interval: 30s", "interval: thirty");
    let out = tool("kubectl", &dry_run, Some(&broken));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken interval was admitted");
    assert!(stderr.contains("interval"), "{stderr}");
}

/// The `PrometheusRule` carries exactly the groups of the rules file, with
/// the alerts' own `{{ $labels }}` templates untouched by Helm, and the
/// labels a Prometheus selects rules by.
#[test]
fn prometheus_rule_carries_the_rules_file() {
    let off = render("gantry", "gantry-system", &[]);
    assert!(!off.contains("kind: PrometheusRule"), "{off}");
    let rendered = render(
        "gantry",
        "gantry-system",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=monitoring",
        ],
    );
    let document = document_of_kind(&rendered, "PrometheusRule");
    let rule: Value = serde_norway::from_str(document).expect("the PrometheusRule is YAML");
    let file: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/rules.yaml"))
            .expect("reading deploy/monitoring/rules.yaml"),
    )
    .expect("rules.yaml is YAML");
    assert_eq!(rule["spec"], file, "{document}");
    assert!(
        document.contains("{{ $labels.namespace }}"),
        "alert templates kept: {document}"
    );
    assert_eq!(rule["metadata"]["namespace"], "gantry-system");
    assert_eq!(rule["metadata"]["labels"]["release"], "monitoring");

    // Another base for the runbooks: every alert's runbook_url moves to it,
    // keeping its anchor; nothing else changes.
    let elsewhere = render(
        "gantry",
        "gantry-system",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/ops/gantry-runbooks/",
        ],
    );
    let moved: Value = serde_norway::from_str(document_of_kind(&elsewhere, "PrometheusRule"))
        .expect("the PrometheusRule is YAML");
    let alerts = |v: &Value| -> Vec<Value> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .filter(|r| r.get("alert").is_some())
            .collect()
    };
    let (before, after) = (alerts(&file), alerts(&moved["spec"]));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        let anchor = b["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .split_once('#')
            .unwrap()
            .1;
        assert_eq!(
            a["annotations"]["runbook_url"].as_str().unwrap(),
            format!("https://wiki.example.com/ops/gantry-runbooks#{anchor}")
        );
        assert_eq!(a["expr"], b["expr"]);
        assert_eq!(a["annotations"]["summary"], b["annotations"]["summary"]);
    }
    for label in STANDARD_LABELS {
        assert!(
            rule["metadata"]["labels"].get(label).is_some(),
            "{label} missing: {document}"
        );
    }
}

/// Extra arguments, environment and volumes for the operator, and a
/// `global` key as an umbrella chart passes one.
const EXTRAS: &[&str] = &[
    "extraArgs[0]=--concurrency=16",
    "extraEnv[0].name=SSL_CERT_FILE",
    "extraEnv[0].value=/etc/gantry/ca/ca.crt",
    "extraVolumes[0].name=private-ca",
    "extraVolumes[0].configMap.name=private-ca",
    "extraVolumeMounts[0].name=private-ca",
    "extraVolumeMounts[0].mountPath=/etc/gantry/ca",
    "extraVolumeMounts[0].readOnly=true",
    "verification.prometheusTokenSecret=prometheus-token",
    "global.imageRegistry=registry.example.com",
];

/// The extras land after the chart's own arguments, environment, volumes
/// and mounts, which they leave in place.
#[test]
fn extra_args_env_and_volumes_reach_the_operator() {
    let rendered = render("gantry", "gantry-system", EXTRAS);
    let deployment: Value = serde_norway::from_str(document_of_kind(&rendered, "Deployment"))
        .expect("the Deployment is YAML");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"run"));
    assert_eq!(args.last(), Some(&"--concurrency=16"), "{args:?}");
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    let env = container["env"].as_array().unwrap();
    assert_eq!(env[0]["name"], "POD_NAME");
    assert!(
        env.iter()
            .any(|e| e["name"] == "SSL_CERT_FILE" && e["value"] == "/etc/gantry/ca/ca.crt"),
        "{env:?}"
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    for name in ["prometheus-token", "private-ca"] {
        assert!(mounts.iter().any(|m| m["name"] == name), "{mounts:?}");
        assert!(volumes.iter().any(|v| v["name"] == name), "{volumes:?}");
    }
    assert_eq!(
        volumes.iter().find(|v| v["name"] == "private-ca").unwrap()["configMap"]["name"],
        "private-ca"
    );
}

/// Every alert links its runbook: a section of docs/runbooks.md named
/// after it, saying what it means, how to confirm it and what to do; and
/// every section there is an alert's.
#[test]
fn every_alert_has_a_runbook() {
    let file: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/rules.yaml"))
            .expect("reading deploy/monitoring/rules.yaml"),
    )
    .expect("rules.yaml is YAML");
    let runbooks =
        std::fs::read_to_string(root().join("docs/runbooks.md")).expect("reading docs/runbooks.md");
    let sections: Vec<(&str, &str)> = runbooks
        .split("\n## ")
        .skip(1)
        .map(|section| section.split_once('\n').unwrap_or((section, "")))
        .collect();
    let mut alerts = Vec::new();
    for group in file["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts.push(alert.to_owned());
            assert_eq!(
                rule["annotations"]["runbook_url"].as_str(),
                Some(format!("https://gantry.dev/docs/runbooks#{}", alert.to_lowercase()).as_str()),
                "{alert}'s runbook_url"
            );
            let body = sections
                .iter()
                .find(|(title, _)| *title == alert)
                .unwrap_or_else(|| panic!("docs/runbooks.md has no section ## {alert}"))
                .1;
            for part in [
                "**What it means.**",
                "**How to confirm.**",
                "**What to do.**",
            ] {
                assert!(body.contains(part), "{alert}'s runbook lacks {part}");
            }
        }
    }
    assert!(!alerts.is_empty());
    for (title, _) in &sections {
        assert!(
            alerts.iter().any(|a| a == title),
            "docs/runbooks.md has a section for {title}, which is no alert"
        );
    }
}

#[test]
fn values_schema_and_guards_refuse_bad_values() {
    let chart = chart_dir().display().to_string();
    for (set, expected) in [
        ("replicaCount=-1", "'/replicaCount': minimum"),
        (
            "unknownKey=1",
            "additional properties 'unknownKey' not allowed",
        ),
        ("httpPort=70000", "'/httpPort': maximum"),
        (
            "logging.format=xml",
            "'/logging/format': value must be one of",
        ),
        ("watchNamespace=Not_A_Namespace", "'/watchNamespace'"),
        (
            "leaderElection.enabled=false",
            "needs leaderElection.enabled",
        ),
        (
            "networkPolicy.enabled=true",
            "networkPolicy.enabled needs networkPolicy.metricsFrom",
        ),
        ("extraArgs[0]=", "'/extraArgs/0': minLength"),
        (
            "extraVolumeMounts[0].name=ca",
            "missing property 'mountPath'",
        ),
        (
            "metrics.prometheusRule.runbookBaseUrl=runbooks.md",
            "'/metrics/prometheusRule/runbookBaseUrl'",
        ),
    ] {
        let out = tool("helm", &["template", "t", &chart, "--set", set], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "helm template --set {set} was accepted"
        );
        assert!(
            stderr.contains(expected),
            "helm template --set {set}: expected an error mentioning {expected:?}, got:\n{stderr}"
        );
    }
    // One replica runs without leader election.
    ok(
        "helm",
        &[
            "template",
            "t",
            &chart,
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
        ],
        None,
    );
}

/// The operator Deployment's promises: restricted security context, probes
/// on the health endpoints, resources, leader election exactly when there
/// are several replicas. Returns the replica count.
fn check_deployment(objects: &[Value], context: &str, watches_one_namespace: bool) -> i64 {
    let deployments = of_kind(objects, "Deployment");
    assert_eq!(deployments.len(), 1, "{context}");
    let pod = &deployments[0]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{context}");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{context}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{context}"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
    assert_eq!(
        security["capabilities"]["drop"],
        json!(["ALL"]),
        "{context}"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "{context}"
    );
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "{context}"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let replicas = deployments[0]["spec"]["replicas"]
        .as_i64()
        .expect("replicas");
    assert_eq!(
        args.contains(&"--leader-elect"),
        replicas > 1,
        "{context}: leader election must be on exactly when there are several replicas: {args:?}"
    );
    assert_eq!(
        args.contains(&"--namespace=web"),
        watches_one_namespace,
        "{context}: {args:?}"
    );
    replicas
}

#[test]
fn rendered_chart_keeps_its_promises() {
    for (set, watched) in [
        (&[][..], None),
        (&["watchNamespace=web"][..], Some("web")),
        (
            &[
                "metrics.serviceMonitor.enabled=true",
                "replicaCount=1",
                "leaderElection.enabled=false",
            ][..],
            None,
        ),
        (
            &[
                "networkPolicy.enabled=true",
                "networkPolicy.kubeletCIDRs={10.0.0.0/8}",
                "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
            ][..],
            None,
        ),
    ] {
        let rendered = render("gantry", "gantry-system", set);
        let (objects, service_monitors) = objects(&rendered);
        let context = format!("with --set {set:?}");

        let problems = rbac_violations(&objects, "gantry-system");
        assert!(problems.is_empty(), "{context}: {problems:#?}");

        for object in objects
            .iter()
            .filter(|o| o["kind"] != "CustomResourceDefinition")
        {
            for label in STANDARD_LABELS {
                assert!(
                    object["metadata"]["labels"][label].is_string(),
                    "{context}: {} {} lacks the label {label}",
                    object["kind"],
                    object["metadata"]["name"]
                );
            }
        }

        // The CRD is the generated one.
        let crds = of_kind(&objects, "CustomResourceDefinition");
        assert_eq!(crds.len(), 1, "{context}");
        assert_eq!(crds[0]["metadata"]["name"], CRD_NAME);

        // The binding follows the watched namespace.
        let cluster_bindings = of_kind(&objects, "ClusterRoleBinding");
        let bindings = of_kind(&objects, "RoleBinding");
        match watched {
            None => {
                assert_eq!(cluster_bindings.len(), 1, "{context}");
                assert!(
                    !bindings
                        .iter()
                        .any(|b| b["roleRef"]["kind"] == "ClusterRole")
                );
            }
            Some(ns) => {
                assert!(
                    cluster_bindings.is_empty(),
                    "{context}: {cluster_bindings:?}"
                );
                assert!(
                    bindings.iter().any(|b| b["metadata"]["namespace"] == ns
                        && b["roleRef"]["kind"] == "ClusterRole"),
                    "{context}: no RoleBinding of the ClusterRole in {ns}"
                );
            }
        }

        let replicas = check_deployment(&objects, &context, watched.is_some());

        assert_eq!(of_kind(&objects, "Service").len(), 1, "{context}");
        check_budget_and_policy(&objects, &context, replicas, set);
        assert_eq!(
            service_monitors.len(),
            usize::from(set.contains(&"metrics.serviceMonitor.enabled=true")),
            "{context}"
        );
        for monitor in &service_monitors {
            for label in STANDARD_LABELS {
                assert!(
                    monitor.contains(&format!("{label}:")),
                    "{context}: {monitor}"
                );
            }
            assert!(monitor.contains("port: http-metrics"), "{monitor}");
        }
    }
}

/// The `PodDisruptionBudget` (with more than one replica) lets unready pods
/// go; the `NetworkPolicy` (when enabled) admits the HTTP port only, from
/// the scraper and the nodes.
fn check_budget_and_policy(objects: &[Value], context: &str, replicas: i64, set: &[&str]) {
    let budgets = of_kind(objects, "PodDisruptionBudget");
    assert_eq!(budgets.len(), usize::from(replicas > 1), "{context}");
    for budget in budgets {
        // Unready operator pods never block a node drain.
        assert_eq!(
            budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow",
            "{context}"
        );
    }
    let policies = of_kind(objects, "NetworkPolicy");
    assert_eq!(
        policies.len(),
        usize::from(set.contains(&"networkPolicy.enabled=true")),
        "{context}"
    );
    for policy in policies {
        // Inbound: the HTTP port only, from the scraper and the nodes.
        let spec = &policy["spec"];
        assert_eq!(spec["policyTypes"], json!(["Ingress"]), "{context}");
        assert_eq!(
            spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "gantry-operator",
            "{context}"
        );
        let rules = spec["ingress"].as_array().expect("ingress rules");
        assert_eq!(rules.len(), 1, "{context}: {rules:?}");
        assert_eq!(
            rules[0]["ports"],
            json!([{"protocol": "TCP", "port": 8080}]),
            "{context}"
        );
        assert_eq!(
            rules[0]["from"],
            json!([
                {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8"}},
            ]),
            "{context}"
        );
    }
}

fn restricted_labels() -> std::collections::BTreeMap<String, String> {
    ["enforce", "warn", "audit"]
        .into_iter()
        .map(|mode| {
            (
                format!("pod-security.kubernetes.io/{mode}"),
                "restricted".to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apiserver_accepts_the_rendered_chart() {
    let ns = TestNamespace::with_labels("chart-dry", restricted_labels()).await;
    for set in [
        &[][..],
        &["watchNamespace=default"][..],
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
        ][..],
        EXTRAS,
    ] {
        let rendered = render("gantry", &ns.name, set);
        // Server-side dry run: every object is validated and admitted
        // (Pod Security included) but nothing is stored. The CRD may be
        // owned by the operator tests' field manager: forcing only
        // silences that, and the CRD test checks its content.
        let out = tool(
            "kubectl",
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "--field-manager=gantry-chart-e2e",
                "-f",
                "-",
            ],
            Some(&rendered),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the apiserver refused the chart rendered with {set:?}:\n{stdout}{stderr}"
        );
        assert!(
            !stderr.contains("Warning"),
            "the apiserver warned about the chart rendered with {set:?}:\n{stderr}"
        );
        for kind in [
            "customresourcedefinition.apiextensions.k8s.io/goservers.gantry.dev",
            "serviceaccount/gantry-gantry-operator",
            "clusterrole.rbac.authorization.k8s.io/gantry-gantry-operator",
            "role.rbac.authorization.k8s.io/gantry-gantry-operator-leader-election",
            "deployment.apps/gantry-gantry-operator",
            "service/gantry-gantry-operator-metrics",
        ] {
            assert!(
                stdout.contains(&format!("{kind} serverside-applied (server dry run)")),
                "{kind} missing from the dry run:\n{stdout}"
            );
        }
    }
}

/// A kubeconfig for the current cluster that authenticates with a fresh
/// token of the ServiceAccount `account` (`TokenRequest` API), written to
/// `path`.
async fn token_kubeconfig(release_ns: &TestNamespace, account: &str, path: &Path) {
    let token = service_account_token(release_ns, account).await;
    let admin = Kubeconfig::read().expect("reading the admin kubeconfig");
    let context = admin
        .current_context
        .as_deref()
        .and_then(|name| admin.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .expect("the admin kubeconfig has a current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .expect("the current context's cluster");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster.name, "user": account}}],
        "current-context": account,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config).expect("JSON"))
        .expect("writing the token kubeconfig");
}

/// `kubectl auth can-i --list` of the ServiceAccount in `namespace`, one
/// rule a line with the columns' spacing collapsed, header first.
fn can_i_list(account: &str, namespace: &str) -> String {
    let out = ok(
        "kubectl",
        &[
            "auth",
            "can-i",
            "--list",
            &format!("--as={account}"),
            "--namespace",
            namespace,
        ],
        None,
    );
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    let header = lines.next().unwrap_or_default();
    let rules: BTreeSet<String> = lines.filter(|l| !l.is_empty()).collect();
    let mut text = header;
    text.push('\n');
    for rule in rules {
        text.push_str(&rule);
        text.push('\n');
    }
    text
}

fn expect_can_i(account: &str, namespace: &str, expected_file: &str) {
    let actual = can_i_list(account, namespace);
    let path = root().join("tests").join("expected").join(expected_file);
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        actual == expected,
        "the permissions of {account} in {namespace} differ from {}; if the change is \
         intended, review it and write this into the file:\n{actual}",
        path.display()
    );
}

fn can_i(account: &str, namespace: &str, verb: &str, resource: &str) -> bool {
    let out = tool(
        "kubectl",
        &[
            "auth",
            "can-i",
            verb,
            resource,
            &format!("--as={account}"),
            "--namespace",
            namespace,
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn ready(gs: &GoServer) -> bool {
    gs.status.as_ref().is_some_and(|s| {
        s.observed_generation == gs.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// What must survive an uninstall unchanged: pods and ReplicaSets by UID,
/// and the Deployment's generation.
#[derive(Debug, PartialEq, Eq)]
struct Workload {
    pods: BTreeSet<String>,
    replica_sets: BTreeSet<String>,
    deployment_generation: Option<i64>,
}

async fn workload(app: &TestNamespace, selector: &str) -> Workload {
    let by_selector = ListParams::default().labels(selector);
    let uids = |items: Vec<(Option<String>, bool)>| -> BTreeSet<String> {
        items
            .into_iter()
            .filter(|(_, deleting)| !deleting)
            .filter_map(|(uid, _)| uid)
            .collect()
    };
    let pods = app
        .api::<Pod>()
        .list(&by_selector)
        .await
        .expect("listing pods");
    let pods = uids(
        pods.items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| (p.uid(), p.metadata.deletion_timestamp.is_some()))
            .collect(),
    );
    let replica_sets = app
        .api::<ReplicaSet>()
        .list(&by_selector)
        .await
        .expect("listing ReplicaSets");
    let replica_sets = uids(
        replica_sets
            .items
            .iter()
            .map(|r| (r.uid(), r.metadata.deletion_timestamp.is_some()))
            .collect(),
    );
    let deployment = app
        .api::<Deployment>()
        .get("hello")
        .await
        .expect("Deployment hello");
    Workload {
        pods,
        replica_sets,
        deployment_generation: deployment.metadata.generation,
    }
}

/// Log lines of reconciles of `goserver` with `message`.
fn count(operator: &OperatorProcess, goserver: &str, message: &str) -> usize {
    operator
        .log()
        .iter()
        .filter(|l| l["message"] == message && l["span"]["goserver"] == goserver)
        .count()
}

/// Lines that say the apiserver refused the operator something.
fn forbidden(operator: &OperatorProcess) -> Vec<String> {
    operator
        .lines()
        .into_iter()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect()
}

/// Whether the object `name` no longer exists.
async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().is_none()
}

/// The arguments the chart's Deployment gives the operator container, as
/// the kubelet would expand them in a pod of `namespace`, less the HTTP
/// address (a pod's 0.0.0.0 becomes a free loopback port here).
fn pod_args(deployment: &Deployment, namespace: &str) -> Vec<String> {
    let container = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .expect("the chart's Deployment has a container");
    container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !a.starts_with("--http-address") && !a.starts_with("--log-level"))
        .map(|a| a.replace("$(POD_NAMESPACE)", namespace))
        .collect()
}

/// The holder of the Lease `name`, once it exists (`None`: released).
async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    let lease = wait_until("the leader Lease", DEADLINE, || async {
        leases.get_opt(name).await.map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    lease.spec.and_then(|s| s.holder_identity)
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one story: install, run, uninstall, reinstall
async fn chart_rbac_runs_the_operator_and_uninstall_keeps_the_servers() {
    let release_ns = TestNamespace::with_labels("chart", restricted_labels()).await;
    let app = TestNamespace::new("chart-app").await;
    let client = release_ns.client.clone();

    // Install: CRD, ServiceAccount, RBAC, and an operator Deployment whose
    // pods pass the restricted Pod Security Standard (helm --wait waits for
    // them to be available).
    let release = Release::install(&release_ns.name, &release_ns.name);
    let name = release.fullname();
    let account = format!("system:serviceaccount:{}:{name}", release_ns.name);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    gantry_e2e::wait_for_crd(&client, CRD_NAME, DEADLINE)
        .await
        .unwrap();
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(cluster_roles.get_opt(&name).await.unwrap().is_some());
    assert!(cluster_bindings.get_opt(&name).await.unwrap().is_some());
    let operator_deployment = release_ns.api::<Deployment>().get(&name).await.unwrap();
    assert_eq!(
        operator_deployment
            .status
            .as_ref()
            .and_then(|s| s.available_replicas),
        Some(2),
        "the chart's operator pods were not admitted in a restricted namespace"
    );

    // Exactly the checked-in permissions: leases in the release namespace
    // only, nothing on Secrets anywhere.
    expect_can_i(
        &account,
        &release_ns.name,
        "chart-can-i-release-namespace.txt",
    );
    expect_can_i(&account, &app.name, "chart-can-i-other-namespace.txt");
    assert!(can_i(
        &account,
        &release_ns.name,
        "update",
        "leases.coordination.k8s.io"
    ));
    assert!(!can_i(
        &account,
        &app.name,
        "update",
        "leases.coordination.k8s.io"
    ));
    for verb in ["get", "list", "watch"] {
        assert!(
            !can_i(&account, &app.name, verb, "secrets"),
            "{verb} secrets"
        );
    }

    // The operator, outside the cluster, with nothing but a token of the
    // chart's ServiceAccount and the arguments of the chart's Deployment
    // (leader election included), brings the example to Ready.
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", release_ns.name));
    token_kubeconfig(&release_ns, &name, &kubeconfig).await;
    let mut operator_args = pod_args(&operator_deployment, &release_ns.name);
    assert!(
        operator_args.iter().any(|a| a == "--leader-elect"),
        "the chart's operator does not elect a leader: {operator_args:?}"
    );
    operator_args.extend(
        [
            "--namespace",
            app.name.as_str(),
            "--log-level",
            "info,gantry_operator=debug",
        ]
        .map(str::to_owned),
    );
    let operator_args: Vec<&str> = operator_args.iter().map(String::as_str).collect();
    let mut operator = OperatorProcess::start_with_env(
        "chart",
        &operator_args,
        Some(&kubeconfig),
        &[("POD_NAME", "chart-first")],
    );
    let example = root()
        .join("examples")
        .join("minimal.yaml")
        .display()
        .to_string();
    ok(
        "kubectl",
        &["apply", "--namespace", &app.name, "-f", &example],
        None,
    );
    let goservers: Api<GoServer> = app.api();
    let gs = wait_for(
        &goservers,
        "hello",
        "Ready=True for the current generation",
        DEADLINE,
        ready,
    )
    .await
    .unwrap();
    assert!(operator.running(), "the operator exited");
    // A request annotation is handled and removed: the one write the
    // chart's RBAC allows on GoServers themselves. (Nothing is under
    // verification, so the promotion is refused and changes nothing.)
    goservers
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"gantry.dev/promote": "hello-0"}}})),
        )
        .await
        .unwrap();
    wait_for(&goservers, "hello", "the request handled", DEADLINE, |gs| {
        gs.annotations().get("gantry.dev/promote").is_none()
    })
    .await
    .unwrap();
    // The optional children, a ServiceMonitor and an HTTPRoute, created and
    // deleted under the chart's RBAC (their CRDs installed meanwhile, as a
    // cluster gets them from prometheus-operator and the Gateway API).
    gantry_e2e::monitoring_crds::install(&client)
        .await
        .expect("installing the prometheus-operator CRDs");
    let monitored =
        |on: bool| Patch::Merge(json!({"spec": {"monitoring": {"serviceMonitor": on}}}));
    goservers
        .patch("hello", &PatchParams::default(), &monitored(true))
        .await
        .unwrap();
    wait_for(&goservers, "hello", "Monitored=True", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Monitored" && c.status == "True")
        })
    })
    .await
    .unwrap();
    let monitors: Api<ServiceMonitor> = app.api();
    assert!(monitors.get_opt("hello").await.unwrap().is_some());
    goservers
        .patch("hello", &PatchParams::default(), &monitored(false))
        .await
        .unwrap();
    wait_for_deletion(&monitors, "hello", DEADLINE)
        .await
        .unwrap();
    // The same for an HTTPRoute, on the Gateway API's CRDs.
    gantry_e2e::gateway_crds::install(&client)
        .await
        .expect("installing the Gateway API CRDs");
    let with_route = |route: Value| Patch::Merge(json!({"spec": {"route": route}}));
    goservers
        .patch(
            "hello",
            &PatchParams::default(),
            &with_route(json!({"parentRefs": [{"name": "public"}]})),
        )
        .await
        .unwrap();
    let routes: Api<HttpRoute> = app.api();
    wait_until("the HTTPRoute", DEADLINE, || async {
        Ok::<_, String>(routes.get_opt("hello").await.ok().flatten())
    })
    .await
    .unwrap();
    goservers
        .patch("hello", &PatchParams::default(), &with_route(Value::Null))
        .await
        .unwrap();
    wait_for_deletion(&routes, "hello", DEADLINE).await.unwrap();
    let refused = forbidden(&operator);
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator: {refused:#?}"
    );
    let selector = gs
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("status.selector");
    let before = workload(&app, &selector).await;
    assert!(
        !before.pods.is_empty(),
        "no running pods of hello: {before:?}"
    );

    // It holds the chart's Lease, in the release namespace.
    let leases: Api<Lease> = release_ns.api();
    assert_eq!(
        lease_holder(&leases, &name).await.as_deref(),
        Some("chart-first")
    );

    // Uninstall: the operator and its RBAC go, the CRD and the servers stay.
    // Stopped as the kubelet stops a pod, the operator gives the Lease up.
    operator.terminate();
    assert!(
        operator.wait_exit(Duration::from_secs(30)).is_some(),
        "the operator did not exit on SIGTERM"
    );
    assert_eq!(lease_holder(&leases, &name).await, None);
    drop(operator);
    release.uninstall();
    wait_for_deletion(&release_ns.api::<Deployment>(), &name, DEADLINE)
        .await
        .unwrap();
    assert!(gone(&cluster_roles, &name).await);
    assert!(gone(&cluster_bindings, &name).await);
    assert!(gone(&release_ns.api::<ServiceAccount>(), &name).await);
    let leader_election = format!("{name}-leader-election");
    assert!(gone(&release_ns.api::<Role>(), &leader_election).await);
    assert!(gone(&release_ns.api::<RoleBinding>(), &leader_election).await);
    assert!(
        crds.get_opt(CRD_NAME).await.unwrap().is_some(),
        "uninstall removed the CRD"
    );
    let kept = goservers
        .get("hello")
        .await
        .expect("the GoServer survives the uninstall");
    assert_eq!(kept.uid(), gs.uid());
    assert!(ready(&kept), "{:?}", kept.status);
    assert_eq!(
        workload(&app, &selector).await,
        before,
        "uninstall touched the workload"
    );

    // Reinstall: a new ServiceAccount (new token), the same servers adopted
    // without a write to them and without restarting a pod.
    let release = Release::install(&release_ns.name, &release_ns.name);
    token_kubeconfig(&release_ns, &name, &kubeconfig).await;
    let mut operator = OperatorProcess::start_with_env(
        "chart-again",
        &operator_args,
        Some(&kubeconfig),
        &[("POD_NAME", "chart-second")],
    );
    wait_until("the new operator to reconcile hello", DEADLINE, || {
        let seen = count(&operator, "hello", "reconcile finished");
        async move { Ok(if seen > 0 { Some(()) } else { None }) }
    })
    .await
    .unwrap();
    assert!(operator.running(), "the operator exited");
    assert_eq!(
        count(&operator, "hello", "child applied"),
        0,
        "adoption rewrote a child"
    );
    let refused = forbidden(&operator);
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator: {refused:#?}"
    );
    assert!(ready(&goservers.get("hello").await.unwrap()));
    assert_eq!(
        workload(&app, &selector).await,
        before,
        "adoption restarted the workload"
    );
    assert_eq!(
        lease_holder(&leases, &name).await.as_deref(),
        Some("chart-second")
    );

    drop(operator);
    drop(release);
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The chart grants no verb on Secrets, so the operator cannot check that a
/// referenced Secret exists: it says so in a warning and goes on, and a
/// `GoServer` with secret references reaches Ready under the chart's RBAC
/// (a Secret that is really missing is then reported by the pods).
#[tokio::test]
async fn goserver_with_secret_references_is_ready_without_secret_verbs() {
    let release_ns = TestNamespace::with_labels("chart-sec", restricted_labels()).await;
    let app = TestNamespace::new("chart-sec-app").await;
    let release = Release::install(&release_ns.name, &release_ns.name);
    let name = release.fullname();
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", release_ns.name));
    token_kubeconfig(&release_ns, &name, &kubeconfig).await;
    let operator = OperatorProcess::start(
        "chart-secrets",
        &["--namespace", app.name.as_str()],
        Some(&kubeconfig),
    );
    // full.yaml: a Secret (created here by the admin) and a GoServer that
    // references it.
    let example = root()
        .join("examples")
        .join("full.yaml")
        .display()
        .to_string();
    ok(
        "kubectl",
        &["apply", "--namespace", &app.name, "-f", &example],
        None,
    );
    let goservers: Api<GoServer> = app.api();
    wait_for(&goservers, "hello-full", "Ready=True", DEADLINE, ready)
        .await
        .unwrap();
    let deployment = app.api::<Deployment>().get("hello-full").await.unwrap();
    let pod = serde_json::to_value(&deployment.spec.unwrap().template).unwrap();
    assert!(
        pod.to_string()
            .contains(r#""secretKeyRef":{"key":"password","name":"hello-db"}"#),
        "{pod}"
    );
    let skipped = operator
        .log()
        .iter()
        .filter(|l| l["level"] == "WARN" && l["secret"] == "hello-db")
        .count();
    assert!(
        skipped > 0,
        "the operator did not warn that it could not check Secret hello-db: {:#?}",
        operator.lines()
    );
    drop(operator);
    drop(release);
    let _ = std::fs::remove_file(&kubeconfig);
}
