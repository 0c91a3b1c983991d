//! Running a bottle: unattended (`bottle run`) and the pieces shared with `bottle start`
//! (cancellation on signals, the sidecar watch, the audit summary).
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, LogsOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use super::audit::AuditSummary;
use super::bottle::{AttachedOutput, Bottle, LaunchOptions};
use super::engine::EngineFacts;
use super::gate;
use super::spec::LaunchSpec;
use super::timing::{mark, timed};
use crate::termfilter::TermFilter;

/// The result object of `bottle run --json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Bottle id.
    pub bottle_id: String,
    /// Bottle (manifest) name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// The agent's exit code (128+n when killed by signal n; -1 when unknown).
    pub exit_code: i64,
    /// Wall time from launch to teardown, in milliseconds.
    pub duration_ms: u64,
    /// Counts of the sidecar's audit decisions.
    pub audit: AuditSummary,
    /// Set when the sidecar stopped while the agent was running (its exit code).
    pub sidecar_exit: Option<i64>,
    /// Set when the run was cancelled by a signal.
    pub cancelled_by: Option<String>,
    /// In `workspace = "copy"` mode: where the agent's copy of the workspace is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_copy: Option<String>,
    /// `"done"`: every object was removed before returning; `"background"`: the sidecar was
    /// stopped and a detached `bottle` process removes the objects.
    pub teardown: &'static str,
    /// The workspace's git metadata: what was read-only, what changed anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<super::bottle::GitReport>,
    /// The agent file used (`None`: a bottle used directly); set by the CLI.
    pub agent_file: Option<String>,
    /// Where the agent came from (`home`, `repo`, `implicit`); set by the CLI.
    pub agent_origin: Option<crate::manifest::AgentOrigin>,
    /// The bottle's file (or `<built-in …>`); set by the CLI.
    pub bottle_file: Option<String>,
    /// The agent's own result (Claude Code's JSON result, Codex's summarised events) of a
    /// `--prompt` run with the `claude` or `codex` template; set by the CLI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_result: Option<serde_json::Value>,
    /// The tail of the agent's stdout (at most [`crate::agent_result::STDOUT_CAP`] bytes), for
    /// `agent_result`; never serialised.
    #[serde(skip)]
    pub stdout_tail: Vec<u8>,
}

/// A signal-driven cancellation flag: `Some(name)` once SIGINT, SIGTERM or SIGHUP arrives.
pub fn cancellation() -> Result<watch::Receiver<Option<&'static str>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(None);
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        let _ = tx.send(Some(name));
    });
    Ok(rx)
}

/// Resolves when the sidecar stops; yields its exit code.
pub async fn sidecar_stopped(docker: Docker, id: String) -> i64 {
    let opts = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    match docker.wait_container(&id, Some(opts)).next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        _ => -1,
    }
}

/// The message printed when the sidecar stops under a running agent.
pub fn sidecar_died_message(id: &str, code: i64) -> String {
    format!(
        "bottle {id}: the sidecar (proxy) stopped (exit code {code}) — the agent now has NO network egress (fail closed). End the bottle and start a new one; `bottle logs {id} --audit` shows the sidecar's last output."
    )
}

/// Waits for the agent container to stop and returns its exit code.
pub async fn agent_exit_code(docker: &Docker, id: &str) -> i64 {
    let opts = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    match docker.wait_container(id, Some(opts)).next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        _ => -1,
    }
}

/// Reads the sidecar's stdout (audit lines) and summarises it.
pub async fn audit_summary(docker: &Docker, sidecar: &str) -> AuditSummary {
    let mut logs = docker.logs(
        sidecar,
        Some(LogsOptionsBuilder::default().stdout(true).build()),
    );
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    AuditSummary::from_text(&text)
}

