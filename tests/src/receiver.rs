//! A webhook receiver on loopback that keeps every call: its body as
//! signed, its headers, and what it answered. A test can make it fail
//! (503) for a while, as a receiver that is down or restarting would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;

/// One call the receiver got.
#[derive(Clone, Debug)]
pub struct Call {
    /// The body as it arrived (and was signed).
    pub raw: String,
    pub body: Value,
    pub headers: HeaderMap,
    /// What the receiver answered.
    pub status: u16,
}

impl Call {
    /// A header's value, empty when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The decision's id.
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }

    /// `(event, revision)` of the decision.
    pub fn decision(&self) -> (String, String) {
        (
            self.body["event"].as_str().unwrap_or_default().to_owned(),
            self.body["revision"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

/// The receiver; stops when dropped.
pub struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    failing: Arc<AtomicBool>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// Starts it; its URL.
    pub async fn start() -> (Self, String) {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let app = {
            let calls = Arc::clone(&calls);
            let failing = Arc::clone(&failing);
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, raw: String| {
                    let calls = Arc::clone(&calls);
                    let failing = Arc::clone(&failing);
                    async move {
                        let status = if failing.load(Ordering::SeqCst) {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
                        calls.lock().expect("the calls").push(Call {
                            raw,
                            body,
                            headers,
                            status: status.as_u16(),
                        });
                        status
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the webhook receiver");
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("its address")
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (
            Self {
                calls,
                failing,
                server,
            },
            url,
        )
    }

    /// From now on, answer 503 (`true`) or 200.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("the calls").clone()
    }

    /// The calls it answered 2xx.
    pub fn delivered(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| (200..300).contains(&c.status))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
