//! Stale and lost state between the operator and the apiserver, as Sieve
//! serves it to controllers.
//!
//! [`WatchProxy`] is a plain-HTTP proxy on loopback in front of the test
//! cluster's apiserver. It forwards every request through a client of its
//! own (TLS and credentials from `KUBECONFIG`), so it reads what passes:
//! the operator is pointed at it by a kubeconfig with no credentials
//! ([`WatchProxy::kubeconfig`]). For one collection path at a time a test
//! can:
//!
//! - [`hold`](WatchProxy::hold) its watch events: they are kept back, then
//!   delivered in order, or coalesced to the last event of each object (the
//!   A→B→A edit seen as one, a delete and re-create seen as the re-create),
//!   on [`release`](WatchProxy::release);
//! - [`freeze`](WatchProxy::freeze) it: every LIST of it is answered with
//!   the list as it was at the freeze and its watch events are held, which
//!   is what a client restarted against a lagging apiserver sees;
//! - [`expire`](WatchProxy::expire) its watches: they end with 410 Gone,
//!   as after an etcd compaction, and the events they held are lost.
//!
//! Every request is recorded ([`WatchProxy::requests`]) with its body, so a
//! test can check what the operator wrote.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use kube::config::Kubeconfig;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// One request that passed through the proxy.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The body as JSON, or `Null` when it had none or was not JSON.
    pub body: Value,
    /// The answer's status code (502 when the apiserver gave none).
    pub status: u16,
}

/// How the events of a held collection are delivered on release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every event, in order.
    All,
    /// Only the last event of each object, in the order of those events.
    Coalesced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// Open for new watches; the watches open when it was set were ended
    /// with 410 Gone, their held events dropped.
    Expired,
    Held(Delivery),
}

struct Shared {
    upstream: kube::Client,
    /// Collection path to its gate; paths without one are open.
    gates: Mutex<HashMap<String, watch::Sender<Gate>>>,
    /// Collection path to the LIST body served while it is frozen.
    frozen: Mutex<HashMap<String, Bytes>>,
    requests: Mutex<Vec<Recorded>>,
}

impl Shared {
    /// Runs `f` on the gate of `path`, made open if it had none.
    fn with_gate<R>(&self, path: &str, f: impl FnOnce(&watch::Sender<Gate>) -> R) -> R {
        let mut gates = self.gates.lock().expect("the gates");
        f(gates
            .entry(path.to_owned())
            .or_insert_with(|| watch::channel(Gate::Open).0))
    }

    fn gate(&self, path: &str) -> watch::Receiver<Gate> {
        self.with_gate(path, watch::Sender::subscribe)
    }

    fn set(&self, path: &str, gate: Gate) {
        self.with_gate(path, |sender| sender.send_replace(gate));
    }
}

/// A proxy to the apiserver that holds back, coalesces and replays.
pub struct WatchProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl WatchProxy {
    /// Listens on a free loopback port, forwarding to the cluster in
    /// `KUBECONFIG`.
    pub async fn start() -> Self {
        let upstream = crate::client().await;
        let shared = Arc::new(Shared {
            upstream,
            gates: Mutex::default(),
            frozen: Mutex::default(),
            requests: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the watch proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// Writes to `path` a kubeconfig whose server is this proxy, over plain
    /// HTTP and with no credentials (the proxy adds its own).
    pub fn kubeconfig(&self, path: &Path) {
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": format!("http://{}", self.address)}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        });
        let parsed: Kubeconfig =
            serde_json::from_value(config).expect("the proxy kubeconfig is valid");
        std::fs::write(
            path,
            serde_json::to_string(&parsed).expect("kubeconfig as JSON"),
        )
        .expect("writing the proxy kubeconfig");
    }

    /// Holds back the watch events of the collection at `path` (for
    /// example `/apis/gantry.dev/v1alpha1/namespaces/ns/goservers`) until
    /// [`release`](Self::release), which delivers them as `delivery` says.
    pub fn hold(&self, path: &str, delivery: Delivery) {
        self.shared.set(path, Gate::Held(delivery));
    }

    /// Delivers what is held for `path` and lets its events through again;
    /// a frozen collection is listed live again.
    pub fn release(&self, path: &str) {
        self.shared.frozen.lock().expect("the frozen").remove(path);
        self.shared.set(path, Gate::Open);
    }

    /// Ends every watch of `path` with the error an apiserver sends when the
    /// resource version a watch resumes from was compacted away (410 Gone,
    /// reason `Expired`), dropping the events it held: the client must
    /// relist to learn what it missed. Later watches of `path` run freely.
    pub fn expire(&self, path: &str) {
        self.shared.set(path, Gate::Expired);
    }

    /// Lists the collection at `path` now, answers every later LIST of it
    /// with that list, and holds its watch events, until
    /// [`release`](Self::release). A watch started from the frozen list's
    /// resource version is answered by the apiserver with everything since,
    /// held here.
    pub async fn freeze(&self, path: &str) {
        let request = axum::http::Request::get(path)
            .body(kube::client::Body::empty())
            .expect("a LIST request");
        let response = self
            .shared
            .upstream
            .send(request)
            .await
            .expect("listing the collection to freeze");
        assert!(
            response.status().is_success(),
            "LIST {path}: {}",
            response.status()
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the list body")
            .to_bytes();
        self.hold(path, Delivery::All);
        self.shared
            .frozen
            .lock()
            .expect("the frozen")
            .insert(path.to_owned(), body);
    }

    /// Every request forwarded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("the requests").clone()
    }
}

impl Drop for WatchProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Whether the query asks for a watch.
fn is_watch(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1")
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
    else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), ToString::to_string);
    let record = |status: StatusCode| {
        shared
            .requests
            .lock()
            .expect("the requests")
            .push(Recorded {
                method: parts.method.to_string(),
                uri: uri.clone(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                status: status.as_u16(),
            });
    };
    let watching = is_watch(&query);
    if parts.method == axum::http::Method::GET && !watching {
        let frozen = shared
            .frozen
            .lock()
            .expect("the frozen")
            .get(&path)
            .cloned();
        if let Some(list) = frozen {
            record(StatusCode::OK);
            return ([(header::CONTENT_TYPE, "application/json")], list).into_response();
        }
    }
    let mut upstream = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(&uri);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(body.to_vec()))
        .expect("the upstream request");
    let response = match shared.upstream.send(upstream).await {
        Ok(response) => response,
        Err(err) => {
            record(StatusCode::BAD_GATEWAY);
            return (StatusCode::BAD_GATEWAY, err.to_string()).into_response();
        }
    };
    record(response.status());
    let (mut head, body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if !(watching && head.status.is_success()) {
        return Response::from_parts(head, Body::new(body));
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(body, tx, shared.gate(&path)));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::io::Error>(line), rx))
    });
    Response::from_parts(head, Body::from_stream(stream))
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        headers.remove(name);
    }
}

