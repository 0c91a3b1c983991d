//! Local images of bottle, built without a registry and cached by a content hash.
//!
//! | kind | tag | how |
//! |---|---|---|
//! | [`ImageKind::Sidecar`] | `bottle/sidecar:<hash12>` | `cargo build` of a statically linked `bottle-sidecar` (glibc `crt-static`), then `FROM scratch` via the classic builder |
//! | [`ImageKind::AgentShell`] | `bottle/agent-shell:<hash12>` | `mmdebstrap --variant=apt bookworm` with `images/agent-shell/packages.txt`, then `docker import` |
//! | [`ImageKind::AgentClaude`], [`ImageKind::AgentCodex`] | `bottle/agent-claude:<hash12>`, … | the agent CLI binary from its pinned PyPI wheel (`images/agent-*/wheel.txt`) layered over agent-shell |
//! | [`ImageKind::TestUpstream`] | `bottle/test-upstream:<hash12>` | `images/test-upstream/server.py` layered over the agent-shell image |
//!
//! The hash covers every input of a build (recipe text, package list, and for the sidecar the
//! sources of the sidecar/proxy/scanner crates plus `Cargo.lock`), so an image whose tag exists is
//! up to date and is reused. Every image is labelled `io.bottle.image=<kind>` and
//! `io.bottle.hash=<hash>`.

mod agent;
mod build;
mod custom;
mod debian;
mod hash;
mod recipe;
mod sidecar;
mod upstream;
pub mod usage;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptions};
use bollard::Docker;

/// Label set on every bottle image; its value is the [`ImageKind::name`].
pub const IMAGE_LABEL: &str = "io.bottle.image";
/// Label carrying the full content hash of a bottle image.
pub const HASH_LABEL: &str = "io.bottle.hash";

/// The images `bottle` builds locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageKind {
    /// The sidecar: static `bottle-sidecar` in `FROM scratch`, entrypoint `/bottle-sidecar`, uid 65534.
    Sidecar,
    /// The agent base ("shell" template): Debian bookworm rootfs with git, curl, python3, node, …
    /// Runs as root by default; the launcher picks the uid.
    AgentShell,
    /// Claude Code ("claude" template): agent-shell plus `claude` from the pinned wheel.
    AgentClaude,
    /// OpenAI Codex ("codex" template): agent-shell plus `codex` from the pinned wheel.
    AgentCodex,
    /// The e2e tests' fake upstream (HTTPS + git smart HTTP, logs every request as JSON on stdout).
    TestUpstream,
    /// The git gate's rootfs: Debian with git, openssh-client and ca-certificates only.
    GitBase,
    /// The e2e tests' ssh git upstream (sshd + git-shell).
    TestSshd,
    /// The sidecar for bottles with git remotes: the same `bottle-sidecar` over git-base, so the
    /// gate can run `git upload-pack`/`receive-pack` on its mirrors.
    SidecarGit,
    /// A bottle's own `image = { dockerfile = … }` (tag `bottle/custom-<bottle>:<hash12>`; not
    /// in [`ImageKind::ALL`]: it is built per manifest by [`ensure_dockerfile`]).
    Custom,
}

pub use agent::wheel_cache_dir;
pub use custom::{dockerfile_ref, ensure_dockerfile, ensure_tag};

impl ImageKind {
    /// Every kind, in build order (dependencies first).
    pub const ALL: [ImageKind; 8] = [
        ImageKind::Sidecar,
        ImageKind::AgentShell,
        ImageKind::AgentClaude,
        ImageKind::AgentCodex,
        ImageKind::TestUpstream,
        ImageKind::GitBase,
        ImageKind::SidecarGit,
        ImageKind::TestSshd,
    ];

