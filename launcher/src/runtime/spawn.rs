//! `bottle spawn`: a detached bottle owned by a supervisor process.
//!
//! `bottle spawn` checks the plan, then starts `bottle __supervise` in its own session (setsid,
//! no terminal) and waits for its first stdout line: the bottle's id and containers once it is
//! ready, or the error that stopped it. The supervisor is the bottle's launcher: its pid is in
//! the containers' labels (so `bottle reap` leaves the bottle alone while it lives), it holds
//! the sidecar's lifeline (if it dies, even by SIGKILL, the sidecar stops and the next reap
//! removes the rest), and it tears everything down when the agent exits or on `bottle end`
//! (SIGTERM). The agent runs with a TTY and open input: `bottle attach`, `send-keys`,
//! `capture`, `pause`, `resume`, `exec` and `kill` work on it.

use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::bottle::{Bottle, LaunchOptions};
use super::engine::EngineFacts;
use super::run::{cancellation, sidecar_stopped};
use super::spec::LaunchSpec;

/// What the supervisor reports once the bottle is ready (its first stdout line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spawned {
    /// Bottle (session) id.
    pub id: String,
    /// Bottle name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// The agent container's name.
    pub agent_container: String,
    /// The sidecar container's name.
    pub sidecar_container: String,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
}

/// The supervisor's failure line (instead of [`Spawned`]).
#[derive(Debug, Serialize, Deserialize)]
struct Failed {
    error: String,
}

/// `bottle spawn`: runs `bottle __supervise <args>` detached and returns what it reported.
pub fn spawn_detached(args: &[String]) -> Result<Spawned> {
    let exe = std::env::current_exe().context("finding the bottle binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__supervise")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setsid in the child before exec: a new session, no controlling terminal, so
    // the terminal's hangup or Ctrl-C never reaches the supervisor.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the bottle supervisor")?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .context("reading the supervisor's report")?;
    if let Ok(s) = serde_json::from_str::<Spawned>(line.trim()) {
        return Ok(s);
    }
    if let Ok(f) = serde_json::from_str::<Failed>(line.trim()) {
        let _ = child.wait();
        bail!("{}", f.error);
    }
    let status = child.wait().ok();
    bail!("the bottle supervisor ended before the bottle was ready ({status:?}); its errors are above")
}

/// Points fds 0, 1 and 2 at `/dev/null`: after its report the supervisor has no reader.
fn detach_stdio() {
    // SAFETY: plain open/dup2 on fds this process owns.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// Reports a failure on stdout (the spawner reads it), then returns the error.
pub fn report_failure(e: &anyhow::Error) {
    let line = serde_json::to_string(&Failed {
        error: format!("{e:#}"),
    })
    .unwrap_or_default();
    println!("{line}");
}

/// `bottle __supervise`: launches the bottle, starts the agent, reports it ready, and owns it
/// until the agent exits, the sidecar dies or a signal (`bottle end`) arrives; then tears
/// everything down. Returns the agent's exit code (-1 when ended by a signal).
pub async fn supervise(
    docker: &Docker,
    facts: &EngineFacts,
    spec: &LaunchSpec,
    opts: &LaunchOptions,
    first_message: Option<&str>,
) -> Result<i64> {
    let mut cancel = cancellation()?;
    let bottle = Bottle::launch(docker, facts, spec, opts).await?;
    let agent = bottle.agent.clone().context("agent container missing")?;
    let sidecar = bottle
        .sidecar
        .clone()
        .context("sidecar container missing")?;
    if let Err(e) = docker.start_container(&agent, None).await {
        bottle.teardown().await;
        return Err(e).context("starting the agent");
    }
    let report = Spawned {
        id: bottle.id.clone(),
        bottle: spec.bottle.clone(),
        agent: spec.agent.clone(),
        agent_container: agent.clone(),
        sidecar_container: sidecar.clone(),
        supervisor_pid: std::process::id(),
    };
    println!("{}", serde_json::to_string(&report)?);
    detach_stdio();
    let _approvals = watch_approvals(docker, spec, &bottle.id);
    if let Some(text) = first_message {
        let (docker, id, text) = (docker.clone(), bottle.id.clone(), text.to_string());
        tokio::spawn(async move {
            let r = super::preamble::send_first_message(&docker, &id, &text).await;
            super::events::emit(
                "session.prompt_sent",
                &id,
                match r {
                    Ok(()) => serde_json::json!({"preamble": "first_message"}),
                    Err(e) => {
                        serde_json::json!({"preamble": "first_message", "error": format!("{e:#}")})
                    }
                },
            );
        });
    }
    let mut wait = docker.wait_container(
        &agent,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    let died = sidecar_stopped(docker.clone(), sidecar);
    tokio::pin!(died);
    let code = tokio::select! {
        r = wait.next() => match r {
            Some(Ok(w)) => w.status_code,
            // A non-zero exit arrives as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            _ => -1,
        },
        _ = &mut died => -1,
        _ = cancel.changed() => -1,
    };
    if code >= 0 {
        bottle.set_exit_code(code);
    }
    bottle.teardown().await;
    Ok(code)
}

/// Stops the approvals watcher when dropped.
pub struct ApprovalWatch(Option<tokio::task::JoinHandle<()>>);

impl Drop for ApprovalWatch {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// For a bottle with a git gate: emits `approval.pending` once for each ticket that appears
/// (polled every 2 s while the returned guard lives, i.e. while its launcher or supervisor
/// runs); `approval.resolved` comes from `bottle approve|deny`.
pub fn watch_approvals(docker: &Docker, spec: &LaunchSpec, id: &str) -> ApprovalWatch {
    if spec.git_remotes.is_empty() {
        return ApprovalWatch(None);
    }
    ApprovalWatch(Some(tokio::spawn(poll_approvals(
        docker.clone(),
        id.to_string(),
    ))))
}

async fn poll_approvals(docker: Docker, id: String) {
    let mut seen = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        for t in super::tickets::pending_of(&docker, &id).await {
            if seen.insert(t.id.clone()) {
                super::events::emit(
                    "approval.pending",
                    &id,
                    serde_json::json!({"ticket": t.id, "remote": t.remote, "rule": t.rule, "path": t.path, "commit": t.commit}),
                );
            }
        }
    }
}
