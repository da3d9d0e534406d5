//! Files of published Go modules (CRD manifests, mostly), fetched through
//! the Go module proxy like the control plane's sources and kept in the Go
//! module cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The directory of `module` (`path@version`) in the Go module cache,
/// downloaded once per process.
pub fn dir(module: &str) -> Result<PathBuf> {
    static DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut dirs = DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(dir) = dirs.get(module) {
        return Ok(dir.clone());
    }
    let dir = download(module)?;
    dirs.insert(module.to_owned(), dir.clone());
    Ok(dir)
}

fn download(module: &str) -> Result<PathBuf> {
    // Outside any module, so that no go.mod is read or written.
    let dir = tempfile::tempdir()?;
    let out = Command::new("go")
        .current_dir(dir.path())
        .args(["mod", "download", "-json", module])
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .output()
        .context("running go mod download")?;
    if !out.status.success() {
        bail!(
            "go mod download {module} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading go mod download's JSON")?;
    let Some(dir) = info["Dir"].as_str() else {
        bail!("go mod download printed no Dir: {info}");
    };
    Ok(PathBuf::from(dir))
}
