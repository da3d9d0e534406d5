//! Debian packages the tasks need. A fresh machine gets them from
//! `apt-get`; a machine that has them is left alone.

use std::process::Command;

use anyhow::{Result, bail};

use crate::proc;

/// A command the tasks run, and the Debian package that provides it.
#[derive(Clone, Copy)]
pub struct Package {
    pub command: &'static str,
    pub package: &'static str,
}

/// What `cargo xtask test` needs installed.
pub const TEST: &[Package] = &[
    // gantry-server's PostgreSQL test: the server binaries live in
    // /usr/lib/postgresql/<version>/bin, beside this wrapper from postgresql-common.
    Package {
        command: "pg_ctlcluster",
        package: "postgresql",
    },
    PROMETHEUS,
];

/// The metrics backend of the rollout-verification tests and the dashboard
/// previews (which run the binary themselves, on a loopback port with their
/// own configuration and storage); `promtool`, from the same package,
/// checks the shipped rules. Where no init system runs, the package's own
/// service stays stopped.
pub const PROMETHEUS: Package = Package {
    command: "prometheus",
    package: "prometheus",
};

/// Installs the packages whose command is missing.
pub fn ensure(packages: &[Package]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|p| !on_path(p.command))
        .map(|p| p.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing Debian packages: {}; install them with `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    proc::run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-q"]),
    )?;
    proc::run(
        "apt-get install",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Whether `command` is an executable file on PATH (or an absolute path).
pub fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        return executable(std::path::Path::new(command));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(command))))
}
