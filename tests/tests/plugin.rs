//! `kubectl gantry` end to end: the plugin binary as a user runs it, against
//! the operator as a real process. Promote, rollback, retry and a refused
//! rollback, each seen in the GoServer, its Deployment, its Events and the
//! annotation the operator removes; status and history as tables and JSON;
//! requests made with only the verbs the docs name.
//!
//! The verification asks a Prometheus that is not there (a closed loopback
//! port): a revision then stays under verification, measured on, until a
//! request decides it.

mod operator_support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use gantry_e2e::operator::build_binary;
use gantry_e2e::{TestNamespace, wait_for};
use gantry_operator::crd::{GoServer, Verdict, VerificationPhase};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use operator_support::{DEADLINE, Operator, events_about, wait_deployed};
use serde_json::{Value, json};

fn plugin() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("kubectl-gantry"))
}

/// Runs `kubectl-gantry ARGS -n NS` with the test's kubeconfig.
fn gantry(ns: &TestNamespace, args: &[&str]) -> Output {
    run_plugin(ns, args, None)
}

/// Runs `kubectl-gantry ARGS -n NS`, with `kubeconfig` when given.
fn run_plugin(ns: &TestNamespace, args: &[&str], kubeconfig: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(plugin());
    cmd.args(args).args(["-n", &ns.name]);
    if let Some(kubeconfig) = kubeconfig {
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let out = cmd.output().expect("running kubectl-gantry");
    eprintln!(
        "kubectl gantry {}{}: {}\n{}{}",
        args.join(" "),
        if kubeconfig.is_some() {
            " (restricted)"
        } else {
            ""
        },
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn goserver(image: &str) -> GoServer {
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": "web"},
        "spec": {
            "image": image,
            "replicas": 1,
            "rollout": {"verification": {
                "prometheus": {"url": "http://127.0.0.1:1", "timeout": "1s"},
                "warmup": "1s", "interval": "2s", "window": "10s",
                "metrics": [{"name": "error-rate", "query": "vector(0)", "max": 0.05}],
            }},
        },
    }))
    .unwrap()
}

/// A namespace with an operator and the GoServer `web` at `web:1`.
async fn with_web(prefix: &str) -> (TestNamespace, Operator, Api<GoServer>) {
    let ns = TestNamespace::new(prefix).await;
    let operator = Operator::start(&ns).await;
    let api: Api<GoServer> = ns.api();
    api.create(&PostParams::default(), &goserver("web:1"))
        .await
        .unwrap();
    (ns, operator, api)
}

/// Waits until a revision other than `not` is under verification and
/// measured; its name.
async fn measuring(api: &Api<GoServer>, not: Option<&str>) -> String {
    let gs = wait_for(
        api,
        "web",
        "a revision under verification",
        DEADLINE,
        |gs| {
            gs.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| {
                    Some(v.revision.as_str()) != not && v.phase == VerificationPhase::Measuring
                })
        },
    )
    .await
    .unwrap();
    gs.status.unwrap().verification.unwrap().revision
}

