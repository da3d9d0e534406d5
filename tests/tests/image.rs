//! The images `cargo xtask image` builds (`cargo xtask test` builds both
//! and passes their names in `GANTRY_IMAGE_SERVER` and
//! `GANTRY_IMAGE_OPERATOR`): each runs its binary as the entrypoint, as the
//! non-root user 65532, has no shell and no package manager, stays within
//! its size budget, and its binary answers its health endpoints taken out
//! of the image. The server image also runs the way the pods the operator
//! makes run it (read-only root filesystem, a writable /tmp, the image's
//! user, environment and working directory) and becomes ready; the
//! operator image runs the way the chart's pods run it (the Deployment's
//! arguments and security context, in-cluster configuration from a token
//! of the chart's ServiceAccount) and brings the minimal example to Ready.
//!
//! The images are opened with `buildah from` and `buildah mount`, and the
//! pod is emulated with a mount namespace (`unshare`), which needs root (as
//! `cargo xtask test` runs in CI).

mod operator_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use std::os::unix::process::CommandExt;

use gantry_e2e::TestNamespace;
use gantry_e2e::chart::{Release, service_account_token};
use gantry_e2e::operator::{OperatorProcess, root, wait_http_ok};
use gantry_operator::crd::GoServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use kube::Api;
use kube::config::Kubeconfig;
use serde_json::Value;

/// The size budgets (uncompressed content), the measured size plus about a
/// megabyte, so that growth is noticed: static binaries built with the
/// `dist` profile on distroless `static` (1.6 MB). Measured 2026-12-03,
/// with the canary: server 9.72 MB, operator 20.98 MB. The ServiceMonitor
/// and Gateway API children had added 1.3 MB to the operator before, most
/// of it the serde code of the generated `HTTPRoute` types. Measured
/// 2026-12-07: operator 22.29 MB, 1.3 MB more, after the rollout-trust
/// work (the outbox and its retried, signed deliveries, the apiserver's
/// clock, named write points).
const SERVER_BUDGET: u64 = 11_000_000;
const OPERATOR_BUDGET: u64 = 23_500_000;

/// The budgets of the images `cargo xtask test` builds by default, with the
/// `image-test` profile (no LTO, 16 codegen units, `opt-level` 1): measured
/// plus about a megabyte, like the shipped ones, so that growth is noticed
/// in every run; `cargo xtask test --dist-images` checks the shipped ones.
/// Measured 2026-12-07: server 11.08 MB, operator 25.88 MB (the binaries
/// 9.52 MB and 24.33 MB).
const TEST_SERVER_BUDGET: u64 = 12_000_000;
const TEST_OPERATOR_BUDGET: u64 = 27_000_000;

/// The size budget of `binary`'s image, by the cargo profile its label
/// `dev.gantry.profile` names.
fn budget(image: &str, binary: &str) -> u64 {
    let config = oci_config(image);
    let profile = config["Labels"]["dev.gantry.profile"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "{image} has no label dev.gantry.profile: {}",
                config["Labels"]
            )
        });
    match (profile, binary) {
        ("dist", "gantry-server") => SERVER_BUDGET,
        ("dist", "gantry-operator") => OPERATOR_BUDGET,
        ("image-test", "gantry-server") => TEST_SERVER_BUDGET,
        ("image-test", "gantry-operator") => TEST_OPERATOR_BUDGET,
        _ => panic!("{image}: no size budget for {binary} built with profile {profile}"),
    }
}

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
fn check_image(image: &str, binary: &str) -> Mounted {
    let config = oci_config(image);
    let budget = budget(image, binary);
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
    wait_http_ok(address, path, Duration::from_secs(60), || {
        child.try_wait().ok().flatten().map(|s| s.to_string())
    })
}

/// A child process, leader of its own process group, killed with that
/// group on drop (a server under `unshare --fork` is a grandchild).
struct Running(Child);

impl Running {
    fn spawn(command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", command.get_program().display()));
        Self(child)
    }
}

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
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string());
    let mut running = Running::spawn(&mut command);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    for path in paths {
        wait_ok(&mut running.0, address, path);
    }
}

