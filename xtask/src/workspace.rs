//! Where things live: the workspace root, the build cache outside the
//! repository, and the state directory of a running local cluster.

use std::path::PathBuf;

use anyhow::{Result, bail};
use std::process::Command;

/// The workspace root (the parent of the xtask crate).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// The cache for built control-plane binaries. It sits outside the
/// repository so that clean clones and `cargo clean` keep it.
///
/// `GANTRY_CACHE_DIR` overrides; otherwise `$XDG_CACHE_HOME/gantry`, then
/// `~/.cache/gantry`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("GANTRY_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("gantry");
    }
    let home = non_empty_env("HOME").unwrap_or_else(|| "/tmp".to_owned());
    PathBuf::from(home).join(".cache").join("gantry")
}

/// The state directory of the developer's cluster (`cargo xtask cluster`):
/// certificates, kubeconfigs, etcd data, logs and PID files.
/// `GANTRY_CLUSTER_DIR` overrides.
pub fn cluster_dir() -> PathBuf {
    non_empty_env("GANTRY_CLUSTER_DIR").map_or_else(
        || root().join("target").join("gantry").join("cluster"),
        PathBuf::from,
    )
}

/// The state directory of the throwaway cluster `cargo xtask test` runs,
/// kept apart so a test run neither reuses nor stops a developer's cluster.
pub fn test_cluster_dir() -> PathBuf {
    root().join("target").join("gantry").join("test-cluster")
}

pub fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `cargo` (the one running xtask) at the workspace root, without the
/// variables `cargo run` set for xtask itself (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...): build scripts that watch them (ring's watches
/// `CARGO_MANIFEST_DIR`) would otherwise see a changed environment, and
/// every build from xtask would rebuild them, and everything above them,
/// again after each build from a shell.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Builds the operator binary (debug, or `release`) and returns its path.
pub fn build_operator(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "gantry-operator",
        "--bin",
        "gantry-operator",
    ]);
    if release {
        cmd.arg("--release");
    }
    crate::proc::run("cargo build -p gantry-operator", &mut cmd)?;
    let target =
        non_empty_env("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let binary = target
        .join(if release { "release" } else { "debug" })
        .join("gantry-operator");
    if !binary.exists() {
        bail!(
            "cargo built gantry-operator, but {} is missing",
            binary.display()
        );
    }
    Ok(binary)
}
