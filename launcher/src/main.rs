//! `bottle`: run coding agents unattended in sealed Docker bottles.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bottle::{doctor, images, launch, manifest, runtime, termfilter, trust};
use clap::{Parser, Subcommand};

use bottle::runtime::backend::{Backend, SessionId};
use bottle::runtime::bottle::{LaunchOptions, Mode};
use bottle::runtime::docker::DockerBackend;

const ENV_HELP: &str = "Environment:
  BOTTLE_HOME            config home (bottles/, agents/); default ~/.config/bottle
  BOTTLE_SUBNET_POOL     IPv4 range bottle networks are carved from; default 10.213.0.0/16
  BOTTLE_EGRESS          `shared` (default: one egress bridge for all sidecars, inter-container traffic off)
                         or `per-bottle`
  BOTTLE_EGRESS_NETWORK  use this existing network as the sidecars' egress network (tests)
  BOTTLE_RUNTIME_DIR     runtime files; default $XDG_RUNTIME_DIR/bottle or ~/.local/state/bottle/run
  BOTTLE_STATE_DIR       state (trusted repository agents); default $XDG_STATE_HOME/bottle or ~/.local/state/bottle
  BOTTLE_DATA_DIR        kept workspace copies; default $XDG_DATA_HOME/bottle or ~/.local/share/bottle
  BOTTLE_CACHE_DIR       downloaded agent wheels (wheels/); default $XDG_CACHE_HOME/bottle or ~/.cache/bottle
  BOTTLE_PYTHON          the Python whose pip downloads the pinned agent wheels; default python3
  PIP_INDEX_URL          a PyPI mirror for those wheels (read by pip)
  BOTTLE_SRC_DIR         the bottle checkout the sidecar image is built from
  BOTTLE_SIDECAR_BIN     a prebuilt static bottle-sidecar to package instead of running cargo
  BOTTLE_SIDECAR_IMAGE, BOTTLE_AGENT_IMAGE   run these local images instead of the built ones
  BOTTLE_VERBOSE         print launch steps with timings
  BOTTLE_TRACE_TIMING    print the duration of every launch and teardown phase (stderr)
  DOCKER_HOST            the engine to use";

