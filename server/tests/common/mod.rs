//! Helpers for the black-box tests: run the built `gantry-server` binary on
//! 127.0.0.1 with port 0, learn its address from the `listening` log line,
//! keep every log line for assertions, and the shared API suite that runs
//! against `SQLite` and `PostgreSQL` alike.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const TOKEN: &str = "test-token-7f3a9c";

/// How long a test waits for the server to come up or stop: a bound on a
/// hang, not a performance assertion.
const PATIENCE: Duration = Duration::from_mins(1);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Working directory with its own `SQLite` file and `public/`.
    pub dir: tempfile::TempDir,
}

/// The command for the binary, in a fresh working directory, with defaults
/// suited to tests (loopback, port 0, a token, no shutdown delay).
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry-server"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("API_TOKENS", TOKEN)
        .env("SHUTDOWN_DELAY", "0s")
        .env("DEBUG_ROUTES", "true")
        .env("LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut lines) = into.lock() {
                lines.push(line);
            }
        }
    });
}

/// Waits until `child` accepts connections on `addr`; an error when it
/// exits first or `patience` runs out.
pub fn wait_listening(
    child: &mut Child,
    addr: SocketAddr,
    patience: Duration,
    what: &str,
) -> TestResult {
    let deadline = Instant::now() + patience;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited with {status} before listening").into());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Server {
    /// Starts the server with `env` on top of the test defaults and waits
    /// until it listens.
    pub fn start(env: &[(&str, &str)]) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("public"))?;
        std::fs::write(dir.path().join("public/hello.txt"), "hello, file\n")?;
        std::fs::write(
            dir.path().join("public/app.css"),
            "body { color: black; }\n",
        )?;
        let mut cmd = command(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, dir)
    }

    pub fn spawn(cmd: Command, dir: tempfile::TempDir) -> TestResult<Self> {
        let mut server = Self::spawn_unready(cmd, dir)?;
        let line = server.wait_for_log(|v| v["message"] == "listening")?;
        let addr: SocketAddr = line["addr"].as_str().ok_or("no addr")?.parse()?;
        server.addr = addr;
        server.base = format!("http://{addr}");
        Ok(server)
    }

    /// Starts the server with `env` on a free port of its own, waiting
    /// until it accepts connections rather than for its `listening` line:
    /// for a `LOG_LEVEL` that leaves that line out.
    pub fn start_quiet(env: &[(&str, &str)]) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = command(dir.path());
        cmd.env("PORT", addr.port().to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut server = Self::spawn_unready(cmd, dir)?;
        server.addr = addr;
        server.base = format!("http://{addr}");
        wait_listening(&mut server.child, addr, PATIENCE, "the server")?;
        Ok(server)
    }

    fn spawn_unready(mut cmd: Command, dir: tempfile::TempDir) -> TestResult<Self> {
        let mut child = cmd.spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().ok_or("no stdout")?, lines.clone());
        collect(child.stderr.take().ok_or("no stderr")?, stderr.clone());
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
            lines,
            stderr,
            dir,
        })
    }

    /// Every stdout line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The JSON log lines so far.
    pub fn log_json(&self) -> Vec<Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a log line matching `pred` (or the process to exit).
    pub fn wait_for_log(&mut self, pred: impl Fn(&Value) -> bool) -> TestResult<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = self.log_json().into_iter().find(|v| pred(v)) {
                return Ok(v);
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "server exited with {status} before the expected log line\nstdout:\n{}\nstderr:\n{}",
                    self.log_lines().join("\n"),
                    self.stderr_lines().join("\n")
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!("no such log line:\n{}", self.log_lines().join("\n")).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> TestResult {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> TestResult<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err("the server did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one sample on `/metrics`, named as exposed with its
    /// labels (`http_requests_in_flight`,
    /// `http_requests_total{method="GET",route="/",status="200"}`), if it
    /// is there.
    pub async fn metric(&self, sample: &str) -> TestResult<Option<f64>> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Waits until `requests` are being served; the gauge counts the scrape
    /// that reads it too, so that is one more.
    pub async fn wait_in_flight(&self, requests: u32) -> TestResult {
        let deadline = Instant::now() + PATIENCE;
        while self.metric("http_requests_in_flight").await? < Some(f64::from(requests + 1)) {
            if Instant::now() > deadline {
                return Err(format!("{requests} requests were never in flight").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (the database is up).
    pub async fn ready(&self) -> TestResult {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the server never became ready".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for configurations that must not start).
pub fn run_to_exit(env: &[(&str, &str)]) -> TestResult<(ExitStatus, String, String)> {
    let dir = tempfile::tempdir()?;
    let mut cmd = command(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Checks that `body` is a complete problem with `status` and `code`.
pub fn assert_problem(content_type: Option<&str>, body: &Value, status: u16, code: u64) {
    assert_eq!(content_type, Some("application/problem+json"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    for member in ["type", "title", "message", "timestamp", "traceId"] {
        assert!(body[member].is_string(), "{member} missing in {body}");
    }
    assert_eq!(body["traceId"].as_str().map(str::len), Some(32), "{body}");
}

/// A response's status, content type and JSON body.
pub async fn parts(r: reqwest::Response) -> TestResult<(u16, Option<String>, Value)> {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?
    };
    Ok((status, ct, body))
}

/// The `/api/v1/users` suite: the same behaviour on every database.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
pub async fn api_suite(base: &str) -> TestResult {
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{base}/api/v1{path}");
    let auth = format!("Bearer {TOKEN}");

    // Create, with the email normalised.
    let r = client
        .post(api("/users"))
        .header("authorization", &auth)
        .json(&json!({"name": "Ada Lovelace", "email": "Ada@Example.com"}))
        .send()
        .await?;
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, _, ada) = parts(r).await?;
    assert_eq!(status, 201, "{ada}");
    assert_eq!(ada["name"], "Ada Lovelace");
    assert_eq!(ada["email"], "ada@example.com");
    let id = ada["id"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(location, Some(format!("/api/v1/users/{id}")));
    assert!(ada["createdAt"].is_string());

    // SQL metacharacters are data.
    let nasty = "Robert'); DROP TABLE users;--";
    let r = client
        .post(api("/users"))
        .header("authorization", &auth)
        .json(&json!({"name": nasty, "email": "bobby@example.com"}))
        .send()
        .await?;
    let (status, _, bobby) = parts(r).await?;
    assert_eq!(status, 201, "{bobby}");
    assert_eq!(bobby["name"], nasty);

    // Get.
    let r = client
        .get(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .send()
        .await?;
    let (status, _, got) = parts(r).await?;
    assert_eq!((status, &got), (200, &ada));

    // Duplicate email, in any case.
    let r = client
        .post(api("/users"))
        .header("authorization", &auth)
        .json(&json!({"name": "Other", "email": "ADA@example.com"}))
        .send()
        .await?;
    let (status, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 409, 4090);
    assert_eq!(status, 409);

    // Validation.
    for (input, code) in [
        (json!({"name": "", "email": "x@example.com"}), 4001),
        (
            json!({"name": "x".repeat(101), "email": "x@example.com"}),
            4001,
        ),
        (json!({"name": "X", "email": "not-an-email"}), 4001),
        (json!({"name": 42, "email": "x@example.com"}), 4001),
        (json!({"name": "X"}), 4001),
        (
            json!({"name": "X", "email": "x@example.com", "admin": true}),
            4001,
        ),
        (json!([1, 2, 3]), 4001),
    ] {
        let r = client
            .post(api("/users"))
            .header("authorization", &auth)
            .json(&input)
            .send()
            .await?;
        let (status, ct, body) = parts(r).await?;
        assert_eq!(status, 400, "{input} -> {body}");
        assert_problem(ct.as_deref(), &body, 400, code);
    }

    // Malformed JSON, and a body that is not JSON at all.
    let r = client
        .post(api("/users"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(r#"{"name": "X", "email": "#)
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 400, 4002);
    let r = client
        .post(api("/users"))
        .header("authorization", &auth)
        .header("content-type", "text/plain")
        .body("name=X")
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 415, 4150);

    // Invalid ids are 400, unknown ones 404.
    for bad in ["42", "not-a-uuid", "1%27%20OR%20%271%27%3D%271"] {
        let r = client
            .get(api(&format!("/users/{bad}")))
            .header("authorization", &auth)
            .send()
            .await?;
        let (_, ct, body) = parts(r).await?;
        assert_problem(ct.as_deref(), &body, 400, 4001);
    }
    let missing = "01890a5d-ac96-774b-bcce-b302099a8057";
    let r = client
        .get(api(&format!("/users/{missing}")))
        .header("authorization", &auth)
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 404, 4041);

    // Update.
    let r = client
        .patch(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .json(&json!({"name": "Ada King"}))
        .send()
        .await?;
    let (status, _, updated) = parts(r).await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Ada King");
    assert_eq!(updated["email"], "ada@example.com");
    let r = client
        .patch(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .json(&json!({"email": "bobby@example.com"}))
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 409, 4090);
    let r = client
        .patch(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 400, 4001);
    // `null` is not "unchanged": the document says a present field is a string.
    let r = client
        .patch(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .json(&json!({"name": null, "email": "ada2@example.com"}))
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 400, 4001);

    // Pagination: 25 more users, pages of 10.
    for i in 0..25 {
        let r = client
            .post(api("/users"))
            .header("authorization", &auth)
            .json(&json!({"name": format!("User {i}"), "email": format!("user{i}@example.com")}))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
    }
    let mut seen = Vec::new();
    for offset in [0, 10, 20] {
        let r = client
            .get(api(&format!("/users?limit=10&offset={offset}")))
            .header("authorization", &auth)
            .send()
            .await?;
        let (status, _, page) = parts(r).await?;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 27);
        for item in page["items"].as_array().ok_or("no items")? {
            seen.push(item["id"].as_str().ok_or("no id")?.to_owned());
        }
    }
    assert_eq!(seen.len(), 27);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 27, "pages overlap");
    assert_eq!(seen[0], id, "oldest first");
    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "offset=-1",
        "colour=red",
    ] {
        let r = client
            .get(api(&format!("/users?{bad}")))
            .header("authorization", &auth)
            .send()
            .await?;
        let (_, ct, body) = parts(r).await?;
        assert_problem(ct.as_deref(), &body, 400, 4001);
    }

    // Delete.
    let r = client
        .delete(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let r = client
        .delete(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .send()
        .await?;
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 404, 4041);
    let r = client
        .get(api(&format!("/users/{id}")))
        .header("authorization", &auth)
        .send()
        .await?;
    assert_eq!(r.status(), 404);

    // Wrong method on a known route.
    let r = client
        .put(api("/users"))
        .header("authorization", &auth)
        .send()
        .await?;
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, ct, body) = parts(r).await?;
    assert_problem(ct.as_deref(), &body, 405, 4050);
    assert!(allow.is_some_and(|a| a.contains("GET") && a.contains("POST")));
    Ok(())
}

/// Finds a `PostgreSQL` server binary: PATH first, then Debian's versioned directories.
pub fn find_pg_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    // Newest version first.
    debian.sort();
    debian.reverse();
    on_path.into_iter().chain(debian).find(|p| p.is_file())
}

/// Writes from many connections at once: creates with distinct emails all
/// succeed, creates racing for one email give exactly one 201, concurrent
/// updates of different fields of one user all land, and concurrent
/// deletes of one user give exactly one 204. Expects an empty `users`
/// table and a rate limit that lets ~70 requests through at once.
pub async fn concurrent_writes(base: &str) -> TestResult {
    let client = reqwest::Client::new();
    let users = format!("{base}/api/v1/users");
    let create = |email: String| {
        let (client, users) = (client.clone(), users.clone());
        tokio::spawn(async move {
            let r = client
                .post(&users)
                .bearer_auth(TOKEN)
                .json(&json!({"name": "Racer", "email": email}))
                .send()
                .await?;
            parts(r).await
        })
    };

    let distinct: Vec<_> = (0..32)
        .map(|i| create(format!("racer{i}@example.com")))
        .collect();
    let same: Vec<_> = (0..8)
        .map(|_| create("same@example.com".to_owned()))
        .collect();
    for task in distinct {
        let (status, _, body) = task.await??;
        assert_eq!(status, 201, "{body}");
    }
    let mut statuses = Vec::new();
    for task in same {
        statuses.push(task.await??.0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let (_, _, page) = parts(client.get(&users).bearer_auth(TOKEN).send().await?).await?;
    assert_eq!(page["total"], 33, "{page}");

    // Eight updates of the name and eight of the email of one user, at once.
    let (_, _, target) = create("target@example.com".to_owned()).await??;
    let url = format!("{users}/{}", target["id"].as_str().ok_or("no id")?);
    let updates: Vec<_> = (0..16)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            let change = if i % 2 == 0 {
                json!({"name": "Renamed"})
            } else {
                json!({"email": "moved@example.com"})
            };
            tokio::spawn(async move {
                let r = client
                    .patch(&url)
                    .bearer_auth(TOKEN)
                    .json(&change)
                    .send()
                    .await?;
                parts(r).await
            })
        })
        .collect();
    for task in updates {
        let (status, _, body) = task.await??;
        assert_eq!(status, 200, "{body}");
    }
    let (_, _, user) = parts(client.get(&url).bearer_auth(TOKEN).send().await?).await?;
    assert_eq!(
        (&user["name"], &user["email"]),
        (&json!("Renamed"), &json!("moved@example.com")),
        "an update was lost: {user}"
    );

    let deletes: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.delete(&url).bearer_auth(TOKEN).send().await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in deletes {
        statuses.push(task.await??.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 404, 404, 404, 404, 404, 404, 404]);
    Ok(())
}
