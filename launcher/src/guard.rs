//! Workspace guards: what the agent must never be able to write through the workspace mount.
//!
//! 1. **bottle's own directories** ([`check_workspace_location`]): a workspace that contains,
//!    equals or lies inside the config home (`$BOTTLE_HOME`: bottles whose secret `command`s run
//!    on the host), the state directory (trusted repository agents), the runtime directory or
//!    the data directory (kept workspace copies) is refused. Paths are compared after
//!    canonicalisation (symlinks resolved); a directory that does not exist yet is resolved
//!    through its nearest existing ancestor, because the agent could create it.
//! 2. **git metadata** ([`git_mounts`], [`GitSnapshot`]): git runs commands from `.git/config`
//!    (`core.fsmonitor`, `core.pager`, aliases, filters, …) and `.git/hooks` on the *host* the
//!    next time the user runs `git status` there. By default those paths are bind-mounted
//!    read-only over the read-write workspace: for the repository and every submodule gitdir
//!    under `.git/modules`, `config`, `config.worktree` and `commondir` (when present), `hooks/`
//!    and `info/` (both created empty when missing). `.git` itself is bind-mounted too (read-write
//!    when a directory, read-only when it is a worktree's `gitdir:` file) so the agent cannot
//!    rename it away and plant a new one. Below the top level, submodule `gitdir:` files and
//!    nested repositories' `config` and `hooks/` are read-only too. Objects, refs, the index and logs stay writable, so
//!    `git commit` works in the bottle. What mounts cannot prevent (the agent creating `.git` in a
//!    workspace that had none, a new `commondir`, a bottle with `protect_git = false`) is found
//!    by comparing a [`GitSnapshot`] taken before the agent starts with one taken after.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// One of bottle's own directories that must stay out of reach of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedDir {
    /// What it is, for messages (`the config home ($BOTTLE_HOME)`).
    pub what: String,
    /// The path as configured.
    pub path: PathBuf,
}

/// A workspace that would expose one of bottle's own directories to the agent.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to mount the workspace {workspace}: it {relation} {what} {dir}, so the agent could change what the next `bottle` command runs on this host. Run bottle from a project directory (cd into it), or move {what} elsewhere (e.g. set BOTTLE_HOME), or use a bottle with `workspace = \"none\"`"
)]
pub struct WorkspaceConflict {
    /// The workspace (canonical).
    pub workspace: String,
    /// `contains`, `is` or `is inside`.
    pub relation: &'static str,
    /// What the protected directory is.
    pub what: String,
    /// The protected directory (canonical).
    pub dir: String,
}

/// Resolves `p` like `canonicalize`, but for paths that do not exist (yet): the nearest
/// existing ancestor is canonicalised and the rest appended (`.` dropped, `..` applied).
pub fn resolve_lenient(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut existing = abs.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                match Path::new(part).components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    _ => out.push(part),
                }
            }
            return out;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => {
                // `..` at the end of a missing path, or the root: keep it lexical.
                if let Some(parent) = existing.parent() {
                    rest.push("..".into());
                    existing = parent.to_path_buf();
                } else {
                    return abs;
                }
            }
        }
    }
}

/// Refuses a workspace that contains, is, or lies inside one of `dirs`.
pub fn check_workspace_location(
    workspace: &Path,
    dirs: &[ProtectedDir],
) -> Result<(), WorkspaceConflict> {
    let ws = resolve_lenient(workspace);
    for d in dirs {
        let dir = resolve_lenient(&d.path);
        let relation = if dir == ws {
            "is"
        } else if dir.starts_with(&ws) {
            "contains"
        } else if ws.starts_with(&dir) {
            "is inside"
        } else {
            continue;
        };
        return Err(WorkspaceConflict {
            workspace: ws.display().to_string(),
            relation,
            what: d.what.clone(),
            dir: dir.display().to_string(),
        });
    }
    Ok(())
}

/// A bind mount protecting part of the workspace's git metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitMount {
    /// The host path.
    pub host: PathBuf,
    /// Relative to the workspace root (`.git/config`).
    pub rel: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Files of a gitdir that git executes commands from (or reads config from), mounted
