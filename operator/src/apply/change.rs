//! What the applier changed, and the Events that tell it.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

/// What the applier did to one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    /// The Event reason and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Updated => "Updated",
            Self::Deleted => "Deleted",
        }
    }
}

/// One write the applier made.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    /// The child, for the Event's related object.
    pub child: ObjectReference,
}

impl Change {
    pub(super) fn of<K: Resource<DynamicType = ()>>(
        action: Action,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            action,
            child: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectReference::default()
            },
        }
    }

    /// `Deployment web`.
    pub(super) fn child_name(&self) -> String {
        format!(
            "{} {}",
            self.child.kind.as_deref().unwrap_or_default(),
            self.child.name.as_deref().unwrap_or_default()
        )
    }
}

/// What one Event tells about the applier's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Told {
    pub action: Action,
    /// `Created ConfigMap web-config-1a2b, Deployment web`.
    pub note: String,
    /// The first child named, for the Event's related object.
    pub related: ObjectReference,
}

/// The Events for `changes`, in order: the children created in one
/// reconcile are told in one Event (a new `GoServer` creates six, and each
/// Event is a write), updates and deletions one per child.
///
/// kube's recorder folds an Event into an earlier one with the same reason
/// and related object (within minutes), keeping the earlier note; a created
/// group is led by a child new to this `GoServer` (its `ControllerRevision`
/// or content-named `ConfigMap`, as the applier writes those first), so
/// groups with different notes are not folded together.
pub fn tell(changes: &[Change]) -> Vec<Told> {
    let mut told: Vec<Told> = Vec::new();
    for change in changes {
        if change.action == Action::Created
            && let Some(created) = told.iter_mut().find(|t| t.action == Action::Created)
        {
            created.note = format!("{}, {}", created.note, change.child_name());
            continue;
        }
        told.push(Told {
            action: change.action,
            note: format!("{} {}", change.action.as_str(), change.child_name()),
            related: change.child.clone(),
        });
    }
    told
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    #[test]
    fn created_children_are_told_in_one_event() {
        let changes = [
            Change::of::<ControllerRevision>(Action::Created, "ns", "web-1a"),
            Change::of::<Deployment>(Action::Updated, "ns", "web"),
            Change::of::<ConfigMap>(Action::Created, "ns", "web-config-2b"),
            Change::of::<ConfigMap>(Action::Deleted, "ns", "web-config-0c"),
        ];
        let told: Vec<_> = tell(&changes)
            .into_iter()
            .map(|t| (t.action, t.note, t.related.name.unwrap_or_default()))
            .collect();
        assert_eq!(
            told,
            [
                (
                    Action::Created,
                    "Created ControllerRevision web-1a, ConfigMap web-config-2b".to_owned(),
                    "web-1a".to_owned()
                ),
                (
                    Action::Updated,
                    "Updated Deployment web".to_owned(),
                    "web".to_owned()
                ),
                (
                    Action::Deleted,
                    "Deleted ConfigMap web-config-0c".to_owned(),
                    "web-config-0c".to_owned()
                ),
            ]
        );
        assert!(tell(&[]).is_empty());
    }
}
