//! The images `cargo xtask image` builds (`cargo xtask test` builds both
//! and passes their names in `GANTRY_IMAGE_SERVER` and
//! `GANTRY_IMAGE_OPERATOR`): each runs its binary as the entrypoint, as the
//! non-root user 65532, has no shell and no package manager, stays within
//! its size budget, and its binary answers its health endpoints taken out
//! of the image. The server image also runs the way the pods the operator
//! makes run it (read-only root filesystem, a writable /tmp, the image's
//! user, environment and working directory) and becomes ready.
//!
//! The images are opened with `buildah from` and `buildah mount`, and the
//! pod is emulated with a mount namespace (`unshare`), which needs root (as
//! `cargo xtask test` runs in CI).

mod operator_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use gantry_e2e::TestNamespace;
use gantry_e2e::operator::{OperatorProcess, http_get, root};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::core::v1::{Container, Probe, Volume};
use serde_json::Value;

/// The size budgets (uncompressed content): the distroless base is about
/// 24 MB, and each binary stays under 40 MB.
const SERVER_BUDGET: u64 = 64_000_000;
const OPERATOR_BUDGET: u64 = 64_000_000;

const NONROOT: &str = "65532:65532";

fn image(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: the image tests run under `cargo xtask test`, which \
             builds the images first (or build them with `cargo xtask image server operator` \
             and set GANTRY_IMAGE_SERVER and GANTRY_IMAGE_OPERATOR to the printed names)"
        )
    })
}

fn buildah(args: &[&str]) -> Output {
    let driver =
        std::env::var("GANTRY_BUILDAH_STORAGE_DRIVER").unwrap_or_else(|_| "vfs".to_owned());
    Command::new("buildah")
        .args(["--storage-driver", &driver])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running buildah {args:?}: {e}"))
}

