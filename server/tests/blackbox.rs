//! Black-box tests: the built binary on 127.0.0.1 with an OS-assigned port,
//! driven over real sockets, its stdout read as the log.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{
    Server, TOKEN, TestResult, api_suite, assert_problem, concurrent_writes, parts, run_to_exit,
};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn the_api_suite_passes_on_sqlite() -> TestResult {
    let server = Server::start(&[])?;
    server.ready().await?;
    api_suite(&server.base).await?;
    // The database file was created under the working directory.
    assert!(server.dir.path().join("data/gantry.db").is_file());
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_are_correct_on_sqlite() -> TestResult {
    let server = Server::start(&[("RATE_LIMIT_BURST", "1000")])?;
    server.ready().await?;
    concurrent_writes(&server.base).await
}

#[tokio::test]
async fn auth_tokens_from_a_secret_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    std::fs::write(&file, "file-token-1,file-token-2\n")?;
    let file = file.to_str().ok_or("path")?.to_owned();
    let server = Server::start(&[("API_TOKENS", ""), ("API_TOKENS_FILE", &file)])?;
    server.ready().await?;
    let client = reqwest::Client::new();
    let url = server.url("/api/v1/users");

    let r = client.get(&url).bearer_auth("file-token-2").send().await?;
    assert_eq!(r.status(), 200);
    let r = client.get(&url).bearer_auth(TOKEN).send().await?;
    let challenge = r.headers().get("www-authenticate").cloned();
    let (status, ct, body) = parts(r).await?;
    assert_eq!(status, 401);
    assert_problem(ct.as_deref(), &body, 401, 4010);
    assert!(challenge.is_some_and(|c| c.to_str().is_ok_and(|c| c.starts_with("Bearer"))));
    let r = client.get(&url).send().await?;
    assert_eq!(r.status(), 401);

    // Probes and files need no token.
    for open in ["/healthz", "/readyz", "/metrics", "/static/hello.txt", "/"] {
        assert_eq!(
            client.get(server.url(open)).send().await?.status(),
            200,
            "{open}"
        );
    }

    // The token never reaches the log.
    let log = server.log_lines().join("\n") + &server.stderr_lines().join("\n");
    assert!(!log.contains("file-token"), "secret in log:\n{log}");
    Ok(())
}

#[tokio::test]
async fn rate_limit_is_per_client_across_connections() -> TestResult {
    let server = Server::start(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")])?;
    server.ready().await?;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    // At 1 request per second at most a few more than the burst can pass
    // before the bucket runs dry, however slow the machine.
    for _ in 0..20 {
        // A new client, hence a new connection, for every request.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let r = client
            .get(server.url("/api/v1/users"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let (_, ct, body) = parts(r).await?;
            assert_problem(ct.as_deref(), &body, 429, 4290);
            break;
        }
    }
    assert!(
        statuses[..3].iter().all(|s| *s == 200),
        "the burst of 3 passes: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // Probes are not limited.
    let client = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(
            client.get(server.url("/healthz")).send().await?.status(),
            200
        );
    }
    Ok(())
}

#[tokio::test]
async fn static_files_with_caching_and_no_traversal() -> TestResult {
    let server = Server::start(&[])?;
    // A file outside public/ that traversal would reach.
    std::fs::write(server.dir.path().join("secret.txt"), "do not serve")?;
    let client = reqwest::Client::new();

    let r = client.get(server.url("/static/hello.txt")).send().await?;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert!(headers["content-type"].to_str()?.starts_with("text/plain"));
    assert!(headers.contains_key("last-modified"));
    let etag = headers.get("etag").ok_or("no etag")?.clone();
    assert_eq!(r.text().await?, "hello, file\n");
    let r = client.get(server.url("/static/app.css")).send().await?;
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("text/css")
    );

    let r = client
        .get(server.url("/static/hello.txt"))
        .header("if-none-match", etag)
        .send()
        .await?;
    assert_eq!(r.status(), 304);

    for path in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/nothing-here.txt",
    ] {
        let (status, body) = raw_get(server.addr, path).await?;
        assert!(!body.contains("do not serve"), "{path} leaked the file");
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(body.contains("\"traceId\""), "{path}: {body}");
    }
    Ok(())
}