/// read-only when they exist.
const GITDIR_FILES: &[&str] = &["config", "config.worktree", "commondir"];
/// Directories of a gitdir mounted read-only (created empty when missing).
const GITDIR_DIRS: &[&str] = &["hooks", "info"];
/// Most submodule gitdirs looked at under `.git/modules`.
const MAX_GITDIRS: usize = 64;
/// Most directory entries looked at when searching the workspace for nested `.git` entries.
const MAX_WALK: usize = 200_000;
/// Most nested `.git` entries whose config and hooks are mounted read-only (the rest are
/// only compared after the run).
const MAX_NESTED_MOUNTED: usize = 32;

/// Every `.git` (file or directory) below the workspace's top level, as relative paths, and
/// whether the search stopped early ([`MAX_WALK`] entries). Symlinks are not followed and no
/// `.git` directory is searched.
pub fn nested_git_entries(workspace: &Path) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            workspace.to_path_buf()
        } else {
            workspace.join(&rel)
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                out.sort();
                return (out, true);
            }
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(t) = e.file_type() else { continue };
            if name == ".git" {
                if !rel.is_empty() && (t.is_file() || t.is_dir()) {
                    out.push(child);
                }
                continue;
            }
            if t.is_dir() {
                stack.push(child);
            }
        }
    }
    out.sort();
    (out, false)
}

/// The gitdirs inside a workspace's `.git` directory: `.git` itself, then every submodule
/// gitdir under `.git/modules` (recursively), as paths relative to the workspace.
fn gitdirs(workspace: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let top = workspace.join(".git");
    if !is_real_dir(&top) {
        return out;
    }
    out.push(".git".to_string());
    let mut queue = vec![".git/modules".to_string()];
    let mut steps = 0;
    while let Some(rel) = queue.pop() {
        steps += 1;
        if steps > 4 * MAX_GITDIRS || out.len() >= MAX_GITDIRS {
            break;
        }
        let Ok(rd) = std::fs::read_dir(workspace.join(&rel)) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let child = format!("{rel}/{n}");
            let p = workspace.join(&child);
            if p.join("HEAD").is_file() && p.join("config").is_file() {
                out.push(child.clone());
                queue.push(format!("{child}/modules"));
            } else {
                queue.push(child);
            }
        }
    }
    out
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// The bind mounts that make the workspace's git metadata read-only for the agent. Creates a
/// missing `hooks/` or `info/` directory in each gitdir (so there is something to mount).
/// Returns no mounts when the workspace has no `.git`, or it is a symlink (see
/// [`GitSnapshot`] for what is reported then).
pub fn git_mounts(workspace: &Path) -> std::io::Result<Vec<GitMount>> {
    let dotgit = workspace.join(".git");
    let mount = |rel: &str, read_only| GitMount {
        host: workspace.join(rel),
        rel: rel.to_string(),
        read_only,
    };
    let mut out = Vec::new();
    // Nested repositories and submodule `.git` files below the top level: a submodule's
    // `gitdir:` file pointed elsewhere, or a nested repository's config, runs on the host
    // when `git status` recurses into it. Their existing config and hooks are read-only.
    let (nested, _) = nested_git_entries(workspace);
    for rel in nested.iter().take(MAX_NESTED_MOUNTED) {
        let p = workspace.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => out.push(mount(rel, true)),
            Ok(m) if m.is_dir() => {
                if p.join("config").is_file() {
                    out.push(mount(&format!("{rel}/config"), true));
                }
                if is_real_dir(&p.join("hooks")) {
                    out.push(mount(&format!("{rel}/hooks"), true));
                }
            }
            _ => {}
        }
    }
    let Ok(meta) = std::fs::symlink_metadata(&dotgit) else {
        return Ok(out);
    };
    if meta.is_file() {
        // A worktree's `gitdir: …` file: the agent must not point it elsewhere.
        out.insert(0, mount(".git", true));
        return Ok(out);
    }
    if !meta.is_dir() {
        return Ok(out);
    }
    out.insert(0, mount(".git", false));
    for g in gitdirs(workspace) {
        for f in GITDIR_FILES {
            let rel = format!("{g}/{f}");
            if std::fs::symlink_metadata(workspace.join(&rel)).is_ok_and(|m| m.is_file()) {
                out.push(mount(&rel, true));
            }
        }
        for d in GITDIR_DIRS {
            let rel = format!("{g}/{d}");
            let p = workspace.join(&rel);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue,
                Err(_) => std::fs::create_dir(&p)?,
            }
            out.push(mount(&rel, true));
        }
    }
    Ok(out)
}

