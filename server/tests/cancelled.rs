//! Requests that end without a response: the client closes its connection
//! first, or the shutdown's grace period runs out. Each still gets its
//! access line (status 499, as nginx logs a client that went away) and is
//! counted in `http_requests_cancelled_total`. The built binary on
//! 127.0.0.1, as in `blackbox.rs`.

mod common;

use common::{Server, TestResult};
use serde_json::Value;

/// The request's own `x-request-id`, from the fields every line logged
/// while it is served carries.
fn has_request_id(line: &Value, request_id: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == request_id))
}

/// A client that sends a request and closes the connection before the
/// response. A raw socket: the test must choose the moment the connection
/// closes, which an HTTP client does not let it do.
#[tokio::test]
async fn a_request_whose_client_goes_away_is_logged_and_counted() -> TestResult {
    use tokio::io::AsyncWriteExt;
    let mut server = Server::start(&[])?;
    let cancelled = r#"http_requests_cancelled_total{method="GET",route="/debug/sleep"}"#;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
    stream
        .write_all(
            b"GET /debug/sleep?ms=60000 HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: goes-away\r\n\r\n",
        )
        .await?;
    server.wait_in_flight(1).await?;
    drop(stream);

    let line = server.wait_for_log(|v| has_request_id(v, "goes-away"))?;
    assert_eq!(line["message"], "request cancelled", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["status"], 499, "{line}");
    assert!(line["latency_ms"].is_number(), "{line}");
    assert_eq!(line["spans"][0]["route"], "/debug/sleep", "{line}");
    // Counted before the line is logged.
    assert_eq!(server.metric(cancelled).await?, Some(1.0));
    // Not as a request served.
    assert_eq!(
        server
            .metric(r#"http_requests_total{method="GET",route="/debug/sleep",status="200"}"#)
            .await?,
        None
    );
    Ok(())
}

/// A request still running when `SHUTDOWN_GRACE` ends is cut off; its line
/// is in the log the process leaves.
#[tokio::test]
async fn a_request_cut_off_by_the_grace_period_is_logged() -> TestResult {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "1s")])?;
    let slow = tokio::spawn(
        reqwest::Client::new()
            .get(server.url("/debug/sleep?ms=60000"))
            .header("x-request-id", "cut-off")
            .send(),
    );
    server.wait_in_flight(1).await?;
    server.terminate()?;
    let (status, lines) =
        tokio::task::spawn_blocking(move || server.wait().map(|s| (s, server.log_json())))
            .await?
            .map_err(|e| e.to_string())?;
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    let line = lines
        .iter()
        .find(|v| has_request_id(v, "cut-off"))
        .ok_or_else(|| format!("no line for the cut-off request: {lines:#?}"))?;
    assert_eq!(line["message"], "request cancelled", "{line}");
    assert_eq!(line["status"], 499, "{line}");
    assert!(slow.await?.is_err(), "the cut-off request got a response");
    Ok(())
}
