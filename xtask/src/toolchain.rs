//! Builds the control-plane binaries, and the trace backend of the trace
//! tests, from the Go wrapper modules in `tools/` into a cache outside the
//! repository.
//!
//! Each module under `tools/` pins its commands with `tool` directives and a
//! committed go.sum. The control plane lands in `<cache>/k8s-<version>/bin`,
//! Jaeger in `<cache>/jaeger-<version>/bin`, each next to a stamp: a hash of
//! its modules' go.mod and go.sum, the Go version and the link flags. A
//! matching stamp means the build is skipped, so only the first run (or a
//! version bump) pays for it. The two builds have separate stamps so that
//! neither invalidates the other: Jaeger took no part in the control
//! plane's stamp when it was added, and a Jaeger bump does not rebuild
//! Kubernetes.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{deps, proc, workspace};

/// A Go wrapper module and the commands it builds.
struct Module {
    dir: &'static str,
    packages: &'static [&'static str],
}

const MODULES: &[Module] = &[
    Module {
        dir: "etcd",
        packages: &["go.etcd.io/etcd/server/v3"],
    },
    Module {
        dir: "k8s",
        packages: &[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
        ],
    },
    Module {
        dir: "kwok",
        packages: &["sigs.k8s.io/kwok/cmd/kwok"],
    },
    Module {
        dir: "helm",
        packages: &["helm.sh/helm/v4/cmd/helm"],
    },
];

/// The trace backend that the trace tests run on loopback (OTLP in, query
/// API out). Not part of the control plane: built into a cache directory of
/// its own, with its own stamp.
const JAEGER: Module = Module {
    dir: "jaeger",
    packages: &["github.com/jaegertracing/jaeger/cmd/jaeger"],
};

/// The file, beside the binaries, holding kwok's stages.
pub const KWOK_STAGES: &str = "kwok-stages.yaml";

/// The stage sets, from kwok's own module, that make nodes Ready (and keep
/// their heartbeat and lease) and pods Running, Ready and deletable.
const KWOK_STAGE_SETS: &[&str] = &["node/fast", "node/heartbeat-with-lease", "pod/fast"];

/// Bump to force a rebuild when the way binaries are built changes.
const BUILD_FORMAT: &str = "1";

/// The directory of built binaries.
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The Kubernetes version the wrapper module pins, e.g. `v1.36.3`.
pub fn kubernetes_version() -> Result<String> {
    required_version("k8s", "k8s.io/kubernetes")
}

/// The Jaeger module version tools/jaeger pins, e.g. `v1.76.0` (the module
/// of Jaeger 2, whose releases keep the v1 module path).
pub fn jaeger_version() -> Result<String> {
    required_version(JAEGER.dir, "github.com/jaegertracing/jaeger")
}

/// The version of `module` that the go.mod of `tools/<dir>` requires.
fn required_version(dir: &str, module: &str) -> Result<String> {
    let go_mod = workspace::root().join("tools").join(dir).join("go.mod");
    let text =
        fs::read_to_string(&go_mod).with_context(|| format!("reading {}", go_mod.display()))?;
    let prefix = format!("{module} ");
    text.lines()
        .map(|line| line.trim().trim_start_matches("require").trim())
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("{} does not require {module}", go_mod.display()))
}

/// Where the binaries of the pinned version live (built or not).
pub fn bin_dir() -> Result<PathBuf> {
    Ok(workspace::cache_dir()
        .join(format!("k8s-{}", kubernetes_version()?))
        .join("bin"))
}

/// `-X` flags so that `/version` and `kubectl version` report the real
/// release instead of the `v0.0.0-master` a module build gets by default.
fn ldflags(version: &str) -> Result<String> {
    let minor = version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .context("Kubernetes version has no minor part")?;
    let mut flags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        write!(
            flags,
            " -X {pkg}.gitVersion={version} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} \
             -X {pkg}.gitTreeState=clean"
        )?;
    }
    Ok(flags)
}

fn go_version() -> Result<String> {
    if !deps::on_path("go") {
        bail!(
            "the `go` command was not found on PATH: the control plane is built from Go \
             modules and needs Go 1.26 or newer"
        );
    }
    let out = proc::output("go version", Command::new("go").arg("version"))?;
    Ok(out.trim().to_owned())
}

