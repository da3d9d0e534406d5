//! Stale and lost state, as Sieve serves it to controllers, through a
//! proxy in front of the apiserver that holds back, coalesces and replays
//! watch events (`gantry_e2e::watch_proxy`).
//!
//! - A `GoServer` deleted and created again under the same name while an
//!   operator's view still shows the old one (an operator restarted
//!   against a lagging apiserver): the new object's children are never
//!   touched, let alone deleted, and every delete names the UID it means.
//! - A watch ended with 410 Gone while it held a deletion: the relist
//!   shows the operator what it missed, and nothing is deleted.
//! - Edits and child replacements whose intermediate states the operator
//!   never sees (A→B→A coalesced into one event; a Service deleted and
//!   replaced by one without owner, seen only as the replacement): the end
//!   state equals the reference.

mod operator_support;

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_e2e::faults::sample;
use gantry_e2e::snapshot::{self, Snapshot};
use gantry_e2e::watch_proxy::{Delivery, Recorded, WatchProxy};
use gantry_e2e::{TestNamespace, wait_for_deletion, wait_until};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use operator_support::{DEADLINE, Operator, config_map_name, create_ready, wait_ready};
use serde_json::{Value, json};

const NAME: &str = "again";

/// Kinds of child replaced alone in the default suite; `--faults` replaces
/// each kind.
const SAMPLED_KINDS: usize = 2;

fn goserver(image: &str, greeting: &str, exposed: bool) -> GoServer {
    let mut spec = json!({
        "image": image,
        "resources": {"requests": {"cpu": "10m"}},
        "config": {"data": {"GREETING": greeting}},
    });
    if exposed {
        spec["ingress"] = json!({"host": "again.example.com"});
        spec["autoscaling"] = json!({"minReplicas": 1, "maxReplicas": 3});
    }
    serde_json::from_value(json!({
        "apiVersion": "gantry.dev/v1alpha1", "kind": "GoServer",
        "metadata": {"name": NAME},
        "spec": spec,
    }))
    .expect("a valid GoServer")
}

fn goservers_path(ns: &TestNamespace) -> String {
    path_of::<GoServer>(ns)
}

/// The collection path of `K` in `ns`, as the operator's watches ask for it.
fn path_of<K: Resource<DynamicType = ()>>(ns: &TestNamespace) -> String {
    K::url_path(&(), Some(&ns.name))
}

/// Deletes `name` and waits until it is gone.
async fn delete_and_wait<K>(api: &Api<K>, name: &str, params: &DeleteParams)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    api.delete(name, params).await.expect("deleting");
    wait_for_deletion(api, name, DEADLINE)
        .await
        .expect("gone in time");
}

/// `kind/name` of every child of `NAME` (gantry's labels) to its UID and
/// the UID of its controller.
async fn children(ns: &TestNamespace) -> BTreeMap<String, (String, String)> {
    async fn of<K>(ns: &TestNamespace, found: &mut BTreeMap<String, (String, String)>)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let selector =
            format!("app.kubernetes.io/managed-by=gantry,app.kubernetes.io/instance={NAME}");
        let list = ns
            .api::<K>()
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("listing children");
        for child in list {
            let controller = child
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone())
                .unwrap_or_default();
            found.insert(
                format!("{}/{}", K::kind(&()), child.name_any()),
                (child.uid().unwrap_or_default(), controller),
            );
        }
    }
    let mut found = BTreeMap::new();
    of::<Deployment>(ns, &mut found).await;
    of::<Service>(ns, &mut found).await;
    of::<ConfigMap>(ns, &mut found).await;
    of::<Ingress>(ns, &mut found).await;
    of::<HorizontalPodAutoscaler>(ns, &mut found).await;
    of::<ControllerRevision>(ns, &mut found).await;
    found
}

