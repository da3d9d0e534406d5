//! Router tests through `tower::ServiceExt::oneshot`: no socket, a real
//! in-memory `SQLite` database.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use gantry_server::config::Config;
use gantry_server::db::Db;
use gantry_server::{AppState, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "router-test-token";

#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is a test failure"
)]
fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("API_TOKENS".into(), TOKEN.into()),
        ("DATABASE_URL".into(), "sqlite::memory:".into()),
        ("BODY_LIMIT".into(), "1KiB".into()),
        ("DEBUG_ROUTES".into(), "true".into()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_lookup(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .unwrap()
}

#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is a test failure"
)]
async fn ready_state(extra: &[(&str, &str)]) -> AppState {
    let state = AppState::new(config(extra));
    state.set_db(Db::connect("sqlite::memory:").await.unwrap());
    state
}

#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is a test failure"
)]
async fn call(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, body)
}

#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is a test failure"
)]
fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[allow(
    clippy::unwrap_used,
    reason = "test helper: a failure here is a test failure"
)]
fn assert_problem(headers: &axum::http::HeaderMap, body: &Value, status: u16, code: u64) {
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    for member in ["type", "title", "message", "timestamp", "traceId"] {
        assert!(body[member].is_string(), "{member} missing: {body}");
    }
}

#[tokio::test]
async fn probes_and_greeting() {
    let router = app(ready_state(&[]).await);
    let (status, _, body) = call(&router, get("/")).await;
    assert_eq!(status, 200);
    assert!(body["message"].as_str().unwrap().contains("gantry-server"));
    let (status, _, body) = call(&router, get("/healthz")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = call(&router, get("/readyz")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));
}

#[tokio::test]
async fn readiness_waits_for_the_database_and_ends_at_shutdown() {
    let state = AppState::new(config(&[]));
    let router = app(state.clone());
    let (status, headers, body) = call(&router, get("/readyz")).await;
    assert_eq!(status, 503);
    assert_problem(&headers, &body, 503, 5030);
    // Liveness does not depend on the database.
    assert_eq!(call(&router, get("/healthz")).await.0, 200);
    // The API says 503 too, not 500.
    let req = Request::get("/api/v1/users")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(&router, req).await;
    assert_eq!(status, 503);
    assert_problem(&headers, &body, 503, 5030);

    state.set_db(Db::connect("sqlite::memory:").await.unwrap());
    assert_eq!(call(&router, get("/readyz")).await.0, 200);
    state.begin_shutdown();
    let (status, headers, body) = call(&router, get("/readyz")).await;
    assert_eq!(status, 503);
    assert_problem(&headers, &body, 503, 5030);
    assert_eq!(body["message"], "shutting down");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_problems() {
    let router = app(ready_state(&[]).await);
    let (status, headers, body) = call(&router, get("/nope")).await;
    assert_eq!(status, 404);
    assert_problem(&headers, &body, 404, 4040);
    let req = Request::delete("/healthz").body(Body::empty()).unwrap();
    let (status, headers, body) = call(&router, req).await;
    assert_eq!(status, 405);
    assert_problem(&headers, &body, 405, 4050);
    assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    // Under /api: an unknown path is the same 404, without asking for a
    // token; a known route with a wrong method asks for the token first.
    let (status, headers, body) = call(&router, get("/api/v1/nope")).await;
    assert_eq!(status, 404);
    assert_problem(&headers, &body, 404, 4040);
    let req = Request::put("/api/v1/users").body(Body::empty()).unwrap();
    assert_eq!(call(&router, req).await.0, 401);
    let req = Request::put("/api/v1/users")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(&router, req).await;
    assert_eq!(status, 405);
    assert_problem(&headers, &body, 405, 4050);
}

#[tokio::test]
async fn the_api_needs_a_token_but_probes_do_not() {
    let router = app(ready_state(&[]).await);
    let (status, headers, body) = call(&router, get("/api/v1/users")).await;
    assert_eq!(status, 401);
    assert_problem(&headers, &body, 401, 4010);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="gantry""#
    );
    let req = Request::get("/api/v1/users")
        .header("authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(&router, req).await;
    assert_eq!(status, 401);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let req = Request::get("/api/v1/users")
        .header("authorization", format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&router, req).await.0, 200);
    for open in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(call(&router, get(open)).await.0, 200, "{open}");
    }
}

#[tokio::test]
async fn no_configured_token_refuses_everyone() {
    let state = AppState::new(
        Config::from_lookup(&|name| (name == "DATABASE_URL").then(|| "sqlite::memory:".to_owned()))
            .unwrap(),
    );
    let router = app(state);
    let req = Request::get("/api/v1/users")
        .header("authorization", "Bearer ")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&router, req).await.0, 401);
}

#[tokio::test]
async fn trace_context_is_continued_and_returned() {
    let router = app(ready_state(&[]).await);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::get("/nope")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    let (_, headers, body) = call(&router, req).await;
    assert_eq!(body["traceId"], trace_id);
    assert_eq!(headers["x-request-id"], "req-123");
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span id for this hop"
    );

    // Absent: both generated, and the request id defaults to the trace id.
    // No `tracestate` came in, and none goes out (not even an empty one).
    let (_, headers, _) = call(&router, get("/")).await;
    let traceparent = headers["traceparent"].to_str().unwrap().to_owned();
    let generated = traceparent.split('-').nth(1).unwrap();
    assert_eq!(headers["x-request-id"], generated);
    assert_eq!(headers.get("tracestate"), None, "{headers:?}");

    // A caller's `tracestate` travels with the trace it belongs to.
    let req = Request::get("/")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("tracestate", "vendor=abc")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = call(&router, req).await;
    assert_eq!(headers["tracestate"], "vendor=abc");
}

