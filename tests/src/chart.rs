//! The Helm chart in the tests: a release installed into a test namespace
//! (uninstalled on drop), and tokens of its ServiceAccount, for the tests
//! that run the operator with exactly the chart's permissions.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;

use crate::operator::root;
use crate::{TestNamespace, bin_dir};

/// charts/gantry-operator.
pub fn chart_dir() -> PathBuf {
    root().join("charts").join("gantry-operator")
}

/// Runs helm; with `check`, fails the test unless it succeeds.
fn helm(args: &[&str], check: bool) {
    let out = Command::new(bin_dir().join("helm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running helm");
    assert!(
        !check || out.status.success(),
        "helm {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A release of the chart, uninstalled (if still there) on drop.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    /// `helm install --wait`: the chart's pods are available when it returns.
    pub fn install(name: &str, namespace: &str) -> Self {
        let chart = chart_dir().display().to_string();
        helm(
            &[
                "install",
                name,
                &chart,
                "--namespace",
                namespace,
                "--wait",
                "--timeout",
                "180s",
            ],
            true,
        );
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    pub fn uninstall(&self) {
        helm(
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
                "--timeout",
                "180s",
            ],
            true,
        );
    }

    /// The name of every object of the release (release name + chart name),
    /// the ServiceAccount and the leader Lease among them.
    pub fn fullname(&self) -> String {
        format!("{}-gantry-operator", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Best effort: the ClusterRole and its binding outlive the namespace.
        helm(
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--ignore-not-found",
            ],
            false,
        );
    }
}

/// A fresh token (one hour) of the ServiceAccount `account` in `ns`, from
/// the `TokenRequest` API, as the kubelet would mount it.
pub async fn service_account_token(ns: &TestNamespace, account: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    ns.api::<ServiceAccount>()
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {account}: {e}"))
        .status
        .expect("a TokenRequest status")
        .token
        .expect("a token")
}
