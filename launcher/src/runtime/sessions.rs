//! The durable session store: one record per bottle under
//! `<state dir>/sessions/<id>/session.json` (directory 0700, file 0600, written atomically by
//! rename, updated under a per-session `flock`), kept across reboots.
//!
//! A record is written when a bottle starts and updated by every lifecycle verb and at the
//! end. `bottle list` reconciles the records with the engine: a session whose containers were
//! removed behind bottle's back is reported as `gone` (and recorded so), never crashed on.
//! Ended records older than [`KEEP_ENDED`] are pruned.

use std::fs;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How long ended sessions are kept.
pub const KEEP_ENDED: Duration = Duration::from_secs(7 * 24 * 3600);

/// One session's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Bottle (session) id.
    pub id: String,
    /// The backend (`docker`).
    pub backend: String,
    /// Bottle name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// `start`, `run` or `spawn`.
    pub mode: String,
    /// The agent's image.
    pub image: String,
    /// Container names (agent, sidecar).
    pub containers: Vec<String>,
    /// `running`, `paused`, `ended`, `killed`, `reaped`, `gone` (removed outside bottle),
    /// `failed`.
    pub state: String,
    /// The agent's exit code, when known.
    pub exit_code: Option<i64>,
    /// Unix seconds when it started.
    pub started: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn root() -> Result<PathBuf> {
    Ok(crate::trust::state_dir()?.join("sessions"))
}

fn dir_of(id: &str) -> Result<PathBuf> {
    dir_in(&root()?, id)
}

fn dir_in(root: &std::path::Path, id: &str) -> Result<PathBuf> {
    if !super::labels::is_valid_id(id) {
        anyhow::bail!("{id:?} is not a bottle id");
    }
    Ok(root.join(id))
}

/// Writes `s` atomically (temp file + rename) under its session's lock.
pub fn save(s: &Session) -> Result<()> {
    save_in(&root()?, s)
}

fn save_in(root: &std::path::Path, s: &Session) -> Result<()> {
    let dir = dir_in(root, &s.id)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir)?;
    let tmp = dir.join(".session.json.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(s)?)?;
    f.sync_all().ok();
    fs::rename(&tmp, dir.join("session.json"))
        .with_context(|| format!("saving the session record in {}", dir.display()))
}

/// An exclusive `flock` on the session's lock file, released on drop.
fn lock(dir: &std::path::Path) -> Result<fs::File> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join("lock"))
        .with_context(|| format!("locking the session in {}", dir.display()))?;
    // SAFETY: flock on an fd owned by `f`, which the caller keeps alive.
    unsafe {
        libc::flock(f.as_raw_fd(), libc::LOCK_EX);
    }
    Ok(f)
}

/// The record of session `id`, if there is one.
pub fn load(id: &str) -> Option<Session> {
    load_in(&root().ok()?, id)
}

fn load_in(root: &std::path::Path, id: &str) -> Option<Session> {
    let p = dir_in(root, id).ok()?.join("session.json");
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}

/// Every record, oldest first.
pub fn all() -> Vec<Session> {
    let mut out: Vec<Session> = fs::read_dir(root().unwrap_or_default())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| load(&e.file_name().to_string_lossy()))
        .collect();
    out.sort_by_key(|s| s.started);
    out
}

/// Sets the state (and exit code, if given) of session `id`; best-effort (warns).
pub fn update(id: &str, state: &str, exit_code: Option<i64>) {
    let Some(mut s) = load(id) else { return };
    s.state = state.to_string();
    if exit_code.is_some() {
        s.exit_code = exit_code;
    }
    s.updated = now();
    if let Err(e) = save(&s) {
        eprintln!("bottle: warning: updating the session record of {id}: {e:#}");
    }
}

fn markers_dir() -> Result<PathBuf> {
    Ok(crate::trust::state_dir()?.join("teardown-failed"))
}

