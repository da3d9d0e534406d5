//! The reconcile loop: fetch, validate, build, apply, prune, report.
//!
//! ```text
//! GoServer or child event
//!   -> fetch     referenced Secrets exist? (metadata only: values are never read)
//!   -> validate  what the schema cannot check (build::validate)
//!   -> build     pure: &GoServer -> Children
//!   -> apply     server-side apply, field manager "gantry", only what differs
//!   -> prune     delete the Ingress / HPA the spec no longer wants
//!   -> status    computed from the Deployment, written only when it changed
//! ```
//!
//! Errors are sorted by [`Error::is_permanent`]: a permanent one is reported
//! in the `Degraded` condition and the `GoServer` waits for a change; a
//! transient one is retried with exponential backoff per object.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{self, FIELD_MANAGER, Outcome};
use crate::build::{self, Children, MANAGED_BY, MANAGED_BY_LABEL};
use crate::crd::{GoServer, GoServerStatus};
use crate::error::{Error, Result};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::status::{self, Observed};

/// A `GoServer` is reconciled at least this often, even without events.
const RESYNC: Duration = Duration::from_secs(600);
/// How often a `GoServer` waiting for a missing Secret looks again: Secrets
/// are not watched, so their creation is no event for the operator.
const MISSING_REFERENCE_RECHECK: Duration = Duration::from_secs(60);
/// Backoff bounds of transient errors.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// State shared by every reconcile.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Consecutive transient failures per `namespace/name`, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "gantry-operator".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn clear_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// Runs the controller until SIGINT or SIGTERM. With `namespace`, only that
/// namespace is watched. `health` turns ready once the `GoServer` watch has
/// listed everything; reconciles are counted in `metrics`.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let ctx = Arc::new(Context::new(client.clone(), metrics));

    info!(
        namespace = namespace.unwrap_or("*"),
        "gantry-operator starting"
    );
    let controller = Controller::new(
        api::<GoServer>(&client, namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    tokio::spawn(async move {
        // kube-runtime's store readiness sits behind a one-shot channel that
        // wakes only the last task to poll it, and the controller's runner
        // polls it too: a single wait here can sleep forever. The value is
        // kept once anyone has seen it, so asking again finds it.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    health.set_ready(true);
                    info!("watches synced, ready");
                    break;
                }
                // The writer is dropped only when the controller stops.
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
    });
    controller
        .owns(api::<Deployment>(&client, namespace), children.clone())
        .owns(api::<Service>(&client, namespace), children.clone())
        .owns(api::<ConfigMap>(&client, namespace), children.clone())
        .owns(api::<Ingress>(&client, namespace), children.clone())
        .owns(api::<HorizontalPodAutoscaler>(&client, namespace), children)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        })
        .await;
    info!("gantry-operator stopped");
}

fn next_reconcile_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Brings the children of one `GoServer` in line with its spec.
pub async fn reconcile(gs: Arc<GoServer>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = gs.namespace().unwrap_or_default(),
        goserver = gs.name_any(),
        reconcile_id = next_reconcile_id(),
    );
    let started = Instant::now();
    let result = Box::pin(reconcile_inner(&gs, &ctx).instrument(span)).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_inner(gs: &GoServer, ctx: &Context) -> Result<Action> {
    if gs.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children through their owner
        // references; there is nothing to keep in shape any more.
        return Ok(Action::await_change());
    }
    let key = build::display_name(gs);
    debug!(generation = gs.metadata.generation, "reconcile started");
    match Box::pin(sync(gs, ctx)).await {
        Ok((deployment, revision)) => {
            let observed = Observed {
                deployment: Some(&deployment),
                revision: Some(revision),
                error: None,
            };
            write_status(gs, ctx, &observed).await?;
            ctx.clear_failures(&key);
            info!(outcome = "ok", "reconcile finished");
            Ok(Action::requeue(RESYNC))
        }
        Err(err) if err.is_permanent() => {
            warn!(error = %err, category = err.category(), "reconcile stopped by a permanent error");
            let deployment = namespaced::<Deployment>(ctx, gs)?
                .get_opt(&gs.name_any())
                .await
                .map_err(|e| Error::kube("get Deployment", e))?;
            let observed = Observed {
                deployment: deployment.as_ref(),
                revision: None,
                error: Some(&err),
            };
            // An unchanged status means this error was reported already:
            // no second Event, no write.
            if write_status(gs, ctx, &observed).await? {
                publish_error(ctx, gs, &err).await;
            }
            Err(err)
        }
        Err(err) => {
            warn!(error = %err, category = err.category(), "reconcile failed, will retry");
            publish_error(ctx, gs, &err).await;
            Err(err)
        }
    }
}