/// A GET sent byte for byte, so that no client normalises `..` away.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> TestResult<(u16, String)> {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends `request` as is and reads the response until the server closes.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> TestResult<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    Ok((status, response))
}

#[tokio::test]
async fn bad_input_never_gets_a_5xx() -> TestResult {
    let server = Server::start(&[("BODY_LIMIT", "1KiB")])?;
    server.ready().await?;
    let client = reqwest::Client::new();
    let url = server.url("/api/v1/users");

    let big = format!(
        r#"{{"name":"{}","email":"a@example.com"}}"#,
        "x".repeat(4096)
    );
    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await?;
    let (status, ct, body) = parts(r).await?;
    assert_eq!(status, 413);
    assert_problem(ct.as_deref(), &body, 413, 4130);

    // Chunked, so the size is only known while reading.
    let mut chunked = String::new();
    for chunk in big.as_bytes().chunks(512) {
        let _ = write!(
            chunked,
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        );
    }
    chunked.push_str("0\r\n\r\n");
    let request = format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"
    );
    let (status, response) = raw_request(server.addr, &request).await?;
    assert_eq!(status, 413, "{response}");
    assert!(
        response.contains("application/problem+json") && response.contains("4130"),
        "{response}"
    );

    let r = client
        .get(server.url("/"))
        .header("x-big", "a".repeat(32 * 1024))
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 431, 4310);

    let r = client.get(server.url("/no/such/route")).send().await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 404, 4040);

    for body in ["", "{", "null", "\"text\"", "{\"name\": []}", "\u{0}\u{1}"] {
        let r = client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let (_, ct, problem) = parts(r).await?;
        assert!(status.is_client_error(), "{body:?}: {status}");
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
        assert!(
            problem["code"]
                .as_u64()
                .is_some_and(|c| (4000..5000).contains(&c))
        );
    }
    // Nothing was stored by any of that.
    let r = client.get(&url).bearer_auth(TOKEN).send().await?;
    let (_, _, page) = parts(r).await?;
    assert_eq!(page["total"], 0);
    Ok(())
}

/// `LOG_LEVEL` governs the access log too: at `warn` a success leaves no
/// line, a 5xx still does.
#[tokio::test]
async fn log_level_warn_drops_access_lines_but_not_failures() -> TestResult {
    let mut server = Server::start_quiet(&[("LOG_LEVEL", "warn")])?;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(server.url("/")).send().await?.status(), 200);
    }
    let r = client.get(server.url("/debug/panic")).send().await?;
    assert_eq!(r.status(), 500);
    // Logged after the three successes, so they would be in by now.
    server.wait_for_log(|v| v["message"] == "request failed")?;
    let finished = server
        .log_json()
        .into_iter()
        .filter(|v| v["message"] == "request finished")
        .count();
    assert_eq!(finished, 0, "{:?}", server.log_lines());
    Ok(())
}

#[tokio::test]
async fn a_panic_is_isolated_and_logged_with_its_trace_id() -> TestResult {
    let mut server = Server::start(&[])?;
    let client = reqwest::Client::new();
    let r = client.get(server.url("/debug/panic")).send().await?;
    let (status, ct, body) = parts(r).await?;
    assert_eq!(status, 500);
    assert_problem(ct.as_deref(), &body, 500, 5000);
    assert!(!body.to_string().contains("deliberate"), "{body}");
    let trace_id = body["traceId"].as_str().ok_or("traceId")?.to_owned();
    // The server goes on serving.
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );
    // The cause is in the log, under the same trace id.
    let line =
        server.wait_for_log(|v| v["message"] == "request failed" && has_trace_id(v, &trace_id))?;
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("deliberate panic")),
        "{line}"
    );
    assert!(
        server
            .stderr_lines()
            .iter()
            .all(|l| !l.contains("deliberate")),
        "raw panic text on stderr"
    );
    Ok(())
}

