//! Leader election through a `coordination.k8s.io/v1` Lease, so that of
//! several replicas only one writes.
//!
//! ```text
//! start -> standby: try to acquire every RETRY (2 s); ready, not writing
//!       -> leader:  run the controller; renew every RENEW (5 s)
//!                   renewal impossible for RENEW_DEADLINE (10 s), or the
//!                   Lease names someone else -> exit non-zero
//!                   SIGTERM -> controller stops -> release the Lease
//! ```
//!
//! A Lease is free when it names no holder or when its `renewTime` plus
//! `leaseDurationSeconds` (15 s) has passed. Every write is a replace that
//! carries the `resourceVersion` that was read, so of two candidates that
//! both saw a free Lease only one write succeeds (the other gets 409
//! Conflict and stays standby). The defaults are client-go's; like
//! client-go's elector this assumes the candidates' clocks roughly agree
//! (the renew deadline, 5 s shorter than the lease, absorbs small skew).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// How long a Lease stays held without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// How long the leader keeps writing without a successful renewal. Shorter
/// than the lease, so it has stopped before a standby may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a standby (or a leader whose renewal failed) tries again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Who holds a Lease, as seen by one candidate at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Nobody, or a holder whose lease ran out: anyone may take it.
    Free,
    /// The candidate asking.
    Me,
    /// Another candidate, until its lease runs out.
    Other(String),
}