/// Tells the controller when to look at a failed `GoServer` again.
// The signature is the one `Controller::run` asks for.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(gs: Arc<GoServer>, err: &Error, ctx: Arc<Context>) -> Action {
    match err {
        Error::SecretNotFound { .. } => Action::requeue(MISSING_REFERENCE_RECHECK),
        err if err.is_permanent() => Action::await_change(),
        _ => {
            let failures = ctx.record_failure(&build::display_name(&gs));
            Action::requeue(backoff(failures))
        }
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, ... 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// A Warning Event on the `GoServer` for a failed reconcile.
async fn publish_error(ctx: &Context, gs: &GoServer, err: &Error) {
    publish(
        ctx,
        gs,
        EventType::Warning,
        err.reason(),
        "Reconcile",
        err.to_string(),
        None,
    )
    .await;
}

fn namespaced<K>(ctx: &Context, gs: &GoServer) -> Result<Api<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    let ns = gs
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), ns))
}

/// Fetch, validate, build, apply and prune. Returns the live Deployment and
/// the revision of its template.
async fn sync(gs: &GoServer, ctx: &Context) -> Result<(Deployment, String)> {
    // Fetch: every referenced Secret must exist. Only metadata is requested.
    let secrets = namespaced::<Secret>(ctx, gs)?;
    for secret in &gs.spec.secrets {
        match secrets.get_metadata_opt(&secret.name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::SecretNotFound {
                    name: secret.name.clone(),
                });
            }
            // Without `get` on Secrets the check cannot be made; the pods
            // then report a missing Secret themselves.
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(
                    secret = %secret.name,
                    "not allowed to check that referenced Secrets exist; skipping the check"
                );
                break;
            }
            Err(e) => return Err(Error::kube(format!("get Secret {}", secret.name), e)),
        }
    }

    build::validate(gs)?;
    let children = build::build(gs)?;
    let Children {
        deployment,
        service,
        config_map,
        ingress,
        hpa,
        revision,
    } = children;

    // The ConfigMap goes first: the pods load it at start.
    apply_child(ctx, gs, &config_map).await?;
    if deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.replicas.is_none())
    {
        hand_over_replicas(ctx, gs, &deployment.name_any()).await?;
    }
    let live_deployment = apply_child(ctx, gs, &deployment).await?;
    apply_child(ctx, gs, &service).await?;
    let name = gs.name_any();
    match ingress {
        Some(ingress) => {
            apply_child(ctx, gs, &ingress).await?;
        }
        None => prune::<Ingress>(ctx, gs, &name).await?,
    }
    match hpa {
        Some(hpa) => {
            apply_child(ctx, gs, &hpa).await?;
        }
        None => prune::<HorizontalPodAutoscaler>(ctx, gs, &name).await?,
    }
    Ok((live_deployment, revision))
}

/// Field manager that keeps `spec.replicas` when autoscaling takes over.
const REPLICAS_HANDOVER_MANAGER: &str = "gantry-replicas-handover";

/// When autoscaling is switched on, the operator stops applying
/// `spec.replicas` so the HPA owns it. Server-side apply removes a field its
/// only owner stops applying, and the Deployment would fall back to one
/// replica until the HPA acted: an outage for a server that ran at ten. So,
/// once, while `gantry` still owns the field, the current count is applied
/// under a second manager; dropping it from gantry's apply then leaves the
/// value in place, and the HPA scales from there.
async fn hand_over_replicas(ctx: &Context, gs: &GoServer, name: &str) -> Result<()> {
    let api = namespaced::<Deployment>(ctx, gs)?;
    let Some(live) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {name}"), e))?
    else {
        return Ok(());
    };
    let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
        return Ok(());
    };
    if !owns_replicas(&live, FIELD_MANAGER) {
        return Ok(());
    }
    let handover = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force(),
        &Patch::Apply(&handover),
    )
    .await
    .map_err(|e| Error::from_write("Deployment", name, e))?;
    info!(child = %name, replicas, "replicas handed over to autoscaling");
    Ok(())
}

