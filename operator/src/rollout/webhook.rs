//! The verification webhook: one POST per decision.
//!
//! The body is JSON: `{id, event, goserver, namespace, revision,
//! previousGoodRevision, message, measurements}`. With a signing key (a file
//! given to the operator) the body is signed with HMAC-SHA256 in the header
//! `X-Gantry-Signature: sha256=<hex>`, so a receiver can tell Gantry from
//! anyone who learned the URL. Calls run in a task of their own with a few
//! retries and backoff; a reconcile never waits for one, and a receiver
//! that keeps failing is reported as an Event, not as a reconcile error.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::Method;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::Decided;
use super::http::HttpClient;
use crate::crd::{GoServer, MetricStatus};
use kube::ResourceExt;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Gantry-Signature";
/// Attempts per call, and the wait before the first retry (then doubled).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a receiver gets.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The same for every delivery of one decision (the `GoServer`'s UID,
    /// the revision and the event), so a receiver can drop a repeat: a
    /// decision is told at least once, and again when the operator stopped
    /// between telling it and recording that it did.
    pub id: String,
    pub event: &'static str,
    pub goserver: String,
    pub namespace: String,
    pub revision: String,
    pub previous_good_revision: Option<String>,
    pub message: String,
    pub measurements: Vec<MetricStatus>,
}

impl Payload {
    pub fn new(gs: &GoServer, decided: &Decided) -> Self {
        Self {
            id: decided.id(gs),
            event: decided.event.as_str(),
            goserver: gs.name_any(),
            namespace: gs.namespace().unwrap_or_default(),
            revision: decided.revision.clone(),
            previous_good_revision: decided.previous_good_revision.clone(),
            message: decided.message.clone(),
            measurements: decided.measurements.clone(),
        }
    }
}

/// Sends webhook calls.
#[derive(Clone, Debug)]
pub struct Sender {
    http: HttpClient,
    signing_key_file: Option<PathBuf>,
    first_retry: Duration,
}

impl Sender {
    pub fn new(signing_key_file: Option<PathBuf>) -> Self {
        Self {
            http: HttpClient::new(),
            signing_key_file,
            first_retry: FIRST_RETRY,
        }
    }

    /// The same, retrying sooner (for tests).
    #[must_use]
    pub fn with_first_retry(mut self, first_retry: Duration) -> Self {
        self.first_retry = first_retry;
        self
    }

    /// POSTs `payload` to `url`, retrying with backoff; the error of the
    /// last attempt when every one failed.
    pub async fn send(&self, url: &str, payload: &Payload) -> Result<(), String> {
        let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
        let signature = match &self.signing_key_file {
            Some(path) => {
                let key = std::fs::read(path)
                    .map_err(|e| format!("reading the signing key {}: {e}", path.display()))?;
                Some(sign(trim_newline(&key), &body))
            }
            None => None,
        };
        let mut wait = self.first_retry;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let headers: Vec<(&str, &str)> = signature
                .as_deref()
                .map(|value| (SIGNATURE_HEADER, value))
                .into_iter()
                .collect();
            match self
                .http
                .send(Method::POST, url, &headers, Some(body.clone()), TIMEOUT)
                .await
            {
                Ok((status, _)) if status.is_success() => return Ok(()),
                Ok((status, _)) => last = format!("the receiver answered {status}"),
                Err(err) => last = err,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        Err(format!("{last} (after {ATTEMPTS} attempts)"))
    }
}

fn trim_newline(key: &[u8]) -> &[u8] {
    key.strip_suffix(b"\n").unwrap_or(key)
}

/// `sha256=<hex of HMAC-SHA256(key, body)>`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
