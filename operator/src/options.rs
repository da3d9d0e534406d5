//! How the operator runs: what `main` reads from its flags and
//! environment, handed to [`crate::run`] and, by reference, to the
//! controller.

use std::path::PathBuf;

/// How `run` should behave.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Serve `/healthz`, `/readyz` and `/metrics` here; `None`: not at all.
    pub http_address: Option<String>,
    /// Write only while holding this Lease; `None`: always write.
    pub leader_election: Option<LeaderElection>,
    /// Names this replica in the Events it records (the pod's name).
    pub instance: Option<String>,
    /// `GoServers` reconciled at once; 0 means no limit.
    pub concurrency: u16,
    /// The default Prometheus of rollout verification.
    pub prometheus_url: Option<String>,
    /// A bearer token file sent to `prometheus_url` (and nowhere else).
    pub prometheus_token_file: Option<PathBuf>,
    /// The key file that signs verification webhook calls.
    pub webhook_signing_key_file: Option<PathBuf>,
}

/// Which Lease decides the leader, and who this process is.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}
