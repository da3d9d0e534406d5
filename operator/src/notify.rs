//! Telling decisions: the Events and the webhook deliveries of the outbox
//! ([`crate::rollout::outbox`]).
//!
//! ```text
//! status write records a decision (outbox entry: Event untold, receivers pending)
//!   -> record_events: one Event per decision, named by its id (a second
//!      try gets 409 and counts as done), the ControllerRevision related
//!   -> deliver: one task per due delivery not in flight here; its answer
//!      is kept in memory and wakes the GoServer's reconcile
//!   -> the next status write folds what was learnt into the outbox
//!      (outbox::settle) and forgets it here
//! ```
//!
//! The memory is this process's only: what it has not written into a
//! status yet is learnt again after a restart (an Event found existing, a
//! delivery made again), which is why a receiver may see a decision twice
//! and never not at all.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::crd::{DecisionKind, GoServer, Notification, ReceiverFormat};
use crate::fault;
use crate::metrics::Metrics;
use crate::rollout::outbox::{self, Attempt, Key, Learnt};
use crate::rollout::webhook::{Payload, Sender};

/// The controller named in the Events it records.
pub const CONTROLLER: &str = "gantry-operator";

/// What this process knows of one `GoServer`'s outbox.
#[derive(Default)]
struct Memory {
    /// Its `ObjectRef`, to wake its reconcile and to drop it once gone.
    object: Option<ObjectRef<GoServer>>,
    learnt: Learnt,
    in_flight: HashSet<Key>,
}

/// Tells decisions; shared by every reconcile.
pub struct Notifier {
    client: Client,
    recorder: Recorder,
    instance: String,
    sender: Sender,
    metrics: Arc<Metrics>,
    memory: Arc<Mutex<HashMap<String, Memory>>>,
    /// Wakes the reconcile of a `GoServer` whose delivery was answered.
    wake: UnboundedSender<ObjectRef<GoServer>>,
}

