//! The per-remote bare mirror and its fail-closed, single-flight refresh from upstream.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{GateConfig, RemoteConfig};
use crate::credential::scrub;
use crate::error::GateError;
use crate::process::git;

/// A bare mirror of one upstream remote, under the gate's state directory.
pub struct Mirror {
    remote: RemoteConfig,
    dir: PathBuf,
    /// Number of refreshes started (incremented under `lock`).
    started: AtomicU64,
    /// Serialises refreshes; holds (refreshes completed, result of the last one).
    lock: tokio::sync::Mutex<(u64, Result<(), String>)>,
}

impl Mirror {
    /// Creates (or reopens) the mirror of `remote` at `<state_dir>/mirrors/<name>.git`, with
    /// the gate's hooks directory and hardened receive settings.
    pub async fn open(
        cfg: &GateConfig,
        remote: &RemoteConfig,
        hooks_dir: &Path,
    ) -> Result<Mirror, GateError> {
        let dir = cfg
            .state_dir
            .join("mirrors")
            .join(format!("{}.git", remote.name));
        if !dir.join("HEAD").exists() {
            run_ok(
                git(cfg, None, None)
                    .arg("init")
                    .arg("--bare")
                    .arg("--quiet")
                    .arg(&dir),
                "git init --bare (mirror)",
            )
            .await?;
        }
        let settings: [(&str, String); 9] = [
            ("core.hooksPath", hooks_dir.display().to_string()),
            ("receive.fsckObjects", "true".into()),
            (
                "receive.maxInputSize",
                cfg.limits.max_request_bytes.to_string(),
            ),
            ("receive.advertisePushOptions", "false".into()),
            ("receive.autogc", "false".into()),
            ("receive.denyDeleteCurrent", "false".into()),
            ("gc.auto", "0".into()),
            ("core.logAllRefUpdates", "false".into()),
            ("uploadpack.allowFilter", "true".into()),
        ];
        let extra = remote
            .git_config
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()));
        for (k, v) in settings.into_iter().chain(extra) {
            run_ok(
                git(cfg, None, Some(&dir)).args(["config", k]).arg(v),
                "git config (mirror)",
            )
            .await?;
        }
        Ok(Mirror {
            remote: remote.clone(),
            dir,
            started: AtomicU64::new(0),
            lock: tokio::sync::Mutex::new((0, Ok(()))),
        })
    }

    /// The mirror's git directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The remote this mirrors.
    pub fn remote(&self) -> &RemoteConfig {
        &self.remote
    }

    /// Brings the mirror's branches and tags to upstream's current state (`git fetch --prune`),
    /// within `limits.fetch_timeout`. Single-flight: callers that arrive while a refresh runs
    /// wait and share the *next* refresh (one that started after they arrived), so a caller
    /// never gets refs older than its own request. Any failure is an
    /// [`GateError::Upstream`]: the caller must not serve the mirror's refs.
    pub async fn refresh(&self, cfg: &GateConfig) -> Result<(), GateError> {
        let arrived = self.started.load(Ordering::SeqCst);
        let mut state = self.lock.lock().await;
        if state.0 > arrived {
            return state.1.clone().map_err(|reason| self.upstream_err(reason));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let result = match tokio::time::timeout(cfg.limits.fetch_timeout, self.fetch(cfg)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "upstream did not answer within {:?}",
                cfg.limits.fetch_timeout
            )),
        };
        state.0 += 1;
        state.1 = result.clone();
        result.map_err(|reason| self.upstream_err(reason))
    }

    fn upstream_err(&self, reason: String) -> GateError {
        GateError::Upstream {
            remote: self.remote.name.clone(),
            reason,
        }
    }

    fn secrets(&self) -> Vec<String> {
        self.remote
            .credential
            .as_ref()
            .map(|c| c.secret_values())
            .unwrap_or_default()
    }

    async fn fetch(&self, cfg: &GateConfig) -> Result<(), String> {
        let cred = self.remote.credential.as_ref();
        let out = git(cfg, cred, Some(&self.dir))
            .args([
                "fetch",
                "--prune",
                "--no-tags",
                "--quiet",
                "--no-write-fetch-head",
                "--",
            ])
            .arg(&self.remote.url)
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
            .output()
            .await
            .map_err(|e| format!("cannot run git fetch: {e}"))?;
        if !out.status.success() {
            return Err(self.git_failure(&out.stderr));
        }
        // Point HEAD at upstream's default branch when it does not name an existing branch
        // (first refresh, or upstream changed it), so clones check out the right branch.
        let head_ok = git(cfg, None, Some(&self.dir))
            .args(["rev-parse", "--verify", "--quiet", "HEAD"])
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !head_ok {
            let out = git(cfg, cred, Some(&self.dir))
                .args(["ls-remote", "--symref", "--"])
                .arg(&self.remote.url)
                .arg("HEAD")
                .output()
                .await
                .map_err(|e| format!("cannot run git ls-remote: {e}"))?;
            if !out.status.success() {
                return Err(self.git_failure(&out.stderr));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let target = text.lines().find_map(|l| {
                l.strip_prefix("ref: ")
                    .and_then(|r| r.strip_suffix("\tHEAD"))
                    .filter(|r| r.starts_with("refs/heads/"))
                    .map(str::to_string)
            });
            if let Some(t) = target {
                let _ = git(cfg, None, Some(&self.dir))
                    .args(["symbolic-ref", "HEAD"])
                    .arg(t)
                    .output()
                    .await;
            }
        }
        Ok(())
    }

    fn git_failure(&self, stderr: &[u8]) -> String {
        let text = String::from_utf8_lossy(stderr);
        let text = scrub(text.trim(), &self.secrets());
        let mut short: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(4)
            .collect::<Vec<_>>()
            .join("; ");
        if short.len() > 600 {
            let mut cut = 600;
            while !short.is_char_boundary(cut) {
                cut -= 1;
            }
            short.truncate(cut);
        }
        if short.is_empty() {
            short = "git fetch failed".into();
        }
        short
    }
}

async fn run_ok(cmd: &mut tokio::process::Command, what: &str) -> Result<(), GateError> {
    let out = cmd
        .output()
        .await
        .map_err(|e| GateError::Git(format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GateError::Git(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