fn has_trace_id(line: &Value, trace_id: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace_id))
}

#[tokio::test]
async fn one_trace_id_in_header_body_and_log() -> TestResult {
    let mut server = Server::start(&[])?;
    let client = reqwest::Client::new();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = client
        .get(server.url("/api/v1/users/not-a-uuid"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await?;
    let traceparent = r
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 400, 4001);
    assert_eq!(body["message"], "id must be a UUID");
    assert_eq!(body["traceId"], trace_id);
    assert!(traceparent.is_some_and(|t| t.split('-').nth(1) == Some(trace_id)));
    assert_eq!(request_id.as_deref(), Some(trace_id));
    let line =
        server.wait_for_log(|v| v["message"] == "request finished" && has_trace_id(v, trace_id))?;
    assert_eq!(line["status"], 400);
    let span = &line["spans"][0];
    assert_eq!(span["route"], "/api/v1/users/{id}");
    assert_eq!(span["method"], "GET");
    assert!(line["latency_ms"].is_number());

    // Without traceparent a trace id is made, and still agrees everywhere.
    let r = client
        .get(server.url("/nope"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await?;
    assert_eq!(r.headers()["x-request-id"], "client-chosen-42");
    let traceparent = r.headers()["traceparent"].to_str()?.to_owned();
    let (_, _, body) = parts(r).await?;
    let made = traceparent.split('-').nth(1).ok_or("traceparent")?;
    assert_eq!(body["traceId"], made);
    server.wait_for_log(|v| v["message"] == "request finished" && has_trace_id(v, made))?;
    Ok(())
}

#[tokio::test]
async fn text_logs_carry_the_trace_id_too() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cmd = common::command(dir.path());
    cmd.env("LOG_FORMAT", "text").env("PORT", "0");
    let mut child = KillOnDrop(cmd.spawn()?);
    // Text lines are not JSON; read until the access-log line appears.
    let stdout = child.0.stdout.take().ok_or("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_mins(1))?;
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().ok_or("addr")?.to_owned();
        }
    };
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    let found = loop {
        let line = rx.recv_timeout(Duration::from_mins(1))?;
        if line.contains("request finished") {
            break line;
        }
    };
    drop(child);
    assert!(found.contains(trace_id), "{found}");
    Ok(())
}

/// Stops the child on every path out of a test, early returns included.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_invalid_config_exits_2_listing_every_problem() -> TestResult {
    let (status, _, stderr) = run_to_exit(&[
        ("PORT", "http"),
        ("LOG_LEVEL", "chatty"),
        ("RATE_LIMIT_BURST", "0"),
        ("API_TOKENS", ""),
        ("API_TOKENS_FILE", "/nonexistent/tokens"),
        ("DATABASE_URL", "mysql://root:hunter2@localhost/db"),
    ])?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    for name in [
        "PORT",
        "LOG_LEVEL",
        "RATE_LIMIT_BURST",
        "API_TOKENS_FILE",
        "DATABASE_URL",
    ] {
        assert!(stderr.contains(name), "{name} not in: {stderr}");
    }
    assert!(!stderr.contains("hunter2"), "secret in: {stderr}");
    Ok(())
}