/// One change to protected git metadata found after a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitChange {
    /// Relative to the workspace root (`.git/hooks/post-commit`).
    pub path: String,
    /// `created`, `removed` or `modified`.
    pub change: &'static str,
}

/// What the protected git metadata of a workspace looked like: relative path → a digest of
/// its kind and content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitSnapshot {
    entries: BTreeMap<String, String>,
    /// The search for nested repositories stopped early (a very large workspace).
    pub truncated: bool,
}

/// Most entries recorded per snapshot (a hooks directory is small).
const MAX_ENTRIES: usize = 4096;
/// Bytes of one file hashed (longer files also record their length).
const MAX_HASHED: u64 = 64 << 20;

impl GitSnapshot {
    /// Records `.git` (file, directory, symlink or absent) and, for every gitdir, its
    /// `config`, `config.worktree`, `commondir`, `hooks/` and `info/` (recursively); and every
    /// nested `.git` below the top level (a submodule's `gitdir:` file, a nested repository's
    /// config and hooks).
    pub fn take(workspace: &Path) -> GitSnapshot {
        let mut s = GitSnapshot::default();
        s.record(workspace, ".git", false);
        let (nested, truncated) = nested_git_entries(workspace);
        if truncated {
            s.truncated = true;
        }
        for rel in nested {
            s.record(workspace, &rel, false);
            if is_real_dir(&workspace.join(&rel)) {
                for f in GITDIR_FILES {
                    s.record(workspace, &format!("{rel}/{f}"), false);
                }
                s.record(workspace, &format!("{rel}/hooks"), true);
            }
        }
        for g in gitdirs(workspace) {
            for f in GITDIR_FILES {
                s.record(workspace, &format!("{g}/{f}"), false);
            }
            for d in GITDIR_DIRS {
                s.record(workspace, &format!("{g}/{d}"), true);
            }
        }
        s
    }

    fn record(&mut self, root: &Path, rel: &str, recurse: bool) {
        if self.entries.len() >= MAX_ENTRIES {
            return;
        }
        let p = root.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            return;
        };
        let digest = if m.file_type().is_symlink() {
            format!(
                "symlink:{}",
                std::fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if m.is_dir() {
            if recurse {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect();
                    names.sort();
                    for n in names {
                        self.record(root, &format!("{rel}/{n}"), true);
                    }
                }
            }
            "dir".to_string()
        } else if m.is_file() {
            use std::os::unix::fs::PermissionsExt;
            format!(
                "file:{:o}:{}",
                m.permissions().mode() & 0o777,
                hash_file(&p).unwrap_or_else(|e| format!("unreadable ({e})"))
            )
        } else {
            "special".to_string()
        };
        self.entries.insert(rel.to_string(), digest);
    }

