//! The local control plane is a real Kubernetes: controllers reconcile,
//! the garbage collector collects, admission enforces Pod Security, and
//! RBAC denies what is not granted.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_e2e::{TestNamespace, client, wait_for, wait_for_deletion, wait_until};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client, Config};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(90);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
            },
        },
    }))
}

/// The apiserver's rejection carried by `err`.
fn rejection(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API rejection, got {other:?}"),
    }
}

fn owned_by_deployment(rs: &ReplicaSet, deployment: &str) -> bool {
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Deployment" && o.name == deployment)
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let info = client().await.apiserver_version().await.expect("/version");
    assert_eq!(
        (info.major.as_str(), info.minor.as_str()),
        ("1", "36"),
        "{info:?}"
    );
    assert!(info.git_version.starts_with("v1.36."), "{info:?}");
}

/// Every node renews its Lease the way a kubelet does; without that the node
/// controller marks nodes not ready after its grace period, and every pod on
/// them with it.
#[tokio::test]
async fn nodes_are_ready_and_renew_their_leases() {
    let client = client().await;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!nodes.items.is_empty(), "the cluster has nodes");
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    for node in &nodes.items {
        let name = node.metadata.name.clone().unwrap();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "node {name} is Ready: {:?}", node.status);
        let renewed = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.renew_time.clone());
        let first = wait_for(&leases, &name, "a renewed lease", DEADLINE, |l| {
            renewed(l).is_some()
        })
        .await
        .unwrap();
        let first = renewed(&first);
        wait_for(&leases, &name, "the lease renewed again", DEADLINE, |l| {
            renewed(l) != first
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn deployment_becomes_available_and_is_garbage_collected() {
    let ns = TestNamespace::new("deploy").await;
    let deployments: Api<Deployment> = ns.api();
    let replica_sets: Api<ReplicaSet> = ns.api();
    let pods: Api<Pod> = ns.api();

    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .expect("create deployment");
    wait_for(
        &deployments,
        "web",
        "3 available, 3 ready replicas",
        DEADLINE,
        |d| {
            d.status
                .as_ref()
                .is_some_and(|s| s.available_replicas == Some(3) && s.ready_replicas == Some(3))
        },
    )
    .await
    .expect("deployment available");

    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    for pod in &listed.items {
        let status = pod.status.as_ref().expect("pod status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "pod {:?} is not Ready: {status:?}",
            pod.metadata.name
        );
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some(),
            "scheduled"
        );
    }
    let rs_list = replica_sets.list(&ListParams::default()).await.unwrap();
    assert_eq!(rs_list.items.len(), 1);
    let rs_name = rs_list.items[0].metadata.name.clone().unwrap();
    assert!(owned_by_deployment(&rs_list.items[0], "web"));

    // Background propagation: the Deployment goes at once, and the garbage
    // collector then removes what it owned, down to the pods.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_for_deletion(&deployments, "web", DEADLINE)
        .await
        .unwrap();
    wait_for_deletion(&replica_sets, &rs_name, DEADLINE)
        .await
        .unwrap();
    wait_until("every pod of the deployment to be gone", DEADLINE, || {
        let pods = pods.clone();
        async move {
            let left = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            if left.items.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("{} pods left", left.items.len()))
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn restricted_namespace_rejects_a_privileged_pod() {
    let labels = BTreeMap::from([(
        "pod-security.kubernetes.io/enforce".to_owned(),
        "restricted".to_owned(),
    )]);
    let ns = TestNamespace::with_labels("psa", labels).await;
    let pods: Api<Pod> = ns.api();

    let privileged: Pod = from_json(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{
            "name": "c",
            "image": "registry.example/c:1",
            "securityContext": {"privileged": true},
        }]},
    }));
    let status = rejection(
        pods.create(&PostParams::default(), &privileged)
            .await
            .expect_err("a privileged pod must be rejected"),
    );
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status
            .message
            .contains("violates PodSecurity \"restricted:"),
        "{}",
        status.message
    );
    assert!(status.message.contains("privileged"), "{}", status.message);

    // The same pod made compliant is admitted: the rejection above was
    // about privilege, not about the namespace refusing every pod.
    let compliant: Pod = from_json(json!({
        "metadata": {"name": "compliant"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c",
                "image": "registry.example/c:1",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }));
    pods.create(&PostParams::default(), &compliant)
        .await
        .expect("a restricted-compliant pod is admitted");
}

/// A client that authenticates as `account` with a token from the
/// `TokenRequest` API, against the same apiserver.
async fn client_as(ns: &TestNamespace, account: &str) -> Client {
    let accounts: Api<ServiceAccount> = ns.api();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status");
    let mut config = Config::infer().await.expect("kubeconfig");
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    Client::try_from(config).expect("client")
}

#[tokio::test]
async fn rbac_denies_a_service_account_without_a_binding() {
    let ns = TestNamespace::new("rbac").await;
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "nobody"}})),
        )
        .await
        .unwrap();
    let as_nobody = client_as(&ns, "nobody").await;
    let pods: Api<Pod> = Api::namespaced(as_nobody, &ns.name);

    let status = rejection(
        pods.list(&ListParams::default())
            .await
            .expect_err("no binding: forbidden"),
    );
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status
            .message
            .contains(&format!("system:serviceaccount:{}:nobody", ns.name)),
        "the denial names the account: {}",
        status.message
    );

    // Grant exactly `list pods` and the same request goes through (RBAC
    // changes apply at once), while anything else stays denied.
    let roles: Api<Role> = ns.api();
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: kube::api::ObjectMeta {
                    name: Some("pod-lister".into()),
                    ..Default::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["list".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: kube::api::ObjectMeta {
                    name: Some("nobody-lists-pods".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "pod-lister".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "nobody".into(),
                    namespace: Some(ns.name.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    wait_until("the binding to take effect", DEADLINE, || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default())
                .await
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();
    let err = pods
        .delete("anything", &DeleteParams::default())
        .await
        .expect_err("delete is not granted");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
}