fn annotations(gs: &GoServer) -> Vec<String> {
    gs.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("gantry.dev/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story: promote, rollback, retry
async fn promote_rollback_and_retry_through_the_plugin() {
    let (ns, _operator, api) = with_web("plugin").await;

    // v1 is measured on and on (no Prometheus): a CI gate waiting on it
    // times out (exit 2) saying where it stands.
    let v1 = measuring(&api, None).await;
    let out = gantry(&ns, &["wait", "web", "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not settled after 3 s") && stderr.contains("Verified Unknown"),
        "{stderr}"
    );

    // Promoted by hand: the gate passes (exit 0) once it is ready too.
    let out = gantry(&ns, &["promote", "web"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("promoted {v1}"));
    let out = gantry(&ns, &["wait", "web", "--timeout", "120"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), format!("web: {v1} verified and ready"));
    let gs = api.get("web").await.unwrap();
    let status = gs.status.clone().unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(status.verification.as_ref().unwrap().reason, "Promoted");
    assert_eq!(status.history[0].verdict, Verdict::Passed);
    assert!(annotations(&gs).is_empty(), "{:?}", annotations(&gs));
    assert_eq!(events_about(&ns, "web", "PromoteRequested").await.len(), 1);

    // v2 under verification, rolled back by hand to the last good one.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "web:2"}})),
    )
    .await
    .unwrap();
    let v2 = measuring(&api, Some(&v1)).await;
    let out = gantry(&ns, &["rollback", "web"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("rolled back to {v1}"));
    wait_deployed(&ns, "web", &v1).await;
    let gs = api.get("web").await.unwrap();
    let status = gs.status.clone().unwrap();
    assert_eq!(status.failed_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(status.revision.as_deref(), Some(v1.as_str()));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolledBack")
    );
    assert!(
        degraded.message.contains("rolled back by request"),
        "{}",
        degraded.message
    );
    assert!(annotations(&gs).is_empty());
    assert_eq!(events_about(&ns, "web", "RollbackRequested").await.len(), 1);
    // The gate on a rolled-back revision fails (exit 1) and says so.
    let out = gantry(&ns, &["wait", "web", "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("web: {v2} was rolled back")),
        "{stderr}"
    );

    // The history shows both, newest first, in JSON and as a table.
    let out = gantry(&ns, &["history", "web", "-o", "json"]);
    assert!(out.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let summary: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["revision"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
                r["inForce"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (v2.as_str(), "RolledBack", false),
            (v1.as_str(), "Passed", true)
        ]
    );
    let table = stdout(&gantry(&ns, &["history", "web"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REVISION "), "{table}");
    assert!(lines[1].starts_with(&format!("{v2} ")), "{table}");
    assert!(lines[2].starts_with(&format!("{v1}* ")), "{table}");
    assert!(
        lines[1].contains("web:2") && lines[1].contains("RolledBack"),
        "{table}"
    );

    // A rollback to a revision that was never recorded is refused, with
    // the operator's reason, and changes nothing.
    let out = gantry(&ns, &["rollback", "web", "--to", "web-0000000000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("not recorded"),
        "{stderr}"
    );
    let gs = api.get("web").await.unwrap();
    assert!(annotations(&gs).is_empty());
    assert_eq!(gs.status.unwrap().revision.as_deref(), Some(v1.as_str()));

    // Retry: v2 is deployed again and verified anew.
    let out = gantry(&ns, &["retry", "web"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("deploying {v2} again"));
    wait_deployed(&ns, "web", &v2).await;
    let gs = wait_for(&api, "web", "v2 verified anew", DEADLINE, |gs| {
        gs.status.as_ref().is_some_and(|s| {
            s.failed_revision.is_none()
                && s.verification
                    .as_ref()
                    .is_some_and(|v| v.revision == v2 && v.reason != "RolledBack")
        })
    })
    .await
    .unwrap();
    assert_eq!(gs.status.unwrap().history[0].verdict, Verdict::Unverified);
    assert_eq!(events_about(&ns, "web", "RetryRequested").await.len(), 1);

    // Status: revision, conditions, the verification in progress.
    let text = stdout(&gantry(&ns, &["status", "web"]));
    assert!(text.contains("Revision:") && text.contains(&v2), "{text}");
    assert!(
        text.contains("Conditions:") && text.contains("Ready"),
        "{text}"
    );
    assert!(text.contains(&format!("Verification of {v2}")), "{text}");
    let out = gantry(&ns, &["status", "web", "-o", "yaml"]);
    let value: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(value["status"]["revision"], json!(v2));

    // Nothing to retry now: the plugin says so and sets nothing.
    let out = gantry(&ns, &["retry", "web"]);
    assert!(!out.status.success());
    assert!(annotations(&api.get("web").await.unwrap()).is_empty());
}

/// `set image`, `abort` and `restart`, each checked in the spec and the
/// status it leads to.
#[tokio::test(flavor = "multi_thread")]
async fn set_image_abort_and_restart_through_the_plugin() {
    let (ns, _operator, api) = with_web("plugin-edit").await;
    let v1 = measuring(&api, None).await;
    // kubectl's completion of `kubectl gantry -n NS promote w<TAB>` (what
    // kubectl_complete-gantry hands on): the GoServer's name.
    let out = Command::new(plugin())
        .args(["-n", &ns.name, "__complete", "promote", "w"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "web\n:4\n");
    // Nothing verified before the first revision: nothing to go back to.
    let out = gantry(&ns, &["abort", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no verified revision"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gantry(&ns, &["promote", "web"]).status.success());

    // set image writes spec.image: a new revision under verification.
    let out = gantry(&ns, &["set", "image", "web", "web:2"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("image set to web:2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(api.get("web").await.unwrap().spec.image, "web:2");
    let v2 = measuring(&api, Some(&v1)).await;

    // abort ends it: v2 rolled back, v1 serves again; a second abort has
    // nothing to end.
    let out = gantry(&ns, &["abort", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("aborted {v2}; {v1} serves again")
    );
    wait_deployed(&ns, "web", &v1).await;
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.failed_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(events_about(&ns, "web", "RollbackRequested").await.len(), 1);
    let out = gantry(&ns, &["abort", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to abort"));

    // restart stamps the pod template: a third revision, verified anew.
    let out = gantry(&ns, &["restart", "web"]);
    assert!(out.status.success());
    let gs = api.get("web").await.unwrap();
    assert!(
        gs.spec
            .pod_annotations
            .contains_key("gantry.dev/restartedAt"),
        "{:?}",
        gs.spec.pod_annotations
    );
    let v3 = measuring(&api, Some(&v2)).await;
    assert!(v3 != v1 && v3 != v2, "{v3}");
}

/// A copy of the test's kubeconfig whose user acts as the ServiceAccount
/// `name` of `ns` (impersonation, as `kubectl --as` does).
fn kubeconfig_as(ns: &TestNamespace, name: &str) -> tempfile::NamedTempFile {
    let mut config = kube::config::Kubeconfig::read().expect("the test's kubeconfig");
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{}:{name}", ns.name));
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    // JSON is YAML: kubectl and kube read it alike.
    serde_json::to_writer(file.as_file(), &config).unwrap();
    file
}

/// Runs `kubectl-gantry ARGS -n NS` with `kubeconfig`.
fn gantry_with(kubeconfig: &tempfile::NamedTempFile, ns: &TestNamespace, args: &[&str]) -> Output {
    run_plugin(ns, args, Some(kubeconfig.path()))
}

/// A ServiceAccount `name` bound to a Role of `rules`.
async fn account(ns: &TestNamespace, name: &str, rules: &Value) {
    let pp = PostParams::default();
    let meta = json!({"name": name});
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": meta})).unwrap();
    ns.api::<ServiceAccount>().create(&pp, &sa).await.unwrap();
    let role: Role = serde_json::from_value(json!({"metadata": meta, "rules": rules})).unwrap();
    ns.api::<Role>().create(&pp, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns.name}],
    }))
    .unwrap();
    ns.api::<RoleBinding>().create(&pp, &binding).await.unwrap();
}

/// docs/rollout.md: a request needs `patch`, `get`, `list` and `watch` on
/// `goservers`, and `list` on Events for a refusal's reason; with those
/// alone, the plugin does its work, and without `list` and `watch` (the
/// wait is a watch) it cannot wait. An earlier version of the docs left
/// out `list`; this test found it.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_needs_only_the_verbs_the_docs_name() {
    let ns = TestNamespace::new("plugin-rbac").await;
    let _operator = Operator::start(&ns).await;
    let goservers = json!({"apiGroups": ["gantry.dev"], "resources": ["goservers"]});
    let with = |verbs: &[&str]| {
        let mut rule = goservers.clone();
        rule["verbs"] = json!(verbs);
        json!([rule, {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}])
    };
    account(&ns, "requester", &with(&["get", "list", "watch", "patch"])).await;
    account(&ns, "no-watch", &with(&["get", "patch"])).await;
    let requester = kubeconfig_as(&ns, "requester");
    let no_watch = kubeconfig_as(&ns, "no-watch");
    let api: Api<GoServer> = ns.api();
    api.create(&PostParams::default(), &goserver("web:1"))
        .await
        .unwrap();
    let v1 = measuring(&api, None).await;

    // Without `list` and `watch`, the request is set but cannot be waited
    // for.
    let out = gantry_with(
        &no_watch,
        &ns,
        &["rollback", "web", "--to", "web-0000000000"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbidden") || stderr.contains("403"),
        "{stderr}"
    );
    // The operator handles it anyway (refused: never recorded), and
    // removes the annotation.
    wait_for(&api, "web", "the refused request handled", DEADLINE, |gs| {
        annotations(gs).is_empty()
    })
    .await
    .unwrap();

    // With the documented verbs: a refusal, with the reason from its Event.
    let out = gantry_with(
        &requester,
        &ns,
        &["rollback", "web", "--to", "web-0000000000"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("not recorded"),
        "{stderr}"
    );
    // And a request that succeeds.
    let out = gantry_with(&requester, &ns, &["promote", "web"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), format!("promoted {v1}"));
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.last_good_revision.as_deref(), Some(v1.as_str()));
}
