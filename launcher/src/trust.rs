//! Trusted repository agents (`bottle trust`), like `direnv allow`.
//!
//! A repository agent (`<repo>/.bottle/agents/<name>.md`) comes from whoever wrote the
//! repository — or from an agent that ran in it earlier and planted it. It may pick any of the
//! user's bottles and a `command`, so `bottle start`/`run` only use one whose exact content the
//! user has trusted: `bottle trust PATH` records the file's canonical path and SHA-256 in
//! `<state dir>/trusted-agents.json` (0600, directory 0700); a file that is not recorded, or
//! whose content changed since, is refused with [`TrustError`].
//!
//! The state directory is `$BOTTLE_STATE_DIR`, else `$XDG_STATE_HOME/bottle`, else
//! `~/.local/state/bottle`.
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the trust store file in the state directory.
pub const STORE_FILE: &str = "trusted-agents.json";

/// Errors of the trust store and the trust check.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// No state directory can be found.
    #[error("none of BOTTLE_STATE_DIR, XDG_STATE_HOME and HOME is set; set BOTTLE_STATE_DIR to a private directory for bottle's state")]
    NoStateDir,
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store exists but is not valid JSON of the expected shape.
    #[error("the trust store {path} is damaged ({message}); move it away and trust your repository agents again")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
    /// The agent file was never trusted.
    #[error("the repository agent {path} is not trusted: it comes from the workspace, not from your config home, and {effect}. Review it, then run `bottle trust {path}`")]
    Untrusted {
        /// The agent file.
        path: PathBuf,
        /// What the file would do (bottle, command).
        effect: String,
    },
    /// The agent file changed since it was trusted.
    #[error("the repository agent {path} changed since you trusted it (sha256 {trusted} then, {now} now; then it asked for {then}); now it {effect}. Review it, then run `bottle trust {path}` again")]
    Changed {
        /// The agent file.
        path: PathBuf,
        /// The recorded hash (shortened).
        trusted: String,
        /// The current hash (shortened).
        now: String,
        /// What it asked for when trusted.
        then: String,
        /// What the file would do (bottle, command).
        effect: String,
    },
}

/// One trusted file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustEntry {
    /// Canonical path of the agent file.
    pub path: PathBuf,
    /// SHA-256 of its content, lower-case hex.
    pub sha256: String,
    /// When it was trusted (RFC 3339).
    pub trusted_at: String,
    /// What the file asked for then (bottle, command), shown when it has changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// The trust store file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrustStore {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Trusted files, sorted by path.
    #[serde(default)]
    pub agents: Vec<TrustEntry>,
}

fn one() -> u32 {
    1
}

/// bottle's state directory (see the module docs).
pub fn state_dir() -> Result<PathBuf, TrustError> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = crate::settings::current()
        .state_dir
        .filter(|s| !s.is_empty())
    {
        return Ok(PathBuf::from(d));
    }
    if let Some(x) = non_empty("XDG_STATE_HOME") {
        return Ok(x.join("bottle"));
    }
    non_empty("HOME")
        .map(|h| h.join(".local/state/bottle"))
        .ok_or(TrustError::NoStateDir)
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::guard::hex(&Sha256::digest(bytes))
}

/// The first 12 hex digits of a hash, for messages.
pub fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

