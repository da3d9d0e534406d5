//! Running commands and managing the long-lived processes of the local
//! cluster: every failure names the step that failed, and every background
//! process is recorded by PID so that `cluster down` can stop it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Runs `cmd` to completion with its output shown; fails naming `step`.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {}", program(cmd)))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with its output captured into `log`; on failure the error
/// carries the log's last lines.
pub fn run_logged(step: &str, cmd: &mut Command, log: &Path) -> Result<()> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{step}: could not start {}", program(cmd)))?;
    if !status.success() {
        bail!(
            "{step} failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail(log, 25)
        );
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output; fails naming `step`, with
/// standard error.
pub fn output(step: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{step}: could not start {}", program(cmd)))?;
    if !out.status.success() {
        bail!(
            "{step} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// The last `lines` lines of a text file (at most the last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = BufReader::new(file).read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A background process of the local cluster, started in a process group of
/// its own (so that Ctrl-C on the terminal leaves it alone) with its output
/// in `<state>/logs/<name>.log` and its PID in `<state>/pids/<name>.pid`.
pub struct Daemon {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    pub fn spawn(name: &'static str, state: &Path, cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let log = state.join("logs").join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program(cmd)))?;
        fs::write(
            state.join("pids").join(format!("{name}.pid")),
            child.id().to_string(),
        )?;
        Ok(Self { name, log, child })
    }

    /// Fails with the tail of the log if the process has exited.
    pub fn check(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }
}

/// Polls `probe` every 250 ms until it returns `Ok(true)`, while every daemon
/// is alive, for at most `timeout`. The error says what was awaited and the
/// probe's last answer.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    daemons: &mut [Daemon],
    mut probe: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for daemon in daemons.iter_mut() {
            daemon.check()?;
        }
        let last = match probe() {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether a process with this PID exists (zombies excluded).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    stat.rsplit(')')
        .next()
        .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
}

/// Every process running one of `programs` (by the file name of its first
/// argument) whose command line mentions `marker`: this finds what a crashed
/// `cluster up` left behind even when its PID files are gone. Matching the
/// program as well keeps a shell or an editor that merely names the
/// directory out of it.
pub fn processes_mentioning(marker: &str, programs: &[&str]) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            let program = args.next().unwrap_or_default();
            let name = Path::new(program.as_ref())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            programs.contains(&name.as_str()) && args.any(|arg| arg.contains(marker))
        })
        .collect()
}

/// Sends SIGTERM to every PID, waits up to `grace` for them to exit, then
/// SIGKILLs what is left. Returns the PIDs that had to be killed.
pub fn terminate(pids: &[i32], grace: Duration) -> Vec<i32> {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stubborn: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    for pid in &stubborn {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    stubborn
}

/// Streams a child's standard output line by line to `each`, returning the
/// exit status. Standard error is passed through.
pub fn stream_lines(
    step: &str,
    cmd: &mut Command,
    mut each: impl FnMut(&str),
) -> Result<std::process::ExitStatus> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{step}: could not start {}", program(cmd)))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            each(&line?);
        }
    }
    Ok(child.wait()?)
}

/// A free TCP port on 127.0.0.1. The listener is closed before the port is
/// used, so another process could take it in between; every port is picked
/// at once and used at once, which keeps that window small.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
