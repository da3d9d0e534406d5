//! `cargo xtask test`: everything CI runs, in order: formatting, clippy, the
//! unit and black-box tests, then the end-to-end suite against a fresh local
//! control plane that is torn down afterwards, even when tests fail. Every
//! step runs even if an earlier one failed, so one run shows every problem;
//! the last line is `N passed, N failed`, where a failed step that is not a
//! test (formatting, a build, the cluster) counts as one failure.

use std::process::{Command, ExitCode};

use crate::cluster::Cluster;
use crate::image::{self, Buildah, Target};
use crate::workspace::cargo;
use crate::{cycles, deps, proc, toolchain, workspace};

#[derive(clap::Args)]
// Independent command-line switches, not a state.
#[allow(clippy::struct_excessive_bools)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    skip_lint: bool,
    /// Skip the end-to-end suite (and the control plane it needs).
    #[arg(long)]
    skip_e2e: bool,
    /// Skip building the images and the tests that check them.
    #[arg(long)]
    skip_images: bool,
    /// buildah's storage driver for the images.
    #[arg(long, env = "GANTRY_BUILDAH_STORAGE_DRIVER", default_value = "vfs")]
    storage_driver: String,
    /// Run every fault case (each write crashed after, every fuzz case)
    /// instead of the sample the default run draws.
    #[arg(long)]
    faults: bool,
    /// Build the images with the profile that ships (`dist`: fat LTO, some
    /// minutes more) instead of `image-test`, so that the image tests check
    /// the shipped images and their size budgets.
    #[arg(long)]
    dist_images: bool,
    /// Only run tests whose name contains this filter (passed to the test
    /// binaries).
    filter: Option<String>,
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    failed_steps: Vec<String>,
    /// Each panic in the output, as `test: where: message`, repeated at the
    /// end: a failing test's message is otherwise buried in pages of its
    /// captured output, out of reach of a log that keeps only the start
    /// and the end.
    panics: Vec<String>,
    /// The panic being read: its heading and the message lines so far.
    panic: Option<(String, Vec<String>)>,
}

impl Tally {
    fn step_failed(&mut self, step: &str, why: &str) {
        eprintln!("\n=== {step}: FAILED: {why}\n");
        self.failed_steps.push(step.to_owned());
    }

    /// Reads one line of `cargo test` output: counts summaries (true for
    /// one) and keeps panic messages.
    fn read(&mut self, line: &str) -> bool {
        const MESSAGE_LINES: usize = 6;
        const LINE_CHARS: usize = 400;
        if let Some((_, lines)) = self.panic.as_mut() {
            let ends = line.trim().is_empty()
                || line.starts_with("Stack backtrace:")
                || line.starts_with("note: ")
                || lines.len() == MESSAGE_LINES;
            if !ends {
                lines.push(line.chars().take(LINE_CHARS).collect());
                return false;
            }
            self.end_panic();
        }
        if let Some(heading) = panic_heading(line) {
            self.panic = Some((heading, Vec::new()));
            return false;
        }
        self.count(line)
    }

    /// Keeps the panic being read, if any, as one line.
    fn end_panic(&mut self) {
        if let Some((heading, lines)) = self.panic.take() {
            self.panics
                .push(format!("{heading}: {}", lines.join(" / ")));
        }
    }