fn buildah_ok(args: &[&str]) -> String {
    let out = buildah(args);
    assert!(
        out.status.success(),
        "buildah {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A working container of an image with its root filesystem mounted;
/// removed on drop.
struct Mounted {
    container: String,
    root: PathBuf,
}

impl Mounted {
    fn new(image: &str) -> Self {
        let container = buildah_ok(&["from", "--pull=never", "--quiet", image]);
        let out = buildah(&["mount", &container]);
        if !out.status.success() {
            buildah(&["rm", &container]);
            panic!(
                "buildah mount {container} failed (it needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self { container, root }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        buildah(&["umount", &self.container]);
        buildah(&["rm", &self.container]);
    }
}

/// The image's OCI configuration (`config` of the image config JSON).
fn oci_config(image: &str) -> Value {
    let inspect: Value =
        serde_json::from_str(&buildah_ok(&["inspect", "--type", "image", image])).unwrap();
    inspect["OCIv1"]["config"].clone()
}

/// The bytes of the regular files under `dir`, not following symlinks.
fn content_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.is_dir() {
            total += content_size(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// The checks every image shares; returns its mounted root filesystem.
fn check_image(image: &str, binary: &str, budget: u64) -> Mounted {
    let config = oci_config(image);
    let path = format!("/usr/local/bin/{binary}");
    assert_eq!(
        config["User"], NONROOT,
        "{image} runs as {}",
        config["User"]
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([path]),
        "{image}: the binary is the entrypoint"
    );
    assert!(
        config["Cmd"].as_array().is_none_or(Vec::is_empty),
        "{image}: no default arguments, got {}",
        config["Cmd"]
    );

    let mounted = Mounted::new(image);
    let root = &mounted.root;
    // No shell, no package manager: no programs at all but ours.
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
        let entries: Vec<String> = std::fs::read_dir(root.join(dir))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(entries.is_empty(), "{image}: /{dir} holds {entries:?}");
    }
    for program in ["bin/sh", "usr/bin/dpkg", "usr/bin/apt-get", "sbin/apk"] {
        assert!(
            root.join(program).symlink_metadata().is_err(),
            "{image} has /{program}"
        );
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{image}: no nonroot user in /etc/passwd:\n{passwd}"
    );
    let size = content_size(root);
    println!("{image}: {size} bytes of content (budget {budget})");
    assert!(
        size <= budget,
        "{image} holds {size} bytes, over its budget of {budget}"
    );
    mounted
}

/// Copies the image's binary out, to `dir`.
fn take_out(mounted: &Mounted, binary: &str, dir: &Path) -> PathBuf {
    let to = dir.join(binary);
    std::fs::copy(mounted.root.join("usr/local/bin").join(binary), &to).unwrap();
    to
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gantry-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `GET path` until it answers 200 (or the child exits, or a minute
/// passes); returns the body.
fn wait_ok(child: &mut Child, address: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the process exited ({status}) before GET {path} answered 200; last: {last}");
        }
        match http_get(address, path) {
            Ok((200, body)) => return body,
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} on {address} did not answer 200 within a minute; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process, leader of its own process group, killed with that
/// group on drop (a server under `unshare --fork` is a grandchild).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts gantry-server with `command` on a free loopback port and checks
/// that each of `paths` answers 200 (`/readyz` needs its database).
fn server_answers(mut command: Command, paths: &[&str]) {
    let port = free_port();
    let child = command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting gantry-server");
    let mut running = Running(child);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    for path in paths {
        wait_ok(&mut running.0, address, path);
    }
}

/// The server container and the volumes of the pod template the operator
/// builds for examples/minimal.yaml.
fn minimal_example_pod() -> (Container, Vec<Volume>) {
    let yaml = std::fs::read_to_string(root().join("examples/minimal.yaml")).unwrap();
    let mut gs: GoServer = serde_norway::from_str(&yaml).unwrap();
    // What the apiserver adds before the operator sees it.
    gs.metadata.namespace = Some("default".to_owned());
    gs.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    let children = gantry_operator::build::build(&gs).expect("the example builds");
    let pod = children
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    let container = pod.containers.into_iter().next().expect("a container");
    (container, pod.volumes.unwrap_or_default())
}

fn probe_path(probe: Option<&Probe>) -> String {
    probe
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .expect("an HTTP probe")
}

/// The command that runs the image's entrypoint as the kubelet would run
/// `container`: in a mount namespace of its own, the image's root
/// filesystem (read-only if the container says so) with a tmpfs on each
/// emptyDir mount, the image's working directory, the image's environment
/// and then the container's, as the container's user or else the image's.
/// Only the network is this machine's: the test gives it a loopback port.
fn pod_command(
    mounted: &Mounted,
    config: &Value,
    container: &Container,
    volumes: &[Volume],
) -> Command {
    let root = mounted.root.display().to_string();
    let security = container.security_context.clone().unwrap_or_default();
    let mut script = vec![
        "set -e".to_owned(),
        format!("mount --bind '{root}' '{root}'"),
    ];
    if security.read_only_root_filesystem == Some(true) {
        script.push(format!("mount -o remount,bind,ro '{root}'"));
    }
    for mount in container.volume_mounts.iter().flatten() {
        let empty_dir = volumes
            .iter()
            .any(|v| v.name == mount.name && v.empty_dir.is_some());
        assert!(empty_dir, "only emptyDir volumes are emulated: {mount:?}");
        script.push(format!(
            "mount -t tmpfs -o mode=1777 tmpfs '{root}{}'",
            mount.mount_path
        ));
    }
    let (image_user, image_group) = config["User"]
        .as_str()
        .and_then(|u| u.split_once(':'))
        .expect("the image names uid:gid");
    let uid = security
        .run_as_user
        .map_or_else(|| image_user.to_owned(), |u| u.to_string());
    let gid = security
        .run_as_group
        .map_or_else(|| image_group.to_owned(), |g| g.to_string());
    let workdir = config["WorkingDir"].as_str().unwrap_or("/");
    let entrypoint: Vec<String> = config["Entrypoint"]
        .as_array()
        .expect("an entrypoint")
        .iter()
        .map(|a| format!("'{}'", a.as_str().unwrap()))
        .collect();
    script.push(format!(
        "exec unshare --root='{root}' --wd='{workdir}' --setuid={uid} --setgid={gid} -- {}",
        entrypoint.join(" ")
    ));

    let mut command = Command::new("unshare");
    command.args(["--mount", "--fork", "--", "sh", "-c", &script.join("\n")]);
    command.env_clear();
    for pair in config["Env"].as_array().into_iter().flatten() {
        let (name, value) = pair.as_str().and_then(|p| p.split_once('=')).unwrap();
        command.env(name, value);
    }
    for var in container.env.iter().flatten() {
        command.env(&var.name, var.value.clone().unwrap_or_default());
    }
    // The host's tools (mount, unshare) run before the root changes.
    command.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

#[test]
fn image_server_is_distroless_non_root_and_serves_health() {
    let image = image("GANTRY_IMAGE_SERVER");
    let mounted = check_image(&image, "gantry-server", SERVER_BUDGET);
    let config = oci_config(&image);
    assert_eq!(config["WorkingDir"], "/app");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");

    // Taken out of the image, on this machine, with a database of its own.
    let dir = scratch_dir("server");
    let binary = take_out(&mounted, "gantry-server", &dir);
    let mut command = Command::new(&binary);
    command.current_dir(&dir).env(
        "DATABASE_URL",
        format!("sqlite://{}/gantry.db?mode=rwc", dir.display()),
    );
    server_answers(command, &["/healthz", "/readyz"]);

    // As a pod of the Deployment the operator makes for the minimal
    // example runs it: read-only root filesystem, writable /tmp, the
    // image's user, environment and working directory.
    let (container, volumes) = minimal_example_pod();
    let readiness = probe_path(container.readiness_probe.as_ref());
    let liveness = probe_path(container.liveness_probe.as_ref());
    server_answers(
        pod_command(&mounted, &config, &container, &volumes),
        &[&liveness, &readiness],
    );
    assert!(
        !mounted.root.join("tmp/gantry.db").exists(),
        "the pod's /tmp is its own, not the image's"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn image_operator_is_distroless_non_root_and_serves_health() {
    let image = image("GANTRY_IMAGE_OPERATOR");
    let mounted = check_image(&image, "gantry-operator", OPERATOR_BUDGET);

    // Inside the image's own files, as its user: it runs, and prints the
    // CRD it manages.
    let out = Command::new("chroot")
        .arg(format!("--userspec={NONROOT}"))
        .arg(&mounted.root)
        .args(["/usr/local/bin/gantry-operator", "crd"])
        .output()
        .expect("running chroot");
    assert!(
        out.status.success(),
        "gantry-operator crd in the image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: goservers.gantry.dev"));

    // Taken out of the image and run against the test cluster, watching a
    // namespace of its own: it connects, and its probes answer once it
    // watches goservers.
    let ns = TestNamespace::new("image").await;
    operator_support::install_crd(&ns.client).await;
    let dir = scratch_dir("operator");
    let binary = take_out(&mounted, "gantry-operator", &dir);
    let operator =
        OperatorProcess::start_binary(&binary, "image", &["--namespace", &ns.name], None, &[]);
    let address = operator.http_address(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    for path in ["/healthz", "/readyz"] {
        loop {
            match http_get(address, path) {
                Ok((200, _)) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "GET {path}: no 200 within a minute, last: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (code, metrics) = operator.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("gantry_"), "{metrics}");
    drop(operator);
    std::fs::remove_dir_all(&dir).unwrap();
}
