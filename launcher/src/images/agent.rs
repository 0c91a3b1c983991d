//! The agent CLI images (`agent-claude`, `agent-codex`): the agent base image plus the native
//! CLI binary taken from its pinned PyPI wheel (`images/agent-<name>/wheel.txt`).
//!
//! The wheel is fetched with `pip download --require-hashes` into a cache directory (kept
//! across builds, checked against the pinned SHA-256 on every use), the binary is streamed out
//! of it into a build context on disk, and the classic builder layers it over agent-shell.
//! When PyPI cannot be reached, the registry Dockerfile (`images/agent-<name>/Dockerfile`) is
//! built instead; when that fails too, the error names both causes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use bollard::Docker;
use sha2::{Digest as _, Sha256};

use super::build::{build_image_file, file_context, run_logged, ContextSource};
use super::recipe::{self, AgentCli, WheelPin};
use super::ImageRef;
use crate::progress::Ui;

/// Where downloaded wheels are kept: `$BOTTLE_CACHE_DIR/wheels`, else
/// `$XDG_CACHE_HOME/bottle/wheels`, else `~/.cache/bottle/wheels`.
pub fn wheel_cache_dir() -> anyhow::Result<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = crate::settings::current()
        .cache_dir
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("bottle")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/bottle")))
        .context(
            "none of BOTTLE_CACHE_DIR, XDG_CACHE_HOME and HOME is set; set BOTTLE_CACHE_DIR",
        )?;
    Ok(base.join("wheels"))
}

/// The pinned wheel of `cli` (an error names the file when the pin is malformed).
pub fn pin(cli: &AgentCli) -> anyhow::Result<WheelPin> {
    recipe::parse_wheel_pin(
        cli.wheel_txt,
        &format!("images/agent-{}/wheel.txt", cli.name),
    )
    .map_err(anyhow::Error::msg)
}

/// SHA-256 of a file, lower-case hex.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The cached wheel of `pin` in `dir`, if one is there with the pinned hash.
fn cached_wheel(dir: &Path, pin: &WheelPin) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let prefix = pin.file_prefix();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            let path = e.path();
            if file_sha256(&path)? == pin.sha256 {
                return Ok(Some(path));
            }
            // A wheel with the right name and the wrong bytes: never used, replaced.
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(None)
}

/// Makes sure the wheel of `pin` is in the cache (downloading it with pip, hash-checked) and
/// returns its path.
pub async fn fetch_wheel(pin: &WheelPin, ui: &Ui) -> anyhow::Result<PathBuf> {
    let dir = wheel_cache_dir()?;
    if let Some(p) = cached_wheel(&dir, pin)? {
        ui.note(&format!(
            "{}=={} wheel is cached ({})",
            pin.name,
            pin.version,
            p.display()
        ));
        return Ok(p);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let req = dir.join(format!(".{}-{}.txt", pin.name, std::process::id()));
    std::fs::write(&req, format!("{}\n", pin.requirement()))
        .with_context(|| format!("writing {}", req.display()))?;
    let python = crate::settings::text(&crate::settings::current().python)
        .unwrap_or_else(|| "python3".into());
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--platform",
            recipe::WHEEL_PLATFORM,
            "--python-version",
            "3.11",
        ])
        .args([
            "--require-hashes",
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
        ])
        .arg("-r")
        .arg(&req)
        .arg("-d")
        .arg(&dir);
    let step = ui.spinner(&format!("pip download {}=={}", pin.name, pin.version));
    let r = run_logged(cmd, "pip download", &step).await;
    let _ = std::fs::remove_file(&req);
    r.with_context(|| {
        format!(
            "downloading {}=={} from PyPI with {python} -m pip (set BOTTLE_PYTHON to another \
             interpreter, or PIP_INDEX_URL to a mirror)",
            pin.name, pin.version
        )
    })?;
    let path = cached_wheel(&dir, pin)?.with_context(|| {
        format!(
            "pip downloaded {}=={} but no wheel in {} has the pinned sha256 {}",
            pin.name,
            pin.version,
            dir.display(),
            pin.sha256
        )
    })?;
    step.done(&format!("{} (sha256 verified)", path.display()));
    Ok(path)
}

/// Copies the member `member` of the wheel (a zip) to `dest` with mode 0755; returns its size.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path) -> anyhow::Result<u64> {
    let f = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .with_context(|| format!("{} is not a wheel (zip) file", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0755()
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    let n = std::io::copy(&mut entry, &mut out)
        .with_context(|| format!("extracting {member} from {}", wheel.display()))?;
    out.flush()?;
    Ok(n)
}

/// `OpenOptions::mode(0o755)` without importing the unix extension trait at every call.
trait Mode0755 {
    fn mode_0755(&mut self) -> &mut Self;
}

impl Mode0755 for std::fs::OpenOptions {
    fn mode_0755(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o755)
    }
}