/// Waits until every child of `NAME` is controlled by `uid`: the garbage
/// collector has removed what an earlier object of the name left.
async fn wait_only_children_of(
    ns: &TestNamespace,
    uid: &str,
) -> BTreeMap<String, (String, String)> {
    wait_until("only the new object's children", DEADLINE, || async {
        let found = children(ns).await;
        if found.values().all(|(_, controller)| controller == uid) {
            Ok(Some(found))
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await
    .expect("the old object's children collected")
}

/// The children part of a snapshot (the `GoServer`'s own entry left out),
/// without the Deployment's revision number: the Deployment controller
/// counts every template a replaced Deployment had, the replacement's too.
fn children_of(snapshot: &Snapshot) -> Snapshot {
    let mut children = snapshot.clone();
    children.remove(snapshot::GOSERVER);
    if let Some(annotations) = children
        .get_mut(&format!("Deployment/{NAME}"))
        .and_then(|d| d["annotations"].as_object_mut())
    {
        annotations.remove("deployment.kubernetes.io/revision");
    }
    children
}

/// Sieve's stale-state test. An operator makes a `GoServer`; the proxy
/// freezes the `GoServer` collection (LISTs answered with the list of that
/// moment, watch events held); the `GoServer` is deleted and created again
/// under the same name with another spec (an Ingress and an HPA the old one
/// did not have), and a second operator, not behind the proxy, makes the
/// new one Ready. Then an operator starts behind the frozen proxy: it sees
/// the old object and none of its deletion, while its child watches show
/// the new object's children.
///
/// Oracles: while the view is stale, nothing of the new object changes
/// (its children keep their UIDs and owner, its status stays what it was)
/// and no write the stale operator makes names the old object's UID as an
/// owner; every delete it sends carries a UID precondition; once the view
/// catches up, the new object is Ready with the very same children.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_view_never_touches_a_recreated_goservers_children() {
    let ns = TestNamespace::new("op-stale").await;
    let proxy = WatchProxy::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    proxy.kubeconfig(&kubeconfig);
    let goservers: Api<GoServer> = ns.api();

    let first = Operator::start(&ns).await;
    let old = create_ready(&ns, &goserver("registry.example.com/again:1", "old", false)).await;
    let old_uid = old.uid().expect("the old GoServer's UID");
    proxy.freeze(&goservers_path(&ns)).await;
    first.kill();

    delete_and_wait(&goservers, NAME, &DeleteParams::background()).await;
    let second = Operator::start(&ns).await;
    let new = create_ready(&ns, &goserver("registry.example.com/again:2", "new", true)).await;
    let new_uid = new.uid().expect("the new GoServer's UID");
    assert_ne!(old_uid, new_uid);
    second.kill();
    // The old object's children are gone once the garbage collector has
    // been through; what is left is the new object's.
    let uids = wait_only_children_of(&ns, &new_uid).await;
    let (_, made) = snapshot::take(&ns, NAME).await;
    assert_eq!(snapshot::count(&made, "Ingress"), 1, "{made:#?}");
    let status = goservers.get_status(NAME).await.expect("the status").status;

    let stale = Operator::start_through(&ns, Some(&kubeconfig), &[], &[]).await;
    wait_until(
        "the stale operator to reconcile the old view",
        DEADLINE,
        || {
            let done = stale.count(NAME, "reconcile finished")
                + stale.count(NAME, "reconcile skipped: the cached GoServer is outdated")
                > 0;
            async move { Ok::<_, String>(done.then_some(())) }
        },
    )
    .await
    .expect("the stale operator reconciled");
    // Room for the garbage collector to act on a child whose owner the
    // stale view replaced (what the next checks would then see).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = children(&ns).await;
    assert_eq!(
        during, uids,
        "the new object's children changed under the stale view"
    );
    let (_, now) = snapshot::take(&ns, NAME).await;
    assert_eq!(
        snapshot::difference(&made, &now),
        "",
        "the new object's children or status changed under the stale view"
    );
    assert_eq!(
        goservers.get_status(NAME).await.expect("the status").status,
        status,
        "the stale view wrote the new object's status"
    );

    proxy.release(&goservers_path(&ns));
    // A change the operator must act on, to know it caught up, and that
    // makes it delete a child (the Ingress), to see how it deletes.
    goservers
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "config": {"data": {"GREETING": "caught up"}},
                "ingress": null,
            }})),
        )
        .await
        .expect("editing the new GoServer");
    let caught_up = wait_ready(&ns, NAME).await;
    assert_eq!(caught_up.uid().as_deref(), Some(new_uid.as_str()));
    let after = children(&ns).await;
    assert!(
        !after.contains_key(&format!("Ingress/{NAME}")),
        "the Ingress no longer wanted is still there: {after:?}"
    );
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler"] {
        let key = format!("{kind}/{NAME}");
        assert_eq!(
            after.get(&key),
            uids.get(&key),
            "{key} was deleted and made again, or changed owner"
        );
    }

    check_writes(&proxy.requests(), &old_uid);
}

/// Every write through the proxy: none that succeeded names `old_uid` (no
/// child handed to the old object, no status written for it), and every
/// delete carries a UID precondition (there is at least one).
fn check_writes(requests: &[Recorded], old_uid: &str) {
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .collect();
    assert!(
        writes.iter().any(|w| w.method == "DELETE"),
        "no delete went through the proxy: {writes:?}"
    );
    for write in &writes {
        assert!(
            !write.body.to_string().contains(old_uid) || write.status >= 400,
            "the stale operator wrote with the old UID: {} {} -> {}: {}",
            write.method,
            write.uri,
            write.status,
            write.body
        );
        if write.method == "DELETE" {
            assert!(
                write.body["preconditions"]["uid"].is_string(),
                "a delete without a UID precondition: {} {}",
                write.uri,
                write.body
            );
        }
    }
}