    /// Adds the counts of a libtest summary line such as
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    fn count(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        let number_before = |word: &str| -> u64 {
            rest.split(';')
                .filter_map(|part| part.trim().rsplit_once(' '))
                .find(|(_, w)| *w == word)
                .and_then(|(n, _)| n.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        self.passed += number_before("passed");
        self.failed += number_before("failed");
        true
    }
}

/// `test_name at file:line:col` from libtest's `thread 'test_name' (id)
/// panicked at file:line:col:`.
fn panic_heading(line: &str) -> Option<String> {
    let rest = line.strip_prefix("thread '")?;
    let (test, rest) = rest.split_once('\'')?;
    let (_, place) = rest.split_once(" panicked at ")?;
    Some(format!("{test} at {}", place.trim_end_matches(':')))
}

/// `--locked` in CI: the committed Cargo.lock is what gets tested.
fn locked(cmd: &mut Command) -> &mut Command {
    if std::env::var_os("CI").is_some() {
        cmd.arg("--locked");
    }
    cmd
}

pub fn run(args: &Args) -> ExitCode {
    let mut tally = Tally::default();

    // The image tests (named `image_...`) run when no filter or an image
    // filter selects them; building the images takes minutes.
    let filter: Vec<&str> = args.filter.iter().map(String::as_str).collect();
    let with_images = !args.skip_e2e
        && !args.skip_images
        && (filter.is_empty() || filter.iter().any(|f| f.contains("image")));

    // One apt-get run for every package the steps below need.
    let mut packages = deps::TEST.to_vec();
    if with_images {
        packages.extend_from_slice(image::PACKAGES);
    }
    if let Err(err) = deps::ensure(&packages) {
        tally.step_failed("installing Debian packages", &format!("{err:#}"));
    }

    if !args.skip_lint {
        lint(&mut tally);
    }

    eprintln!("\n=== unit and black-box tests");
    let mut unit = cargo();
    locked(unit.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "gantry-e2e",
    ]));
    if args.faults {
        unit.env("GANTRY_FAULTS", "full");
    }
    run_tests(&mut tally, "unit tests", unit.arg("--").args(&filter));

    if filter.is_empty() || filter.iter().any(|f| f.contains("rules")) {
        alert_rules(&mut tally);
    }
    if filter.is_empty() || filter.iter().any(|f| f.contains("schemathesis")) {
        api_fuzz(&mut tally);
    }
    if filter.is_empty() || filter.iter().any(|f| f.contains("bench")) {
        // The quick server benchmark needs no cluster; like the operator's,
        // it has no thresholds and counts as one test, passed when every
        // server was built and measured.
        eprintln!("\n=== cargo xtask bench server --quick");
        match crate::bench_server::quick() {
            Ok(()) => tally.passed += 1,
            Err(err) => tally.step_failed("bench server --quick", &format!("{err:#}")),
        }
    }
    if filter.is_empty()
        || filter
            .iter()
            .any(|f| f.contains("bench") || f.contains("judge"))
    {
        // The judges' accuracy on generated releases, quick and without
        // thresholds: one test, passed when the benchmark ran.
        eprintln!("\n=== cargo xtask bench judge --quick");
        match crate::bench_judge::run(true, None) {
            Ok(_) => tally.passed += 1,
            Err(err) => tally.step_failed("bench judge --quick", &format!("{err:#}")),
        }
    }

    if !args.skip_e2e {
        let images = if with_images {
            let profile = if args.dist_images {
                image::SHIPPED
            } else {
                image::UNDER_TEST
            };
            images(&mut tally, &args.storage_driver, profile)
        } else {
            None
        };
        e2e(
            &mut tally,
            &filter,
            images.as_ref(),
            &args.storage_driver,
            args.faults,
        );
    }