/// Leaves a marker that bottle `id`'s teardown could not remove `what` (container and network
/// ids); the next reap removes the rest and the marker. Best-effort (warns).
pub fn mark_teardown_failed(id: &str, what: &[String]) {
    let r = (|| -> Result<()> {
        let dir = markers_dir()?;
        let p = dir_in(&dir, id)?;
        fs::create_dir_all(&dir)?;
        let body = serde_json::json!({"id": id, "at": now(), "left": what});
        fs::write(p, serde_json::to_vec(&body)?)?;
        Ok(())
    })();
    if let Err(e) = r {
        eprintln!("bottle: warning: recording the failed teardown of {id}: {e:#}");
    }
}

/// Bottle ids with a failed-teardown marker.
pub fn teardown_markers() -> Vec<String> {
    let Ok(dir) = markers_dir() else {
        return Vec::new();
    };
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|id| super::labels::is_valid_id(id))
        .collect()
}

/// Removes bottle `id`'s failed-teardown marker.
pub fn clear_teardown_marker(id: &str) {
    if let Ok(p) = markers_dir().and_then(|d| dir_in(&d, id)) {
        let _ = fs::remove_file(p);
    }
}

/// Records a new session; best-effort (warns).
pub fn record_start(s: Session) {
    if let Err(e) = save(&s) {
        eprintln!("bottle: warning: recording session {}: {e:#}", s.id);
    }
}

/// A new record for a bottle that just started.
pub fn new_session(
    id: &str,
    spec: &super::spec::LaunchSpec,
    mode: &str,
    containers: Vec<String>,
) -> Session {
    Session {
        id: id.to_string(),
        backend: "docker".into(),
        bottle: spec.bottle.clone(),
        agent: spec.agent.clone(),
        mode: mode.to_string(),
        image: spec.agent_image.clone(),
        containers,
        state: "running".into(),
        exit_code: None,
        started: now(),
        updated: now(),
    }
}

/// Whether a state is final.
pub fn is_final(state: &str) -> bool {
    matches!(state, "ended" | "killed" | "gone" | "failed" | "reaped")
}

/// Reconciles the records with the engine's live bottle ids: a non-final session with no
/// container left becomes `gone`; final ones older than [`KEEP_ENDED`] are removed. Returns
/// the sessions that just turned `gone`.
pub fn reconcile(live: &std::collections::HashSet<String>) -> Vec<Session> {
    let mut gone = Vec::new();
    for mut s in all() {
        if is_final(&s.state) {
            if now().saturating_sub(s.updated) > KEEP_ENDED.as_secs() {
                if let Ok(d) = dir_of(&s.id) {
                    let _ = fs::remove_dir_all(d);
                }
            }
            continue;
        }
        if !live.contains(&s.id) {
            s.state = "gone".into();
            s.updated = now();
            if save(&s).is_ok() {
                super::events::emit(
                    "session.gone",
                    &s.id,
                    serde_json::json!({"reason": "its containers were removed outside bottle"}),
                );
                gone.push(s);
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_saved_atomically_and_private_and_ids_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("sessions");
        let s = Session {
            id: "0123456789ab".into(),
            backend: "docker".into(),
            bottle: "b".into(),
            agent: "a".into(),
            mode: "spawn".into(),
            image: "img".into(),
            containers: vec!["c1".into()],
            state: "running".into(),
            exit_code: None,
            started: 1,
            updated: 1,
        };
        save_in(&root, &s).unwrap();
        assert_eq!(load_in(&root, &s.id).unwrap(), s);
        let mut u = s.clone();
        u.state = "ended".into();
        u.exit_code = Some(3);
        save_in(&root, &u).unwrap();
        assert_eq!(load_in(&root, &s.id).unwrap(), u);
        assert!(!root.join("0123456789ab/.session.json.tmp").exists());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(root.join("0123456789ab/session.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "0600");
        assert!(save_in(
            &root,
            &Session {
                id: "../x".into(),
                ..s.clone()
            }
        )
        .is_err());
        assert!(is_final("gone") && !is_final("paused"));
    }
}