    /// What changed from `self` (before) to `after`.
    pub fn changes(&self, after: &GitSnapshot) -> Vec<GitChange> {
        let mut out = Vec::new();
        for (k, v) in &after.entries {
            match self.entries.get(k) {
                None => out.push(GitChange {
                    path: k.clone(),
                    change: "created",
                }),
                Some(old) if old != v => out.push(GitChange {
                    path: k.clone(),
                    change: "modified",
                }),
                _ => {}
            }
        }
        for k in self.entries.keys() {
            if !after.entries.contains_key(k) {
                out.push(GitChange {
                    path: k.clone(),
                    change: "removed",
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    let f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    let mut r = f.take(MAX_HASHED);
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(n_total);
    Ok(format!("{len}:{}", hex(&h.finalize())))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stderr warning for changes to git metadata (empty when there are none). Paths are
/// escaped: the agent chose them.
pub fn changes_warning(workspace: &Path, changes: &[GitChange]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "bottle: WARNING: the agent changed git metadata in {} that git may execute on this host:\n",
        crate::termfilter::escape_line(&workspace.display().to_string())
    );
    for c in changes {
        s.push_str(&format!(
            "bottle:   {} {}\n",
            c.change,
            crate::termfilter::escape_line(&c.path)
        ));
    }
    s.push_str(
        "bottle: review them with `cat` / `ls -la` (not git) and restore or delete them before running any git command there: a changed config runs commands through many keys (core.fsmonitor, core.pager, aliases, filters), so `-c` overrides do not make git safe\n",
    );
    s
}

/// A git command line prefix that runs no hook, fsmonitor, pager or external diff from the
/// repository's config.
pub fn safe_git_prefix(workspace: &Path) -> String {
    format!(
        "git --no-pager -c core.fsmonitor=false -c core.hooksPath=/dev/null -C {} diff --no-ext-diff --no-textconv",
        crate::termfilter::escape_line(&workspace.display().to_string())
    )
}

/// How to review a kept workspace copy without running its git config (printed by `run` and
/// `start` in copy mode).
pub fn copy_review_hint(src: &Path, copy: &Path) -> String {
    let esc = |p: &Path| crate::termfilter::escape_line(&p.display().to_string());
    format!(
        "bottle: the agent's work is kept in {copy}; review it with `diff -ru --exclude=.git {src} {copy}` (plain git in the copy runs the copy's hooks and config; if bottle reported no git metadata change, `{git}` is safe too)",
        copy = esc(copy),
        src = esc(src),
        git = safe_git_prefix(copy)
    )
}

/// Relative paths of mounts as container paths under `root` (`/workspace/.git/config`).
pub fn container_path(root: &str, rel: &str) -> String {
    format!("{}/{rel}", root.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".git");
        std::fs::create_dir_all(g.join("objects")).unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(g.join("config"), "[core]\n").unwrap();
        d
    }

    #[test]
    fn mounts_cover_config_hooks_info_and_create_missing_dirs() {
        let d = git_repo();
        let m = git_mounts(d.path()).unwrap();
        let rels: Vec<(&str, bool)> = m.iter().map(|m| (m.rel.as_str(), m.read_only)).collect();
        assert_eq!(
            rels,
            vec![
                (".git", false),
                (".git/config", true),
                (".git/hooks", true),
                (".git/info", true)
            ]
        );
        assert!(d.path().join(".git/hooks").is_dir());
        assert!(d.path().join(".git/info").is_dir());
    }

    #[test]
    fn submodule_gitdirs_are_protected() {
        let d = git_repo();
        let sub = d.path().join(".git/modules/lib/inner");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("HEAD"), "x").unwrap();
        std::fs::write(sub.join("config"), "x").unwrap();
        let m = git_mounts(d.path()).unwrap();
        assert!(m
            .iter()
            .any(|m| m.rel == ".git/modules/lib/inner/config" && m.read_only));
        assert!(m
            .iter()
            .any(|m| m.rel == ".git/modules/lib/inner/hooks" && m.read_only));
    }

    #[test]
    fn nested_repositories_and_submodule_gitfiles_are_covered() {
        let d = git_repo();
        std::fs::create_dir_all(d.path().join("lib/sub")).unwrap();
        std::fs::write(
            d.path().join("lib/sub/.git"),
            "gitdir: ../../.git/modules/sub\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("vendor/x/.git/hooks")).unwrap();
        std::fs::write(d.path().join("vendor/x/.git/config"), "[core]\n").unwrap();
        let m = git_mounts(d.path()).unwrap();
        for rel in [
            "lib/sub/.git",
            "vendor/x/.git/config",
            "vendor/x/.git/hooks",
        ] {
            assert!(
                m.iter().any(|m| m.rel == rel && m.read_only),
                "{rel}: {m:?}"
            );
        }
        let before = GitSnapshot::take(d.path());
        // The agent points the submodule elsewhere and plants a nested repository.
        std::fs::write(d.path().join("lib/sub/.git"), "gitdir: ../../evil\n").unwrap();
        std::fs::create_dir_all(d.path().join("evilsub/.git")).unwrap();
        std::fs::write(
            d.path().join("evilsub/.git/config"),
            "[core]\nfsmonitor = id\n",
        )
        .unwrap();
        let c = before.changes(&GitSnapshot::take(d.path()));
        let paths: Vec<&str> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["evilsub/.git", "evilsub/.git/config", "lib/sub/.git"],
            "{c:?}"
        );
    }

    #[test]
    fn worktree_gitfile_is_read_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".git"), "gitdir: /elsewhere\n").unwrap();
        let m = git_mounts(d.path()).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m[0].read_only && m[0].rel == ".git");
        assert!(git_mounts(tempfile::tempdir().unwrap().path())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn snapshot_finds_planted_hooks_config_and_new_repos() {
        let d = git_repo();
        git_mounts(d.path()).unwrap();
        let before = GitSnapshot::take(d.path());
        std::fs::write(d.path().join(".git/hooks/post-commit"), "#!/bin/sh\nid\n").unwrap();
        std::fs::write(
            d.path().join(".git/config"),
            "[core]\nfsmonitor = sh -c id #\n",
        )
        .unwrap();
        std::fs::write(d.path().join(".git/commondir"), "../evil\n").unwrap();
        let c = before.changes(&GitSnapshot::take(d.path()));
        let got: Vec<(&str, &str)> = c.iter().map(|c| (c.path.as_str(), c.change)).collect();
        assert_eq!(
            got,
            vec![
                (".git/commondir", "created"),
                (".git/config", "modified"),
                (".git/hooks/post-commit", "created"),
            ]
        );
        // A workspace without a repository where the agent ran `git init`.
        let e = tempfile::tempdir().unwrap();
        let before = GitSnapshot::take(e.path());
        std::fs::create_dir_all(e.path().join(".git/hooks")).unwrap();
        std::fs::write(e.path().join(".git/HEAD"), "x").unwrap();
        std::fs::write(e.path().join(".git/config"), "x").unwrap();
        let c = before.changes(&GitSnapshot::take(e.path()));
        assert!(c.iter().any(|c| c.path == ".git" && c.change == "created"));
        assert!(c.iter().any(|c| c.path == ".git/config"));
        // Unchanged: nothing to report.
        assert!(GitSnapshot::take(d.path())
            .changes(&GitSnapshot::take(d.path()))
            .is_empty());
    }

    #[test]
    fn workspace_location_is_checked_both_ways_and_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join(".config/bottle")).unwrap();
        let dirs = vec![ProtectedDir {
            what: "the config home".into(),
            path: home.join(".config/bottle"),
        }];
        let err = check_workspace_location(&home, &dirs).unwrap_err();
        assert_eq!(err.relation, "contains");
        assert!(err.to_string().contains(".config/bottle"));
        assert_eq!(
            check_workspace_location(&home.join(".config/bottle"), &dirs)
                .unwrap_err()
                .relation,
            "is"
        );
        assert_eq!(
            check_workspace_location(&home.join(".config/bottle/agents"), &dirs)
                .unwrap_err()
                .relation,
            "is inside"
        );
        std::fs::create_dir_all(home.join("proj")).unwrap();
        assert!(check_workspace_location(&home.join("proj"), &dirs).is_ok());
        // The config home is a symlink into the workspace.
        let dots = d.path().join("dotfiles");
        std::fs::create_dir_all(dots.join("bottle")).unwrap();
        let link = home.join("cfg-link");
        std::os::unix::fs::symlink(dots.join("bottle"), &link).unwrap();
        let dirs = vec![ProtectedDir {
            what: "x".into(),
            path: link,
        }];
        assert!(check_workspace_location(&dots, &dirs).is_err());
        // A config home that does not exist yet, under the workspace.
        let dirs = vec![ProtectedDir {
            what: "x".into(),
            path: home.join("not/yet/../there"),
        }];
        assert_eq!(
            check_workspace_location(&home, &dirs).unwrap_err().relation,
            "contains"
        );
    }
}