/// Deletes gantry's child `name` of kind `K` and creates one in its place
/// that looks like it (its labels, annotations and spec or data, as a
/// restore from a backup would make it) but has no owner, changed by
/// `change`.
async fn replace<K>(ns: &TestNamespace, name: &str, change: impl FnOnce(&mut Value))
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = ns.api();
    let live = serde_json::to_value(api.get(name).await.expect("the child")).expect("as JSON");
    delete_and_wait(&api, name, &DeleteParams::default()).await;
    let mut replacement = json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {
            "name": name,
            "labels": live["metadata"]["labels"],
            "annotations": live["metadata"]["annotations"],
        },
    });
    for part in ["spec", "data"] {
        if let Some(value) = live.get(part) {
            replacement[part] = value.clone();
        }
    }
    if let Some(spec) = replacement["spec"].as_object_mut() {
        // Addresses the apiserver hands out, not part of a restore.
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    change(&mut replacement);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(replacement).expect("the replacement"),
    )
    .await
    .expect("creating the replacement");
}

/// Replaces gantry's child of the kind `kind` names (see [`replace`]).
async fn replace_child(ns: &TestNamespace, kind: &str) {
    match kind {
        "Deployment" => {
            replace::<Deployment>(ns, NAME, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("registry.example.com/someone-else:1");
            })
            .await;
        }
        "Service" => {
            replace::<Service>(ns, NAME, |s| {
                s["spec"]["selector"] = json!({"app": "someone-else"});
            })
            .await;
        }
        "ConfigMap" => {
            let name = config_map_name(ns, NAME).await;
            replace::<ConfigMap>(ns, &name, |c| {
                c["data"]["GREETING"] = json!("someone else's");
            })
            .await;
        }
        "Ingress" => {
            replace::<Ingress>(ns, NAME, |i| {
                i["spec"]["rules"][0]["host"] = json!("someone-else.example.com");
            })
            .await;
        }
        "HorizontalPodAutoscaler" => {
            replace::<HorizontalPodAutoscaler>(ns, NAME, |h| {
                h["spec"]["maxReplicas"] = json!(9);
            })
            .await;
        }
        other => panic!("no replacement for {other}"),
    }
}

/// The collection path of gantry's children of `kind` in `ns`.
fn children_path(ns: &TestNamespace, kind: &str) -> String {
    match kind {
        "Deployment" => path_of::<Deployment>(ns),
        "Service" => path_of::<Service>(ns),
        "ConfigMap" => path_of::<ConfigMap>(ns),
        "Ingress" => path_of::<Ingress>(ns),
        "HorizontalPodAutoscaler" => path_of::<HorizontalPodAutoscaler>(ns),
        other => panic!("no path for {other}"),
    }
}

/// The kinds of gantry's children that a person can replace.
const CHILD_KINDS: [&str; 5] = [
    "Deployment",
    "Service",
    "ConfigMap",
    "Ingress",
    "HorizontalPodAutoscaler",
];

/// A watch proxy, and an operator that reaches the apiserver through it.
async fn behind_proxy(ns: &TestNamespace) -> (WatchProxy, Operator) {
    let proxy = WatchProxy::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    proxy.kubeconfig(&kubeconfig);
    // The operator has read its kubeconfig once it is ready.
    let operator = Operator::start_through(ns, Some(&kubeconfig), &[], &[]).await;
    (proxy, operator)
}