/// Sealed Docker sandboxes for coding agents: a per-bottle internal network, a locked-down
/// agent container and an allowlist proxy sidecar that holds the real credentials.
#[derive(Parser)]
#[command(
    name = "bottle",
    version,
    about,
    propagate_version = true,
    after_help = ENV_HELP
)]
struct Cli {
    /// Skip the reap of stale bottles that spawn, start and run do first (orchestrators that
    /// run `bottle reap` themselves; also BOTTLE_NO_REAP=1).
    #[arg(long, global = true, env = "BOTTLE_NO_REAP", value_parser = clap::builder::FalseyValueParser::new())]
    no_reap: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start an agent in a new bottle with an interactive terminal; the bottle is removed when
    /// the agent exits, on detach, Ctrl-C (outside the agent) or SIGTERM.
    ///
    /// A repository agent (<repo>/.bottle/agents/<name>.md) runs only once trusted (`bottle
    /// trust`); a workspace containing bottle's config home or state is refused; .git/config,
    /// .git/hooks and .git/info are read-only for the agent unless the bottle says
    /// `protect_git = false`. The terminal is the agent's, unfiltered.
    Start {
        /// Agent name ($BOTTLE_HOME/agents/<name>.md, <repo>/.bottle/agents/<name>.md, or `shell`).
        agent: String,
        /// Print the resolved plan and exit without creating anything.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Key sequence that detaches (and ends the bottle).
        #[arg(long, default_value = runtime::tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Command to run instead of the agent's default.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Run an agent unattended (no TTY): streams output and exits with the agent's exit code.
    ///
    /// The same checks as `start`. The agent's output is shown with terminal control sequences
    /// escaped (ESC becomes the text `\x1b`); changes to git metadata are reported at the end.
    Run {
        /// Agent name.
        agent: String,
        /// Task prompt handed to the agent.
        #[arg(long)]
        prompt: Option<String>,
        /// Print a JSON result object on stdout (agent output goes to stderr).
        #[arg(long)]
        json: bool,
        /// Return only once every container, network and the runtime dir of the bottle are
        /// removed. By default `bottle run` returns as soon as the exit code and the audit are
        /// in: the sidecar stops at once, and a detached `bottle` process removes the objects
        /// (~0.3 s later; `bottle reap` catches anything it leaves).
        #[arg(long)]
        wait_teardown: bool,
        /// Command to run in the agent container instead of its default.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Start an agent in a new, detached bottle and print its id: the agent runs with a
    /// terminal and open input, owned by a background supervisor; use attach, send-keys,
    /// capture, pause, resume, exec, end or kill on it.
    Spawn {
        /// Agent name (as for `start`).
        agent: String,
        /// Labels stamped on every container (an orchestrator's own, e.g. gemba.session=42).
        #[arg(long, value_name = "KEY=VALUE")]
        tag: Vec<String>,
        /// A display label for `bottle list`.
        #[arg(long)]
        label: Option<String>,
        /// Its colour in `bottle list`: red, green, yellow, blue, magenta, cyan or white.
        #[arg(long)]
        color: Option<String>,
        /// The workspace directory (default: the current directory).
        #[arg(long)]
        workspace: Option<std::path::PathBuf>,
        /// The session prompt: typed into the agent once it is ready (gemba agents: delivered
        /// per their `preamble`: first_message, claude_md, codex_exec or stdout_banner).
        #[arg(long)]
        prompt: Option<String>,
        /// Take the agent from a gemba agents.toml: its `[[agent]]` named AGENT, with its
        /// `[agent.container]` stanza mapped onto a bottle (docs/gemba.md).
        #[arg(long, value_name = "AGENTS_TOML")]
        gemba: Option<std::path::PathBuf>,
        /// JSON output: {id, bottle, agent, agent_container, sidecar_container, supervisor_pid}.
        #[arg(long)]
        json: bool,
        /// Command to run instead of the agent's default.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// The supervisor of a spawned bottle (started by `bottle spawn`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        agent: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        gemba: Option<std::path::PathBuf>,
        #[arg(long)]
        prompt: Option<String>,
        #[arg(long)]
        tag: Vec<String>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        color: Option<String>,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Print the session event log as JSON lines (session.started, .paused, .resumed,
    /// .ended, .killed, .reaped, .failed_to_start, approval.resolved).
    Events {
        /// Only this bottle's events.
        #[arg(long)]
        id: Option<String>,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
    },
    /// Attach this terminal to a bottle's agent; the detach keys leave it running.
    Attach {
        /// Bottle id.
        id: String,
        /// Key sequence that detaches.
        #[arg(long, default_value = runtime::tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
    },
    /// Remove one bottle's objects (the detached end of `bottle run`).
    #[command(name = "__teardown", hide = true)]
    Teardown {
        /// Bottle id.
        id: String,
    },
    /// List bottles on this engine.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a bottle's agent output, or with --audit the sidecar's audit records (terminal
    /// control sequences escaped).
    Logs {
        /// Bottle id (see `bottle list`).
        id: String,
        /// The sidecar's audit lines instead of the agent's output.
        #[arg(long)]
        audit: bool,
        /// Keep streaming.
        #[arg(short, long)]
        follow: bool,
    },
    /// Approve a git gate ticket: the held finding (same file content, same rule) passes on
    /// the agent's next push. Only from the host; recorded in the bottle's audit log.
    Approve {
        /// Ticket id (from the agent's `remote:` lines or `bottle list`).
        ticket: String,
        /// Why this is not a secret.
        #[arg(long)]
        reason: String,
    },
    /// Deny a git gate ticket: the finding keeps its push refused, with your reason.
    Deny {
        /// Ticket id.
        ticket: String,
        /// Why (shown to the agent on its next push).
        #[arg(long)]
        reason: String,
    },
    /// Freeze a bottle's agent (the proxy sidecar keeps running; see docs/design.md).
    Pause {
        /// Bottle id (see `bottle list`).
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Thaw a paused bottle.
    Resume {
        /// Bottle id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove every object of a bottle at once (no grace period; works on a paused bottle).
    Kill {
        /// Bottle id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a bottle's agent (its user, /workspace, its environment); exits with
    /// the command's exit code.
    Exec {
        /// Bottle id.
        id: String,
        /// Send this terminal's standard input to the command.
        #[arg(short, long)]
        interactive: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print a bottle agent's recent output: the last N lines, or with --since only what came
    /// after an earlier capture's cursor (printed on stderr, or in --json).
    Capture {
        /// Bottle id.
        id: String,
        /// How many lines (without --since).
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// Only output after this cursor (from an earlier capture).
        #[arg(long)]
        since: Option<String>,
        /// Remove terminal control sequences (default: escape them).
        #[arg(long, conflicts_with = "raw")]
        plain: bool,
        /// Bytes as the agent wrote them (for a trusted consumer only).
        #[arg(long)]
        raw: bool,
        /// JSON output: {id, lines, cursor}.
        #[arg(long)]
        json: bool,
    },
    /// Type into a `bottle start` bottle's terminal: TEXT (words joined by spaces), then
    /// --keys (Enter, Escape, Up, C-c, … comma-separated), then Enter with --enter. One write
    /// per call; concurrent calls never interleave.
    SendKeys {
        /// Bottle id.
        id: String,
        /// Text to type.
        text: Vec<String>,
        /// Named keys after the text, e.g. `C-c` or `Escape,Up,Enter`.
        #[arg(long)]
        keys: Vec<String>,
        /// Press Enter at the end.
        #[arg(long)]
        enter: bool,
    },
    /// End a bottle: stop its launcher and remove every object.
    End {
        /// Bottle id (see `bottle list`).
        id: String,
    },
    /// Remove every bottle container, network and runtime directory whose launcher is gone.
    Reap {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Validate every bottle and agent manifest (config home and this repository).
    Check,
    /// Trust repository agent files after reviewing them (like `direnv allow`).
    ///
    /// Records each file's SHA-256 in the state directory (trusted-agents.json, 0600);
    /// `start`/`run` refuse a repository agent that is not trusted or changed since.
    /// PATH is an agent file, or a directory whose .bottle/agents/*.md are meant (default: the
    /// current directory).
    Trust {
        /// Agent file or repository directory.
        path: Option<PathBuf>,
        /// List the trusted files and whether they changed, instead.
        #[arg(long, conflicts_with = "path")]
        list: bool,
        /// With --list: JSON output.
        #[arg(long, requires = "list")]
        json: bool,
    },
    /// Forget a trusted repository agent file.
    Untrust {
        /// The agent file (as given to `bottle trust`).
        path: PathBuf,
    },
    /// Print the fully resolved plan of an agent (no secret values).
    Info {
        /// Agent name.
        agent: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Manage the locally built images.
    Images {
        #[command(subcommand)]
        cmd: ImagesCmd,
    },
    /// Check the engine, runtimes, images and address pool, and say what to fix.
    Doctor {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Scan files, directories, stdin or a git commit range for secrets (credentials, keys).
    ///
    /// Exit code: 0 no findings, 1 findings, 2 error. Findings are printed redacted.
    Scan {
        /// Files or directories to scan (gitignore-aware); none or `-` reads stdin.
        paths: Vec<PathBuf>,
        /// Print one JSON object per finding instead of `path:line:col rule-id preview`.
        #[arg(long)]
        json: bool,
        /// Scan the lines added by the commits in A..B (and their messages) instead of paths.
        #[arg(long, value_name = "A..B", conflicts_with = "paths")]
        git_range: Option<String>,
        /// Repository for --git-range (default: the current directory; ignored without it).
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        /// Extra rule file (TOML); may be repeated.
        #[arg(long, value_name = "FILE")]
        rules: Vec<PathBuf>,
        /// Rule ids to disable (core rules cannot be disabled).
        #[arg(long, value_name = "ID", num_args = 1..)]
        disable: Vec<String>,
        /// Do not load the built-in default rules.
        #[arg(long)]
        no_default_rules: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "N", default_value_t = bottle_scanner::cli::ScanArgs::default().max_file_size)]
        max_file_size: u64,
        /// Print the loaded rules and exit.
        #[arg(long)]
        list_rules: bool,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Build the images that are missing (or the named ones again with --force).
    ///
    /// Without IMAGE: the sidecar, agent-shell and the image of every agent in the config home
    /// and repository (templates, and `image = { dockerfile = … }` builds). The claude and
    /// codex templates are built offline from the pinned PyPI wheels in
    /// images/agent-*/wheel.txt (cached in $BOTTLE_CACHE_DIR/wheels).
    Build {
        /// Images to build: sidecar, agent-shell, agent-claude, agent-codex, test-upstream (or
        /// the templates shell, claude, codex).
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
        /// Rebuild even if up to date.
        #[arg(long)]
        force: bool,
        /// Also build the end-to-end test upstream image.
        #[arg(long)]
        test: bool,
    },
    /// Show the built-in images (built or missing, size, tag) and the image each agent runs.
    List {
        /// JSON output: {"images": [...], "agents": [...]}.
        #[arg(long)]
        json: bool,
    },
}

fn config_home() -> Result<PathBuf> {
    manifest::bottle_home().context(
        "none of BOTTLE_HOME, XDG_CONFIG_HOME and HOME is set; set BOTTLE_HOME to your bottle config directory",
    )
}

/// `--tag KEY=VALUE` labels: keys like Docker label keys (not bottle's own `io.bottle.*`),
/// values one line.
fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>> {
    tags.iter()
        .map(|t| {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("--tag {t:?} must be KEY=VALUE"))?;
            let key_ok = !k.is_empty()
                && k.len() <= 128
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
            if !key_ok {
                anyhow::bail!("--tag key {k:?} must be 1-128 characters of [A-Za-z0-9._-/]");
            }
            if k.starts_with("io.bottle.") {
                anyhow::bail!("--tag key {k:?}: io.bottle.* labels are bottle's own");
            }
            if v.len() > 256 || v.chars().any(char::is_control) {
                anyhow::bail!("--tag {k}: the value must be one line of at most 256 bytes");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn launch_options(mode: Mode, cmd: Vec<String>, extra_env: Vec<(String, String)>) -> LaunchOptions {
    let settings = bottle::settings::current();
    LaunchOptions {
        mode,
        cmd: (!cmd.is_empty()).then_some(cmd),
        extra_env,
        egress_network: settings.egress_network(),
        per_bottle_egress: settings.per_bottle_egress(),
        verbose: settings.verbose,
        wait_teardown: true,
        id: None,
    }
}

/// The reap of stale bottles that every `start`/`run` performs, running beside the launch.
type ReapTask = tokio::task::JoinHandle<Result<runtime::reap::ReapReport>>;

/// Starts the reap of stale bottles in the background (the new bottle's objects do not depend
/// on it) and reads the engine facts.
async fn preflight(
    docker: &bollard::Docker,
    reap: bool,
) -> Result<(runtime::engine::EngineFacts, ReapTask)> {
    use runtime::timing::timed;
    let reaping = {
        let docker = docker.clone();
        tokio::spawn(async move {
            if !reap {
                return Ok(runtime::reap::ReapReport::default());
            }
            timed("reap", runtime::reap::reap(&docker, None, false)).await
        })
    };
    let facts = timed("engine facts", runtime::engine::facts(docker)).await?;
    if bottle::settings::current().verbose {
        eprintln!(
            "bottle: Docker engine {} (runtimes: {})",
            facts.version,
            facts.runtimes.join(", ")
        );
    }
    Ok((facts, reaping))
}

/// Waits for the background reap (so it is not cut off when `bottle` exits) and reports it.
async fn finish_reap(reaping: ReapTask) {
    match reaping.await {
        Ok(Ok(report)) if !report.bottles.is_empty() => {
            for d in &report.details {
                eprintln!("bottle: {}", d.line());
            }
        }
        Ok(Err(e)) => eprintln!("bottle: warning: reaping stale bottles: {e:#}"),
        _ => {}
    }
}

async fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Start {
            agent,
            dry_run,
            json,
            detach_keys,
            cmd,
        } => {
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let plan = launch::plan(&home, &repo, &agent)?;
            if dry_run {
                if json {
                    stdout_text(&format!("{}\n", serde_json::to_string_pretty(&plan)?))?;
                } else {
                    stdout_text(&termfilter::escape_str(&plan.render_human()))?;
                }
                if let Some(note) = launch::trust_note(&plan) {
                    eprintln!("{note}");
                }
                return Ok(0);
            }
            let used = launch::check_before_launch(&home, &plan)?;
            eprintln!("{}", used.line());
            if let Some(note) = launch::template_note(&plan) {
                eprintln!("{note}");
            }
            let docker = runtime::engine::connect().await?;
            let spec = launch::launch_spec(&docker, &plan, false).await?;
            eprint!(
                "{}",
                runtime::spec::summary_text(&runtime::spec::summary(&spec))
            );
            let (facts, reaping) = preflight(&docker, !cli.no_reap).await?;
            let opts = launch_options(Mode::Start, cmd, vec![]);
            let code = runtime::tty::start(&docker, &facts, &spec, &opts, &detach_keys).await;
            finish_reap(reaping).await;
            Ok(exit_code(code?))
        }
        Cmd::Run {
            agent,
            prompt,
            json,
            wait_teardown,
            cmd,
        } => {
            use runtime::timing::{timed, timed_sync};
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let plan = timed_sync("plan", || launch::plan(&home, &repo, &agent))?;
            let used = launch::check_before_launch(&home, &plan)?;
            eprintln!("{}", used.line());
            if let Some(note) = launch::template_note(&plan) {
                eprintln!("{note}");
            }
            let docker = timed("engine connect", runtime::engine::connect()).await?;
            // The images (built only when missing), the reap of stale bottles and the engine
            // facts are independent.
            let (spec, facts) = tokio::join!(
                timed(
                    "launch spec (images)",
                    launch::launch_spec(&docker, &plan, json)
                ),
                preflight(&docker, !cli.no_reap)
            );
            let (spec, (facts, reaping)) = (spec?, facts?);
            let mut extra = vec![];
            let mut cmd = cmd;
            if let Some(p) = &prompt {
                extra.push(("BOTTLE_PROMPT".to_string(), p.clone()));
                if cmd.is_empty() {
                    cmd = launch::prompt_command(&plan, p);
                }
            }
            let mut opts = launch_options(Mode::Run, cmd, extra);
            opts.wait_teardown = wait_teardown;
            let r = runtime::run::run(&docker, &facts, &spec, &opts, json).await;
            finish_reap(reaping).await;
            let mut r = r?;
            r.agent_file = used.agent_file.clone();
            r.agent_origin = Some(used.agent_origin);
            r.bottle_file = used.bottle_file.clone();
            if let (Some(_), manifest::ImageSpec::Template { template }) = (&prompt, &plan.image) {
                r.agent_result = bottle::agent_result::parse(*template, &r.stdout_tail);
            }
            if let (Some(copy), Some(src)) = (&r.workspace_copy, &plan.workspace.host_path) {
                eprintln!(
                    "{}",
                    bottle::guard::copy_review_hint(src, std::path::Path::new(copy))
                );
            }
            if json {
                println!("{}", serde_json::to_string(&r)?);
            }
            if let Some(sig) = &r.cancelled_by {
                eprintln!(
                    "bottle {}: cancelled by {sig}; every object removed",
                    r.bottle_id
                );
                return Ok(if sig == "SIGINT" { 130 } else { 143 });
            }
            Ok(exit_code(r.exit_code))
        }
        Cmd::List { json } => {
            let rows = DockerBackend::connect().await?.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                runtime::verbs::print_table(&rows);
            }
            Ok(0)
        }
        Cmd::Logs { id, audit, follow } => {
            let backend = DockerBackend::connect().await?;
            backend.logs(&SessionId::new(id), audit, follow).await?;
            Ok(0)
        }
        Cmd::Spawn {
            agent,
            tag,
            label,
            color,
            workspace,
            prompt,
            gemba,
            json,
            cmd,
        } => {
            // Manifest, tag and option errors show here, before anything runs.
            if let Some(c) = &color {
                if runtime::verbs::ansi_color(c).is_none() {
                    anyhow::bail!(
                        "--color {c:?}: use red, green, yellow, blue, magenta, cyan or white"
                    );
                }
            }
            if let Some(l) = &label {
                if l.len() > 64 || l.chars().any(char::is_control) {
                    anyhow::bail!("--label must be one line of at most 64 bytes");
                }
            }
            if let Some(w) = &workspace {
                std::env::set_current_dir(w)
                    .with_context(|| format!("--workspace {}: cannot enter it", w.display()))?;
            }
            let gemba = match gemba {
                Some(g) => Some(
                    std::fs::canonicalize(&g)
                        .with_context(|| format!("--gemba {}: cannot read it", g.display()))?,
                ),
                None => None,
            };
            let id = runtime::labels::new_id().context("generating a bottle id")?;
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let sp = launch::spawn_plan(&home, &repo, &agent, gemba.as_deref(), &id)?;
            launch::check_before_launch(&home, &sp.plan)?;
            launch::check_preamble(&sp, prompt.as_deref())?;
            parse_tags(&tag)?;
            let mut args = vec![agent, "--id".into(), id];
            if let Some(g) = gemba {
                args.push("--gemba".into());
                args.push(g.display().to_string());
            }
            for t in tag {
                args.push("--tag".into());
                args.push(t);
            }
            for (flag, v) in [("--label", label), ("--color", color), ("--prompt", prompt)] {
                if let Some(v) = v {
                    args.push(flag.into());
                    args.push(v);
                }
            }
            if cli.no_reap {
                args.push("--no-reap".into());
            }
            if !cmd.is_empty() {
                args.push("--".into());
                args.extend(cmd);
            }
            let s = runtime::spawn::spawn_detached(&args)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("{}", s.id);
                eprintln!(
                    "bottle {}: spawned ({} agent {}, supervisor pid {}); `bottle attach {}` to use it, `bottle end {}` to end it",
                    s.id, s.bottle, s.agent_container, s.supervisor_pid, s.id, s.id
                );
            }
            Ok(0)
        }
        Cmd::Supervise {
            agent,
            id,
            gemba,
            prompt,
            tag,
            label,
            color,
            cmd,
        } => {
            let no_reap = cli.no_reap;
            let r = async {
                let home = config_home()?;
                let repo = std::env::current_dir().context("reading the current directory")?;
                let sp = launch::spawn_plan(&home, &repo, &agent, gemba.as_deref(), &id)?;
                let used = launch::check_before_launch(&home, &sp.plan)?;
                eprintln!("{}", used.line());
                let docker = runtime::engine::connect().await?;
                let mut spec = launch::launch_spec(&docker, &sp.plan, false).await?;
                spec.labels.extend(sp.tags.iter().cloned());
                spec.labels.extend(parse_tags(&tag)?);
                if let Some(l) = label.or(sp.plan.label.clone()) {
                    spec.labels.insert(runtime::labels::LABEL.into(), l);
                }
                if let Some(c) = color.or(sp.plan.color.clone()) {
                    spec.labels.insert(runtime::labels::COLOR.into(), c);
                }
                let (facts, reaping) = preflight(&docker, !no_reap).await?;
                let base = if cmd.is_empty() {
                    spec.default_cmd.clone()
                } else {
                    cmd
                };
                let mut extra = vec![];
                let mut first_message = None;
                let mut claude_md = None;
                let mut cmd = base.clone();
                if let Some(p) = &prompt {
                    extra.push(("BOTTLE_PREAMBLE".to_string(), p.clone()));
                    match sp.preamble {
                        manifest::Preamble::FirstMessage => first_message = Some(p.clone()),
                        manifest::Preamble::ClaudeMd => {
                            let ws = sp
                                .plan
                                .workspace
                                .host_path
                                .as_deref()
                                .context("the claude_md preamble needs a workspace")?;
                            claude_md = Some(runtime::preamble::ClaudeMd::write(ws, p)?);
                        }
                        s => {
                            if let Some(c) = runtime::preamble::command_for(s, &base, p)? {
                                cmd = c;
                            }
                        }
                    }
                }
                let mut opts = launch_options(Mode::Spawn, cmd, extra);
                opts.id = Some(id.clone());
                let code = runtime::spawn::supervise(
                    &docker,
                    &facts,
                    &spec,
                    &opts,
                    first_message.as_deref(),
                )
                .await;
                if let Some(g) = claude_md {
                    g.restore();
                }
                finish_reap(reaping).await;
                code
            }
            .await;
            match r {
                Ok(code) => Ok(exit_code(code)),
                Err(e) => {
                    runtime::spawn::report_failure(&e);
                    Ok(1)
                }
            }
        }
        Cmd::Events { id, follow } => {
            runtime::events::print(id.as_deref(), follow).await?;
            Ok(0)
        }
        Cmd::Attach { id, detach_keys } => {
            let backend = DockerBackend::connect().await?;
            let code = backend.attach(&SessionId::new(id), &detach_keys).await?;
            Ok(exit_code(code))
        }
        Cmd::Teardown { id } => {
            let docker = runtime::engine::connect().await?;
            runtime::run::detached_teardown(&docker, &id).await;
            Ok(0)
        }
        cmd @ (Cmd::Approve { .. } | Cmd::Deny { .. }) => {
            let (approve, ticket, reason) = match cmd {
                Cmd::Approve { ticket, reason } => (true, ticket, reason),
                Cmd::Deny { ticket, reason } => (false, ticket, reason),
                _ => unreachable!("matched above"),
            };
            let docker = runtime::engine::connect().await?;
            let bottle = runtime::tickets::decide(&docker, &ticket, approve, &reason).await?;
            runtime::events::emit(
                "approval.resolved",
                &bottle,
                serde_json::json!({"ticket": ticket, "decision": if approve { "approve" } else { "deny" }, "reason": reason}),
            );
            eprintln!(
                "bottle {bottle}: ticket {ticket} {}; the agent's next push of it {}",
                if approve { "approved" } else { "denied" },
                if approve {
                    "passes"
                } else {
                    "is refused with your reason"
                }
            );
            Ok(0)
        }
        cmd @ (Cmd::Pause { .. } | Cmd::Resume { .. } | Cmd::Kill { .. }) => {
            let backend = DockerBackend::connect().await?;
            let (r, id, json) = match cmd {
                Cmd::Pause { id, json } => (backend.pause(&SessionId::new(&*id)).await?, id, json),
                Cmd::Resume { id, json } => {
                    (backend.resume(&SessionId::new(&*id)).await?, id, json)
                }
                Cmd::Kill { id, json } => (backend.remove(&SessionId::new(&*id)).await?, id, json),
                _ => unreachable!("matched above"),
            };
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!("bottle {id}: {} ({})", r.verb, r.containers.join(", "));
            }
            Ok(0)
        }
        Cmd::Capture {
            id,
            lines,
            since,
            plain,
            raw,
            json,
        } => {
            let backend = DockerBackend::connect().await?;
            let mode = match (plain, raw) {
                (true, _) => runtime::lifecycle::CaptureMode::Plain,
                (_, true) => runtime::lifecycle::CaptureMode::Raw,
                _ => runtime::lifecycle::CaptureMode::Escaped,
            };
            let c = backend
                .capture(&SessionId::new(id), lines, since.as_deref(), mode)
                .await?;
            if json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                for l in &c.lines {
                    println!("{l}");
                }
                if !c.cursor.is_empty() {
                    eprintln!("cursor: {}", c.cursor);
                }
            }
            Ok(0)
        }
        Cmd::SendKeys {
            id,
            text,
            keys,
            enter,
        } => {
            let payload = runtime::lifecycle::keys_payload(&text, &keys, enter)?;
            let backend = DockerBackend::connect().await?;
            backend.send_keys(&SessionId::new(id), &payload).await?;
            Ok(0)
        }
        Cmd::Exec {
            id,
            interactive,
            cmd,
        } => {
            let backend = DockerBackend::connect().await?;
            let code = backend.exec(&SessionId::new(id), &cmd, interactive).await?;
            Ok(i32::try_from(code).unwrap_or(1))
        }
        Cmd::End { id } => {
            let backend = DockerBackend::connect().await?;
            let r = backend.stop(&SessionId::new(&*id)).await?;
            let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
            eprintln!(
                "bottle {id}: ended ({}, {} removed)",
                n(r.containers, "container"),
                n(r.networks, "network")
            );
            Ok(0)
        }
        Cmd::Reap { json } => {
            let r = DockerBackend::connect().await?.reap(None, false).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for d in &r.details {
                    println!("{}", d.line());
                }
                println!(
                    "reaped {} bottle(s): {} containers, {} networks, {} runtime dirs",
                    r.bottles.len(),
                    r.containers,
                    r.networks,
                    r.dirs
                );
            }
            Ok(0)
        }
        Cmd::Check => {
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let results = manifest::check_all(&home, &repo);
            let mut bad = 0;
            for (path, r) in &results {
                match r {
                    Ok(()) => println!("ok    {}", path.display()),
                    Err(e) => {
                        bad += 1;
                        println!("error {e}");
                    }
                }
            }
            println!("{} manifest(s) checked, {bad} with errors", results.len());
            Ok(if bad == 0 { 0 } else { 1 })
        }
        Cmd::Info { agent, json } => {
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let plan = launch::plan(&home, &repo, &agent)?;
            if json {
                stdout_text(&format!("{}\n", serde_json::to_string_pretty(&plan)?))?;
            } else {
                stdout_text(&termfilter::escape_str(&plan.render_human()))?;
            }
            if let Some(note) = launch::trust_note(&plan) {
                eprintln!("{note}");
            }
            Ok(0)
        }
        Cmd::Trust { path, list, json } => trust_cmd(path, list, json),
        Cmd::Untrust { path } => {
            let state = trust::state_dir()?;
            let mut store = trust::TrustStore::load(&state)?;
            let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| {
                std::env::current_dir()
                    .map(|d| d.join(&path))
                    .unwrap_or(path.clone())
            });
            if !store.remove(&canon) {
                anyhow::bail!(
                    "{} is not trusted (`bottle trust --list` shows what is)",
                    canon.display()
                );
            }
            store.save(&state)?;
            eprintln!("bottle: untrusted {}", canon.display());
            Ok(0)
        }
        Cmd::Images {
            cmd:
                ImagesCmd::Build {
                    images: names,
                    force,
                    test,
                },
        } => images_build(names, force, test).await,
        Cmd::Images {
            cmd: ImagesCmd::List { json },
        } => {
            let home = config_home()?;
            let repo = std::env::current_dir().context("reading the current directory")?;
            let docker = runtime::engine::connect().await?;
            let r = images::usage::report(&docker, &home, &repo).await;
            if json {
                stdout_text(&format!("{}\n", serde_json::to_string_pretty(&r)?))?;
            } else {
                stdout_text(&termfilter::escape_str(&images::usage::render(&r)))?;
            }
            Ok(0)
        }
        Cmd::Doctor { json } => doctor::doctor(runtime::engine::connect().await, json).await,
        Cmd::Scan {
            paths,
            json,
            git_range,
            repo,
            rules,
            disable,
            no_default_rules,
            max_file_size,
            list_rules,
        } => Ok(bottle_scanner::cli::run(&bottle_scanner::cli::ScanArgs {
            paths,
            json,
            git_range,
            repo,
            rules,
            disable,
            no_default_rules,
            max_file_size,
            list_rules,
        })),
    }
}

/// `bottle images build [IMAGE…] [--force] [--test]`.
async fn images_build(names: Vec<String>, force: bool, test: bool) -> Result<i32> {
    use images::ImageKind;
    let docker = runtime::engine::connect().await?;
    let mut kinds = Vec::new();
    let mut dockerfiles = Vec::new();
    for n in &names {
        kinds.push(images::usage::parse_kind(n).map_err(anyhow::Error::msg)?);
    }
    if names.is_empty() {
        kinds.extend([ImageKind::Sidecar, ImageKind::AgentShell]);
        let home = config_home()?;
        let repo = std::env::current_dir().context("reading the current directory")?;
        if images::usage::any_git_gate(&home, &repo) {
            kinds.push(ImageKind::SidecarGit);
        }
        for (agent, spec) in images::usage::agent_specs(&home, &repo) {
            match spec {
                Ok((_, manifest::ImageSpec::Template { template })) => {
                    kinds.push(images::usage::template_kind(template))
                }
                Ok((
                    bottle,
                    manifest::ImageSpec::Dockerfile {
                        dockerfile,
                        context,
                    },
                )) => dockerfiles.push((bottle, dockerfile, context)),
                Ok((_, manifest::ImageSpec::Tag { .. })) => {}
                Err(e) => eprintln!(
                    "bottle: warning: agent `{agent}` is skipped: {}",
                    e.lines().next().unwrap_or_default()
                ),
            }
        }
    }
    if test {
        kinds.push(ImageKind::TestUpstream);
    }
    kinds.sort();
    kinds.dedup();
    let refs = images::ensure_images(
        &docker,
        &kinds,
        &images::BuildOpts {
            force,
            report_current: true,
            ..Default::default()
        },
    )
    .await?;
    for r in refs {
        println!("{r}");
    }
    dockerfiles.sort();
    dockerfiles.dedup();
    for (bottle, df, ctx) in dockerfiles {
        println!(
            "{}",
            images::ensure_dockerfile(&docker, &bottle, &df, &ctx, false).await?
        );
    }
    Ok(0)
}

/// `bottle trust [PATH]` and `bottle trust --list [--json]`.
fn trust_cmd(path: Option<PathBuf>, list: bool, json: bool) -> Result<i32> {
    let state = trust::state_dir()?;
    let mut store = trust::TrustStore::load(&state)?;
    if list {
        let rows = trust::list(&store);
        if json {
            stdout_text(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
        } else {
            let mut text = String::new();
            for r in &rows {
                text.push_str(&format!(
                    "{:<8} {}  {}\n",
                    r.status,
                    trust::short(&r.entry.sha256),
                    termfilter::escape_line(&r.entry.path.display().to_string())
                ));
            }
            if rows.is_empty() {
                text.push_str("no trusted repository agents\n");
            }
            stdout_text(&text)?;
        }
        return Ok(0);
    }
    let target = match path {
        Some(p) => p,
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let files = trust::files_for(&target)?;
    if files.is_empty() {
        anyhow::bail!(
            "no agent files in {}/.bottle/agents; name the file to trust (e.g. `bottle trust .bottle/agents/NAME.md`)",
            target.display()
        );
    }
    for f in &files {
        let canon =
            std::fs::canonicalize(f).with_context(|| format!("resolving {}", f.display()))?;
        let bytes =
            std::fs::read(&canon).with_context(|| format!("reading {}", canon.display()))?;
        let sha = trust::sha256_hex(&bytes);
        let effect = manifest::agent_effect(&String::from_utf8_lossy(&bytes));
        eprintln!(
            "bottle: trusted {} (sha256 {}; {}); it runs as it is now — any change needs `bottle trust` again",
            termfilter::escape_line(&canon.display().to_string()),
            trust::short(&sha),
            effect
                .as_deref()
                .unwrap_or("does not parse as an agent: `bottle check` says why")
        );
        store.insert(canon.clone(), sha.clone(), effect);
    }
    store.save(&state)?;
    Ok(0)
}

/// Writes `text` to stdout and flushes it; a closed pipe (`bottle info --json | head`) is not
/// an error, any other write failure is.
fn stdout_text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Maps an agent exit code onto a process exit code.
fn exit_code(code: i64) -> i32 {
    if (0..=255).contains(&code) {
        code as i32
    } else {
        1
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Every BOTTLE_* variable is read here, once.
    bottle::settings::init(bottle::settings::Settings::from_env());
    let t0 = runtime::timing::init();
    let r = real_main().await;
    runtime::timing::mark("total (main)", t0);
    match r {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("bottle: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