/// The stamp of a build of `modules` (directories under `tools`) with the
/// Go toolchain `go` and the link flags `flags`.
fn stamp(tools: &Path, modules: &[Module], flags: &str, go: &str) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(BUILD_FORMAT);
    hash.update(go);
    hash.update(flags);
    for module in modules {
        for file in ["go.mod", "go.sum"] {
            let path = tools.join(module.dir).join(file);
            hash.update(path.strip_prefix(tools)?.to_string_lossy().as_bytes());
            hash.update(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// Whether `dir` holds the build that `want` stamps.
fn is_built(dir: &Path, want: &str) -> bool {
    fs::read_to_string(dir.join(".stamp")).is_ok_and(|s| s.trim() == want)
}

/// Runs `build` into a staging directory beside `dir`, stamps it `want` and
/// moves it into place whole, so an interrupted build never leaves a
/// directory whose stamp matches.
fn build_into(dir: &Path, want: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let staging = dir.with_file_name("bin.partial");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    build(&staging)?;
    fs::write(staging.join(".stamp"), want)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&staging, dir).with_context(|| format!("moving the build into {}", dir.display()))
}

/// Builds the binaries unless the cache already holds this exact build.
pub fn ensure() -> Result<Binaries> {
    let version = kubernetes_version()?;
    let dir = bin_dir()?;
    let go = go_version()?;
    let flags = ldflags(&version)?;
    let want = stamp(&workspace::root().join("tools"), MODULES, &flags, &go)?;
    if is_built(&dir, &want) {
        return Ok(Binaries { dir });
    }

    eprintln!(
        "building the control plane (Kubernetes {version}, etcd, kwok, helm) into {}",
        dir.display()
    );
    eprintln!("the first build takes a while; later runs reuse it");
    let started = Instant::now();
    build_into(&dir, &want, |staging| {
        verify_staging_replaces(&version)?;
        for module in MODULES {
            build_module(module, staging, &flags)?;
        }
        write_kwok_stages(staging)
    })?;
    eprintln!("control plane built in {:.0?}", started.elapsed());
    Ok(Binaries { dir })
}

/// Where the Jaeger binary of the pinned version lives (built or not).
pub fn jaeger_binary() -> Result<PathBuf> {
    Ok(workspace::cache_dir()
        .join(format!("jaeger-{}", jaeger_version()?))
        .join("bin")
        .join("jaeger"))
}

/// Symbols stripped, and the module version as Jaeger's own version, which
/// a module build otherwise leaves empty in its start-up line.
fn jaeger_ldflags(version: &str) -> String {
    format!("-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion={version}")
}

/// Builds Jaeger unless its cache already holds this exact build; the
/// binary's path. A few minutes the first time, nothing after.
pub fn ensure_jaeger() -> Result<PathBuf> {
    let version = jaeger_version()?;
    let binary = jaeger_binary()?;
    let dir = binary
        .parent()
        .context("the Jaeger binary has a directory")?
        .to_path_buf();
    let go = go_version()?;
    let flags = jaeger_ldflags(&version);
    let want = stamp(
        &workspace::root().join("tools"),
        std::slice::from_ref(&JAEGER),
        &flags,
        &go,
    )?;
    if is_built(&dir, &want) {
        return Ok(binary);
    }

    eprintln!("building Jaeger ({version}) into {}", dir.display());
    let started = Instant::now();
    build_into(&dir, &want, |staging| {
        build_module(&JAEGER, staging, &flags)
    })?;
    eprintln!("Jaeger built in {:.0?}", started.elapsed());
    Ok(binary)
}

/// The module proxy in use, for error messages.
fn proxy() -> String {
    proc::output(
        "go env GOPROXY",
        Command::new("go").args(["env", "GOPROXY"]),
    )
    .map_or_else(
        |_| "the Go module proxy".to_owned(),
        |p| p.trim().to_owned(),
    )
}

fn go_command(module_dir: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(module_dir)
        // The committed go.sum is the pin: never rewrite it during a build,
        // and never fetch another Go toolchain.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOTOOLCHAIN", "local");
    cmd
}

fn build_module(module: &Module, out: &Path, flags: &str) -> Result<()> {
    let module_dir = workspace::root().join("tools").join(module.dir);
    let logs = workspace::cache_dir().join("logs");
    fs::create_dir_all(&logs)?;

    let proxy = std::env::var("GOPROXY").unwrap_or_else(|_| "the Go module proxy".to_owned());
    eprintln!("  tools/{}: downloading modules", module.dir);
    proc::run_logged(
        &format!(
            "downloading the Go modules of tools/{} from {proxy}",
            module.dir
        ),
        go_command(&module_dir).args(["mod", "download"]),
        &logs.join(format!("download-{}.log", module.dir)),
    )?;

    eprintln!(
        "  tools/{}: building {}",
        module.dir,
        module.packages.join(" ")
    );
    let started = Instant::now();
    proc::run_logged(
        &format!("go build in tools/{}", module.dir),
        go_command(&module_dir)
            .args(["build", "-trimpath", "-ldflags", flags, "-o"])
            .arg(format!("{}/", out.display()))
            .args(module.packages),
        &logs.join(format!("build-{}.log", module.dir)),
    )?;
    eprintln!("  tools/{}: built in {:.0?}", module.dir, started.elapsed());

    // etcd's main package is its server module, go.etcd.io/etcd/server/v3,
    // which `go build` names `server`.
    if module.dir == "etcd" {
        fs::rename(out.join("server"), out.join("etcd")).context("renaming the etcd binary")?;
    }
    Ok(())
}

/// k8s.io/kubernetes points its staging modules (k8s.io/api, client-go, …)
/// at directories of its own repository, which a module build cannot see:
/// the wrapper must replace each of them with its published release. The
/// list is taken from the pinned version's own go.mod, so a version bump
/// that adds a staging module fails here, naming it, instead of deep inside
/// `go build`.
fn verify_staging_replaces(version: &str) -> Result<()> {
    let module_dir = workspace::root().join("tools/k8s");
    let module = format!("k8s.io/kubernetes@{version}");
    // With -json, `go mod download` reports a failure in its JSON output.
    let out = go_command(&module_dir)
        .args(["mod", "download", "-json", &module])
        .output()
        .context("running `go mod download`")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if let Some(err) = info["Error"].as_str() {
        bail!("downloading {module} from {} failed: {err}", proxy());
    }
    let upstream_mod = info["GoMod"].as_str().with_context(|| {
        format!(
            "`go mod download {module}` named no go.mod ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let upstream = fs::read_to_string(upstream_mod)?;
    let ours = fs::read_to_string(module_dir.join("go.mod"))?;
    let staging_version = format!("v0.{}", version.trim_start_matches("v1."));
    let problems = staging_problems(&upstream, &ours, &staging_version);
    if !problems.is_empty() {
        bail!(
            "tools/k8s/go.mod does not replace the staging modules of k8s.io/kubernetes \
             {version} as it must:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// What is wrong with `ours` given the staging replaces in `upstream`
/// (`k8s.io/x => ./staging/src/k8s.io/x`): each one must be replaced by
/// `k8s.io/x <staging_version>`, and nothing else may be replaced.
fn staging_problems(upstream: &str, ours: &str, staging_version: &str) -> Vec<String> {
    let replaces = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|line| {
                let line = line.trim().trim_start_matches("replace").trim();
                let (from, to) = line.split_once("=>")?;
                Some((from.trim().to_owned(), to.trim().to_owned()))
            })
            .collect()
    };
    let staging: Vec<String> = replaces(upstream)
        .into_iter()
        .filter(|(_, to)| to.starts_with("./staging/"))
        .map(|(from, _)| from)
        .collect();
    let ours = replaces(ours);
    let mut problems = Vec::new();
    for module in &staging {
        let want = format!("{module} {staging_version}");
        match ours.iter().find(|(from, _)| from == module) {
            Some((_, to)) if *to == want => {}
            Some((_, to)) => problems.push(format!("{module} => {to}, expected {want}")),
            None => problems.push(format!(
                "{module} is not replaced; add `{module} => {want}`"
            )),
        }
    }
    for (from, _) in &ours {
        if !staging.contains(from) {
            problems.push(format!("{from} is replaced but is not a staging module"));
        }
    }
    problems
}

/// Concatenates kwok's stage files, as its module ships them, into one
/// multi-document YAML that `cluster up` appends to kwok's configuration.
fn write_kwok_stages(out: &Path) -> Result<()> {
    let module_dir = workspace::root().join("tools/kwok");
    let kwok = proc::output(
        "locating the kwok module",
        go_command(&module_dir).args(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"]),
    )?;
    let stages = PathBuf::from(kwok.trim()).join("kustomize/stage");
    let mut yaml = String::new();
    for set in KWOK_STAGE_SETS {
        let dir = stages.join(set);
        for file in kustomization_resources(&dir)? {
            let path = dir.join(&file);
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            yaml.push_str("---\n");
            yaml.push_str(text.trim_start_matches("---\n"));
            if !yaml.ends_with('\n') {
                yaml.push('\n');
            }
        }
    }
    fs::write(out.join(KWOK_STAGES), yaml)?;
    Ok(())
}

/// The `resources:` list of a kustomization.yaml (plain file names only).
fn kustomization_resources(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("kustomization.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let files: Vec<String> = text
        .lines()
        .skip_while(|line| line.trim() != "resources:")
        .skip(1)
        .map_while(|line| line.trim().strip_prefix("- ").map(str::to_owned))
        .collect();
    if files.is_empty() {
        bail!("{} lists no resources", path.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_wrapper_replaces_exactly_the_staging_modules() {
        let upstream = "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/kms => ./staging/src/k8s.io/kms\n)\n";
        let ours = "replace (\n\tk8s.io/api => k8s.io/api v0.36.3\n\tk8s.io/kms => k8s.io/kms v0.36.3\n)\n";
        assert!(staging_problems(upstream, ours, "v0.36.3").is_empty());

        let stale = "replace k8s.io/api => k8s.io/api v0.36.1\nreplace example.com/x => ../x\n";
        assert_eq!(
            staging_problems(upstream, stale, "v0.36.3"),
            [
                "k8s.io/api => k8s.io/api v0.36.1, expected k8s.io/api v0.36.3",
                "k8s.io/kms is not replaced; add `k8s.io/kms => k8s.io/kms v0.36.3`",
                "example.com/x is replaced but is not a staging module",
            ]
        );
    }

    /// The committed tools/k8s/go.mod against the real go.mod of the
    /// pinned Kubernetes release (fetched through the Go module proxy).
    #[test]
    fn tools_k8s_replaces_every_staging_module_of_the_pinned_release() {
        verify_staging_replaces(&kubernetes_version().unwrap()).unwrap();
    }

    #[test]
    fn reads_the_pinned_version_and_its_link_flags() {
        let version = kubernetes_version().unwrap();
        assert!(version.starts_with("v1.36."), "{version}");
        let flags = ldflags(&version).unwrap();
        assert!(flags.contains(&format!(
            "k8s.io/component-base/version.gitVersion={version}"
        )));
        assert!(flags.contains("k8s.io/client-go/pkg/version.gitMinor=36"));
    }

    /// Jaeger and the control plane are stamped apart: editing one
    /// wrapper's go.sum invalidates that build only, so a Jaeger bump never
    /// rebuilds Kubernetes.
    #[test]
    fn jaeger_and_the_control_plane_have_independent_stamps() {
        let tools = tempfile_dir("xtask-stamps");
        for module in MODULES.iter().chain([&JAEGER]) {
            fs::create_dir_all(tools.join(module.dir)).unwrap();
            for file in ["go.mod", "go.sum"] {
                fs::write(tools.join(module.dir).join(file), module.dir).unwrap();
            }
        }
        let go = "go version go1.26.0 linux/amd64";
        let stamps = || {
            (
                stamp(&tools, MODULES, "-s -w", go).unwrap(),
                stamp(&tools, std::slice::from_ref(&JAEGER), "-s -w", go).unwrap(),
            )
        };
        let (control_plane, jaeger) = stamps();

        fs::write(tools.join("jaeger/go.sum"), "a newer Jaeger").unwrap();
        let (control_plane_after, jaeger_after) = stamps();
        assert_eq!(control_plane_after, control_plane);
        assert_ne!(jaeger_after, jaeger);

        fs::write(tools.join("k8s/go.sum"), "a newer Kubernetes").unwrap();
        let (control_plane_after, jaeger_after_k8s) = stamps();
        assert_ne!(control_plane_after, control_plane);
        assert_eq!(jaeger_after_k8s, jaeger_after);
        fs::remove_dir_all(&tools).unwrap();
    }

    #[test]
    fn reads_the_pinned_jaeger_version() {
        let version = jaeger_version().unwrap();
        assert!(version.starts_with("v1."), "{version}");
        assert!(
            jaeger_binary()
                .unwrap()
                .ends_with(format!("jaeger-{version}/bin/jaeger"))
        );
        assert!(jaeger_ldflags(&version).ends_with(&format!("latestVersion={version}")));
    }

    /// A stamped build is found; a build without its stamp, or with another,
    /// is not.
    #[test]
    fn only_a_matching_stamp_counts_as_built() {
        let dir = tempfile_dir("xtask-built").join("bin");
        assert!(!is_built(&dir, "want"));
        build_into(&dir, "want", |staging| {
            fs::write(staging.join("tool"), "binary").map_err(Into::into)
        })
        .unwrap();
        assert!(is_built(&dir, "want"));
        assert!(!is_built(&dir, "other"));
        assert!(dir.join("tool").is_file());

        // A failed build leaves the old one in place, still valid.
        let failed = build_into(&dir, "other", |_| anyhow::bail!("go build failed"));
        assert!(failed.is_err());
        assert!(is_built(&dir, "want"));
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    fn tempfile_dir(prefix: &str) -> PathBuf {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn kustomization_resources_are_read_in_order() {
        let dir = std::env::temp_dir().join(format!("xtask-kustomize-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- a.yaml\n- b.yaml\n",
        )
        .unwrap();
        assert_eq!(kustomization_resources(&dir).unwrap(), ["a.yaml", "b.yaml"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
