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
    super::events::emit(event, id, serde_json::json!({ "containers": done }));
    super::sessions::update(id, to, None);
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
    super::events::emit(
        "session.killed",
        id,
        serde_json::json!({ "containers": cs.iter().map(|(_, c, _)| c).collect::<Vec<_>>() }),
    );
    super::sessions::update(id, "killed", None);
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

/// How `bottle capture` renders the agent's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Terminal control sequences escaped (`\x1b[…`): safe to print, nothing lost.
    Escaped,
    /// Control sequences removed: the text an orchestrator matches on.
    Plain,
    /// Bytes as the agent wrote them (only for a trusted consumer).
    Raw,
}

/// What `bottle capture` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Capture {
    /// Bottle id.
    pub id: String,
    /// The output lines, rendered per [`CaptureMode`].
    pub lines: Vec<String>,
    /// Pass back as `--since` to get only output after these lines (empty when there was
    /// none: pass the previous cursor again).
    pub cursor: String,
}

/// Removes ANSI/VT escape sequences (CSI, OSC, two-byte ESC) and other C0 controls except
/// tab; `\r` ends what a terminal would overwrite, so only the text after the last `\r` stays.
pub fn strip_controls(s: &str) -> String {
    let s = s.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                Some('[') => {
                    // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
                    for c in it.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: until BEL or ESC \.
                    while let Some(c) = it.next() {
                        if c == '\x07' || (c == '\x1b' && it.peek() == Some(&'\\')) {
                            if c == '\x1b' {
                                it.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An engine log timestamp (`2026-12-03T07:40:01.123456789Z`) as `(unix seconds, nanos)`.
pub fn parse_timestamp(ts: &str) -> Option<(i64, u32)> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<u32>().ok()?;
    Some((
        days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s,
        nanos,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_stripped_and_carriage_returns_overwrite() {
        assert_eq!(strip_controls("\x1b[1;31mred\x1b[0m text"), "red text");
        assert_eq!(strip_controls("\x1b]0;title\x07shell$ "), "shell$ ");
        assert_eq!(strip_controls("progress 10%\rprogress 99%"), "progress 99%");
        assert_eq!(strip_controls("a\tb\x08c"), "a\tbc");
    }

    #[test]
    fn timestamps_parse_to_unix_time() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2026-12-03T07:40:01.123456789Z"),
            Some((1_796_283_601, 123_456_789))
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00.5Z"),
            Some((1_709_164_800, 500_000_000))
        );
        assert!(parse_timestamp("yesterday").is_none());
    }
}

/// The bytes of one named key (`Enter`, `C-c`, `Escape`, `Up`, …), tmux-style.
pub fn key_bytes(name: &str) -> Option<Vec<u8>> {
    let fixed: &[u8] = match name {
        "Enter" | "Return" => b"\r",
        "Tab" => b"\t",
        "Escape" | "Esc" => b"\x1b",
        "Space" => b" ",
        "BSpace" | "Backspace" => b"\x7f",
        "Up" => b"\x1b[A",
        "Down" => b"\x1b[B",
        "Right" => b"\x1b[C",
        "Left" => b"\x1b[D",
        "Home" => b"\x1b[H",
        "End" => b"\x1b[F",
        "PageUp" | "PPage" => b"\x1b[5~",
        "PageDown" | "NPage" => b"\x1b[6~",
        "Delete" | "DC" => b"\x1b[3~",
        _ => {
            let c = name.strip_prefix("C-")?;
            let mut ch = c.chars();
            let (Some(c), None) = (ch.next(), ch.next()) else {
                return None;
            };
            let c = c.to_ascii_lowercase();
            return match c {
                'a'..='z' => Some(vec![c as u8 - b'a' + 1]),
                '[' => Some(vec![0x1b]),
                '\\' => Some(vec![0x1c]),
                ']' => Some(vec![0x1d]),
                '@' | ' ' => Some(vec![0]),
                _ => None,
            };
        }
    };
    Some(fixed.to_vec())
}

/// What `bottle send-keys` writes: the text (words joined by spaces), then each named key,
/// then Enter if asked. An unknown key name is an error naming it.
pub fn keys_payload(text: &[String], keys: &[String], enter: bool) -> Result<Vec<u8>> {
    let mut out = text.join(" ").into_bytes();
    for k in keys
        .iter()
        .flat_map(|k| k.split(','))
        .filter(|k| !k.is_empty())
    {
        match key_bytes(k.trim()) {
            Some(b) => out.extend(b),
            None => bail!(
                "unknown key {k:?}; keys are Enter, Tab, Escape, Space, BSpace, Up, Down, Left, Right, Home, End, PageUp, PageDown, Delete and C-<letter>"
            ),
        }
    }
    if enter {
        out.push(b'\r');
    }
    Ok(out)
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
    let lock_path = super::statedir::StateDir::of(id)?
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
    let bollard::container::AttachContainerResults { mut input, .. } = docker
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
    // Give the engine a moment to deliver before the attachment closes.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(input);
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_map_like_tmux() {
        assert_eq!(key_bytes("C-c"), Some(vec![3]));
        assert_eq!(key_bytes("Enter"), Some(b"\r".to_vec()));
        assert_eq!(key_bytes("Up"), Some(b"\x1b[A".to_vec()));
        assert_eq!(key_bytes("C-["), Some(vec![0x1b]));
        assert_eq!(key_bytes("Hyper"), None);
        let p = keys_payload(&["echo".into(), "hi".into()], &["C-c,Enter".into()], true).unwrap();
        assert_eq!(p, b"echo hi\x03\r\r");
        let e = keys_payload(&[], &["Enterr".into()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Enterr"), "{e}");
    }
}