/// The pod template the operator builds for examples/minimal.yaml.
fn minimal_example_pod() -> PodSpec {
    let yaml = std::fs::read_to_string(root().join("examples/minimal.yaml")).unwrap();
    let mut gs: GoServer = serde_norway::from_str(&yaml).unwrap();
    // What the apiserver adds before the operator sees it.
    gs.metadata.namespace = Some("default".to_owned());
    gs.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    let revision = gantry_operator::build::spec_revision(&gs).expect("the example builds");
    let children = gantry_operator::build::build(&gs, revision).expect("the example builds");
    children
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

fn probe_path(probe: Option<&Probe>) -> String {
    probe
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .expect("an HTTP probe")
}

/// What the kubelet would add to a pod that this test supplies itself.
#[derive(Default)]
struct Kubelet {
    /// Values of the downward API fields (`metadata.name`, ...).
    fields: Vec<(&'static str, String)>,
    /// Host directories bind-mounted read-only at paths in the container
    /// (the ServiceAccount token, say).
    binds: Vec<(PathBuf, &'static str)>,
    /// Variables the kubelet sets (`KUBERNETES_SERVICE_HOST`, ...).
    env: Vec<(&'static str, String)>,
}

/// The container's environment on `command`: the image's, the kubelet's,
/// then the container's own (downward API fields from `kubelet`).
fn set_env(command: &mut Command, config: &Value, container: &Container, kubelet: &Kubelet) {
    command.env_clear();
    for pair in config["Env"].as_array().into_iter().flatten() {
        let (name, value) = pair.as_str().and_then(|p| p.split_once('=')).unwrap();
        command.env(name, value);
    }
    for (name, value) in &kubelet.env {
        command.env(name, value);
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => {
                let field = &from
                    .field_ref
                    .as_ref()
                    .expect("only fieldRef is emulated")
                    .field_path;
                kubelet
                    .fields
                    .iter()
                    .find(|(f, _)| f == field)
                    .unwrap_or_else(|| panic!("no value for the field {field}"))
                    .1
                    .clone()
            }
            (None, None) => String::new(),
        };
        command.env(&var.name, value);
    }
}

/// Where `path` of the container lands under `root`: its symlinks resolved
/// inside `root`, as they would be in the container (the image's
/// `/var/run` is a link to `/run`, say), never outside it.
fn in_root(root: &Path, path: &str) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                resolved.pop();
            }
            _ => {
                let candidate = resolved.join(&part);
                let on_disk = root.join(candidate.strip_prefix("/").unwrap());
                if let Ok(target) = std::fs::read_link(&on_disk) {
                    links += 1;
                    assert!(links < 40, "too many links resolving {path}");
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        resolved = PathBuf::from("/");
                    }
                    pending.extend(target.split('/').rev().map(str::to_owned));
                } else {
                    resolved = candidate;
                }
            }
        }
    }
    root.join(resolved.strip_prefix("/").unwrap())
}

/// The command that runs the first container of `pod` from the mounted
/// image as the kubelet would: in a mount namespace of its own, the image's
/// root filesystem (read-only if the container says so) with a tmpfs on
/// each emptyDir mount, the image's working directory, the image's
/// environment and then the container's, the container's command and
/// arguments (else the image's), as the container's or the pod's user
/// (else the image's). Only the network is this machine's: the test gives
/// it loopback addresses.
fn pod_command(mounted: &Mounted, config: &Value, pod: &PodSpec, kubelet: &Kubelet) -> Command {
    let container = pod.containers.first().expect("a container");
    let root = mounted.root.display().to_string();
    let security = container.security_context.clone().unwrap_or_default();
    let pod_security = pod.security_context.clone().unwrap_or_default();
    let mut script = vec![
        "set -e".to_owned(),
        format!("mount --bind '{root}' '{root}'"),
    ];
    let binds: Vec<(&PathBuf, PathBuf)> = kubelet
        .binds
        .iter()
        .map(|(host, path)| (host, in_root(&mounted.root, path)))
        .collect();
    for (_, target) in &binds {
        script.push(format!("mkdir -p '{}'", target.display()));
    }
    if security.read_only_root_filesystem == Some(true) {
        script.push(format!("mount -o remount,bind,ro '{root}'"));
    }
    for mount in container.volume_mounts.iter().flatten() {
        let empty_dir = pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == mount.name && v.empty_dir.is_some());
        assert!(empty_dir, "only emptyDir volumes are emulated: {mount:?}");
        script.push(format!(
            "mount -t tmpfs -o mode=1777 tmpfs '{root}{}'",
            mount.mount_path
        ));
    }
    for (host, target) in &binds {
        script.push(format!(
            "mount --bind -o ro '{}' '{}'",
            host.display(),
            target.display()
        ));
    }
    let (image_user, image_group) = config["User"]
        .as_str()
        .and_then(|u| u.split_once(':'))
        .expect("the image names uid:gid");
    let uid = security
        .run_as_user
        .or(pod_security.run_as_user)
        .map_or_else(|| image_user.to_owned(), |u| u.to_string());
    let gid = security
        .run_as_group
        .or(pod_security.run_as_group)
        .map_or_else(|| image_group.to_owned(), |g| g.to_string());
    let workdir = config["WorkingDir"].as_str().unwrap_or("/");
    let image_list = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    let mut argv = container
        .command
        .clone()
        .unwrap_or_else(|| image_list("Entrypoint"));
    argv.extend(container.args.clone().unwrap_or_else(|| image_list("Cmd")));
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    script.push(format!(
        "exec unshare --root='{root}' --wd='{workdir}' --setuid={uid} --setgid={gid} -- {}",
        quoted.join(" ")
    ));

    let mut command = Command::new("unshare");
    command.args(["--mount", "--fork", "--", "sh", "-c", &script.join("\n")]);
    set_env(&mut command, config, container, kubelet);
    // The host's tools (mount, unshare) run before the root changes.
    command.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

