//! The host runtime directory of a bottle: `$XDG_RUNTIME_DIR/bottle/<id>` or
//! `~/.local/state/bottle/run/<id>`, mode 0700, holding the session record (0600) and the
//! public CA files the agent mounts (0644: the agent runs as another uid and must read them).
//! It never holds a secret and is removed at teardown.
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The directory under which every bottle's runtime directory lives.
pub fn base_dir() -> Result<PathBuf> {
    if let Some(d) = crate::settings::current().runtime_dir {
        return Ok(PathBuf::from(d));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("bottle"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "neither XDG_RUNTIME_DIR nor HOME is set; set one so bottle has a place for its runtime files",
    )?;
    Ok(PathBuf::from(home).join(".local/state/bottle/run"))
}

/// Where the agent's copy of the workspace goes in `workspace = "copy"` mode, kept after the
/// bottle ends (nothing the agent did is lost): `$BOTTLE_DATA_DIR/workspaces/<id>`, else
/// `$XDG_DATA_HOME/bottle/workspaces/<id>`, else `~/.local/share/bottle/workspaces/<id>`.
/// The parent directories are created with mode 0700; `<id>` itself is created by the copy.
pub fn kept_workspace_dir(id: &str) -> Result<PathBuf> {
    let dir = data_dir()?.join("workspaces");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(id))
}

/// bottle's data directory (kept workspace copies live in its `workspaces/`):
/// `$BOTTLE_DATA_DIR`, else `$XDG_DATA_HOME/bottle`, else `~/.local/share/bottle`. Not created.
pub fn data_dir() -> Result<PathBuf> {
    Ok(
        if let Some(d) = crate::settings::current()
            .data_dir
            .filter(|d| !d.is_empty())
        {
            PathBuf::from(d)
        } else if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            PathBuf::from(x).join("bottle")
        } else {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
            "neither XDG_DATA_HOME nor HOME is set; set one so bottle has a place to keep the workspace copy",
        )?;
            PathBuf::from(home).join(".local/share/bottle")
        },
    )
}

/// What `bottle list` and `bottle end` know about a running bottle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// Bottle id.
    pub id: String,
    /// Bottle (manifest) name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// `start` or `run`.
    pub mode: String,
    /// Launcher pid.
    pub pid: u32,
    /// Start time, RFC 3339.
    pub started: String,
    /// Container ids (sidecar, agent) as created.
    pub containers: Vec<String>,
    /// Network ids as created.
    pub networks: Vec<String>,
}

/// One bottle's runtime directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Creates `<base>/<id>` with mode 0700 (parents 0700 too).
    pub fn create(id: &str) -> Result<StateDir> {
        let base = base_dir()?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)
            .with_context(|| format!("creating the bottle runtime directory {}", base.display()))?;
        let path = base.join(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", path.display()))?;
        Ok(StateDir { path })
    }

    /// The directory of an existing bottle id (it may not exist).
    pub fn of(id: &str) -> Result<StateDir> {
        Ok(StateDir {
            path: base_dir()?.join(id),
        })
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file atomically with the given mode. Refuses names with path separators.
    pub fn write(&self, name: &str, data: &[u8], mode: u32) -> Result<PathBuf> {
        if name.contains('/') || name.starts_with('.') {
            bail!("internal error: bad runtime file name {name:?}");
        }
        let dst = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        drop(f);
        fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
        Ok(dst)
    }

    /// Writes the session record (0600).
    pub fn write_record(&self, rec: &SessionRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(rec)?;
        self.write("session.json", &json, 0o600)?;
        Ok(())
    }

    /// Reads the session record, if present and well-formed.
    pub fn read_record(&self) -> Option<SessionRecord> {
        let data = fs::read(self.path.join("session.json")).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Records that process `pid` (a detached `bottle __teardown`) is removing this bottle.
    pub fn mark_teardown(&self, pid: u32) -> Result<()> {
        let start = super::labels::process_start_ticks(pid).unwrap_or(0);
        self.write("teardown", format!("{pid} {start}").as_bytes(), 0o600)?;
        Ok(())
    }

    /// Whether the process recorded by [`StateDir::mark_teardown`] still runs (a reap leaves
    /// such a bottle to it).
    pub fn teardown_running(&self) -> bool {
        let Ok(text) = fs::read_to_string(self.path.join("teardown")) else {
            return false;
        };
        let mut it = text.split_whitespace();
        let (Some(pid), Some(start)) = (it.next(), it.next()) else {
            return false;
        };
        let labels = std::collections::HashMap::from([
            (super::labels::LAUNCHER_PID.to_string(), pid.to_string()),
            (super::labels::LAUNCHER_START.to_string(), start.to_string()),
        ]);
        super::labels::launcher_alive(&labels)
    }

    /// Removes the directory and everything in it; missing is fine.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }
}

/// All bottle ids that have a runtime directory.
pub fn list_ids() -> Vec<String> {
    let Ok(base) = base_dir() else {
        return Vec::new();
    };
    let Ok(rd) = fs::read_dir(base) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| super::labels::is_valid_id(n))
        .collect()
}

/// Now as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_removal() {
        let tmp = std::env::temp_dir().join(format!("bottle-statedir-test-{}", std::process::id()));
        std::env::set_var("BOTTLE_RUNTIME_DIR", &tmp);
        let d = StateDir::create("abc123").unwrap();
        let m = fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700);
        let rec = SessionRecord {
            id: "abc123".into(),
            bottle: "b".into(),
            agent: "a".into(),
            mode: "run".into(),
            pid: 1,
            started: now_rfc3339(),
            containers: vec![],
            networks: vec![],
        };
        d.write_record(&rec).unwrap();
        let fm = fs::metadata(d.path().join("session.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(fm, 0o600);
        assert_eq!(d.read_record().unwrap(), rec);
        assert!(list_ids().contains(&"abc123".to_string()));
        assert!(d.write("../x", b"", 0o600).is_err());
        d.remove().unwrap();
        assert!(!d.path().exists());
        let _ = fs::remove_dir_all(tmp);
    }
}