/// One watch event line, with the object it is about.
struct Event {
    /// `namespace/name`, or `None` for a bookmark or an error.
    key: Option<String>,
    line: Bytes,
}

impl Event {
    fn parse(line: Bytes) -> Self {
        let value: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        let key = match value["type"].as_str() {
            Some("ADDED" | "MODIFIED" | "DELETED") => {
                let meta = &value["object"]["metadata"];
                Some(format!(
                    "{}/{}",
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default()
                ))
            }
            _ => None,
        };
        Self { key, line }
    }
}

/// Copies the event lines of one watch from the apiserver to the client,
/// keeping them back while its collection is held. Bookmarks that arrive
/// while held are dropped: delivered, they would move the client's
/// resource version past the held events.
async fn pump(
    mut upstream: kube::client::Body,
    tx: mpsc::Sender<Bytes>,
    mut gate: watch::Receiver<Gate>,
) {
    let mut partial: Vec<u8> = Vec::new();
    let mut held: Vec<Event> = Vec::new();
    // How the held events go out: as the hold in force said.
    let initial = *gate.borrow_and_update();
    let mut delivery = match initial {
        Gate::Held(delivery) => delivery,
        Gate::Open | Gate::Expired => Delivery::All,
    };
    loop {
        tokio::select! {
            frame = upstream.frame() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(data) = frame.into_data() else { continue };
                partial.extend_from_slice(&data);
                while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                    let line = Bytes::from(partial.drain(..=end).collect::<Vec<u8>>());
                    let event = Event::parse(line);
                    let state = *gate.borrow();
                    match state {
                        Gate::Open | Gate::Expired => {
                            if tx.send(event.line).await.is_err() {
                                return;
                            }
                        }
                        Gate::Held(_) if event.key.is_none() => {}
                        Gate::Held(_) => held.push(event),
                    }
                }
            }
            changed = gate.changed() => {
                if changed.is_err() {
                    return;
                }
                let state = *gate.borrow_and_update();
                match state {
                    Gate::Held(now) => delivery = now,
                    Gate::Expired => {
                        // What kube-apiserver sends when it cannot resume.
                        let gone = serde_json::json!({"type": "ERROR", "object": {
                            "apiVersion": "v1", "kind": "Status", "status": "Failure",
                            "message": "too old resource version", "reason": "Expired", "code": 410,
                        }});
                        let mut line = gone.to_string().into_bytes();
                        line.push(b'\n');
                        let _ = tx.send(Bytes::from(line)).await;
                        return;
                    }
                    Gate::Open => {
                        for line in deliver(std::mem::take(&mut held), delivery) {
                            if tx.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The lines to send for `held`: all, or the last of each object.
fn deliver(held: Vec<Event>, delivery: Delivery) -> Vec<Bytes> {
    match delivery {
        Delivery::All => held.into_iter().map(|e| e.line).collect(),
        Delivery::Coalesced => {
            let mut last: HashMap<String, usize> = HashMap::new();
            for (at, event) in held.iter().enumerate() {
                if let Some(key) = &event.key {
                    last.insert(key.clone(), at);
                }
            }
            held.into_iter()
                .enumerate()
                .filter(|(at, e)| e.key.as_ref().is_some_and(|k| last[k] == *at))
                .map(|(_, e)| e.line)
                .collect()
        }
    }
}
