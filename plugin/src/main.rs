//! `kubectl gantry`: status, revision history, rollback, promote and retry
//! of a `GoServer`. kubectl runs it as a plugin when the binary
//! `kubectl-gantry` is on the PATH (`cargo install --path plugin`).
//!
//! Rollback, promote and retry set an annotation that the operator honours
//! and removes; this waits for that and says what came of it. They need
//! `patch` on `goservers`, which anyone who edits GoServers has.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use gantry_operator::crd::{GoServer, VerificationPhase};
use gantry_operator::rollout::request::{PROMOTE, RETRY, ROLLBACK_TO};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Config, ResourceExt};
use kubectl_gantry::settled::settled;
use kubectl_gantry::{
    abort_target, history, history_table, promote_target, retry_target, rollback_target,
    status_text,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "kubectl gantry",
    version,
    about = "Revisions, verification and rollback of GoServers"
)]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Conditions, revision and verification progress.
    Status {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The revisions deployed, newest first, each verification metric
    /// against the previous verified revision.
    History {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Put an earlier revision back in force (default: the last good one).
    Rollback {
        name: String,
        /// The revision to go back to.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Pass the revision under verification now, skipping the rest.
    Promote {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Deploy the rolled-back revision again and verify it anew.
    Retry {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// End the rollout in progress (a verification or a canary) now and
    /// go back to the last good revision.
    Abort {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Set a field of the spec, as `kubectl set` does for a Deployment.
    Set {
        #[command(subcommand)]
        what: SetCommand,
    },
    /// Replace every pod with a new revision of the same spec (writes
    /// `spec.podAnnotations."gantry.dev/restartedAt"`), verified like any
    /// other.
    Restart { name: String },
    /// A completion script for `kubectl-gantry` run on its own (kubectl
    /// itself completes `kubectl gantry` through `kubectl_complete-gantry`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// kubectl's plugin completion protocol: candidates for the last of
    /// `words`, one a line, then `:4` (no file names).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Wait until the spec's revision is settled, for a CI gate: exit 0
    /// once verified and ready (ready, without verification), 1 when it
    /// was rolled back, failed or refused, 3 when held for a person
    /// (marginal, or no verdict by the deadline), 2 on timeout.
    Wait {
        name: String,
        /// How long to wait.
        #[arg(long, default_value = "600", value_name = "SECONDS")]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum SetCommand {
    /// Set the spec's image (writes `spec.image`): a new revision, rolled
    /// out and verified like any other.
    Image { name: String, image: String },
}

#[derive(clap::Args)]
struct Wait {
    /// How long to wait for the operator to handle the request.
    #[arg(long, default_value = "60", value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Completion { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "kubectl-gantry", &mut script);
            // A reader that stops early (`| head`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Complete { words } => {
            let (candidates, wants_name) = complete_words(&Cli::command(), words);
            let mut lines = candidates;
            if wants_name {
                // GoServer names, best effort: no cluster, no names.
                if let Ok(names) = goserver_names(&cli).await {
                    let partial = words.last().map_or("", String::as_str);
                    lines.extend(names.into_iter().filter(|n| n.starts_with(partial)));
                }
            }
            for line in lines {
                println!("{line}");
            }
            println!(":4");
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match Kubeconfig::read() {
        Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await?,
        // No kubeconfig: in a pod, the ServiceAccount's.
        Err(_) => Config::infer().await?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    let api: Api<GoServer> = Api::namespaced(client.clone(), &namespace);
    let on = |name: String| Object {
        api: api.clone(),
        client: client.clone(),
        namespace: namespace.clone(),
        name,
    };
    match cli.command {
        Command::Status { name, output } => {
            let gs = get(&api, &name).await?;
            let value = json!({
                "name": name, "namespace": namespace, "spec": {"image": gs.spec.image},
                "status": gs.status,
            });
            print(output, &value, || status_text(&gs))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History { name, output } => {
            let gs = get(&api, &name).await?;
            let rows = history(&gs.status.unwrap_or_default());
            print(output, &serde_json::to_value(&rows)?, || {
                history_table(&rows).render()
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { .. } | Command::Complete { .. } => Ok(ExitCode::SUCCESS),
        Command::Rollback { name, to, wait } => on(name).rollback(to, &wait).await,
        Command::Promote { name, wait } => on(name).promote(&wait).await,
        Command::Retry { name, wait } => on(name).retry(&wait).await,
        Command::Wait { name, timeout } => wait_settled(&api, &name, timeout).await,
        Command::Abort { name, wait } => on(name).abort(&wait).await,
        Command::Set {
            what: SetCommand::Image { name, image },
        } => {
            let patch = json!({"spec": {"image": image}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("setting the image of GoServer {name}"))?;
            println!("{name}: image set to {image}; `kubectl gantry wait {name}` follows it");
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { name } => {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let patch =
                json!({"spec": {"podAnnotations": {"gantry.dev/restartedAt": now.clone()}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("restarting GoServer {name}"))?;
            println!("{name}: restarted at {now}; `kubectl gantry wait {name}` follows it");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `kubectl gantry wait`: watches the GoServer (not a poll) until
/// [`settled`] says how its spec's revision ended.
async fn wait_settled(api: &Api<GoServer>, name: &str, timeout: u64) -> Result<ExitCode> {
    get(api, name).await?;
    let done = |gs: Option<&GoServer>| gs.is_none_or(|gs| settled(gs).is_some());
    let watched = tokio::time::timeout(
        Duration::from_secs(timeout),
        Box::pin(await_condition(api.clone(), name, done)),
    )
    .await;
    let Ok(seen) = watched else {
        let gs = get(api, name).await?;
        eprintln!(
            "{name}: not settled after {timeout} s: {}",
            kubectl_gantry::settled::pending(&gs)
        );
        return Ok(ExitCode::from(2));
    };
    let gs = seen
        .with_context(|| format!("watching GoServer {name}"))?
        .with_context(|| format!("GoServer {name} was deleted"))?;
    let outcome = settled(&gs).context("settled")?;
    if outcome.exit_code() == 0 {
        println!("{}", outcome.describe(name));
    } else {
        eprintln!("{}", outcome.describe(name));
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// The GoServers in the namespace the command line names (or the
/// context's).
async fn goserver_names(cli: &Cli) -> Result<Vec<String>> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(Kubeconfig::read()?, &options).await?;
    let namespace = namespace_in(&cli.command).or_else(|| cli.namespace.clone());
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let api: Api<GoServer> = Api::namespaced(Client::try_from(config)?, &namespace);
    Ok(api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect())
}

/// `-n NS` or `--namespace NS` among the words being completed.
fn namespace_in(command: &Command) -> Option<String> {
    let Command::Complete { words } = command else {
        return None;
    };
    words
        .windows(2)
        .find(|w| w[0] == "-n" || w[0] == "--namespace")
        .map(|w| w[1].clone())
}

/// Completes the last of `words` (what follows `kubectl gantry`, the last
/// one partial, possibly empty): the subcommands it may begin, and whether
/// a GoServer's name goes there.
fn complete_words(root: &clap::Command, words: &[String]) -> (Vec<String>, bool) {
    let Some((partial, before)) = words.split_last() else {
        return (Vec::new(), false);
    };
    // The positional words before the one being completed, without flags
    // and their values.
    let mut positional = Vec::new();
    let mut skip = false;
    for word in before {
        if skip {
            skip = false;
        } else if matches!(
            word.as_str(),
            "-n" | "--namespace" | "--context" | "--timeout" | "--to"
        ) {
            skip = true;
        } else if !word.starts_with('-') {
            positional.push(word.as_str());
        }
    }
    let mut command = root;
    let mut rest = positional.as_slice();
    while let Some((first, tail)) = rest.split_first() {
        match command.find_subcommand(first) {
            Some(sub) => {
                command = sub;
                rest = tail;
            }
            None => break,
        }
    }
    if command.has_subcommands() {
        let names = command
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .filter(|n| n.starts_with(partial.as_str()) && n != "help")
            .collect();
        return (names, false);
    }
    let takes_name = command.get_arguments().any(|a| a.get_id() == "name");
    (Vec::new(), takes_name && rest.is_empty())
}

/// The GoServer a request is made on.
struct Object {
    api: Api<GoServer>,
    client: Client,
    namespace: String,
    name: String,
}

impl Object {
    async fn rollback(&self, to: Option<String>, wait: &Wait) -> Result<ExitCode> {
        let status = get(&self.api, &self.name).await?.status.unwrap_or_default();
        let target = match to {
            Some(to) => to,
            None => rollback_target(&status)?,
        };
        if status.revision.as_deref() == Some(target.as_str()) {
            bail!("revision {target} is in force already");
        }
        let outcome = self
            .request(ROLLBACK_TO, &target, wait, |gs| {
                gs.status.as_ref().is_some_and(|s| {
                    s.last_good_revision.as_deref() == Some(target.as_str())
                        && s.revision.as_deref() == Some(target.as_str())
                })
            })
            .await?;
        Ok(report(outcome, &format!("rolled back to {target}")))
    }

    /// `rollback` to the last good revision, refused unless a rollout is
    /// in progress: the revision under way ends as rolled back.
    async fn abort(&self, wait: &Wait) -> Result<ExitCode> {
        let status = get(&self.api, &self.name).await?.status.unwrap_or_default();
        let (current, good) = abort_target(&status)?;
        let outcome = self
            .request(ROLLBACK_TO, &good, wait, |gs| {
                gs.status.as_ref().is_some_and(|s| {
                    s.revision.as_deref() == Some(good.as_str())
                        && s.last_good_revision.as_deref() == Some(good.as_str())
                })
            })
            .await?;
        Ok(report(
            outcome,
            &format!("aborted {current}; {good} serves again"),
        ))
    }

    async fn promote(&self, wait: &Wait) -> Result<ExitCode> {
        let status = get(&self.api, &self.name).await?.status.unwrap_or_default();
        let target = promote_target(&status)?;
        let outcome = self
            .request(PROMOTE, &target, wait, |gs| {
                gs.status
                    .as_ref()
                    .and_then(|s| s.verification.as_ref())
                    .is_some_and(|v| v.revision == target && v.phase == VerificationPhase::Passed)
            })
            .await?;
        Ok(report(outcome, &format!("promoted {target}")))
    }

    async fn retry(&self, wait: &Wait) -> Result<ExitCode> {
        let status = get(&self.api, &self.name).await?.status.unwrap_or_default();
        let target = retry_target(&status)?;
        let outcome = self
            .request(RETRY, &target, wait, |gs| {
                gs.status
                    .as_ref()
                    .is_some_and(|s| s.failed_revision.as_deref() != Some(target.as_str()))
            })
            .await?;
        Ok(report(outcome, &format!("deploying {target} again")))
    }

    /// Sets `annotation` to `revision` and waits until the operator has
    /// removed it; then `done` on the GoServer, or the refusal it recorded.
    async fn request(
        &self,
        annotation: &str,
        revision: &str,
        wait: &Wait,
        done: impl Fn(&GoServer) -> bool,
    ) -> Result<Outcome> {
        let name = &self.name;
        let patch = json!({"metadata": {"annotations": {annotation: revision}}});
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotating GoServer {name}"))?;
        let handled =
            |gs: Option<&GoServer>| gs.is_none_or(|gs| !gs.annotations().contains_key(annotation));
        let watched = tokio::time::timeout(
            Duration::from_secs(wait.timeout),
            Box::pin(await_condition(self.api.clone(), name, handled)),
        )
        .await;
        let Ok(seen) = watched else {
            return Ok(Outcome::Pending);
        };
        let gs = seen
            .with_context(|| format!("watching GoServer {name}"))?
            .with_context(|| format!("GoServer {name} was deleted"))?;
        if done(&gs) {
            return Ok(Outcome::Done);
        }
        let why = self
            .refusal(annotation)
            .await
            .unwrap_or_else(|| "the operator did not do it".to_owned());
        Ok(Outcome::Refused(why))
    }

    /// The message of the newest `RequestRefused` Event about `annotation`
    /// (read as a core/v1 Event, whose field selectors every apiserver has).
    async fn refusal(&self, annotation: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.name={},involvedObject.kind=GoServer,reason=RequestRefused",
            self.name
        ));
        let list = events.list(&params).await.ok()?;
        list.items
            .into_iter()
            .filter(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|n| n.starts_with(annotation))
            })
            .max_by_key(|e| {
                e.series
                    .as_ref()
                    .and_then(|s| s.last_observed_time.as_ref())
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
                    .or(e.last_timestamp.as_ref().map(|t| t.0))
            })
            .and_then(|e| e.message)
    }
}

async fn get(api: &Api<GoServer>, name: &str) -> Result<GoServer> {
    api.get_opt(name)
        .await
        .with_context(|| format!("reading GoServer {name}"))?
        .with_context(|| format!("GoServer {name} not found"))
}

fn print(output: Output, value: &serde_json::Value, table: impl FnOnce() -> String) -> Result<()> {
    match output {
        Output::Table => print!("{}", table()),
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_norway::to_string(value)?),
    }
    Ok(())
}

/// What came of a request.
enum Outcome {
    Done,
    Refused(String),
    Pending,
}

fn report(outcome: Outcome, done: &str) -> ExitCode {
    match outcome {
        Outcome::Done => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Outcome::Refused(why) => {
            eprintln!("refused: {why}");
            ExitCode::FAILURE
        }
        Outcome::Pending => {
            eprintln!(
                "requested, but the operator has not handled it yet; \
                 `kubectl describe goserver` shows its Events"
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        if line.is_empty() {
            words = vec![String::new()];
        }
        words
    }

    #[test]
    fn subcommands_and_names_are_completed_where_they_go() {
        let root = Cli::command();
        let (subs, name) = complete_words(&root, &words("r"));
        assert_eq!(subs, ["rollback", "retry", "restart"]);
        assert!(!name);
        let (subs, _) = complete_words(&root, &words(""));
        assert!(subs.contains(&"wait".to_owned()) && !subs.contains(&"__complete".to_owned()));
        assert_eq!(complete_words(&root, &words("set ")).0, ["image"]);
        // A GoServer's name after a command that takes one, flags and their
        // values skipped; nothing once it is given.
        assert_eq!(
            complete_words(&root, &words("-n shop promote w")),
            (Vec::new(), true)
        );
        assert_eq!(
            complete_words(&root, &words("set image w")),
            (Vec::new(), true)
        );
        assert_eq!(
            complete_words(&root, &words("promote web ")),
            (Vec::new(), false)
        );
        assert_eq!(
            namespace_in(&Command::Complete {
                words: words("-n shop promote w")
            }),
            Some("shop".to_owned())
        );
    }
}