/// Builds the agent CLI image `r` over `base`: offline from the pinned wheel, else from the
/// registry Dockerfile.
pub async fn build(
    docker: &Docker,
    r: &ImageRef,
    base: &ImageRef,
    cli: &AgentCli,
    ui: &Ui,
) -> anyhow::Result<()> {
    let offline = build_offline(docker, r, base, cli, ui).await;
    let Err(offline_err) = offline else {
        return Ok(());
    };
    ui.note(&format!(
        "agent-{}: the offline build failed ({offline_err:#}); trying the registry Dockerfile",
        cli.name
    ));
    match build_registry(docker, r, cli, ui).await {
        Ok(()) => Ok(()),
        Err(reg) => bail!(
            "agent-{name} could not be built.\n  offline (pinned wheel): {offline_err:#}\n  \
             registry (images/agent-{name}/Dockerfile): {reg:#}\n\
             Check that PyPI (or $PIP_INDEX_URL) is reachable, or build the image yourself and \
             name its tag in the bottle: image = \"<tag>\"",
            name = cli.name
        ),
    }
}

async fn build_offline(
    docker: &Docker,
    r: &ImageRef,
    base: &ImageRef,
    cli: &AgentCli,
    ui: &Ui,
) -> anyhow::Result<()> {
    let pin = pin(cli)?;
    let wheel = fetch_wheel(&pin, ui).await?;
    let work = std::env::temp_dir().join(format!(
        "bottle-agent-{}-{}-{}",
        cli.name,
        &r.hash[..12],
        std::process::id()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = async {
        let mut paths = Vec::new();
        for &(member, bin) in cli.binaries {
            let step = ui.spinner(&format!("agent-{}: extracting {bin}", cli.name));
            let path = work.join(bin);
            let (w, b) = (wheel.clone(), path.clone());
            let size = tokio::task::spawn_blocking(move || extract_member(&w, member, &b))
                .await
                .context("extract task failed")??;
            step.done(&format!("{bin} ({} MiB)", size >> 20));
            paths.push((bin, path));
        }
        let dockerfile = cli.dockerfile.replace("{{BASE}}", &base.tag);
        let mut sources = vec![
            ContextSource::Bytes("Dockerfile", dockerfile.as_bytes(), 0o644),
            ContextSource::Bytes("bottle-agent-init", recipe::AGENT_INIT.as_bytes(), 0o755),
        ];
        sources.extend(
            paths
                .iter()
                .map(|(bin, path)| ContextSource::File(bin, path, 0o755)),
        );
        let ctx = file_context(&work.join("context.tar"), &sources)?;
        for (_, path) in &paths {
            let _ = std::fs::remove_file(path);
        }
        let step = ui.spinner(&format!("agent-{} image", cli.name));
        build_image_file(docker, r, &ctx, "Dockerfile", &step).await?;
        step.done(&r.tag);
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn build_registry(
    docker: &Docker,
    r: &ImageRef,
    cli: &AgentCli,
    ui: &Ui,
) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!(
        "bottle-agent-reg-{}-{}",
        cli.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let df = format!("agent-{}/Dockerfile", cli.name);
    let wheel = format!("agent-{}/wheel.txt", cli.name);
    let result = async {
        let ctx = file_context(
            &work.join("context.tar"),
            &[
                ContextSource::Bytes(&df, cli.registry_dockerfile.as_bytes(), 0o644),
                ContextSource::Bytes(&wheel, cli.wheel_txt.as_bytes(), 0o644),
                ContextSource::Bytes(
                    "agent-shell/packages.txt",
                    recipe::AGENT_PACKAGES.as_bytes(),
                    0o644,
                ),
                ContextSource::Bytes(
                    "agent-init/bottle-agent-init",
                    recipe::AGENT_INIT.as_bytes(),
                    0o755,
                ),
            ],
        )?;
        let step = ui.spinner(&format!("agent-{} image (registry Dockerfile)", cli.name));
        build_image_file(docker, r, &ctx, &df, &step).await?;
        step.done(&r.tag);
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_extracted_executable_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("x-1-py3-none-any.whl");
        {
            let f = std::fs::File::create(&wheel).unwrap();
            let mut z = zip::ZipWriter::new(f);
            z.start_file("pkg/bin/tool", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b"#!/bin/sh\necho hi\n").unwrap();
            z.finish().unwrap();
        }
        let dest = dir.path().join("tool");
        assert_eq!(extract_member(&wheel, "pkg/bin/tool", &dest).unwrap(), 18);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let e = format!(
            "{:#}",
            extract_member(&wheel, "pkg/bin/other", &dest).unwrap_err()
        );
        assert!(e.contains("has no pkg/bin/other"), "{e}");
        std::fs::write(&wheel, b"not a zip").unwrap();
        let e = format!(
            "{:#}",
            extract_member(&wheel, "pkg/bin/tool", &dest).unwrap_err()
        );
        assert!(e.contains("is not a wheel"), "{e}");
    }

    #[test]
    fn cached_wheels_with_the_wrong_hash_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"wheel bytes";
        let sha: String = Sha256::digest(good)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pin = WheelPin {
            name: "claude-agent-sdk".into(),
            version: "1.0".into(),
            sha256: sha,
        };
        let p = dir
            .path()
            .join("claude_agent_sdk-1.0-py3-none-manylinux_2_17_x86_64.whl");
        std::fs::write(&p, b"tampered").unwrap();
        assert_eq!(cached_wheel(dir.path(), &pin).unwrap(), None);
        assert!(!p.exists(), "a wheel with the wrong hash is removed");
        std::fs::write(&p, good).unwrap();
        assert_eq!(cached_wheel(dir.path(), &pin).unwrap(), Some(p));
    }
}