    /// The short name: `sidecar`, `agent-shell`, `test-upstream` (also the label value).
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Sidecar => "sidecar",
            ImageKind::AgentShell => "agent-shell",
            ImageKind::AgentClaude => "agent-claude",
            ImageKind::AgentCodex => "agent-codex",
            ImageKind::TestUpstream => "test-upstream",
            ImageKind::GitBase => "git-base",
            ImageKind::SidecarGit => "sidecar-git",
            ImageKind::TestSshd => "test-sshd",
            ImageKind::Custom => "custom",
        }
    }

    /// The image repository, e.g. `bottle/sidecar`.
    pub fn repository(self) -> &'static str {
        match self {
            ImageKind::Sidecar => "bottle/sidecar",
            ImageKind::AgentShell => "bottle/agent-shell",
            ImageKind::AgentClaude => "bottle/agent-claude",
            ImageKind::AgentCodex => "bottle/agent-codex",
            ImageKind::TestUpstream => "bottle/test-upstream",
            ImageKind::GitBase => "bottle/git-base",
            ImageKind::SidecarGit => "bottle/sidecar-git",
            ImageKind::TestSshd => "bottle/test-sshd",
            ImageKind::Custom => "bottle/custom",
        }
    }

    /// Parses a [`ImageKind::name`].
    pub fn from_name(name: &str) -> Option<ImageKind> {
        ImageKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn deps(self) -> &'static [ImageKind] {
        match self {
            ImageKind::TestUpstream | ImageKind::AgentClaude | ImageKind::AgentCodex => {
                &[ImageKind::AgentShell]
            }
            ImageKind::SidecarGit => &[ImageKind::GitBase],
            _ => &[],
        }
    }

    /// The agent CLI recipe of the `agent-claude`/`agent-codex` kinds.
    fn agent_cli(self) -> Option<&'static recipe::AgentCli> {
        match self {
            ImageKind::AgentClaude => Some(&recipe::CLAUDE),
            ImageKind::AgentCodex => Some(&recipe::CODEX),
            _ => None,
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of [`ensure_images`] and [`image_ref`].
#[derive(Debug, Clone, Default)]
pub struct BuildOpts {
    /// Rebuild the requested kinds even if their tag exists (dependencies are only built if missing).
    pub force: bool,
    /// No progress output at all (errors are still returned).
    pub quiet: bool,
    /// Also say "… is up to date" for images that exist (`bottle images build`; `start`/`run`
    /// stay silent about images they did not have to build).
    pub report_current: bool,
    /// The bottle source checkout (holds `Cargo.lock`, `sidecar/`, `images/`). Default: `$BOTTLE_SRC_DIR`,
    /// else the checkout this binary was built from.
    pub source_dir: Option<PathBuf>,
    /// A prebuilt statically linked `bottle-sidecar` to package instead of running cargo.
    /// Default: `$BOTTLE_SIDECAR_BIN`. The hash then covers the binary's bytes.
    pub sidecar_binary: Option<PathBuf>,
}

/// A bottle image, identified by its content-hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Which image.
    pub kind: ImageKind,
    /// The full reference, e.g. `bottle/sidecar:0123456789ab` — pass it as `image` when creating containers.
    pub tag: String,
    /// The full hex SHA-256 content hash (the tag holds its first 12 characters).
    pub hash: String,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

/// Computes the tag `kind` has for the current inputs, without touching Docker or building anything.
///
/// Errors when an input cannot be read (e.g. the source checkout is not found for the sidecar).
pub fn image_ref(kind: ImageKind, opts: &BuildOpts) -> anyhow::Result<ImageRef> {
    let hash = match kind {
        ImageKind::Sidecar => hash::sidecar_hash(opts)?,
        ImageKind::Custom => {
            anyhow::bail!("custom images are tagged per manifest (dockerfile_ref)")
        }
        ImageKind::AgentShell => hash::agent_shell_hash(),
        ImageKind::GitBase => hash::git_base_hash(),
        ImageKind::TestSshd => hash::test_sshd_hash(),
        ImageKind::SidecarGit => {
            let base = image_ref(ImageKind::GitBase, opts)?;
            hash::sidecar_git_hash(&hash::sidecar_hash(opts)?, &base.tag)
        }
        ImageKind::TestUpstream => {
            let base = image_ref(ImageKind::AgentShell, opts)?;
            hash::test_upstream_hash(&base.tag)
        }
        ImageKind::AgentClaude | ImageKind::AgentCodex => {
            let base = image_ref(ImageKind::AgentShell, opts)?;
            let cli = kind.agent_cli().expect("agent kinds have a recipe");
            hash::agent_cli_hash(&base.tag, cli)
        }
    };
    Ok(ImageRef {
        kind,
        tag: format!("{}:{}", kind.repository(), &hash[..12]),
        hash,
    })
}

/// Whether the image `r` exists in the engine.
pub async fn image_exists(docker: &Docker, r: &ImageRef) -> anyhow::Result<bool> {
    match docker.inspect_image(&r.tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("inspecting image {}", r.tag)),
    }
}

