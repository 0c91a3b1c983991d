//! `bottle pause`, `bottle resume`, `bottle kill` and `bottle exec` on a running bottle.
//!
//! **Pause freezes the agent only; the proxy sidecar keeps running.** The sidecar holds the
//! launcher's lifeline and the bottle's audit stream, and it is the only thing with egress:
//! frozen, it would stop answering the agent's in-flight requests mid-response (the agent's
//! clients see them stall, then time out, after the resume) and stop writing audit records.
//! Running, it finishes what is in flight on the upstream side; the frozen agent reads the
//! answers after the resume (a tunnel idle longer than the proxy's `idle_timeout` is closed,
//! as it would be if the agent idled). Nothing new can start while the agent is frozen.

use anyhow::{bail, Context, Result};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;

use super::labels::{self, launcher_alive};
use super::reap::reap;

/// What a lifecycle verb did, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct VerbResult {
    /// Bottle id.
    pub id: String,
    /// The verb (`pause`, `resume`, `kill`).
    pub verb: &'static str,
    /// Containers it acted on (`role: id`).
    pub containers: Vec<String>,
    /// For `kill`: objects removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<usize>,
}

/// The (role, container id, state) of every container of bottle `id`.
async fn containers(docker: &Docker, id: &str) -> Result<Vec<(String, String, String)>> {
    if !labels::is_valid_id(id) {
        bail!("{id:?} is not a bottle id; `bottle list` shows the ids of running bottles");
    }
    let f = super::reap::bottle_filter(Some(format!("{}={id}", labels::ID)));
    let cs = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&f)
                .build(),
        ))
        .await
        .context("listing the bottle's containers")?;
    let out: Vec<_> = cs
        .into_iter()
        .filter_map(|c| {
            let role = c.labels.as_ref()?.get(labels::ROLE)?.clone();
            Some((
                role,
                c.id?,
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            ))
        })
        .collect();
    if out.is_empty() {
        bail!("no bottle {id}; `bottle list` shows running bottles");
    }
    Ok(out)
}

/// The containers `pause`/`resume` act on: the agent (and, once they exist, model sidecars).
fn frozen_roles(role: &str) -> bool {
    role == "agent" || role == "model"
}

/// Freezes the agent of bottle `id` (the proxy sidecar keeps running: see the module docs).
pub async fn pause(docker: &Docker, id: &str) -> Result<VerbResult> {
    let mut done = Vec::new();
    for (role, c, state) in containers(docker, id).await? {
        if !frozen_roles(&role) {
            continue;
        }
        match state.as_str() {
            "paused" => {}
            "running" => docker
                .pause_container(&c)
                .await
                .with_context(|| format!("pausing the {role} of bottle {id}"))?,
            other => bail!("bottle {id}: the {role} is {other}, not running; nothing to pause"),
        }
        done.push(format!("{role}: {c}"));
    }
    Ok(VerbResult {
        id: id.into(),
        verb: "pause",
        containers: done,
        removed: None,
    })
}

/// Thaws what [`pause`] froze.
pub async fn resume(docker: &Docker, id: &str) -> Result<VerbResult> {
    let mut done = Vec::new();
    for (role, c, state) in containers(docker, id).await? {
        if !frozen_roles(&role) {
            continue;
        }
        match state.as_str() {
            "running" => {}
            "paused" => docker
                .unpause_container(&c)
                .await
                .with_context(|| format!("resuming the {role} of bottle {id}"))?,
            other => bail!("bottle {id}: the {role} is {other}; only a paused bottle resumes"),
        }
        done.push(format!("{role}: {c}"));
    }
    Ok(VerbResult {
        id: id.into(),
        verb: "resume",
        containers: done,
        removed: None,
    })
}

/// Removes every object of bottle `id` at once (paused or not, no grace period), then tells
/// its launcher (if alive) to stop; `bottle end` is the graceful form.
pub async fn kill(docker: &Docker, id: &str) -> Result<VerbResult> {
    let cs = containers(docker, id).await?;
    let mut launcher = None;
    if let Some((_, c, _)) = cs.first() {
        if let Ok(info) = docker.inspect_container(c, None).await {
            let l = info.config.and_then(|c| c.labels).unwrap_or_default();
            if launcher_alive(&l) {
                launcher = l
                    .get(labels::LAUNCHER_PID)
                    .and_then(|p| p.parse::<i32>().ok());
            }
        }
    }
    let report = reap(docker, Some(id), true).await?;
    if let Some(pid) = launcher {
        // SAFETY: kill(2) with the pid of this bottle's live launcher (checked above).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    Ok(VerbResult {
        id: id.into(),
        verb: "kill",
        containers: cs.iter().map(|(r, c, _)| format!("{r}: {c}")).collect(),
        removed: Some(report.containers + report.networks),
    })
}

/// Runs `cmd` in the agent of bottle `id` as the agent's user, in `/workspace`, with the
/// agent's environment; with `stdin`, the caller's standard input is sent to it. Returns the
/// command's exit code.
pub async fn exec(docker: &Docker, id: &str, cmd: &[String], stdin: bool) -> Result<i64> {
    if cmd.is_empty() {
        bail!("bottle exec needs a command: bottle exec <id> -- CMD…");
    }
    let (_, agent, state) = containers(docker, id)
        .await?
        .into_iter()
        .find(|(r, _, _)| r == "agent")
        .with_context(|| format!("bottle {id} has no agent container"))?;
    if state != "running" {
        bail!("bottle {id}: the agent is {state}; `bottle resume {id}` first if it is paused");
    }
    let e = docker
        .create_exec(
            &agent,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                working_dir: Some("/workspace".into()),
                ..Default::default()
            },
        )
        .await
        .context("docker exec in the agent")?;
    if let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&e.id, None)
        .await
        .context("starting docker exec in the agent")?
    {
        let feed = async move {
            if stdin {
                let mut s = tokio::io::stdin();
                let _ = tokio::io::copy(&mut s, &mut input).await;
            }
            let _ = input.shutdown().await;
        };
        let pump = async move {
            // Terminal control sequences from the agent are escaped, as in `bottle run`.
            let (mut fo, mut fe) = (
                crate::termfilter::TermFilter::new(),
                crate::termfilter::TermFilter::new(),
            );
            let mut out = tokio::io::stdout();
            let mut err = tokio::io::stderr();
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        let _ = err.write_all(&fe.push(&message)).await;
                    }
                    Ok(other) => {
                        let _ = out.write_all(&fo.push(&other.into_bytes())).await;
                    }
                    Err(_) => break,
                }
            }
            let _ = out.write_all(&fo.finish()).await;
            let _ = err.write_all(&fe.finish()).await;
            let _ = out.flush().await;
        };
        tokio::join!(feed, pump);
    }
    let code = docker
        .inspect_exec(&e.id)
        .await
        .ok()
        .and_then(|i| i.exit_code)
        .unwrap_or(-1);
    Ok(code)
}