#[test]
fn image_server_is_distroless_non_root_and_serves_health() {
    let image = image("GANTRY_IMAGE_SERVER");
    let mounted = check_image(&image, "gantry-server");
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
    let pod = minimal_example_pod();
    let container = &pod.containers[0];
    let readiness = probe_path(container.readiness_probe.as_ref());
    let liveness = probe_path(container.liveness_probe.as_ref());
    server_answers(
        pod_command(&mounted, &config, &pod, &Kubelet::default()),
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
    let mounted = check_image(&image, "gantry-operator");

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
    let mut operator =
        OperatorProcess::start_binary(&binary, "image", &["--namespace", &ns.name], None, &[]);
    for path in ["/healthz", "/readyz"] {
        operator.wait_ok(path, Duration::from_secs(60));
    }
    let (code, metrics) = operator.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("gantry_"), "{metrics}");
    drop(operator);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The files of a pod's ServiceAccount volume (token, ca.crt, namespace)
/// for `account`, in a new host directory, and the apiserver's host and
/// port for `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
async fn service_account_volume(ns: &TestNamespace, account: &str) -> (PathBuf, String, String) {
    let token = service_account_token(ns, account).await;
    let kubeconfig = Kubeconfig::read().expect("the admin kubeconfig");
    let cluster = kubeconfig.clusters[0].cluster.clone().expect("a cluster");
    let (host, api_port) = cluster
        .server
        .as_deref()
        .and_then(|s| s.strip_prefix("https://"))
        .map(|s| s.trim_end_matches('/'))
        .and_then(|s| s.rsplit_once(':'))
        .expect("the apiserver at https://<host>:<port>");
    let ca = std::fs::read(cluster.certificate_authority.expect("a CA file")).unwrap();
    let secrets = scratch_dir("operator-sa");
    std::fs::write(secrets.join("token"), token).unwrap();
    std::fs::write(secrets.join("ca.crt"), ca).unwrap();
    std::fs::write(secrets.join("namespace"), &ns.name).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (secrets, host.to_owned(), api_port.to_owned())
}

/// The operator image run as a pod of the chart's Deployment runs it: the
/// Deployment's arguments, environment and security context (read-only
/// root, uid 65532), in-cluster configuration from a mounted ServiceAccount
/// token of the chart's account and `KUBERNETES_SERVICE_HOST`; it becomes
/// ready and brings the minimal example to Ready. (The cluster's nodes run
/// no containers, so the chart's own pods never run the image.)
#[tokio::test]
async fn image_operator_runs_as_the_charts_pod() {
    let image = image("GANTRY_IMAGE_OPERATOR");
    let release_ns = TestNamespace::new("image-chart").await;
    let app = TestNamespace::new("image-app").await;
    let release = Release::install(&release_ns.name, &release_ns.name);
    let account = release.fullname();
    let deployment = release_ns
        .api::<Deployment>()
        .get(&account)
        .await
        .expect("the chart's Deployment");
    let mut pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");

    let (secrets, host, api_port) = service_account_volume(&release_ns, &account).await;

    // The chart's arguments, with the HTTP port on loopback and the watch
    // narrowed to this test's namespace.
    let port = free_port();
    let container = &mut pod.containers[0];
    let mut args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a.starts_with("--http-address") {
                format!("--http-address=127.0.0.1:{port}")
            } else {
                a.replace("$(POD_NAMESPACE)", &release_ns.name)
            }
        })
        .collect();
    args.extend(["--namespace".to_owned(), app.name.clone()]);
    container.args = Some(args);

    let mounted = Mounted::new(&image);
    let config = oci_config(&image);
    let kubelet = Kubelet {
        fields: vec![
            ("metadata.name", "gantry-operator-image-0".to_owned()),
            ("metadata.namespace", release_ns.name.clone()),
        ],
        binds: vec![(
            secrets.clone(),
            "/var/run/secrets/kubernetes.io/serviceaccount",
        )],
        env: vec![
            ("KUBERNETES_SERVICE_HOST", host),
            ("KUBERNETES_SERVICE_PORT", api_port),
        ],
    };
    let mut running = Running::spawn(&mut pod_command(&mounted, &config, &pod, &kubelet));
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_ok(&mut running.0, address, "/readyz");

    operator_support::kubectl_apply(&app, "examples/minimal.yaml");
    operator_support::wait_ready(&app, "hello").await;
    let leases: Api<Lease> = release_ns.api();
    let lease = leases.get(&account).await.expect("the chart's Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("gantry-operator-image-0")
    );
    drop(running);
    drop(release);
    std::fs::remove_dir_all(&secrets).unwrap();
}

#[test]
fn in_root_resolves_links_inside_the_root_only() {
    let root = scratch_dir("in-root");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc", root.join("escape")).unwrap();
    assert_eq!(
        in_root(&root, "/var/run/secrets/x"),
        root.join("run/secrets/x")
    );
    assert_eq!(in_root(&root, "/escape/passwd"), root.join("etc/passwd"));
    std::fs::remove_dir_all(&root).unwrap();
}
