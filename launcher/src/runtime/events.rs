//! The session event log: one JSON line per lifecycle event, appended to
//! `<state dir>/events.jsonl` (0600; the state directory of `bottle trust`), read by
//! `bottle events [--follow] [--id ID]`.
//!
//! Events: `session.started`, `session.failed_to_start`, `session.paused`, `session.resumed`,
//! `session.ended` (with the exit code when known), `session.killed`, `session.reaped`,
//! `approval.resolved`. Each has `ts`, `event`, `id` (the bottle/session id) and `backend`
//! (`docker`), plus what the event knows (containers, image, bottle, agent, mode, exit code,
//! reason). Appends are single `write`s with `O_APPEND`, so concurrent writers never
//! interleave a line. Writing is best-effort: a failed append warns and never fails a verb.

use std::io::{BufRead as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The event log's path.
pub fn path() -> Result<PathBuf> {
    Ok(crate::trust::state_dir()?.join("events.jsonl"))
}

/// Appends one event (`extra` is an object of event-specific fields).
pub fn emit(event: &str, id: &str, extra: Value) {
    if let Err(e) = try_emit(event, id, extra) {
        eprintln!("bottle: warning: recording event {event}: {e:#}");
    }
}

fn try_emit(event: &str, id: &str, extra: Value) -> Result<()> {
    let mut rec = json!({
        "ts": super::statedir::now_rfc3339(),
        "event": event,
        "id": id,
        "backend": "docker",
    });
    if let (Some(r), Value::Object(m)) = (rec.as_object_mut(), extra) {
        r.extend(m);
    }
    let p = path()?;
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut line = serde_json::to_vec(&rec)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    f.write_all(&line)
        .with_context(|| format!("appending to {}", p.display()))
}

/// `bottle events`: prints the recorded events (of `id` only, if given) as JSON lines; with
/// `follow`, keeps printing new ones until interrupted.
pub async fn print(id: Option<&str>, follow: bool) -> Result<()> {
    let p = path()?;
    let wanted = |line: &str| match id {
        None => true,
        Some(i) => serde_json::from_str::<Value>(line)
            .ok()
            .is_some_and(|v| v["id"] == i),
    };
    let mut pos = 0u64;
    loop {
        if let Ok(f) = std::fs::File::open(&p) {
            let mut r = std::io::BufReader::new(f);
            r.seek(std::io::SeekFrom::Start(pos))?;
            let mut out = std::io::stdout().lock();
            let mut line = String::new();
            loop {
                line.clear();
                let n = r.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break; // a partial line is read again, whole, next time
                }
                pos += n as u64;
                if wanted(line.trim_end()) {
                    out.write_all(crate::termfilter::escape_str(&line).as_bytes())?;
                }
            }
            out.flush()?;
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
