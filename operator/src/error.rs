//! The operator's one error type.
//!
//! Every variant knows whether it is *permanent* (only a change to the
//! `GoServer` or to a referenced object can fix it, so retrying quickly would
//! only load the apiserver) or *transient* (worth a retry with backoff), and
//! has a short static `category()` for logs, Events and metric labels.

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `spec.secrets[].name` names a Secret that does not exist.
    #[error("Secret {name:?} referenced in spec.secrets does not exist")]
    SecretNotFound { name: String },

    /// The apiserver accepted the spec, but it cannot be turned into
    /// children (for example two volumes on one mount path).
    #[error("invalid spec: {field}: {message}")]
    InvalidSpec { field: String, message: String },

    /// The apiserver refused a child built from the spec as invalid.
    #[error("the apiserver rejected {kind} {name:?}: {message}")]
    ChildRejected {
        kind: &'static str,
        name: String,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// A request to the apiserver failed for a reason that may pass.
    #[error("{action} failed: {source}")]
    Kube {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// The revision to restore has no `ControllerRevision` any more.
    #[error(
        "cannot restore revision {name}: its ControllerRevision is gone; change the spec to deploy a new revision"
    )]
    RevisionMissing { name: String },

    /// The `GoServer` in the cache is not the live one: the apiserver has
    /// deleted it, or deleted it and has another object of its name, and
    /// the watch has not told yet. Nothing is written on its behalf; the
    /// watch brings the news, and with it the next reconcile.
    #[error("the cached GoServer {name:?} (uid {uid}) is outdated: the apiserver has {live}")]
    Outdated {
        name: String,
        uid: String,
        live: String,
    },

    /// A status write that changes the rollout state was refused because
    /// the `GoServer` changed since this reconcile read it: its view may be
    /// stale (a decision already written and told), so it looks again from
    /// a fresh read instead of writing over what it did not see.
    #[error("the GoServer {name:?} changed since it was read; its status is not written over it")]
    StatusConflict { name: String },

    /// A child this `GoServer` needs has a name another `GoServer`'s child
    /// has: one's canary (`<name>-canary`) is named like the other.
    #[error(
        "{kind} {name} belongs to GoServer {owner}: a canary is named <name>-canary, so GoServer names must not collide with another's canary; rename one of them"
    )]
    NameConflict {
        kind: &'static str,
        name: String,
        owner: String,
    },

    /// The `GoServer` lacks a field every stored object has (name, namespace, uid).
    #[error("the GoServer has no metadata.{0}")]
    MissingObjectKey(&'static str),

    /// A built child could not be serialized.
    #[error("could not serialize {kind}: {source}")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The health and metrics port could not be opened.
    #[error("could not serve HTTP on {address}: {source}")]
    Http {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// The leader Lease could not be renewed for a whole lease duration, or
    /// another candidate holds it now: this process must stop writing.
    #[error("lost the leader Lease: {0}")]
    LeadershipLost(String),

    /// The Lease library failed (the apiserver refused or could not be reached).
    #[error("leader election: {0}")]
    LeaseManager(String),
}

/// Results of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, static name for logs and metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "secret_not_found",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::ChildRejected { .. } => "child_rejected",
            Self::Kube { .. } => "kube_api",
            Self::RevisionMissing { .. } => "revision_missing",
            Self::Outdated { .. } => "outdated_view",
            Self::NameConflict { .. } => "name_conflict",
            Self::StatusConflict { .. } => "status_conflict",
            Self::MissingObjectKey(_) => "missing_object_key",
            Self::Serialize { .. } => "serialize",
            Self::Http { .. } => "http",
            Self::LeadershipLost(_) => "leadership_lost",
            Self::LeaseManager(_) => "lease_manager",
        }
    }

    /// The reason used in conditions and Events (`PascalCase`, static).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::InvalidSpec { .. } => "InvalidSpec",
            Self::ChildRejected { .. } => "ChildRejected",
            Self::Kube { .. } => "ApiError",
            Self::RevisionMissing { .. } => "RevisionMissing",
            Self::Outdated { .. } => "OutdatedView",
            Self::NameConflict { .. } => "NameConflict",
            Self::StatusConflict { .. } => "StatusConflict",
            Self::MissingObjectKey(_) => "MissingObjectKey",
            Self::Serialize { .. } => "SerializeError",
            Self::Http { .. } => "HttpError",
            Self::LeadershipLost(_) => "LeadershipLost",
            Self::LeaseManager(_) => "LeaseError",
        }
    }

    /// Whether retrying without a change cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::SecretNotFound { .. }
            | Self::InvalidSpec { .. }
            | Self::ChildRejected { .. }
            | Self::RevisionMissing { .. }
            | Self::Outdated { .. }
            | Self::NameConflict { .. }
            | Self::MissingObjectKey(_)
            | Self::Serialize { .. }
            | Self::Http { .. }
            | Self::LeadershipLost(_) => true,
            Self::Kube { .. } | Self::LeaseManager(_) | Self::StatusConflict { .. } => false,
        }
    }

    /// Wraps a failed request, telling a rejected object (422 Invalid, 400
    /// `BadRequest`: retrying the same body cannot succeed) from the rest.
    pub(crate) fn from_write(kind: &'static str, name: &str, source: kube::Error) -> Self {
        match &source {
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                Self::ChildRejected {
                    kind,
                    name: name.to_owned(),
                    message: status.message.clone(),
                    source: Box::new(source),
                }
            }
            _ => Self::Kube {
                action: format!("apply {kind} {name}"),
                source: Box::new(source),
            },
        }
    }

    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            Status {
                code,
                message: format!("status {code}"),
                ..Status::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn rejected_children_are_permanent() {
        for code in [400, 422] {
            let err = Error::from_write("Deployment", "hello", api_error(code));
            assert_eq!(err.category(), "child_rejected");
            assert_eq!(err.reason(), "ChildRejected");
            assert!(err.is_permanent());
            assert!(err.to_string().contains(&format!("status {code}")), "{err}");
        }
    }

    #[test]
    fn other_api_failures_are_transient() {
        for code in [403, 409, 429, 500, 503] {
            let err = Error::from_write("Service", "hello", api_error(code));
            assert_eq!(err.category(), "kube_api");
            assert!(!err.is_permanent(), "{code}");
        }
    }

    #[test]
    fn spec_problems_are_permanent() {
        let missing = Error::SecretNotFound {
            name: "db".to_owned(),
        };
        assert!(missing.is_permanent());
        assert_eq!(missing.reason(), "SecretNotFound");
        let invalid = Error::InvalidSpec {
            field: "spec.config.mountPath".to_owned(),
            message: "clash".to_owned(),
        };
        assert!(invalid.is_permanent());
        assert!(invalid.to_string().contains("spec.config.mountPath"));
    }
}