/// `bottle run`: creates the bottle, runs the agent without a TTY, streams its output
/// (to stderr when `json`, so stdout carries only the result object), tears down.
pub async fn run(
    docker: &Docker,
    facts: &EngineFacts,
    spec: &LaunchSpec,
    opts: &LaunchOptions,
    json: bool,
) -> Result<RunResult> {
    let started = Instant::now();
    let mut cancel = cancellation()?;
    let mut bottle = timed(
        "launch (create objects)",
        Bottle::launch(docker, facts, spec, opts),
    )
    .await?;
    let output = bottle.agent_output.take();
    let _approvals = super::spawn::watch_approvals(docker, spec, &bottle.id);
    let mut result = supervise(&bottle, output, &mut cancel, json, started).await;
    if let Ok(r) = &result {
        bottle.set_exit_code(r.exit_code);
    }
    bottle.emit_ended();
    let t = Instant::now();
    let detach = !opts.wait_teardown && result.as_ref().is_ok_and(|r| r.cancelled_by.is_none());
    if detach && timed("teardown (detached)", detach_teardown(&bottle)).await {
        if let Ok(r) = &mut result {
            r.teardown = "background";
        }
    } else {
        timed("teardown", bottle.teardown()).await;
    }
    // The agent has stopped (its output ended, or the teardown killed it).
    if let Ok(r) = &mut result {
        r.git = bottle.git_report();
        if let (Some(g), Some(ws)) = (&r.git, bottle.workspace_dir()) {
            eprint!("{}", crate::guard::changes_warning(ws, &g.changes));
        }
    }
    if opts.verbose {
        eprintln!(
            "bottle: agent ran, teardown took {} ms (total {} ms)",
            t.elapsed().as_millis(),
            started.elapsed().as_millis()
        );
    }
    result
}

/// Streams the agent's output until it ends (attaching and starting the agent unless the
/// launch already did, behind its gate), then collects the exit code and the audit summary.
async fn supervise(
    bottle: &Bottle,
    output: Option<AttachedOutput>,
    cancel: &mut watch::Receiver<Option<&'static str>>,
    json: bool,
    started: Instant,
) -> Result<RunResult> {
    let docker = &bottle.docker;
    let agent = bottle.agent.clone().context("agent container missing")?;
    let sidecar = bottle
        .sidecar
        .clone()
        .context("sidecar container missing")?;
    let mut out = match output {
        Some(out) => out,
        None => {
            let t = Instant::now();
            let out = docker
                .attach_container(
                    &agent,
                    Some(
                        AttachContainerOptionsBuilder::default()
                            .stdout(true)
                            .stderr(true)
                            .stream(true)
                            .logs(true)
                            .build(),
                    ),
                )
                .await
                .context("attaching to the agent's output")?
                .output;
            mark("agent attach", t);
            let t = Instant::now();
            docker
                .start_container(&agent, None)
                .await
                .context("starting the agent")?;
            mark("agent start", t);
            out
        }
    };
    let t = Instant::now();
    let died = sidecar_stopped(docker.clone(), sidecar.clone());
    tokio::pin!(died);
    let mut sidecar_exit = None;
    let mut cancelled_by = None;
    let mut output_ended = false;
    // The exit code as the gate reported it on stderr (no wait for the engine then).
    let mut gate_exit: Option<i64> = None;
    // The agent's output is untrusted: no raw escape sequences reach the user's terminal.
    let mut out_filter = TermFilter::new();
    let mut err_filter = TermFilter::new();
    let mut stdout_tail = Vec::new();
    loop {
        if let Some(sig) = *cancel.borrow() {
            cancelled_by = Some(sig.to_string());
            break;
        }
        tokio::select! {
            item = out.next() => match item {
                Some(Ok(chunk)) => {
                    use bollard::container::LogOutput;
                    let is_err = matches!(chunk, LogOutput::StdErr { .. });
                    let to_err = json || is_err;
                    let mut bytes = chunk.into_bytes();
                    if let (true, Some(nonce)) = (is_err, &bottle.exit_nonce) {
                        if let Some((kept, code)) = gate::take_exit_trailer(&bytes, nonce) {
                            gate_exit = Some(code);
                            bytes = kept.into();
                        }
                    }
                    if !is_err {
                        crate::agent_result::keep_tail(&mut stdout_tail, &bytes);
                    }
                    let filter = if is_err { &mut err_filter } else { &mut out_filter };
                    write_to(to_err, &filter.push(&bytes));
                }
                Some(Err(e)) => {
                    eprintln!("bottle: warning: agent output stream: {e}");
                    break;
                }
                None => {
                    output_ended = true;
                    break;
                }
            },
            code = &mut died, if sidecar_exit.is_none() => {
                sidecar_exit = Some(code);
                eprintln!("{}", sidecar_died_message(&bottle.id, code));
            }
            _ = cancel.changed() => {}
        }
    }
    write_to(json, &out_filter.finish());
    write_to(true, &err_filter.finish());
    mark("agent output until EOF", t);
    drop(out);
    let agent_side = async {
        if cancelled_by.is_some() {
            -1
        } else if let Some(code) = gate_exit {
            code
        } else {
            timed(
                "agent wait exit code",
                tokio::time::timeout(Duration::from_secs(30), agent_exit_code(docker, &agent)),
            )
            .await
            .unwrap_or(-1)
        }
    };
    let sidecar_side = async {
        let mut sidecar_exit = sidecar_exit;
        if sidecar_exit.is_none() {
            // The sidecar may have died just before the agent finished.
            let info = timed("sidecar inspect", docker.inspect_container(&sidecar, None)).await;
            if let Ok(info) = info {
                let st = info.state.unwrap_or_default();
                if st.running != Some(true) {
                    let code = st.exit_code.unwrap_or(-1);
                    sidecar_exit = Some(code);
                    eprintln!("{}", sidecar_died_message(&bottle.id, code));
                }
            }
        }
        // The sidecar flushes its audit log on request, so the last requests' records count;
        // its log is the fallback (an older sidecar, a dead one).
        let audit = match timed("audit sync", bottle.link.sync_audit(Duration::from_secs(2))).await
        {
            Some(audit) => audit,
            None => timed("audit summary (logs)", audit_summary(docker, &sidecar)).await,
        };
        if output_ended {
            // The agent's output ended, so its init (pid 1) is gone and the agent with it:
            // the sidecar is done. Cutting its lifeline stops it now, beside the engine's
            // clean-up of the agent (the exit code arrives only after that).
            timed("sidecar lifeline cut", bottle.link.cut()).await;
        }
        (sidecar_exit, audit)
    };
    let (exit_code, (sidecar_exit, audit)) = tokio::join!(agent_side, sidecar_side);
    Ok(RunResult {
        bottle_id: bottle.id.clone(),
        bottle: bottle.labels.bottle.clone(),
        agent: bottle.labels.agent.clone(),
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        audit,
        sidecar_exit,
        cancelled_by,
        workspace_copy: bottle
            .workspace_copy
            .as_ref()
            .map(|p| p.display().to_string()),
        teardown: "done",
        git: None,
        agent_file: None,
        agent_origin: None,
        bottle_file: None,
        agent_result: None,
        stdout_tail,
    })
}