/// Tags of the stored images of `kind` (repository `bottle/<kind>`, labelled `io.bottle.image=<kind>`),
/// newest first. Images merely built `FROM` a bottle image are not included.
pub async fn stored_tags(docker: &Docker, kind: ImageKind) -> Vec<String> {
    let label = format!("{IMAGE_LABEL}={}", kind.name());
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let opts = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut list = docker.list_images(Some(opts)).await.unwrap_or_default();
    list.sort_by_key(|i| std::cmp::Reverse(i.created));
    let prefix = format!("{}:", kind.repository());
    list.into_iter()
        .flat_map(|i| i.repo_tags.into_iter().filter(|t| t.starts_with(&prefix)))
        .collect()
}

/// Untags the other `bottle/<kind>:*` images after `current` was built (an image still used by a
/// container stays). Returns how many were removed.
async fn prune_outdated(docker: &Docker, current: &ImageRef) -> usize {
    let mut n = 0;
    for tag in stored_tags(docker, current.kind).await {
        if tag != current.tag
            && docker
                .remove_image(&tag, None::<RemoveImageOptions>, None)
                .await
                .is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Makes sure every image in `which` (and what it is built on) exists, building what is missing.
///
/// Returns the references of `which`, in that order. Builds are serialised across processes by a
/// lock file, so parallel tests or launchers build each image once. Progress goes to stderr
/// (spinners on a terminal, one line per step otherwise, nothing when `opts.quiet`).
pub async fn ensure_images(
    docker: &Docker,
    which: &[ImageKind],
    opts: &BuildOpts,
) -> anyhow::Result<Vec<ImageRef>> {
    let mut plan: Vec<ImageKind> = Vec::new();
    for k in which {
        for d in k.deps() {
            if !plan.contains(d) {
                plan.push(*d);
            }
        }
        if !plan.contains(k) {
            plan.push(*k);
        }
    }
    plan.sort();

    let lock = build::BuildLock::acquire().await?;
    let ui = crate::progress::Ui::new("bottle images", opts.quiet);
    let mut refs = Vec::new();
    for kind in plan {
        let r = image_ref(kind, opts)?;
        let forced = opts.force && which.contains(&kind);
        if !forced && image_exists(docker, &r).await? {
            if opts.report_current {
                ui.note(&format!("{} is up to date", r.tag));
            }
        } else {
            // With --force the old image loses its tag; remember it so it does not linger dangling.
            let replaced = match docker.inspect_image(&r.tag).await {
                Ok(i) => i.id,
                Err(_) => None,
            };
            let started = std::time::Instant::now();
            match kind {
                ImageKind::Sidecar => sidecar::build(docker, &r, opts, &ui).await,
                ImageKind::Custom => unreachable!("image_ref refused the custom kind"),
                ImageKind::AgentShell => {
                    debian::build(docker, &r, &debian::Rootfs::agent(), &ui).await
                }
                ImageKind::GitBase => debian::build(docker, &r, &debian::Rootfs::git(), &ui).await,
                ImageKind::TestSshd => {
                    debian::build(docker, &r, &debian::Rootfs::sshd(), &ui).await
                }
                ImageKind::SidecarGit => {
                    let base = image_ref(ImageKind::GitBase, opts)?;
                    sidecar::build_git(docker, &r, &base, opts, &ui).await
                }
                ImageKind::TestUpstream => {
                    let base = image_ref(ImageKind::AgentShell, opts)?;
                    upstream::build(docker, &r, &base, &ui).await
                }
                ImageKind::AgentClaude | ImageKind::AgentCodex => {
                    let base = image_ref(ImageKind::AgentShell, opts)?;
                    let cli = kind.agent_cli().expect("agent kinds have a recipe");
                    agent::build(docker, &r, &base, cli, &ui).await
                }
            }
            .with_context(|| format!("building image {} ({})", r.tag, kind))?;
            let mut pruned = prune_outdated(docker, &r).await;
            if let Some(old) = replaced {
                let now = docker.inspect_image(&r.tag).await.ok().and_then(|i| i.id);
                if now.as_deref() != Some(old.as_str())
                    && docker
                        .remove_image(&old, None::<RemoveImageOptions>, None)
                        .await
                        .is_ok()
                {
                    pruned += 1;
                }
            }
            if pruned > 0 {
                ui.note(&format!("removed {pruned} outdated {kind} image(s)"));
            }
            ui.note(&format!(
                "built {} in {:.1}s",
                r.tag,
                started.elapsed().as_secs_f64()
            ));
        }
        refs.push(r);
    }
    drop(lock);
    Ok(which
        .iter()
        .filter_map(|k| refs.iter().find(|r| r.kind == *k).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_tags_are_stable() {
        for k in ImageKind::ALL {
            assert_eq!(ImageKind::from_name(k.name()), Some(k));
        }
        let opts = BuildOpts::default();
        let a = image_ref(ImageKind::AgentShell, &opts).unwrap();
        assert_eq!(a, image_ref(ImageKind::AgentShell, &opts).unwrap());
        assert!(
            a.tag.starts_with("bottle/agent-shell:")
                && a.tag.len() == "bottle/agent-shell:".len() + 12
        );
        let u = image_ref(ImageKind::TestUpstream, &opts).unwrap();
        assert!(u.tag.starts_with("bottle/test-upstream:"));
    }

    /// Builds (or finds) every image on the local engine. Slow the first time (cargo + mmdebstrap),
    /// so it is opt-in: `cargo test -p bottle -- --ignored images_build_on_engine`.
    #[tokio::test]
    #[ignore = "needs a Docker engine, mmdebstrap and a minute or more"]
    async fn images_build_on_engine() {
        let docker = Docker::connect_with_local_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        let opts = BuildOpts::default();
        let t = std::time::Instant::now();
        let refs = ensure_images(&docker, &ImageKind::ALL, &opts)
            .await
            .unwrap();
        eprintln!("first ensure_images: {:.1}s", t.elapsed().as_secs_f64());
        assert_eq!(refs.len(), ImageKind::ALL.len());
        for r in &refs {
            assert!(image_exists(&docker, r).await.unwrap(), "{r} missing");
            let img = docker.inspect_image(&r.tag).await.unwrap();
            let labels = img.config.and_then(|c| c.labels).unwrap_or_default();
            assert_eq!(
                labels.get(IMAGE_LABEL).map(String::as_str),
                Some(r.kind.name())
            );
            assert_eq!(labels.get(HASH_LABEL), Some(&r.hash));
        }
        let t = std::time::Instant::now();
        let again = ensure_images(&docker, &ImageKind::ALL, &opts)
            .await
            .unwrap();
        assert_eq!(refs, again);
        assert!(t.elapsed().as_secs() < 10, "cached images must not rebuild");
    }
}
