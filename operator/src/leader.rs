//! Leader election through a `coordination.k8s.io/v1` Lease, so that of
//! several replicas only one writes. The Lease protocol is
//! kube-lease-manager's; this module holds the operator's policy on top:
//!
//! ```text
//! start -> standby: ready, not writing; take the Lease once it is free
//!       -> leader:  run the controller; the manager renews the Lease
//!                   (every LEASE_DURATION - GRACE = 5 s)
//!                   another holder, or renewals failing for STEP_DOWN_AFTER
//!                   (5 s, so it stops well before the 15 s lease runs out)
//!                   -> exit non-zero
//!                   SIGTERM -> controller stops -> release the Lease
//! ```
//!
//! The durations are client-go's defaults: a 15 s lease, renewed 10 s
//! before it runs out. Like client-go's elector this assumes the
//! candidates' clocks roughly agree; the margin between stepping down and
//! the lease running out absorbs small skew.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// How long a Lease stays held without renewal, in seconds.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// The leader renews when this many seconds of its lease remain.
pub const GRACE_SECONDS: u64 = 10;
/// How long renewals may fail, counted from the first failure (which comes
/// when 10 s of the lease remain), before the leader stops writing.
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(5);
/// How long a standby waits after an error before it tries again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

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

/// Whether renewals failing since `first_failure` must stop the leader.
pub fn must_step_down(first_failure: Instant, now: Instant) -> bool {
    now.saturating_duration_since(first_failure) >= STEP_DOWN_AFTER
}

/// Takes, keeps and releases one Lease for one identity.
pub struct Elector {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn manager(&self) -> Result<LeaseManager> {
        LeaseManagerBuilder::new(self.client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await
            .map_err(|e| Error::LeaseManager(e.to_string()))
    }

    /// Waits until this process holds the Lease and returns the manager
    /// that keeps it. Errors are logged and retried: a standby has nothing
    /// better to do.
    pub async fn acquire(&self) -> Leadership {
        loop {
            let manager = match self.manager().await {
                Ok(manager) => manager,
                Err(err) => {
                    warn!(error = %err, "could not reach the leader Lease");
                    tokio::time::sleep(RETRY_PERIOD).await;
                    continue;
                }
            };
            let mut last_holder = None;
            loop {
                // While the manager waits for the Lease, say who holds it,
                // once per holder: an operator wants to know which replica
                // writes.
                let outcome = {
                    let changed = manager.changed();
                    tokio::pin!(changed);
                    let mut look = tokio::time::interval(RETRY_PERIOD);
                    loop {
                        tokio::select! {
                            outcome = &mut changed => break outcome,
                            _ = look.tick() => self.log_holder(&mut last_holder).await,
                        }
                    }
                };
                match outcome {
                    Ok(true) => return Leadership { manager },
                    Ok(false) => {}
                    Err(err) => {
                        warn!(error = %err, "could not take the leader Lease");
                        tokio::time::sleep(RETRY_PERIOD).await;
                    }
                }
            }
        }
    }

    async fn log_holder(&self, last: &mut Option<String>) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let holder = match leases.get_opt(&self.name).await {
            Ok(lease) => lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| *h != self.identity),
            Err(err) => {
                debug!(error = %err, "could not read the leader Lease");
                return;
            }
        };
        if let Some(holder) = holder
            && last.as_ref() != Some(&holder)
        {
            info!(leader = %holder, "another replica leads; standing by");
            *last = Some(holder);
        }
    }
}

/// The Lease, held.
pub struct Leadership {
    manager: LeaseManager,
}

impl Leadership {
    /// Keeps renewing until leadership is lost; returns why this process
    /// must stop writing. It never returns while leadership holds.
    pub async fn keep(&self) -> Error {
        let mut first_failure: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.manager.changed().await {
                Ok(false) => {
                    return Error::LeadershipLost("another candidate holds the Lease".to_owned());
                }
                Ok(true) => {}
                Err(err) => {
                    // A call that ran for a renewal period before failing
                    // renewed successfully in between: the failures start
                    // anew.
                    let now = Instant::now();
                    if now.saturating_duration_since(started)
                        >= Duration::from_secs(LEASE_DURATION_SECONDS - GRACE_SECONDS)
                    {
                        first_failure = None;
                    }
                    let since = *first_failure.get_or_insert(now);
                    warn!(error = %err, "could not renew the leader Lease");
                    if must_step_down(since, now) {
                        return Error::LeadershipLost(format!(
                            "not renewed for {}s: {err}",
                            STEP_DOWN_AFTER.as_secs()
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Gives the Lease up, so a standby takes over at once instead of
    /// waiting for it to run out.
    pub async fn release(&self) -> Result<()> {
        self.manager
            .release()
            .await
            .map_err(|e| Error::LeaseManager(e.to_string()))?;
        info!("released the leader Lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_steps_down_before_the_lease_runs_out() {
        let first = Instant::now();
        assert!(!must_step_down(first, first + Duration::from_secs(4)));
        assert!(must_step_down(first, first + STEP_DOWN_AFTER));
        // The first failure comes when GRACE_SECONDS remain; stepping down
        // must come before the lease expires, with room for clock skew.
        assert!(STEP_DOWN_AFTER < Duration::from_secs(GRACE_SECONDS));
    }

    #[test]
    fn identity_prefers_the_pod_name() {
        assert_eq!(identity(Some("gantry-0")), "gantry-0");
        let fallback = identity(None);
        assert!(
            fallback.ends_with(&format!("-{}", std::process::id())),
            "{fallback}"
        );
        assert_eq!(identity(Some("")), fallback);
    }
}