/// Writes filtered agent output to stderr or stdout (errors ignored: a closed terminal must
/// not stop the run).
fn write_to(stderr: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(bytes);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(bytes);
        let _ = o.flush();
    }
}

/// Stops the sidecar (its lifeline) and hands the removal of the bottle's objects to a
/// detached `bottle __teardown <id>` process. False when that process cannot be started (the
/// caller then tears down itself).
async fn detach_teardown(bottle: &Bottle) -> bool {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    bottle.link.cut().await;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(_) => return false,
    };
    let spawned = Command::new(exe)
        .arg("__teardown")
        .arg(&bottle.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C meant for the caller does not cut the clean-up.
        .process_group(0)
        .spawn();
    match spawned {
        Ok(child) => {
            // The reap of the next `bottle start`/`run` leaves this bottle to that process.
            let _ = bottle.state.mark_teardown(child.id());
            true
        }
        Err(e) => {
            eprintln!("bottle: warning: cannot start the background teardown ({e}); removing the bottle now");
            false
        }
    }
}

/// The detached end of `bottle run`: removes every object of bottle `id` and its runtime dir,
/// retrying for a while (a sidecar still releasing its network endpoints keeps a network busy).
pub async fn detached_teardown(docker: &Docker, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = super::reap::reap(docker, Some(id), true).await;
        let remaining = super::reap::objects_of(docker, id).await.unwrap_or(1);
        if (left.is_ok() && remaining == 0) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
