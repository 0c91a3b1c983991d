//! The engine calls of the lifecycle verbs ([`crate::runtime::lifecycle`]): pause and resume
//! (the agent only; the sidecar keeps running), kill, exec, capture and send-keys.

use anyhow::{bail, Context, Result};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::reap::reap;
use crate::runtime::labels::{self, launcher_alive};
use crate::runtime::lifecycle::{
    parse_timestamp, strip_controls, Capture, CaptureMode, VerbResult,
};

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

/// The (role, container, state) of bottle `id`'s agent.
async fn agent_of(docker: &Docker, id: &str) -> Result<(String, String, String)> {
    containers(docker, id)
        .await?
        .into_iter()
        .find(|(r, _, _)| r == "agent")
        .with_context(|| format!("bottle {id} has no agent container"))
}

/// The containers `pause`/`resume` act on: the agent (and, once they exist, model sidecars).
fn frozen_roles(role: &str) -> bool {
    role == "agent" || role == "model"
}

/// Freezes the agent of bottle `id` (the proxy sidecar keeps running: see the module docs).
pub async fn pause(docker: &Docker, id: &str) -> Result<VerbResult> {
    freeze(docker, id, true).await
}

/// Thaws what [`pause`] froze.
pub async fn resume(docker: &Docker, id: &str) -> Result<VerbResult> {
    freeze(docker, id, false).await
}

/// Pauses (`pause`) or unpauses the containers of [`frozen_roles`]; one already in the wanted
/// state is left alone, any other state is an error naming it.
async fn freeze(docker: &Docker, id: &str, pause: bool) -> Result<VerbResult> {
    let (from, to) = if pause {
        ("running", "paused")
    } else {
        ("paused", "running")
    };
    let mut done = Vec::new();
    for (role, c, state) in containers(docker, id).await? {
        if !frozen_roles(&role) {
            continue;
        }
        if state == from {
            let r = if pause {
                docker.pause_container(&c).await
            } else {
                docker.unpause_container(&c).await
            };
            r.with_context(|| {
                format!(
                    "{} the {role} of bottle {id}",
                    if pause { "pausing" } else { "resuming" }
                )
            })?;
        } else if state != to {
            bail!("bottle {id}: the {role} is {state}, not {from}");
        }
        done.push(format!("{role}: {c}"));
    }
    let (verb, event) = if pause {
        ("pause", "session.paused")
    } else {
        ("resume", "session.resumed")
    };
    crate::runtime::events::emit(event, id, serde_json::json!({ "containers": done }));
    crate::runtime::sessions::update(id, to, None);
    Ok(VerbResult {
        id: id.into(),
        verb,
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
    crate::runtime::events::emit(
        "session.killed",
        id,
        serde_json::json!({ "containers": cs.iter().map(|(_, c, _)| c).collect::<Vec<_>>() }),
    );
    crate::runtime::sessions::update(id, "killed", None);
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
    let (_, agent, state) = agent_of(docker, id).await?;
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
                // The container's own working directory (the workspace, or gemba's `cwd`).
                working_dir: None,
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

/// The agent's output: the last `lines` lines, or with `since` (a cursor from an earlier
/// capture) only what came after it.
pub async fn capture(
    docker: &Docker,
    id: &str,
    lines: usize,
    since: Option<&str>,
    mode: CaptureMode,
) -> Result<Capture> {
    let (_, agent, _) = agent_of(docker, id).await?;
    let after = match since {
        Some(c) => Some(parse_timestamp(c).with_context(|| {
            format!("--since {c:?} is not a cursor from `bottle capture` (e.g. 2026-12-03T07:40:01.123456789Z)")
        })?),
        None => None,
    };
    let mut b = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true);
    b = match after {
        Some((secs, _)) => b.since(i32::try_from(secs).unwrap_or(i32::MAX)),
        None => b.tail(&lines.to_string()),
    };
    let mut s = docker.logs(&agent, Some(b.build()));
    let mut text = String::new();
    while let Some(item) = s.next().await {
        let chunk = item.context("reading the agent's output")?;
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let mut out = Vec::new();
    let mut cursor = String::new();
    for line in text.lines() {
        let Some((ts, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some(t) = parse_timestamp(ts) else {
            continue;
        };
        if after.is_some_and(|a| t <= a) {
            continue; // the engine's `since` has whole-second resolution
        }
        cursor = ts.to_string();
        out.push(match mode {
            CaptureMode::Raw => rest.to_string(),
            CaptureMode::Plain => strip_controls(rest),
            CaptureMode::Escaped => crate::termfilter::escape_line(rest),
        });
    }
    if after.is_none() && out.len() > lines {
        out.drain(..out.len() - lines);
    }
    Ok(Capture {
        id: id.into(),
        lines: out,
        cursor,
    })
}

/// Writes `payload` to the terminal of bottle `id`'s agent (a `start`ed or `spawn`ed bottle: its
/// agent has a TTY) in one write, holding the bottle's send-keys lock so concurrent callers'
/// bytes never interleave.
pub async fn send_keys(docker: &Docker, id: &str, payload: &[u8]) -> Result<()> {
    let (_, agent, state) = agent_of(docker, id).await?;
    if state != "running" {
        bail!("bottle {id}: the agent is {state}; `bottle resume {id}` first if it is paused");
    }
    let info = docker
        .inspect_container(&agent, None)
        .await
        .context("inspecting the agent")?;
    let cfg = info.config.unwrap_or_default();
    if cfg.tty != Some(true) || cfg.open_stdin != Some(true) {
        bail!(
            "bottle {id} has no terminal to type into (it was started by `bottle run`); send-keys works on `bottle start` and `bottle spawn` bottles"
        );
    }
    let lock_path = crate::runtime::statedir::StateDir::of(id)?
        .path()
        .join("send-keys.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    {
        use std::os::fd::AsRawFd as _;
        let fd = lock.as_raw_fd();
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on an fd we own for the duration of this call.
            unsafe { libc::flock(fd, libc::LOCK_EX) }
        })
        .await
        .context("waiting for the send-keys lock")?;
    }
    let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stream(true)
        .build();
    let bollard::container::AttachContainerResults {
        mut input,
        mut output,
    } = docker
        .attach_container(&agent, Some(opts))
        .await
        .context("attaching to the agent's terminal")?;
    input
        .write_all(payload)
        .await
        .context("writing to the agent's terminal")?;
    input
        .flush()
        .await
        .context("writing to the agent's terminal")?;
    // Half-close: the engine copies what it has read into the agent's stdin, ends this
    // attachment (its stdin copy is its only stream) and closes the connection. That close
    // is the delivery acknowledgement; 1 s bounds it for engines that keep the stream open.
    let _ = input.shutdown().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while output.next().await.is_some() {}
    })
    .await;
    drop(input);
    drop(lock);
    Ok(())
}