impl TrustStore {
    /// The store file in `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(STORE_FILE)
    }

    /// Loads the store from `dir` (empty when the file does not exist).
    pub fn load(dir: &Path) -> Result<TrustStore, TrustError> {
        let path = Self::path_in(dir);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TrustError::Damaged {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustStore {
                version: 1,
                agents: Vec::new(),
            }),
            Err(e) => Err(TrustError::Io {
                what: "reading the trust store",
                path,
                source: e,
            }),
        }
    }

    /// Writes the store to `dir` (created 0700), atomically, mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), TrustError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| TrustError::Io { what, path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating the state directory", dir))?;
        let path = Self::path_in(dir);
        let tmp = dir.join(format!(".{STORE_FILE}.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("writing", &tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("replacing", &path))?;
        Ok(())
    }

    /// The entry of a (canonical) path.
    pub fn get(&self, path: &Path) -> Option<&TrustEntry> {
        self.agents.iter().find(|e| e.path == path)
    }

    /// Records `path` with `sha256` (and what it asks for, `effect`), replacing an older
    /// entry.
    pub fn insert(&mut self, path: PathBuf, sha256: String, effect: Option<String>) {
        self.agents.retain(|e| e.path != path);
        self.agents.push(TrustEntry {
            path,
            sha256,
            trusted_at: crate::runtime::statedir::now_rfc3339(),
            effect,
        });
        self.agents.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// Removes `path`; true when it was there.
    pub fn remove(&mut self, path: &Path) -> bool {
        let n = self.agents.len();
        self.agents.retain(|e| e.path != path);
        n != self.agents.len()
    }

    /// Checks that the agent file at `path`, whose content hashed to `sha256` when the plan
    /// read it, is trusted with exactly that content. `effect` says what the file would do.
    pub fn check(&self, path: &Path, sha256: &str, effect: &str) -> Result<(), TrustError> {
        let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match self.get(&canon) {
            Some(e) if e.sha256 == sha256 => Ok(()),
            Some(e) => Err(TrustError::Changed {
                path: canon,
                trusted: short(&e.sha256),
                now: short(sha256),
                then: e.effect.clone().unwrap_or_else(|| "(not recorded)".into()),
                effect: effect.to_string(),
            }),
            None => Err(TrustError::Untrusted {
                path: canon,
                effect: effect.to_string(),
            }),
        }
    }
}

/// The current state of a trusted file, for `bottle trust --list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustStatus {
    /// The entry.
    #[serde(flatten)]
    pub entry: TrustEntry,
    /// `ok`, `changed` or `missing`.
    pub status: &'static str,
}

/// Every entry of the store with the state of its file now.
pub fn list(store: &TrustStore) -> Vec<TrustStatus> {
    store
        .agents
        .iter()
        .map(|e| TrustStatus {
            entry: e.clone(),
            status: match fs::read(&e.path) {
                Ok(b) if sha256_hex(&b) == e.sha256 => "ok",
                Ok(_) => "changed",
                Err(_) => "missing",
            },
        })
        .collect()
}

/// The files `bottle trust PATH` means: a file is itself; a directory means its
/// `.bottle/agents/*.md` (or its own `*.md` when it is such an `agents` directory); anything
/// else has none.
pub fn files_for(path: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let meta = fs::metadata(path).map_err(|e| TrustError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let agents = path.join(".bottle").join("agents");
    let dir = if agents.is_dir() {
        agents
    } else if path.ends_with(".bottle/agents") {
        path.to_path_buf()
    } else {
        return Ok(Vec::new());
    };
    let rd = fs::read_dir(&dir).map_err(|e| TrustError::Io {
        what: "listing",
        path: dir.clone(),
        source: e,
    })?;
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_round_trip_check_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let agent = d.path().join("a.md");
        fs::write(&agent, "+++\nbottle = \"x\"\n+++\n").unwrap();
        let h = sha256_hex(&fs::read(&agent).unwrap());
        let mut s = TrustStore::load(&state).unwrap();
        assert!(matches!(
            s.check(&agent, &h, "e"),
            Err(TrustError::Untrusted { .. })
        ));
        s.insert(
            fs::canonicalize(&agent).unwrap(),
            h.clone(),
            crate::manifest::agent_effect("+++\nbottle = \"x\"\n+++\n"),
        );
        s.save(&state).unwrap();
        let mode = fs::metadata(TrustStore::path_in(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = TrustStore::load(&state).unwrap();
        assert!(s.check(&agent, &h, "e").is_ok());
        let err = s.check(&agent, &sha256_hex(b"other"), "e").unwrap_err();
        assert!(matches!(err, TrustError::Changed { .. }));
        assert!(err.to_string().contains("bottle trust"));
        assert!(
            err.to_string().contains("then it asked for bottle `x`"),
            "{err}"
        );
        assert_eq!(list(&s)[0].status, "ok");
        fs::write(&agent, "changed").unwrap();
        assert_eq!(list(&s)[0].status, "changed");
    }
}
