//! One POST of a decision to a receiver.
//!
//! The body is JSON: `{id, event, goserver, namespace, revision,
//! previousGoodRevision, message, decidedAt, measurements}`. With a signing
//! key (a file given to the operator) each call is signed as the Standard
//! Webhooks specification says: `webhook-id` (the decision's id),
//! `webhook-timestamp` (Unix seconds, at this attempt) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256 over "id.timestamp.body">`,
//! so a receiver can tell Gantry from anyone who learned the URL and refuse
//! a captured call replayed later. `X-Gantry-Signature: sha256=<hex>` (the
//! body alone) is still sent for receivers written against earlier
//! releases; it cannot tell a replay and will go.
//!
//! A call is one attempt: retries, their backoff and their record are the
//! outbox's ([`super::outbox`]).

use std::path::PathBuf;
use std::time::Duration;

use axum::http::Method;
use base64::Engine;
use hmac::{Hmac, Mac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use sha2::Sha256;

use super::http::HttpClient;
use crate::crd::{GoServer, MetricStatus, Notification};
use kube::ResourceExt;

/// The signature of earlier releases: HMAC-SHA256 of the body alone.
pub const LEGACY_SIGNATURE_HEADER: &str = "X-Gantry-Signature";
/// Standard Webhooks headers.
pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A key file starting with this holds the key in base64, as Standard
/// Webhooks libraries write their secrets.
const SECRET_PREFIX: &str = "whsec_";

/// What a receiver gets.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The decision's id: the same in every delivery of it, and in no other
    /// decision, so a receiver drops repeats by it.
    pub id: String,
    pub event: &'static str,
    pub goserver: String,
    pub namespace: String,
    pub revision: String,
    pub previous_good_revision: Option<String>,
    pub message: String,
    pub decided_at: Time,
    pub measurements: Vec<MetricStatus>,
}

impl Payload {
    pub fn new(gs: &GoServer, decision: &Notification) -> Self {
        Self {
            id: decision.id.clone(),
            event: decision.event.as_str(),
            goserver: gs.name_any(),
            namespace: gs.namespace().unwrap_or_default(),
            revision: decision.revision.clone(),
            previous_good_revision: decision.previous_good_revision.clone(),
            message: decision.message.clone(),
            decided_at: decision.decided_at.clone(),
            measurements: decision.measurements.clone(),
        }
    }
}

/// Sends webhook calls.
#[derive(Clone, Debug)]
pub struct Sender {
    http: HttpClient,
    signing_key_file: Option<PathBuf>,
}

impl Sender {
    pub fn new(signing_key_file: Option<PathBuf>) -> Self {
        Self {
            http: HttpClient::new(),
            signing_key_file,
        }
    }

    /// POSTs `payload` to `url` once, signed at `timestamp` (Unix seconds);
    /// why it failed when the receiver did not answer 2xx.
    pub async fn send(&self, url: &str, payload: &Payload, timestamp: i64) -> Result<(), String> {
        let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
        let timestamp = timestamp.to_string();
        let mut headers = vec![
            (ID_HEADER, payload.id.clone()),
            (TIMESTAMP_HEADER, timestamp.clone()),
        ];
        if let Some(path) = &self.signing_key_file {
            let key = std::fs::read(path)
                .map_err(|e| format!("reading the signing key {}: {e}", path.display()))?;
            let key = signing_key(&key)?;
            headers.push((SIGNATURE_HEADER, sign(&key, &payload.id, &timestamp, &body)));
            headers.push((LEGACY_SIGNATURE_HEADER, sign_body(&key, &body)));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        match self
            .http
            .send(Method::POST, url, &headers, Some(body), TIMEOUT)
            .await
        {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, _)) => Err(format!("the receiver answered {status}")),
            Err(err) => Err(err),
        }
    }
}

/// The key a key file holds: base64 after `whsec_`, else its bytes (less
/// a final newline).
pub fn signing_key(file: &[u8]) -> Result<Vec<u8>, String> {
    let file = file.strip_suffix(b"\n").unwrap_or(file);
    match file.strip_prefix(SECRET_PREFIX.as_bytes()) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the signing key after {SECRET_PREFIX} is not base64: {e}")),
        None => Ok(file.to_vec()),
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: the
/// Standard Webhooks signature.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// `sha256=<hex of HMAC-SHA256(key, body)>`: the signature of earlier
/// releases.
pub fn sign_body(key: &[u8], body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign_body(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The expected value was computed by the Standard Webhooks reference
    /// library for Python (`standardwebhooks` 1.3.0 on `PyPI`,
    /// `Webhook(secret).sign(msg_id, timestamp, payload)`), for this
    /// secret, id, time and body.
    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        let key = signing_key(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // A key file without the prefix is the key's bytes.
        assert_eq!(signing_key(b"webhook-secret\n").unwrap(), b"webhook-secret");
        assert!(signing_key(b"whsec_not base64!").is_err());
    }
}
