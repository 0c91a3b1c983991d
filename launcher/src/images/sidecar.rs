//! The sidecar image: a statically linked `bottle-sidecar` (glibc `crt-static`, explicit `--target`
//! so build scripts and proc-macros stay dynamic) in `FROM scratch`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bollard::Docker;

use super::build::{build_image, context_tar, run_logged, ContextFile};
use super::hash::{prebuilt_sidecar, sidecar_pgo_profile, source_root};
use super::recipe;
use super::{BuildOpts, ImageRef};
use crate::progress::Ui;

/// The cargo target dir of the static build, under the checkout (kept apart from `target/` so the
/// different RUSTFLAGS do not invalidate the normal build).
pub const STATIC_TARGET_DIR: &str = "target/static";

/// Builds the sidecar image `r` (`FROM scratch`).
pub async fn build(docker: &Docker, r: &ImageRef, opts: &BuildOpts, ui: &Ui) -> anyhow::Result<()> {
    build_over(docker, r, recipe::SIDECAR_DOCKERFILE, opts, ui).await
}

/// Builds the git gate's sidecar image `r`: the same binary over the git base image `base`.
pub async fn build_git(
    docker: &Docker,
    r: &ImageRef,
    base: &ImageRef,
    opts: &BuildOpts,
    ui: &Ui,
) -> anyhow::Result<()> {
    let dockerfile = recipe::SIDECAR_GIT_DOCKERFILE.replace("{{BASE}}", &base.tag);
    build_over(docker, r, &dockerfile, opts, ui).await
}

async fn build_over(
    docker: &Docker,
    r: &ImageRef,
    dockerfile: &str,
    opts: &BuildOpts,
    ui: &Ui,
) -> anyhow::Result<()> {
    let bin = match prebuilt_sidecar(opts) {
        Some(b) => b,
        None => compile(opts, ui).await?,
    };
    let data = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    check_static(&data).with_context(|| format!("checking {}", bin.display()))?;
    let step = ui.spinner(&format!("{} image", r.kind.name()));
    let ctx = context_tar(&[
        ContextFile {
            path: "Dockerfile",
            data: dockerfile.as_bytes(),
            mode: 0o644,
        },
        ContextFile {
            path: "bottle-sidecar",
            data: &data,
            mode: 0o755,
        },
    ])?;
    build_image(docker, r, ctx, &step).await?;
    step.done(&format!("{} ({} KiB binary)", r.tag, data.len() / 1024));
    Ok(())
}

/// `cargo build --release -p bottle-sidecar --target x86_64-unknown-linux-gnu` with `crt-static`
/// (and `-C profile-use` of the checkout's PGO profile, if there is one).
async fn compile(opts: &BuildOpts, ui: &Ui) -> anyhow::Result<PathBuf> {
    let root = source_root(opts)?;
    let target_dir = root.join(STATIC_TARGET_DIR);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rustflags = recipe::SIDECAR_RUSTFLAGS.to_string();
    let profile = sidecar_pgo_profile(&root);
    if let Some(p) = &profile {
        // LLVM matches the profile by function; functions changed since it was trained are
        // compiled without it.
        rustflags.push_str(&format!(" -C profile-use={}", p.display()));
    }
    let mut cmd = tokio::process::Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "bottle-sidecar",
            "--target",
        ])
        .arg(recipe::SIDECAR_TARGET)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", &rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let step = ui.spinner(if profile.is_some() {
        "sidecar: cargo build (static, PGO profile)"
    } else {
        "sidecar: cargo build (static)"
    });
    let built = run_logged(cmd, "cargo build of the static bottle-sidecar", &step).await;
    if let (Err(e), Some(p)) = (&built, &profile) {
        // Say how to build without the profile if the build fails with it. (rustc ignores a
        // profile LLVM cannot read, with a warning in the build log, so that case builds.)
        bail!(
            "{e:#}\nthe sidecar was built with the PGO profile {}: re-run scripts/pgo.sh with \
             this toolchain, or delete the profile to build without it",
            p.display()
        );
    }
    built.context("is the Rust toolchain installed (rustup target x86_64-unknown-linux-gnu)?")?;
    step.done("compiled");
    let bin = target_dir
        .join(recipe::SIDECAR_TARGET)
        .join("release")
        .join("bottle-sidecar");
    if !bin.is_file() {
        bail!("cargo succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// Fails unless `elf` is a 64-bit little-endian ELF with no program interpreter (`PT_INTERP`),
/// i.e. it can run in `FROM scratch`.
pub fn check_static(elf: &[u8]) -> anyhow::Result<()> {
    let u16_at =
        |o: usize| -> Option<u16> { Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?)) };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)) };
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF executable");
    }
    let bad = || anyhow::anyhow!("truncated ELF header");
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or_else(bad)?;
        if p_type == 3 {
            bail!(
                "the binary is dynamically linked (it has a PT_INTERP program header), so it cannot run \
                 in FROM scratch; build it with RUSTFLAGS='{}' and --target {}",
                recipe::SIDECAR_RUSTFLAGS,
                recipe::SIDECAR_TARGET
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_refused() {
        // The test binary itself is dynamically linked (it has an interpreter).
        let me = std::env::current_exe().unwrap();
        let e = check_static(&std::fs::read(me).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(check_static(b"#!/bin/sh\n").is_err());
        assert!(
            check_static(b"\x7fELF\x02\x01").is_err(),
            "truncated header must not panic"
        );
    }
}