#[test]
fn a_port_in_use_is_a_clear_failure() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let (status, _, stderr) = run_to_exit(&[("PORT", &port)])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn the_database_is_retried_with_backoff_then_a_clear_error() -> TestResult {
    // A port nothing listens on: connections are refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = closed.local_addr()?.port();
    drop(closed);
    let url = format!("postgres://gantry:pw-not-logged@127.0.0.1:{port}/gantry");
    let mut server = Server::start(&[("DATABASE_URL", &url), ("DB_CONNECT_RETRIES", "2")])?;
    // Readiness is off while the database is missing; liveness is on.
    let client = reqwest::Client::new();
    let (status, ct, body) = parts(client.get(server.url("/readyz")).send().await?).await?;
    assert_problem(ct.as_deref(), &body, 503, 5030);
    assert_eq!(status, 503);
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );

    let status = server.wait()?;
    assert_eq!(status.code(), Some(1));
    let warnings: Vec<Value> = server
        .log_json()
        .into_iter()
        .filter(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("retrying"))
        })
        .collect();
    assert_eq!(warnings.len(), 2, "one WARN per retry: {warnings:?}");
    assert_eq!(warnings[0]["retry_in_s"], 1);
    assert_eq!(warnings[1]["retry_in_s"], 2);
    let stderr = server.stderr_lines().join("\n");
    assert!(
        stderr.contains("cannot connect to the postgres database after 3 attempts"),
        "{stderr}"
    );
    let everything = server.log_lines().join("\n") + &stderr;
    assert!(!everything.contains("pw-not-logged"), "password in output");
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() -> TestResult {
    let mut server = Server::start(&[("SHUTDOWN_DELAY", "2s"), ("SHUTDOWN_GRACE", "30s")])?;
    server.ready().await?;
    let client = reqwest::Client::new();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = server.url("/debug/sleep?ms=4000");
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    server.wait_in_flight(8).await?;
    server.terminate()?;
    // Readiness turns off while the listener still accepts (the delay).
    let mut saw_not_ready = false;
    for _ in 0..100 {
        match client.get(server.url("/readyz")).send().await {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                saw_not_ready = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => break,
        }
    }
    assert!(
        saw_not_ready,
        "readiness never turned off before the listener closed"
    );

    for request in slow {
        let response = request.await??;
        assert_eq!(
            response.status(),
            200,
            "an in-flight request failed during the drain"
        );
        let body: Value = response.json().await?;
        assert_eq!(body["slept_ms"], 4000);
    }
    let status = tokio::task::spawn_blocking(move || server.wait().map(|s| (s, server.log_json())))
        .await?
        .map_err(|e| e.to_string())?;
    assert_eq!(status.0.code(), Some(0));
    assert!(status.1.iter().any(|v| v["message"] == "drained; exiting"));
    Ok(())
}

/// A stand-in OTLP/HTTP collector on loopback: keeps each request body.
/// What the collector received: request line and body, per request.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

fn fake_collector() -> TestResult<(String, Received)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut reader = BufReader::new(stream);
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    break;
                }
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                if let Ok(mut all) = sink.lock() {
                    all.push((request_line.trim().to_owned(), body));
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    Ok((endpoint, received))
}

#[tokio::test]
async fn otlp_export_uses_the_request_trace_id() -> TestResult {
    let (endpoint, received) = fake_collector()?;
    // What the operator sets on a GoServer's pods.
    let mut server = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "shop"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.version=2.1.0,gantry.revision=shop-0123456789",
        ),
    ])?;
    let client = reqwest::Client::new();
    let continued = "1af7651916cd43dd8448eb211c80319c";
    client
        .get(server.url("/healthz"))
        .header("traceparent", format!("00-{continued}-b7ad6b7169203331-01"))
        .send()
        .await?;
    let r = client.get(server.url("/")).send().await?;
    let started = r.headers()["traceparent"]
        .to_str()?
        .split('-')
        .nth(1)
        .ok_or("traceparent")?
        .to_owned();
    // Shutdown flushes the batch.
    server.terminate()?;
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await?
        .map_err(|e| e.to_string())?;
    assert_eq!(status.code(), Some(0));
    let bodies = received.lock().map_err(|e| e.to_string())?.clone();
    assert!(
        bodies
            .iter()
            .any(|(line, _)| line.starts_with("POST /v1/traces")),
        "no export: {:?}",
        bodies.iter().map(|(l, _)| l).collect::<Vec<_>>()
    );
    let exported: Vec<u8> = bodies.into_iter().flat_map(|(_, body)| body).collect();
    // The resource's attributes, each a protobuf KeyValue: key (field 1),
    // then an AnyValue (field 2) holding a string (its field 1).
    for (key, value) in [
        ("service.name", "shop"),
        ("service.version", "2.1.0"),
        ("gantry.revision", "shop-0123456789"),
    ] {
        let mut encoded = vec![0x0a, u8::try_from(key.len())?];
        encoded.extend_from_slice(key.as_bytes());
        encoded.extend_from_slice(&[0x12, u8::try_from(value.len() + 2)?, 0x0a]);
        encoded.push(u8::try_from(value.len())?);
        encoded.extend_from_slice(value.as_bytes());
        assert!(
            exported.windows(encoded.len()).any(|w| w == encoded),
            "resource attribute {key}={value} not exported"
        );
    }
    for trace_id in [continued, started.as_str()] {
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()?;
        assert!(
            exported.windows(16).any(|w| w == bytes.as_slice()),
            "trace {trace_id} not exported"
        );
    }
    Ok(())
}

