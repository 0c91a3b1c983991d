//! Shared build plumbing: the cross-process build lock, in-memory build contexts, `docker build`
//! through bollard's classic builder, and child processes whose stderr feeds a spinner.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context as _};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::progress::Step;
use super::{ImageRef, HASH_LABEL, IMAGE_LABEL};

/// An exclusive lock on `$TMPDIR/bottle-images.lock`, held while images are checked and built.
pub struct BuildLock {
    _file: std::fs::File,
}

impl BuildLock {
    /// Waits for the lock (another `bottle` or test may be building).
    pub async fn acquire() -> anyhow::Result<BuildLock> {
        let path: PathBuf = std::env::temp_dir().join("bottle-images.lock");
        let p = path.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .context("image build lock task failed")?
        .with_context(|| format!("locking {}", path.display()))?;
        Ok(BuildLock { _file: file })
    }
}

/// One file of an in-memory build context.
pub struct ContextFile<'a> {
    /// Path inside the context.
    pub path: &'a str,
    /// Contents.
    pub data: &'a [u8],
    /// Unix mode bits.
    pub mode: u32,
}

/// A tar archive of `files` (the body of `POST /build`).
pub fn context_tar(files: &[ContextFile<'_>]) -> anyhow::Result<Vec<u8>> {
    let mut ar = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.data.len() as u64);
        header.set_mode(f.mode);
        header.set_mtime(0);
        header.set_cksum();
        ar.append_data(&mut header, f.path, f.data)
            .with_context(|| format!("adding {} to the build context", f.path))?;
    }
    ar.into_inner().context("finishing the build context tar")
}

/// Builds `context` (which holds a `Dockerfile`) as `r.tag` with the classic builder, labelled with
/// the kind and hash. Never pulls.
pub async fn build_image(
    docker: &Docker,
    r: &ImageRef,
    context: Vec<u8>,
    step: &Step,
) -> anyhow::Result<()> {
    let labels = HashMap::from([
        (IMAGE_LABEL.to_string(), r.kind.name().to_string()),
        (HASH_LABEL.to_string(), r.hash.clone()),
    ]);
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&r.tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("docker build of {} failed", r.tag))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            bail!("docker build of {} failed: {detail} (after: {last})", r.tag);
        }
        if let Some(s) = info.stream.or(info.status) {
            let s = s.trim();
            if !s.is_empty() {
                step.message(s);
                last = s.to_string();
            }
        }
    }
    Ok(())
}

/// Runs `cmd`, showing its stderr lines on `step`. On failure the error holds the last stderr lines.
pub async fn run_logged(
    mut cmd: tokio::process::Command,
    what: &str,
    step: &Step,
) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut tail: std::collections::VecDeque<String> = Default::default();
    while let Some(line) = lines.next_line().await.unwrap_or(None) {
        step.message(&line);
        if tail.len() == 15 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for {what}"))?;
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        bail!(
            "{what} failed ({status}); last output:\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_tar_round_trips() {
        let t = context_tar(&[
            ContextFile {
                path: "Dockerfile",
                data: b"FROM scratch\n",
                mode: 0o644,
            },
            ContextFile {
                path: "bin",
                data: b"\x7fELF",
                mode: 0o755,
            },
        ])
        .unwrap();
        let mut ar = tar::Archive::new(&t[..]);
        let names: Vec<(String, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("Dockerfile".into(), 0o644), ("bin".into(), 0o755)]
        );
    }
}
