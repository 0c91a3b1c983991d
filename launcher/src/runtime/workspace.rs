//! The workspace the agent sees, prepared on the host: the directory to bind (in copy mode a
//! copy that outlives the bottle, chowned to the workspace owner), the uid/gid the agent runs
//! as, and the protection of its git metadata (read-only mounts, a snapshot to compare).
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::spec::WorkspaceSpec;
use crate::guard::{self, GitMount, GitSnapshot};

/// The workspace source to bind (in copy mode, a copy at `copy_dst` that outlives the bottle)
/// and the uid/gid the agent runs as.
pub fn prepare_workspace(
    copy_dst: Option<PathBuf>,
    ws: &WorkspaceSpec,
) -> Result<(Option<PathBuf>, u32, u32)> {
    let (src, meta_of) = match ws {
        WorkspaceSpec::None => return Ok((None, 1000, 1000)),
        WorkspaceSpec::Bind(p) => (p.clone(), p.clone()),
        WorkspaceSpec::Copy(p) => {
            let dst = copy_dst.context("no place for the workspace copy")?;
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", p.display()))
                .arg(&dst)
                .status()
                .with_context(|| {
                    format!("copying the workspace {} (is `cp` installed?)", p.display())
                })?;
            if !st.success() {
                bail!(
                    "copying the workspace {} into {} failed ({st})",
                    p.display(),
                    dst.display()
                );
            }
            eprintln!(
                "bottle: the agent works on a copy of {} at {}; the copy is kept after the bottle ends (your directory is never written)",
                p.display(),
                dst.display()
            );
            (dst, p.clone())
        }
    };
    let meta = std::fs::metadata(&meta_of).with_context(|| {
        format!(
            "the workspace {} is not accessible; create it or set `workspace` in the bottle",
            meta_of.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("the workspace {} is not a directory", meta_of.display());
    }
    let (mut uid, mut gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        eprintln!(
            "bottle: warning: the workspace {} is owned by root; the agent runs as 65534:65534 and may not be able to write it (chown it to a normal user)",
            meta_of.display()
        );
        uid = 65534;
        gid = 65534;
    }
    if matches!(ws, WorkspaceSpec::Copy(_)) {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&src)
            .status();
        if !matches!(st, Ok(s) if s.success()) && unsafe { libc::geteuid() } == 0 {
            bail!(
                "could not chown the workspace copy {} to {uid}:{gid}",
                src.display()
            );
        }
    }
    Ok((Some(src), uid, gid))
}

/// The git protection of a workspace directory: the read-only mounts (none when `protect` is
/// false) and the snapshot to compare with after the run.
pub fn protect_git_metadata(
    dir: &std::path::Path,
    protect: bool,
) -> Result<(Vec<GitMount>, GitSnapshot)> {
    let mounts = if protect {
        guard::git_mounts(dir).with_context(|| {
            format!(
                "preparing the read-only git metadata of {} (set `protect_git = false` in the bottle to skip)",
                dir.display()
            )
        })?
    } else {
        if dir.join(".git").exists() {
            eprintln!(
                "bottle: warning: protect_git = false: the agent can change {}/.git (config, hooks) and git runs those on this host",
                dir.display()
            );
        }
        Vec::new()
    };
    if protect
        && std::fs::symlink_metadata(dir.join(".git")).is_ok_and(|m| m.file_type().is_symlink())
    {
        eprintln!(
            "bottle: warning: {}/.git is a symlink, so its metadata is not mounted read-only; changes are reported after the run",
            dir.display()
        );
    }
    Ok((mounts, GitSnapshot::take(dir)))
}