/// Connects and sends a first request whole, so the connection is surely
/// being served, then the start of a second one that never ends.
async fn half_sent_request(addr: std::net::SocketAddr) -> TestResult<tokio::net::TcpStream> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    // Read the first response: headers up to the blank line, then its body.
    let mut reader = tokio::io::BufReader::new(&mut stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err("the server closed the connection early".into());
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await?;
    Ok(stream)
}

/// Reads until the server closes the connection (or resets it); a bound on
/// a hang, not a timing assertion.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> TestResult {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_mins(1), stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err("the server kept a half-sent request open".into()),
    }
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() -> TestResult {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1s")])?;
    let mut stream = half_sent_request(server.addr).await?;
    closed_by_server(&mut stream).await?;
    // The server goes on serving.
    let r = reqwest::get(server.url("/healthz")).await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_connections_that_sent_half_a_request() -> TestResult {
    // Neither the header timeout nor the grace period would end this
    // connection within the test's patience: only the drain can.
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "60s"), ("HEADER_READ_TIMEOUT", "120s")])?;
    server.ready().await?;
    let mut stream = half_sent_request(server.addr).await?;
    server.terminate()?;
    closed_by_server(&mut stream).await?;
    let (status, lines) =
        tokio::task::spawn_blocking(move || server.wait().map(|s| (s, server.log_json())))
            .await?
            .map_err(|e| e.to_string())?;
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    assert!(lines.iter().any(|v| v["message"] == "drained; exiting"));
    let closing = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("closing the listener"))
        })
        .ok_or("no closing line")?;
    assert!(closing["connections"].is_number(), "{closing}");
    Ok(())
}

#[tokio::test]
async fn a_slowloris_leaves_healthz_answering() -> TestResult {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[("MAX_CONNECTIONS", "16"), ("HEADER_READ_TIMEOUT", "1s")])?;
    let addr = server.addr;
    // 64 attackers for a bounded time, each trickling header lines and
    // reconnecting whenever the server closes on it: four times the
    // connection limit, all on loopback.
    let stop = std::time::Instant::now() + Duration::from_secs(6);
    let attackers: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(async move {
                while std::time::Instant::now() < stop {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    while std::time::Instant::now() < stop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // Let the attack fill every slot before probing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_mins(1))
        .pool_max_idle_per_host(0)
        .build()?;
    for _ in 0..3 {
        let r = client.get(server.url("/healthz")).send().await?;
        assert_eq!(r.status(), 200);
    }
    for attacker in attackers {
        attacker.await?;
    }
    assert!(
        server
            .log_lines()
            .iter()
            .chain(server.stderr_lines().iter())
            .all(|l| !l.contains("Too many open files")),
        "the server ran out of file descriptors"
    );
    Ok(())
}
