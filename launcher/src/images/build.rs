//! Shared build plumbing: the cross-process build lock, in-memory build contexts, `docker build`
//! through bollard's classic builder, and child processes whose stderr feeds a spinner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{ImageRef, HASH_LABEL, IMAGE_LABEL};
use crate::progress::Step;

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
    build_with(docker, r, Body::Memory(context), "Dockerfile", step).await
}

/// Like [`build_image`] with the context tar streamed from the file `context`, and the
/// Dockerfile at `dockerfile` inside it. The classic builder pulls a missing `FROM` image
/// (only registry Dockerfiles name one).
pub async fn build_image_file(
    docker: &Docker,
    r: &ImageRef,
    context: &Path,
    dockerfile: &str,
    step: &Step,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(context)
        .await
        .with_context(|| format!("opening {}", context.display()))?;
    build_with(docker, r, Body::File(file), dockerfile, step).await
}

/// A build context: in memory, or streamed from a file.
enum Body {
    Memory(Vec<u8>),
    File(tokio::fs::File),
}

async fn build_with(
    docker: &Docker,
    r: &ImageRef,
    body: Body,
    dockerfile: &str,
    step: &Step,
) -> anyhow::Result<()> {
    let labels = HashMap::from([
        (IMAGE_LABEL.to_string(), r.kind.name().to_string()),
        (HASH_LABEL.to_string(), r.hash.clone()),
    ]);
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(&r.tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let body = match body {
        Body::Memory(v) => bollard::body_full(v.into()),
        Body::File(f) => bollard::body_try_stream(tokio_util::io::ReaderStream::new(f)),
    };
    let mut stream = docker.build_image(opts, None, Some(body));
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

/// One entry of a build context written to disk by [`file_context`].
pub enum ContextSource<'a> {
    /// `(path in the context, contents, mode)`.
    Bytes(&'a str, &'a [u8], u32),
    /// `(path in the context, host file streamed in, mode)`.
    File(&'a str, &'a Path, u32),
}

/// Writes a build context tar of `entries` to `path` (for contexts too large for memory, such
/// as a 400 MB agent binary) and returns `path`.
pub fn file_context(path: &Path, entries: &[ContextSource<'_>]) -> anyhow::Result<PathBuf> {
    let out =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut ar = tar::Builder::new(std::io::BufWriter::new(out));
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match *e {
            ContextSource::Bytes(name, data, mode) => {
                header.set_size(data.len() as u64);
                header.set_mode(mode);
                header.set_cksum();
                ar.append_data(&mut header, name, data)
            }
            ContextSource::File(name, src, mode) => {
                let f = std::fs::File::open(src)
                    .with_context(|| format!("opening {}", src.display()))?;
                header.set_size(f.metadata()?.len());
                header.set_mode(mode);
                header.set_cksum();
                ar.append_data(&mut header, name, f)
            }
        }
        .with_context(|| format!("writing the build context {}", path.display()))?;
    }
    ar.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .with_context(|| format!("finishing the build context {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Runs `cmd`, showing its output lines (stderr and stdout) on `step`. On failure the error
/// holds the last lines.
pub async fn run_logged(
    mut cmd: tokio::process::Command,
    what: &str,
    step: &Step,
) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    // Both streams feed one channel, which closes when both have ended.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        r: R,
        tx: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    pump(stderr, tx.clone());
    pump(stdout, tx);
    let mut tail: std::collections::VecDeque<String> = Default::default();
    while let Some(line) = rx.recv().await {
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