/// Who holds the Lease whose spec is `spec`, for candidate `me` at `now`.
/// A Lease without a renew time or a positive duration counts as expired:
/// a holder that wrote no such fields cannot be proven alive.
pub fn holder(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Holder {
    let Some(spec) = spec else {
        return Holder::Free;
    };
    let identity = match spec.holder_identity.as_deref() {
        None | Some("") => return Holder::Free,
        Some(identity) => identity,
    };
    if identity == me {
        return Holder::Me;
    }
    let (Some(renewed), Some(seconds)) = (
        spec.renew_time.as_ref().or(spec.acquire_time.as_ref()),
        spec.lease_duration_seconds.filter(|s| *s > 0),
    ) else {
        return Holder::Free;
    };
    let expires = renewed
        .0
        .saturating_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(Timestamp::MAX);
    if now >= expires {
        Holder::Free
    } else {
        Holder::Other(identity.to_owned())
    }
}

/// The spec `me` writes to take or renew the Lease at `now`. A renewal
/// keeps the acquire time and the transition count; a takeover starts
/// both anew.
pub fn claim(previous: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseSpec {
    let renewing = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(me));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(seconds(LEASE_DURATION)),
        renew_time: Some(MicroTime(now)),
        acquire_time: if renewing {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(if renewing {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..previous.cloned().unwrap_or_default()
    }
}

/// The spec a leader that stops writes: no holder, and a one-second lease,
/// so a standby takes over at its next attempt instead of after 15 s.
pub fn released(previous: &LeaseSpec) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        ..previous.clone()
    }
}

/// Whether a leader whose last successful renewal was at `last_renewed`
/// must stop writing at `now`.
pub fn must_step_down(last_renewed: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_renewed) >= RENEW_DEADLINE
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The identity written into the Lease: the pod's name (from the downward
/// API) or, outside a cluster, the host name and process id, so two
/// processes on one machine differ.
pub fn identity(pod_name: Option<&str>) -> String {
    if let Some(name) = pod_name.filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gantry-operator".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the Lease (it took or renewed it).
    Leading,
    /// Another candidate holds it.
    HeldBy(String),
    /// Another write came first (409 Conflict); try again later.
    Raced,
}

/// Takes, renews and releases one Lease for one identity.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to take or renew the Lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt> {
        let now = Timestamp::now();
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("get Lease", e))?;
        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(claim(None, &self.identity, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Raced),
                Err(e) => Err(Error::kube("create Lease", e)),
            };
        };
        if let Holder::Other(identity) = holder(lease.spec.as_ref(), &self.identity, now) {
            return Ok(Attempt::HeldBy(identity));
        }
        lease.spec = Some(claim(lease.spec.as_ref(), &self.identity, now));
        // `lease` still carries the resourceVersion that was read: the
        // apiserver refuses the replace if anyone wrote in between.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Raced),
            Err(e) => Err(Error::kube("update Lease", e)),
        }
    }

    /// Gives the Lease up if this process still holds it.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("get Lease", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released(spec));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| Error::kube("release Lease", e))?;
        Ok(())
    }

    /// Waits until this process holds the Lease. Failed attempts are
    /// logged and retried: a standby has nothing better to do.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return,
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(leader = %holder, "another replica leads; standing by");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Raced) => {}
                Err(err) => warn!(error = %err, "could not take the leader Lease"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease until that becomes impossible; returns why this
    /// process must stop writing. It never returns while leadership holds.
    pub async fn keep_renewing(&self) -> Error {
        let mut last_renewed = Instant::now();
        let mut wait = RENEW_PERIOD;
        loop {
            tokio::time::sleep(wait).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    last_renewed = Instant::now();
                    wait = RENEW_PERIOD;
                    continue;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    return Error::LeadershipLost(format!("the Lease is held by {holder}"));
                }
                Ok(Attempt::Raced) => warn!("renewing the leader Lease raced another write"),
                Err(err) => warn!(error = %err, "could not renew the leader Lease"),
            }
            if must_step_down(last_renewed, Instant::now()) {
                return Error::LeadershipLost(format!(
                    "not renewed for {}s",
                    RENEW_DEADLINE.as_secs()
                ));
            }
            wait = RETRY_PERIOD;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn held(by: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.to_owned()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_or_empty_lease_is_free() {
        assert_eq!(holder(None, "a", at(0)), Holder::Free);
        assert_eq!(
            holder(Some(&LeaseSpec::default()), "a", at(0)),
            Holder::Free
        );
        let mut spec = held("b", 0, 15);
        spec.holder_identity = Some(String::new());
        assert_eq!(holder(Some(&spec), "a", at(1)), Holder::Free);
    }

    #[test]
    fn another_holder_counts_until_the_lease_runs_out() {
        let spec = held("b", 10, 15);
        assert_eq!(
            holder(Some(&spec), "a", at(24)),
            Holder::Other("b".to_owned())
        );
        assert_eq!(holder(Some(&spec), "a", at(25)), Holder::Free);
        assert_eq!(holder(Some(&spec), "a", at(100)), Holder::Free);
    }

    #[test]
    fn the_holder_sees_itself_even_after_expiry() {
        // It may renew an expired Lease that nobody else took; the write's
        // resourceVersion check settles a race with a taker.
        assert_eq!(holder(Some(&held("a", 0, 15)), "a", at(100)), Holder::Me);
    }

    #[test]
    fn a_lease_without_duration_or_renew_time_is_free() {
        let mut spec = held("b", 10, 0);
        assert_eq!(holder(Some(&spec), "a", at(11)), Holder::Free);
        spec.lease_duration_seconds = Some(15);
        spec.renew_time = None;
        spec.acquire_time = None;
        assert_eq!(holder(Some(&spec), "a", at(11)), Holder::Free);
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let spec = released(&held("b", 10, 15));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(holder(Some(&spec), "a", at(10)), Holder::Free);
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let spec = claim(Some(&held("a", 10, 15)), "a", at(15));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.renew_time, Some(MicroTime(at(15))));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn takeover_starts_a_new_term() {
        let spec = claim(Some(&held("b", 10, 15)), "a", at(30));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(spec.lease_transitions, Some(4));
        let first = claim(None, "a", at(30));
        assert_eq!(first.lease_transitions, Some(1));
        assert_eq!(first.acquire_time, Some(MicroTime(at(30))));
    }

    #[test]
    fn the_leader_steps_down_before_the_lease_could_pass_on() {
        let renewed = Instant::now();
        assert!(!must_step_down(renewed, renewed + Duration::from_secs(9)));
        assert!(must_step_down(renewed, renewed + RENEW_DEADLINE));
        assert!(RENEW_DEADLINE < LEASE_DURATION);
    }
}