/// Whether `manager` holds `spec.replicas` of `deployment` through apply.
fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
}

async fn apply_child<K>(ctx: &Context, gs: &GoServer, desired: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api = namespaced::<K>(ctx, gs)?;
    let (live, outcome) = apply::apply(&api, desired).await?;
    let kind = K::kind(&());
    let name = desired.name_any();
    match outcome {
        Outcome::Unchanged => debug!(%kind, child = %name, "child up to date"),
        Outcome::Created | Outcome::Updated => {
            let reason = if outcome == Outcome::Created {
                "Created"
            } else {
                "Updated"
            };
            info!(%kind, child = %name, action = reason, "child applied");
            publish(
                ctx,
                gs,
                EventType::Normal,
                reason,
                "Apply",
                format!("{reason} {kind} {name}"),
                Some(desired.object_ref(&())),
            )
            .await;
        }
    }
    Ok(live)
}

async fn prune<K>(ctx: &Context, gs: &GoServer, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let uid = gs
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingObjectKey("uid"))?;
    let api = namespaced::<K>(ctx, gs)?;
    if apply::delete_owned(&api, name, uid).await? {
        let kind = K::kind(&());
        info!(%kind, child = %name, action = "Deleted", "child no longer wanted, deleted");
        publish(
            ctx,
            gs,
            EventType::Normal,
            "Deleted",
            "Prune",
            format!("Deleted {kind} {name}"),
            Some(ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(kind.into_owned()),
                name: Some(name.to_owned()),
                namespace: gs.metadata.namespace.clone(),
                ..ObjectReference::default()
            }),
        )
        .await;
    }
    Ok(())
}

/// Writes the status when it differs from the stored one. Returns whether
/// it wrote.
async fn write_status(gs: &GoServer, ctx: &Context, observed: &Observed<'_>) -> Result<bool> {
    let now = Time(
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()),
    );
    let new = status::compute(gs, observed, &now);
    if gs.status.as_ref() == Some(&new) {
        return Ok(false);
    }
    patch_status(gs, ctx, &new).await?;
    let ready = status::condition(&new, status::READY).map_or("Unknown", |c| c.status.as_str());
    info!(
        ready,
        revision = new.revision.as_deref().unwrap_or(""),
        "status updated"
    );
    Ok(true)
}

async fn patch_status(gs: &GoServer, ctx: &Context, status: &GoServerStatus) -> Result<()> {
    let api = namespaced::<GoServer>(ctx, gs)?;
    // Applying the whole status lets fields that are gone (a URL after the
    // Ingress was removed) disappear, which a merge patch would keep.
    let body = json!({
        "apiVersion": GoServer::api_version(&()),
        "kind": GoServer::kind(&()),
        "status": status,
    });
    api.patch_status(
        &gs.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::kube("patch GoServer status", e))?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    gs: &GoServer,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    // The child concerned; Events about different children are then kept
    // apart instead of being folded into one series.
    secondary: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary,
    };
    if let Err(err) = ctx.recorder.publish(&event, &gs.object_ref(&())).await {
        warn!(error = %err, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_managed_by(entries: &serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "managedFields": entries}}))
            .unwrap()
    }

    #[test]
    fn replicas_ownership_is_read_from_apply_entries_only() {
        let applied = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
        ]));
        assert!(owns_replicas(&applied, "gantry"));
        assert!(!owns_replicas(&applied, "kube-controller-manager"));

        // After the handover gantry's apply no longer lists the field, and
        // an Update by the HPA's controller does not count as gantry's.
        let handed_over = deployment_managed_by(&json!([
            {"manager": "gantry", "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "gantry", "operation": "Update",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": REPLICAS_HANDOVER_MANAGER, "operation": "Apply",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]));
        assert!(!owns_replicas(&handed_over, "gantry"));
        assert!(owns_replicas(&handed_over, REPLICAS_HANDOVER_MANAGER));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