/// Sieve's lost-transient-state test. The proxy holds the `GoServer` and
/// Service watches and delivers only the last event of each object: the
/// operator never sees the config edited A→B→A (one event, with a
/// generation two ahead), nor its Service deleted (a replacement of the
/// same name and labels, without owner and selecting other pods, is all it
/// sees), first along with the edit; then a child of each kind is replaced
/// alone (a sample of the kinds; every kind with `--faults`). Oracle: the
/// end state equals the reference (the state before), every child
/// included.
#[tokio::test(flavor = "multi_thread")]
async fn coalesced_events_end_where_the_reference_did() {
    let ns = TestNamespace::new("op-coalesce").await;
    let (proxy, operator) = behind_proxy(&ns).await;
    let goservers: Api<GoServer> = ns.api();
    let uid = create_ready(&ns, &goserver("registry.example.com/again:1", "a", true))
        .await
        .uid()
        .expect("the GoServer's UID");
    let (_, reference) = snapshot::take(&ns, NAME).await;

    let services_path = path_of::<Service>(&ns);
    proxy.hold(&goservers_path(&ns), Delivery::Coalesced);
    proxy.hold(&services_path, Delivery::Coalesced);
    let finished = operator.count(NAME, "reconcile finished");
    for greeting in ["b", "a"] {
        goservers
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"config": {"data": {"GREETING": greeting}}}})),
            )
            .await
            .expect("editing the GoServer");
    }
    replace_child(&ns, "Service").await;
    proxy.release(&services_path);
    proxy.release(&goservers_path(&ns));

    wait_until("a reconcile of the coalesced edit", DEADLINE, || {
        let done = operator.count(NAME, "reconcile finished") > finished;
        async move { Ok::<_, String>(done.then_some(())) }
    })
    .await
    .expect("the operator reconciled after the release");
    wait_for_reference(&ns, &uid, &reference).await;

    // A replacement alone, with no edit of the GoServer to carry a
    // reconcile: the replacement's own event must. The events of the
    // GoServer and of every other child (pods coming up, the HPA's status)
    // are held meanwhile, so none carries one either.
    for at in sample(CHILD_KINDS.len() as u64, SAMPLED_KINDS) {
        let kind = CHILD_KINDS[usize::try_from(at - 1).expect("an index")];
        let paths: Vec<String> = std::iter::once(goservers_path(&ns))
            .chain(CHILD_KINDS.iter().map(|k| children_path(&ns, k)))
            .collect();
        for path in &paths {
            proxy.hold(path, Delivery::Coalesced);
        }
        replace_child(&ns, kind).await;
        proxy.release(&children_path(&ns, kind));
        // Children only: the operator compares the status it computes with
        // the one its (held) GoServer watch last showed, so the status
        // catches up once that watch does.
        wait_for_children(&ns, &uid, &reference).await;
        for path in &paths {
            proxy.release(path);
        }
        wait_for_reference(&ns, &uid, &reference).await;
    }
}

/// A watch that cannot resume (410 Gone, as after an etcd compaction)
/// while it held back a deletion: the relist must show the operator what it
/// missed. The Service is deleted while its watch holds the event (and the
/// watches of the `GoServer` and the Deployment hold theirs, which would
/// carry a reconcile of their own); then the watch expires and the event is
/// lost. Oracles: the relisted cache no longer has the Service, so the
/// operator makes it again, equal to the reference; nothing is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_watch_relists_what_it_missed() {
    let ns = TestNamespace::new("op-expired").await;
    let (proxy, _operator) = behind_proxy(&ns).await;
    let uid = create_ready(&ns, &goserver("registry.example.com/again:1", "a", false))
        .await
        .uid()
        .expect("the GoServer's UID");
    let (_, reference) = snapshot::take(&ns, NAME).await;

    let services_path = path_of::<Service>(&ns);
    let deployments_path = path_of::<Deployment>(&ns);
    for path in [&goservers_path(&ns), &deployments_path, &services_path] {
        proxy.hold(path, Delivery::All);
    }
    let services: Api<Service> = ns.api();
    delete_and_wait(&services, NAME, &DeleteParams::default()).await;
    proxy.expire(&services_path);
    wait_for_reference(&ns, &uid, &reference).await;
    proxy.release(&deployments_path);
    proxy.release(&goservers_path(&ns));

    let deletes: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert!(deletes.is_empty(), "the operator deleted: {deletes:?}");
}

/// Waits until the children of `NAME` equal those of `reference`, all
/// controlled by `uid`, and the `GoServer` is Ready.
async fn wait_for_reference(ns: &TestNamespace, uid: &str, reference: &Snapshot) {
    wait_ready(ns, NAME).await;
    wait_for_children(ns, uid, reference).await;
}

/// Waits until the children of `NAME` equal those of `reference`, all
/// controlled by `uid`.
async fn wait_for_children(ns: &TestNamespace, uid: &str, reference: &Snapshot) {
    wait_until(
        "the children to equal the reference",
        DEADLINE,
        || async move {
            let found = children(ns).await;
            if found.values().any(|(_, controller)| controller != uid) {
                return Err(format!("a child not controlled by the GoServer: {found:?}"));
            }
            let (_, got) = snapshot::take(ns, NAME).await;
            let difference = snapshot::difference(&children_of(reference), &children_of(&got));
            if difference.is_empty() {
                Ok(Some(()))
            } else {
                Err(difference)
            }
        },
    )
    .await
    .expect("the children equal the reference");
}