#[tokio::test]
async fn malformed_traceparents_start_a_new_trace() {
    let router = app(ready_state(&[]).await);
    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        let req = Request::get("/nope")
            .header("traceparent", bad)
            .body(Body::empty())
            .unwrap();
        let (_, headers, body) = call(&router, req).await;
        let traceparent = headers["traceparent"].to_str().unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[1].len(), 32, "{traceparent}");
        assert_ne!(
            parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{bad} was accepted"
        );
        assert_ne!(parts[1], "0".repeat(32), "{bad}");
        assert_eq!(body["traceId"], parts[1], "{bad}");
    }
}

#[tokio::test]
async fn an_unsampled_caller_stays_unsampled() {
    let router = app(ready_state(&[]).await);
    let req = Request::get("/healthz")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = call(&router, req).await;
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(traceparent.ends_with("-00"), "{traceparent}");
}

#[tokio::test]
async fn oversize_bodies_and_headers_are_refused() {
    let router = app(ready_state(&[]).await);
    let big = format!(
        r#"{{"name": "{}", "email": "a@example.com"}}"#,
        "x".repeat(2000)
    );
    let req = Request::post("/api/v1/users")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    let (status, headers, body) = call(&router, req).await;
    assert_eq!(status, 413);
    assert_problem(&headers, &body, 413, 4130);

    let req = Request::get("/")
        .header("x-padding", "y".repeat(20 * 1024))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(&router, req).await;
    assert_eq!(status, 431);
    assert_problem(&headers, &body, 431, 4310);
}

#[tokio::test]
async fn a_panic_is_a_500_problem_without_the_panic_text() {
    let router = app(ready_state(&[]).await);
    let (status, headers, body) = call(&router, get("/debug/panic")).await;
    assert_eq!(status, 500);
    assert_problem(&headers, &body, 500, 5000);
    assert!(!body.to_string().contains("deliberate"), "{body}");
    assert_eq!(call(&router, get("/healthz")).await.0, 200);
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    let router = app(ready_state(&[("REQUEST_TIMEOUT", "1s")]).await);
    // The database is connected in real time; the timeout is then tested in paused time.
    tokio::time::pause();
    let (status, headers, body) = call(&router, get("/debug/sleep?ms=5000")).await;
    assert_eq!(status, 503);
    assert_problem(&headers, &body, 503, 5031);
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let router = app(ready_state(&[]).await);
    let req = Request::get("/api/v1/openapi.json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    // A body of a kilobyte or less goes as it is: gzip would make it
    // larger, and cost more CPU than the rest of the request.
    let small = Request::get("/")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(small).await.unwrap();
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(u64::try_from(body.len()).unwrap() <= app::COMPRESS_ABOVE_BYTES);
    assert!(body.starts_with(b"{\"message\""));
}

#[tokio::test]
async fn metrics_label_routes_by_pattern() {
    let router = app(ready_state(&[]).await);
    let id = "01890a5d-ac96-774b-bcce-b302099a8057";
    let req = Request::get(format!("/api/v1/users/{id}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&router, req).await.0, 404);
    call(&router, get("/no/such/path")).await;
    let response = router.clone().oneshot(get("/metrics")).await.unwrap();
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/users/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        !text.contains(id) && !text.contains("/no/such/path"),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("http_requests_in_flight"));
    assert!(
        text.contains(&format!(
            "gantry_server_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route() {
    let router = app(ready_state(&[]).await);
    let req = Request::get("/api/v1/openapi.json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, doc) = call(&router, req).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/users", &["get", "post"][..]),
        ("/api/v1/users/{id}", &["get", "patch", "delete"][..]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
    }
    for schema in ["User", "NewUser", "UserUpdate", "UserPage", "Problem"] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    // The documented User has exactly the fields the API returns.
    let user_props: Vec<&String> = doc["components"]["schemas"]["User"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut user_props: Vec<&str> = user_props.iter().map(|s| s.as_str()).collect();
    user_props.sort_unstable();
    assert_eq!(user_props, ["createdAt", "email", "id", "name"]);

    // Every answer the middleware can give is documented on every operation.
    for (path, methods) in paths.as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let mut expected = vec!["401", "429", "431", "500", "503"];
            if operation.get("requestBody").is_some() {
                expected.extend(["413", "415"]);
            }
            for status in expected {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    // The constraints the server enforces are in the schemas.
    let limit = &paths["/api/v1/users"]["get"]["parameters"][0];
    assert_eq!(limit["name"], "limit");
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(100))
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["UserUpdate"]["minProperties"], 1);
    assert_eq!(
        schemas["User"]["properties"]["createdAt"]["format"],
        "date-time"
    );
    for body in ["NewUser", "UserUpdate"] {
        for field in ["name", "email"] {
            assert!(
                schemas[body]["properties"][field]["pattern"].is_string(),
                "{body}.{field} has no pattern"
            );
        }
    }

    // And every documented operation is routed: none answers 404/405.
    for (path, methods) in paths.as_object().unwrap() {
        let concrete = path.replace("{id}", "01890a5d-ac96-774b-bcce-b302099a8057");
        for method in methods.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let (status, _, body) = call(&router, req).await;
            assert!(
                status != 405 && !(status == 404 && body["code"] == 4040),
                "{method} {path}: {status} {body}"
            );
        }
    }
}
