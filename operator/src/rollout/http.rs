//! The HTTP client of rollout verification (Prometheus queries, webhook
//! calls): hyper's pooled client over rustls with the ring provider, the
//! same stack the kube client runs on, with the system's root
//! certificates, so `https://` Prometheus and webhook URLs work.
//!
//! It names its crypto provider itself rather than relying on a process-wide
//! default, so no other crate in the process has to install one.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Answers larger than this are cut off: a query answers one number.
const MAX_BODY: usize = 4 << 20;

/// A pooled HTTP(S) client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client trusting the system's root certificates; with none to be
    /// found, plain `http://` still works and `https://` fails per request.
    pub fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = HttpsConnectorBuilder::new();
        let connector = match builder.with_provider_and_native_roots(provider) {
            Ok(builder) => builder.https_or_http().enable_http1().build(),
            Err(err) => {
                tracing::warn!(error = %err, "no system root certificates: https URLs will fail");
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
                match config {
                    Ok(config) => HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_or_http()
                        .enable_http1()
                        .build(),
                    // The ring provider supports the default versions.
                    Err(_) => unreachable!("ring supports TLS 1.2 and 1.3"),
                }
            }
        };
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends one request and reads the answer, all within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("not a valid request: {e}"))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {}s", timeout.as_secs_f64()))?
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The message of an error and its causes, one after the other.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