    tally.end_panic();
    eprintln!();
    if !tally.panics.is_empty() {
        eprintln!("panics:");
        for panic in &tally.panics {
            eprintln!("  {panic}");
        }
    }
    if !tally.failed_steps.is_empty() {
        eprintln!("failed steps: {}", tally.failed_steps.join(", "));
    }
    let failed = tally.failed + tally.failed_steps.len() as u64;
    println!("{} passed, {failed} failed", tally.passed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn lint(tally: &mut Tally) {
    eprintln!("=== cargo fmt --check");
    if let Err(err) = proc::run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    ) {
        tally.step_failed(
            "cargo fmt --check",
            &format!("{err:#}; run `cargo fmt --all`"),
        );
    }
    eprintln!("=== cargo clippy");
    if let Err(err) = proc::run(
        "cargo clippy",
        locked(cargo().args(["clippy", "--workspace", "--all-targets"]))
            .args(["--", "-D", "warnings"]),
    ) {
        tally.step_failed("cargo clippy", &format!("{err:#}"));
    }
    eprintln!("=== module loops");
    match cycles::check(&workspace::root()) {
        Ok(loops) if loops.is_empty() => {}
        Ok(loops) => {
            for description in &loops {
                eprintln!("{description}");
            }
            tally.step_failed(
                "module loops",
                &format!(
                    "{} loop(s) of modules using each other (modules import downward only; `cargo xtask loops` lists them)",
                    loops.len()
                ),
            );
        }
        Err(err) => tally.step_failed("module loops", &format!("{err:#}")),
    }
}

/// Runs a `cargo test` command, echoing its output and counting its results.
fn run_tests(tally: &mut Tally, step: &str, cmd: &mut Command) {
    let mut summaries = 0;
    let status = proc::stream_lines(step, cmd, |line| {
        println!("{line}");
        if tally.read(line) {
            summaries += 1;
        }
    });
    match status {
        Ok(status) if status.success() => {}
        // Failing tests are already counted; a non-zero exit without any
        // failure counted means the build (or the harness) failed.
        Ok(status) if tally.failed > 0 && summaries > 0 => {
            eprintln!("{step}: {status}");
        }
        Ok(status) => tally.step_failed(step, &format!("cargo test exited with {status}")),
        Err(err) => tally.step_failed(step, &format!("{err:#}")),
    }
}

/// `promtool check rules` and `promtool test rules` on the shipped alerting
/// rules; each counts as one test.
fn alert_rules(tally: &mut Tally) {
    eprintln!("\n=== promtool: deploy/monitoring/rules.yaml");
    let dir = workspace::root().join("deploy").join("monitoring");
    for (step, args) in [
        ("promtool check rules", ["check", "rules", "rules.yaml"]),
        ("promtool test rules", ["test", "rules", "rules.test.yaml"]),
    ] {
        match proc::run(step, Command::new("promtool").args(args).current_dir(&dir)) {
            Ok(()) => tally.passed += 1,
            Err(err) => tally.step_failed(step, &format!("{err:#}")),
        }
    }
}

/// schemathesis against a live gantry-server; each run counts as one test.
fn api_fuzz(tally: &mut Tally) {
    eprintln!("\n=== schemathesis against gantry-server");
    let mut build = cargo();
    locked(build.args(["build", "-p", "gantry-server", "--bin", "gantry-server"]));
    match crate::api_fuzz::run(&mut build) {
        Ok(outcomes) => {
            for outcome in outcomes {
                if outcome.passed {
                    tally.passed += 1;
                } else {
                    eprintln!("{}: FAILED", outcome.name);
                    tally.failed += 1;
                }
            }
        }
        Err(err) => tally.step_failed("schemathesis", &format!("{err:#}")),
    }
}

/// The built images, for the image tests (names in target order).
struct Images {
    server: String,
    operator: String,
}

fn images(tally: &mut Tally, storage_driver: &str, profile: &str) -> Option<Images> {
    eprintln!("\n=== images (profile {profile})");
    let built = image::build(
        &Buildah::new(storage_driver),
        &[Target::Server, Target::Operator],
        profile,
        true,
    );
    match built {
        Ok(names) => {
            let mut names = names.into_iter();
            Some(Images {
                server: names.next()?,
                operator: names.next()?,
            })
        }
        Err(err) => {
            tally.step_failed("building the images", &format!("{err:#}"));
            None
        }
    }
}

fn e2e(
    tally: &mut Tally,
    filter: &[&str],
    images: Option<&Images>,
    storage_driver: &str,
    faults: bool,
) {
    eprintln!("\n=== end-to-end tests");
    // Build first, so the cluster does not idle through a compile and a
    // build error is reported as such.
    if let Err(err) = proc::run(
        "building the e2e tests",
        locked(cargo().args(["test", "-p", "gantry-e2e", "--no-run"])),
    ) {
        tally.step_failed("building the e2e tests", &format!("{err:#}"));
        return;
    }
    // The trace tests' Jaeger, cached apart from the control plane: built
    // (for minutes) only when the cache lacks this version, and only when
    // the trace tests are selected.
    let jaeger = if filter.is_empty() || filter.iter().any(|f| f.contains("trace")) {
        match toolchain::ensure_jaeger() {
            Ok(binary) => Some(binary),
            Err(err) => {
                tally.step_failed("building Jaeger", &format!("{err:#}"));
                None
            }
        }
    } else {
        None
    };
    let cluster = Cluster::at(workspace::test_cluster_dir());
    if let Err(err) = cluster.up(3) {
        tally.step_failed("cluster up", &format!("{err:#}"));
        let _ = cluster.down();
        return;
    }
    let bin_dir = toolchain::bin_dir().unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir.clone()];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = cargo();
    locked(cmd.args(["test", "--no-fail-fast", "-p", "gantry-e2e"]))
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("GANTRY_BIN_DIR", &bin_dir)
        .env("PATH", std::env::join_paths(paths).unwrap_or(path))
        .env("GANTRY_BUILDAH_STORAGE_DRIVER", storage_driver);
    if faults {
        cmd.env("GANTRY_FAULTS", "full");
    }
    if let Some(images) = images {
        cmd.env("GANTRY_IMAGE_SERVER", &images.server)
            .env("GANTRY_IMAGE_OPERATOR", &images.operator);
    }
    if let Some(jaeger) = &jaeger {
        cmd.env("GANTRY_JAEGER", jaeger);
    }
    cmd.arg("--").args(filter);
    if images.is_none() {
        // The image tests need the images; without them they are skipped.
        cmd.args(["--skip", "image_"]);
    }
    if jaeger.is_none() {
        // Not selected, or its build failed (already counted).
        cmd.args(["--skip", "traces_"]);
    }
    run_tests(tally, "e2e tests", &mut cmd);
    if filter.is_empty() || filter.iter().any(|f| f.contains("restart")) {
        // Tests that kill the control plane's own processes: alone, after
        // everything else that uses it.
        eprintln!("\n=== control-plane restarts");
        let mut restarts = cargo();
        locked(restarts.args([
            "test",
            "-p",
            "gantry-e2e",
            "--test",
            "control_plane_restarts",
        ]))
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("GANTRY_BIN_DIR", &bin_dir)
        .args(["--", "--ignored"]);
        if faults {
            restarts.env("GANTRY_FAULTS", "full");
        }
        run_tests(tally, "control-plane restarts", &mut restarts);
    }
    if filter.is_empty() || filter.iter().any(|f| f.contains("bench")) {
        // The quick operator benchmark, without thresholds: it counts as
        // one test, passed when every phase finished.
        eprintln!("\n=== cargo xtask bench operator --quick");
        match crate::bench_operator::measure(&cluster, true) {
            Ok(report) => {
                eprintln!("{report}");
                tally.passed += 1;
            }
            Err(err) => tally.step_failed("bench operator --quick", &format!("{err:#}")),
        }
    }
    if let Err(err) = cluster.down() {
        tally.step_failed("cluster down", &format!("{err:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn counts_libtest_summaries() {
        let mut tally = Tally::default();
        assert!(tally.count(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        ));
        assert!(tally.count(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s"
        ));
        assert!(!tally.count("running 5 tests"));
        assert_eq!((tally.passed, tally.failed), (15, 2));
    }

    #[test]
    fn keeps_panic_messages() {
        let mut tally = Tally::default();
        let output = [
            "running 2 tests",
            "[operator x] a log line",
            "thread 'restarts' (29218) panicked at tests/tests/support.rs:192:6:",
            "called `Result::unwrap()` on an `Err` value: timed out after 90s",
            "last seen: {}",
            "",
            "Stack backtrace:",
            "thread 'old_style' panicked at src/lib.rs:3:5:",
            "assertion failed: ok",
            "note: run with `RUST_BACKTRACE=1`",
            "test result: FAILED. 0 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
        ];
        let summaries = output.iter().filter(|line| tally.read(line)).count();
        assert_eq!(summaries, 1);
        assert_eq!(tally.failed, 2);
        assert_eq!(
            tally.panics,
            [
                "restarts at tests/tests/support.rs:192:6: called `Result::unwrap()` on an `Err` value: timed out after 90s / last seen: {}",
                "old_style at src/lib.rs:3:5: assertion failed: ok",
            ]
        );
    }
}
