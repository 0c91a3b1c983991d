//! `bottle start`: an interactive TTY attached to the agent (raw mode, window resize,
//! detach keys), with teardown on exit, detach, Ctrl-C (outside raw mode) or SIGTERM.
use std::io::{IsTerminal, Read, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use bollard::query_parameters::{AttachContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::bottle::{Bottle, LaunchOptions};
use super::engine::EngineFacts;
use super::run::{agent_exit_code, cancellation, sidecar_died_message, sidecar_stopped};
use super::spec::LaunchSpec;

/// Default detach sequence (same as `docker attach`).
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

struct RawGuard;

impl Drop for RawGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

async fn resize(docker: &Docker, id: &str) {
    if let Ok((w, h)) = crossterm::terminal::size() {
        let _ = docker
            .resize_container_tty(
                id,
                ResizeContainerTTYOptionsBuilder::default()
                    .w(w as i32)
                    .h(h as i32)
                    .build(),
            )
            .await;
    }
}

/// Runs the interactive session and returns the agent's exit code (or -1 when detached or
/// cancelled). The bottle is always torn down before returning.
pub async fn start(
    docker: &Docker,
    facts: &EngineFacts,
    spec: &LaunchSpec,
    opts: &LaunchOptions,
    detach_keys: &str,
) -> Result<i64> {
    let mut cancel = cancellation()?;
    let t0 = Instant::now();
    let bottle = Bottle::launch(docker, facts, spec, opts).await?;
    let _approvals = super::spawn::watch_approvals(docker, spec, &bottle.id);
    eprintln!(
        "bottle {}: ready in {:.1}s — {} to detach and end the bottle",
        bottle.id,
        t0.elapsed().as_secs_f64(),
        detach_keys
    );
    let r = session(&bottle, &mut cancel, detach_keys).await;
    if let Ok(code) = &r {
        if *code >= 0 {
            bottle.set_exit_code(*code);
        }
    }
    bottle.teardown().await;
    eprintln!("bottle {}: ended, every object removed", bottle.id);
    if let (Some(g), Some(ws)) = (bottle.git_report(), bottle.workspace_dir()) {
        eprint!("{}", crate::guard::changes_warning(ws, &g.changes));
    }
    if let (Some(copy), super::spec::WorkspaceSpec::Copy(src)) =
        (&bottle.workspace_copy, &spec.workspace)
    {
        eprintln!("{}", crate::guard::copy_review_hint(src, copy));
    }
    r
}

async fn session(
    bottle: &Bottle,
    cancel: &mut tokio::sync::watch::Receiver<Option<&'static str>>,
    detach_keys: &str,
) -> Result<i64> {
    let agent = bottle.agent.clone().context("agent container missing")?;
    let sidecar = bottle
        .sidecar
        .clone()
        .context("sidecar container missing")?;
    let r = relay(
        &bottle.docker,
        &bottle.id,
        &agent,
        &sidecar,
        cancel,
        detach_keys,
        true,
    )
    .await?;
    if r == DETACHED {
        eprintln!("\r\nbottle {}: detached — ending the bottle", bottle.id);
        return Ok(-1);
    }
    Ok(r)
}

/// What [`relay`] returns when the user detached and the agent still runs.
const DETACHED: i64 = i64::MIN;

/// `bottle attach <id>`: this terminal on a running bottle's agent (a spawned or started
/// one); the detach keys leave the bottle running. Returns the agent's exit code if it ended.
pub async fn attach(docker: &Docker, id: &str, detach_keys: &str) -> Result<i64> {
    if !super::labels::is_valid_id(id) {
        anyhow::bail!("{id:?} is not a bottle id; `bottle list` shows the ids of running bottles");
    }
    let agent = super::labels::name(id, "agent");
    let sidecar = super::labels::name(id, "sidecar");
    let info = docker
        .inspect_container(&agent, None)
        .await
        .with_context(|| format!("no bottle {id}; `bottle list` shows running bottles"))?;
    if info.config.and_then(|c| c.tty) != Some(true) {
        anyhow::bail!("bottle {id} has no terminal (it was started by `bottle run`); `bottle logs {id}` shows its output");
    }
    let mut cancel = cancellation()?;
    eprintln!("bottle {id}: attached — {detach_keys} to detach (the bottle keeps running)");
    let r = relay(
        docker,
        id,
        &agent,
        &sidecar,
        &mut cancel,
        detach_keys,
        false,
    )
    .await?;
    if r == DETACHED {
        eprintln!("\r\nbottle {id}: detached, still running");
        return Ok(0);
    }
    Ok(r)
}

/// Relays this terminal to the agent's TTY until it exits, the user detaches ([`DETACHED`]) or
/// a signal cancels (-1). With `start`, the agent is started after the attachment.
async fn relay(
    docker: &Docker,
    bottle_id: &str,
    agent: &str,
    sidecar: &str,
    cancel: &mut tokio::sync::watch::Receiver<Option<&'static str>>,
    detach_keys: &str,
    start: bool,
) -> Result<i64> {
    let agent = agent.to_string();
    let sidecar = sidecar.to_string();
    let attached = docker
        .attach_container(
            &agent,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(true)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(start)
                    .detach_keys(detach_keys)
                    .build(),
            ),
        )
        .await
        .context("attaching to the agent")?;
    let mut output = attached.output;
    let mut input = attached.input;
    if start {
        docker
            .start_container(&agent, None)
            .await
            .context("starting the agent")?;
    }

    let is_tty = std::io::stdin().is_terminal();
    let _raw = if is_tty {
        crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        Some(RawGuard)
    } else {
        None
    };
    resize(docker, &agent).await;
    let winch = {
        let d = docker.clone();
        let a = agent.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut s) = signal(SignalKind::window_change()) else {
                return;
            };
            while s.recv().await.is_some() {
                resize(&d, &a).await;
            }
        })
    };
    // stdin is read on a plain thread (a blocking read cannot be cancelled); bytes are
    // forwarded through a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let died = sidecar_stopped(docker.clone(), sidecar);
    tokio::pin!(died);
    let mut sidecar_gone = false;
    let mut stdin_open = true;
    let mut cancelled = false;
    let mut stdout = tokio::io::stdout();
    loop {
        if cancel.borrow().is_some() {
            cancelled = true;
            break;
        }
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(chunk)) => {
                    stdout.write_all(&chunk.into_bytes()).await.ok();
                    stdout.flush().await.ok();
                }
                _ => break,
            },
            data = rx.recv(), if stdin_open => match data {
                Some(d) => {
                    if input.write_all(&d).await.is_err() {
                        stdin_open = false;
                    }
                }
                None => {
                    stdin_open = false;
                    let _ = input.shutdown().await;
                }
            },
            code = &mut died, if !sidecar_gone => {
                sidecar_gone = true;
                let msg = sidecar_died_message(bottle_id, code);
                let _ = std::io::stderr().write_all(format!("\r\n{msg}\r\n").as_bytes());
            }
            _ = cancel.changed() => {}
        }
    }
    winch.abort();
    drop(_raw);
    if cancelled {
        return Ok(-1);
    }
    // The output stream ends on exit or on detach; a detached agent is still running.
    let running = docker
        .inspect_container(&agent, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.running)
        .unwrap_or(false);
    if running {
        return Ok(DETACHED);
    }
    Ok(agent_exit_code(docker, &agent).await)
}