impl Notifier {
    pub fn new(
        client: Client,
        recorder: Recorder,
        instance: Option<String>,
        signing_key_file: Option<PathBuf>,
        metrics: Arc<Metrics>,
        wake: UnboundedSender<ObjectRef<GoServer>>,
    ) -> Self {
        Self {
            client,
            recorder,
            instance: instance.unwrap_or_else(|| CONTROLLER.to_owned()),
            sender: Sender::new(signing_key_file),
            metrics,
            memory: Arc::default(),
            wake,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Memory>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was learnt about `gs`'s outbox and not written yet.
    pub fn learnt(&self, gs: &GoServer) -> Learnt {
        let uid = gs.uid().unwrap_or_default();
        self.lock()
            .get(&uid)
            .map(|m| m.learnt.clone())
            .unwrap_or_default()
    }

    /// Forgets `written`, now that a status holding it is written (or was
    /// already); what was learnt meanwhile stays.
    pub fn forget(&self, gs: &GoServer, written: &Learnt) {
        if written.is_empty() {
            return;
        }
        let uid = gs.uid().unwrap_or_default();
        let mut memory = self.lock();
        if let Some(m) = memory.get_mut(&uid) {
            for id in &written.recorded {
                m.learnt.recorded.remove(id);
            }
            for (key, attempt) in &written.attempts {
                if m.learnt.attempts.get(key) == Some(attempt) {
                    m.learnt.attempts.remove(key);
                }
            }
        }
    }

    /// Drops what is kept about `GoServers` that `live` says are gone.
    pub fn drop_gone(&self, live: impl Fn(&ObjectRef<GoServer>, &str) -> bool) {
        self.lock().retain(|uid, m| {
            m.object
                .as_ref()
                .is_none_or(|object| live(object, uid) || !m.in_flight.is_empty())
        });
    }

    /// Records the Event of every decision in `outbox` not recorded yet;
    /// whether any was (the outbox then changes at the next write).
    pub async fn record_events(&self, gs: &GoServer, outbox: &[Notification]) -> bool {
        let uid = gs.uid().unwrap_or_default();
        let mut recorded = false;
        for decision in outbox.iter().filter(|n| !n.recorded) {
            if self
                .lock()
                .get(&uid)
                .is_some_and(|m| m.learnt.recorded.contains(&decision.id))
            {
                continue;
            }
            // The status holds the decision; nothing of it is told yet.
            fault::crash_point("decision-recorded", decision.event.as_str());
            info!(
                decision = decision.event.as_str(),
                id = %decision.id,
                revision = %decision.revision,
                "{}", decision.message
            );
            match fault::in_phase("tell", self.create_event(gs, decision)).await {
                Ok(()) => {
                    let mut memory = self.lock();
                    let m = memory.entry(uid.clone()).or_default();
                    m.object.get_or_insert_with(|| ObjectRef::from_obj(gs));
                    m.learnt.recorded.insert(decision.id.clone());
                    recorded = true;
                }
                Err(err) => {
                    warn!(error = %err, id = %decision.id, "could not record a decision's Event");
                }
            }
        }
        recorded
    }

    /// The decision's Event, named by its id: created once, whatever the
    /// number of tries. Its related object is the revision decided on, so
    /// `kubectl describe` names it and two revisions' decisions never fold
    /// into one series.
    async fn create_event(
        &self,
        gs: &GoServer,
        decision: &Notification,
    ) -> Result<(), kube::Error> {
        let namespace = gs.namespace().unwrap_or_default();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(event_name(&gs.name_any(), &decision.id)),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some("Verify".to_owned()),
            reason: Some(decision.event.as_str().to_owned()),
            note: Some(decision.message.clone()),
            type_: Some(
                if decision.event == DecisionKind::Verified {
                    "Normal"
                } else {
                    "Warning"
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(crate::clock::now_precise())),
            regarding: Some(gs.object_ref(&())),
            related: Some(ObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: Some("ControllerRevision".to_owned()),
                name: Some(decision.revision.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            // Recorded by an earlier try: told already.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Starts a delivery for every one due in `outbox` that is not under
    /// way here already. Each answers into this process's memory and wakes
    /// the `GoServer`'s reconcile.
    pub fn deliver(&self, gs: &GoServer, outbox: &[Notification], now: &Time) {
        let uid = gs.uid().unwrap_or_default();
        for key in outbox::due(outbox, now) {
            let Some(decision) = outbox.iter().find(|n| n.id == key.id) else {
                continue;
            };
            let Some((url, _format)) = receiver(gs, &key.receiver) else {
                continue;
            };
            {
                let mut memory = self.lock();
                let m = memory.entry(uid.clone()).or_default();
                m.object.get_or_insert_with(|| ObjectRef::from_obj(gs));
                // Under way, or answered and not written yet.
                if m.in_flight.contains(&key) || m.learnt.attempts.contains_key(&key) {
                    continue;
                }
                m.in_flight.insert(key.clone());
            }
            let payload = Payload::new(gs, decision);
            let sender = self.sender.clone();
            let memory = Arc::clone(&self.memory);
            let metrics = Arc::clone(&self.metrics);
            let wake = self.wake.clone();
            let recorder = self.recorder.clone();
            let reference = gs.object_ref(&());
            let object = ObjectRef::from_obj(gs);
            let uid = uid.clone();
            tokio::spawn(async move {
                let result = sender
                    .send(&url, &payload, crate::clock::now().0.as_second())
                    .await;
                metrics.delivered(result.is_ok());
                let attempt = match &result {
                    Ok(()) => {
                        info!(receiver = %key.receiver, id = %key.id, "decision delivered");
                        Attempt::Delivered
                    }
                    Err(error) => {
                        warn!(receiver = %key.receiver, id = %key.id, %error, "a decision's delivery failed; it is retried");
                        Attempt::Failed {
                            error: error.clone(),
                            at: crate::clock::now(),
                            jitter: fastrand::f64(),
                        }
                    }
                };
                {
                    let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                    let m = memory.entry(uid).or_default();
                    m.in_flight.remove(&key);
                    m.learnt.attempts.insert(key.clone(), attempt);
                }
                if let Err(error) = result {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "WebhookFailed".to_owned(),
                        note: Some(format!(
                            "receiver {}: {error}; retried with backoff until it answers",
                            key.receiver
                        )),
                        action: "Notify".to_owned(),
                        secondary: None,
                    };
                    if let Err(err) = recorder.publish(&event, &reference).await {
                        warn!(error = %err, "could not publish an Event");
                    }
                }
                let _ = wake.unbounded_send(object);
            });
        }
    }
}

/// The URL and format of the receiver `name` in the spec of `gs`.
fn receiver(gs: &GoServer, name: &str) -> Option<(String, ReceiverFormat)> {
    let spec = crate::rollout::spec(gs)?;
    if name == outbox::WEBHOOK
        && let Some(webhook) = &spec.webhook
    {
        return Some((webhook.url.clone(), ReceiverFormat::Generic));
    }
    spec.receivers
        .iter()
        .find(|r| r.name == name)
        .map(|r| (r.url.clone(), r.format))
}

/// `<goserver>.<16 hex of the id's SHA-256>`: one Event per decision.
pub fn event_name(goserver: &str, id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("{goserver}.{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_decision_has_an_event_name_of_its_own() {
        let a = event_name("shop", "0193-a");
        assert_eq!(a, event_name("shop", "0193-a"));
        assert_ne!(a, event_name("shop", "0193-b"));
        assert!(
            a.starts_with("shop.") && a.len() == "shop.".len() + 16,
            "{a}"
        );
    }
}
