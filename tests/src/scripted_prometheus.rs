//! A Prometheus query API on loopback whose answers the test scripts, per
//! revision: a value, no data, an error as Prometheus writes it, a slow
//! answer. It stands in for the real Prometheus where a test runs many
//! rollout lives in a row (the crash points of the rollout fault suite):
//! a real one needs real servers scraped for every revision, which the two
//! cores cannot afford a hundred times over. At least one life of every
//! fault test runs against the real Prometheus as well
//! (`operator_rollout.rs`, `canary.rs`).
//!
//! A query is matched to a revision by the `revision="..."` matcher the
//! operator fills in; its answer is that revision's script, else the
//! default (no data). Every query asked is recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::task::JoinHandle;

/// What a revision's queries get.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// One sample with this value.
    Value(f64),
    /// An empty vector.
    NoData,
    /// A Prometheus error: HTTP status, `errorType` and message
    /// (`400, "bad_data", "parse error"` for a query Prometheus refuses).
    Error(u16, &'static str, String),
    /// The value, after a delay (past the operator's timeout, say).
    Slow(Duration, f64),
}

#[derive(Default)]
struct Script {
    answers: BTreeMap<String, Answer>,
    default: Option<Answer>,
    asked: Vec<String>,
}

/// The stand-in; stops when dropped.
pub struct ScriptedPrometheus {
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
    server: JoinHandle<()>,
}

impl ScriptedPrometheus {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .route("/api/v1/query", axum::routing::get(query))
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the scripted Prometheus");
        let address = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            script,
            server,
        }
    }

    /// Its base URL, for `--prometheus-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// From now on, queries about `revision` get `answer`.
    pub fn answer(&self, revision: &str, answer: Answer) {
        self.lock().answers.insert(revision.to_owned(), answer);
    }

    /// Queries about revisions without a script of their own get `answer`.
    pub fn answer_others(&self, answer: Answer) {
        self.lock().default = Some(answer);
    }

    /// Every query asked so far.
    pub fn asked(&self) -> Vec<String> {
        self.lock().asked.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("the script")
    }
}

impl Drop for ScriptedPrometheus {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The revision a query names in its `revision="..."` matcher.
fn revision_of(query: &str) -> Option<&str> {
    let start = query.find("revision=\"")? + "revision=\"".len();
    let end = query[start..].find('"')?;
    Some(&query[start..start + end])
}

async fn query(
    State(script): State<Arc<Mutex<Script>>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let text = params.get("query").cloned().unwrap_or_default();
    let answer = {
        let mut script = script.lock().expect("the script");
        script.asked.push(text.clone());
        revision_of(&text)
            .and_then(|r| script.answers.get(r).cloned())
            .or_else(|| script.default.clone())
            .unwrap_or(Answer::NoData)
    };
    let vector = |value: f64| {
        axum::Json(
            json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [0, value.to_string()]},
            ]}}),
        )
        .into_response()
    };
    match answer {
        Answer::Value(value) => vector(value),
        Answer::NoData => {
            axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
                .into_response()
        }
        Answer::Error(status, kind, message) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({"status": "error", "errorType": kind, "error": message})),
        )
            .into_response(),
        Answer::Slow(delay, value) => {
            tokio::time::sleep(delay).await;
            vector(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::revision_of;

    #[test]
    fn the_revision_is_read_from_its_matcher() {
        assert_eq!(
            revision_of(r#"sum(rate(x{namespace="a",revision="web-0123456789"}[1m]))"#),
            Some("web-0123456789")
        );
        assert_eq!(revision_of("up"), None);
    }
}
