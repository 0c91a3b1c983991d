//! The agent base image: a Debian rootfs from `mmdebstrap` (packages from `packages.txt`), imported
//! with `docker import` (`POST /images/create?fromSrc=-`).

use anyhow::{bail, Context as _};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::{StreamExt as _, TryStreamExt as _};

use super::build::run_logged;
use super::recipe;
use super::{ImageRef, HASH_LABEL};
use crate::progress::Ui;

/// What a rootfs image holds: its packages and the `docker import` changes.
pub struct Rootfs {
    /// Apt packages (`--include`).
    pub packages: Vec<&'static str>,
    /// Dockerfile instructions applied at import.
    pub changes: &'static [&'static str],
}

impl Rootfs {
    /// The agent base (agent-shell).
    pub fn agent() -> Rootfs {
        Rootfs {
            packages: recipe::agent_packages(),
            changes: &recipe::AGENT_IMPORT_CHANGES,
        }
    }

    /// The e2e tests' ssh upstream (test-sshd).
    pub fn sshd() -> Rootfs {
        Rootfs {
            packages: recipe::test_sshd_packages(),
            changes: &recipe::TEST_SSHD_IMPORT_CHANGES,
        }
    }

    /// The git gate sidecar's base (git-base).
    pub fn git() -> Rootfs {
        Rootfs {
            packages: recipe::git_base_packages(),
            changes: &recipe::GIT_BASE_IMPORT_CHANGES,
        }
    }
}

/// Builds the rootfs image `r` (the agent base: about 40 s and 300 MB on a 2-core machine with a
/// warm mirror).
pub async fn build(docker: &Docker, r: &ImageRef, fs: &Rootfs, ui: &Ui) -> anyhow::Result<()> {
    let tar_path = std::env::temp_dir().join(format!(
        "bottle-rootfs-{}-{}.tar",
        &r.hash[..12],
        std::process::id()
    ));
    let result = build_with(docker, r, fs, ui, &tar_path).await;
    let _ = std::fs::remove_file(&tar_path);
    result
}

async fn build_with(
    docker: &Docker,
    r: &ImageRef,
    fs: &Rootfs,
    ui: &Ui,
    tar_path: &std::path::Path,
) -> anyhow::Result<()> {
    let packages = fs.packages.join(",");
    let name = r.kind.name();
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    cmd.args(recipe::MMDEBSTRAP_OPTS)
        .arg(format!("--include={packages}"))
        .arg(recipe::DEBIAN_SUITE)
        .arg(tar_path)
        .args(recipe::DEBIAN_SOURCES);
    let step = ui.spinner(&format!("{name}: mmdebstrap"));
    run_logged(cmd, "mmdebstrap", &step).await.map_err(|e| {
        if e.root_cause()
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            anyhow::anyhow!(
                "mmdebstrap is not installed: run scripts/deps.sh (apt-get install mmdebstrap)"
            )
        } else {
            e.context("building the Debian rootfs (needs root and access to deb.debian.org)")
        }
    })?;
    step.done("rootfs ready");

    let size = std::fs::metadata(tar_path)
        .with_context(|| format!("stat {}", tar_path.display()))?
        .len();
    let step = ui.bytes(&format!("{name}: docker import"), size);
    let bar = step.handle();
    let file = tokio::fs::File::open(tar_path)
        .await
        .with_context(|| format!("opening {}", tar_path.display()))?;
    let body = tokio_util::io::ReaderStream::new(file)
        .inspect_ok(move |chunk| bar.inc(chunk.len() as u64));
    let tag = &r.tag[r.kind.repository().len() + 1..];
    let mut changes: Vec<String> = fs.changes.iter().map(|s| s.to_string()).collect();
    changes.push(format!("LABEL {HASH_LABEL}={}", r.hash));
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(r.kind.repository())
        .tag(tag)
        .changes(changes)
        .build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_try_stream(body)), None);
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("docker import of {} failed", r.tag))?;
        if let Some(s) = info.status {
            step.message(&s);
        }
    }
    if docker.inspect_image(&r.tag).await.is_err() {
        bail!("docker import finished but {} does not exist", r.tag);
    }
    step.done(&format!("{} ({} MiB rootfs)", r.tag, size >> 20));
    Ok(())
}
