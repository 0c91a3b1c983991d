//! Content hashes of the image inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};

use super::recipe;
use super::BuildOpts;

/// Version of the hashing scheme; bump to force every image to rebuild.
const SCHEME: &str = "bottle-images-v1";

/// The sidecar crates whose sources go into the sidecar hash (with `Cargo.lock` and the root `Cargo.toml`).
pub const SIDECAR_CRATES: [&str; 5] = ["sidecar", "protocol", "proxy", "scanner", "git-gate"];

/// A length-prefixed SHA-256 accumulator (so `("ab","c")` and `("a","bc")` differ).
pub(super) struct Hasher(Sha256);

impl Hasher {
    pub(super) fn new(kind: &str) -> Self {
        let mut h = Hasher(Sha256::new());
        h.field(SCHEME.as_bytes());
        h.field(kind.as_bytes());
        h
    }
    pub(super) fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    pub(super) fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Finds the bottle source checkout: `opts.source_dir`, `$BOTTLE_SRC_DIR`, or the checkout `bottle`
/// was compiled from. It must hold `Cargo.lock` and `sidecar/Cargo.toml`.
pub fn source_root(opts: &BuildOpts) -> anyhow::Result<PathBuf> {
    let (dir, origin) = match (&opts.source_dir, crate::settings::current().src_dir) {
        (Some(d), _) => (d.clone(), "the source_dir option"),
        (None, Some(d)) => (PathBuf::from(d), "$BOTTLE_SRC_DIR"),
        (None, None) => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
            "the checkout bottle was built from",
        ),
    };
    if !(dir.join("Cargo.lock").is_file() && dir.join("sidecar/Cargo.toml").is_file()) {
        bail!(
            "the bottle source checkout was not found at {} ({origin}): it must contain Cargo.lock and \
             sidecar/Cargo.toml. Set BOTTLE_SRC_DIR to a bottle checkout, or put a prebuilt static \
             bottle-sidecar next to bottle (or name it in BOTTLE_SIDECAR_BIN)",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The prebuilt sidecar binary, if there is one: `opts.sidecar_binary`, `$BOTTLE_SIDECAR_BIN`,
/// or a static `bottle-sidecar` next to the running `bottle` (an installed release).
pub fn prebuilt_sidecar(opts: &BuildOpts) -> Option<PathBuf> {
    opts.sidecar_binary
        .clone()
        .or_else(|| crate::settings::current().sidecar_bin.map(PathBuf::from))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            sibling_sidecar(&exe)
        })
}

/// A static `bottle-sidecar` beside the launcher binary `exe`. A dynamically linked one (a
/// `cargo build` of the workspace) is ignored: it cannot run in the `FROM scratch` image.
pub fn sibling_sidecar(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?.join("bottle-sidecar");
    let mut head = vec![0u8; 64 * 1024];
    let n = {
        use std::io::Read as _;
        let mut f = std::fs::File::open(&bin).ok()?;
        f.read(&mut head).ok()?
    };
    head.truncate(n);
    super::sidecar::check_static(&head).ok().map(|()| bin)
}

/// Every file under `dir` except `target/` and hidden entries, sorted, as paths relative to `root`.
pub(super) fn tree_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("reading directory {}", dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let path = e.path();
        let ft = e
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        if ft.is_dir() {
            tree_files(root, &path, out)?;
        } else if ft.is_file() {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// The sidecar's PGO profile under the checkout `root`, if `scripts/pgo.sh` made one.
pub fn sidecar_pgo_profile(root: &Path) -> Option<PathBuf> {
    let p = root.join(recipe::SIDECAR_PGO_PROFILE);
    p.is_file().then_some(p)
}

/// Hash of the sidecar image: recipe + sources of [`SIDECAR_CRATES`] + `Cargo.lock` + root
/// `Cargo.toml` (or the bytes of a prebuilt binary).
pub fn sidecar_hash(opts: &BuildOpts) -> anyhow::Result<String> {
    let mut h = Hasher::new("sidecar");
    h.field(recipe::SIDECAR_DOCKERFILE.as_bytes());
    if let Some(bin) = prebuilt_sidecar(opts) {
        h.field(b"prebuilt");
        let bytes = std::fs::read(&bin)
            .with_context(|| format!("reading the prebuilt sidecar {}", bin.display()))?;
        h.field(&bytes);
        return Ok(h.finish());
    }
    h.field(recipe::SIDECAR_TARGET.as_bytes());
    h.field(recipe::SIDECAR_RUSTFLAGS.as_bytes());
    let root = source_root(opts)?;
    if let Some(profile) = sidecar_pgo_profile(&root) {
        h.field(b"pgo");
        let bytes = std::fs::read(&profile)
            .with_context(|| format!("reading the PGO profile {}", profile.display()))?;
        h.field(&bytes);
    }
    let mut files = vec![PathBuf::from("Cargo.lock"), PathBuf::from("Cargo.toml")];
    for c in SIDECAR_CRATES {
        let mut v = Vec::new();
        tree_files(&root, &root.join(c), &mut v)?;
        v.sort();
        files.extend(v);
    }
    for f in files {
        let bytes = std::fs::read(root.join(&f))
            .with_context(|| format!("reading {}", root.join(&f).display()))?;
        h.field(f.to_string_lossy().as_bytes());
        h.field(&bytes);
    }
    Ok(h.finish())
}

/// Hash of the agent base image: suite, sources, mmdebstrap options, package list, import changes.
pub fn agent_shell_hash() -> String {
    rootfs_hash(
        "agent-shell",
        &recipe::agent_packages(),
        &recipe::AGENT_IMPORT_CHANGES,
    )
}

/// Hash of the git base image (the git gate sidecar's rootfs), like [`agent_shell_hash`].
pub fn git_base_hash() -> String {
    rootfs_hash(
        "git-base",
        &recipe::git_base_packages(),
        &recipe::GIT_BASE_IMPORT_CHANGES,
    )
}

fn rootfs_hash(kind: &str, packages: &[&str], changes: &[&str]) -> String {
    let mut h = Hasher::new(kind);
    h.field(recipe::DEBIAN_SUITE.as_bytes());
    for s in recipe::DEBIAN_SOURCES {
        h.field(s.as_bytes());
    }
    for o in recipe::MMDEBSTRAP_OPTS {
        h.field(o.as_bytes());
    }
    for p in packages {
        h.field(p.as_bytes());
    }
    for c in changes {
        h.field(c.as_bytes());
    }
    h.finish()
}

/// Hash of the test sshd image, like [`agent_shell_hash`].
pub fn test_sshd_hash() -> String {
    rootfs_hash(
        "test-sshd",
        &recipe::test_sshd_packages(),
        &recipe::TEST_SSHD_IMPORT_CHANGES,
    )
}

/// Hash of the git gate's sidecar image: the sidecar's own hash, the git base tag and both
/// Dockerfiles.
pub fn sidecar_git_hash(sidecar_hash: &str, base_tag: &str) -> String {
    let mut h = Hasher::new("sidecar-git");
    h.field(sidecar_hash.as_bytes());
    h.field(base_tag.as_bytes());
    h.field(recipe::SIDECAR_GIT_DOCKERFILE.as_bytes());
    h.field(recipe::SIDECAR_GIT_REGISTRY_DOCKERFILE.as_bytes());
    h.finish()
}

/// Hash of the test upstream: its base image tag, Dockerfile and scripts.
pub fn test_upstream_hash(base_tag: &str) -> String {
    let mut h = Hasher::new("test-upstream");
    h.field(base_tag.as_bytes());
    h.field(recipe::UPSTREAM_DOCKERFILE.as_bytes());
    h.field(recipe::UPSTREAM_SERVER.as_bytes());
    h.field(recipe::UPSTREAM_FAKE_LLM.as_bytes());
    h.field(recipe::UPSTREAM_FAKE_MODEL.as_bytes());
    h.finish()
}

/// Hash of an agent CLI image: base tag, both Dockerfiles, the init script and the wheel pin.
pub fn agent_cli_hash(base_tag: &str, cli: &recipe::AgentCli) -> String {
    let mut h = Hasher::new(&format!("agent-{}", cli.name));
    h.field(base_tag.as_bytes());
    h.field(cli.dockerfile.as_bytes());
    h.field(cli.registry_dockerfile.as_bytes());
    h.field(recipe::AGENT_INIT.as_bytes());
    h.field(cli.wheel_txt.as_bytes());
    for (member, bin) in cli.binaries {
        h.field(member.as_bytes());
        h.field(bin.as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_checkout(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bottle-hash-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for c in SIDECAR_CRATES {
            std::fs::create_dir_all(d.join(c).join("src")).unwrap();
            std::fs::write(d.join(c).join("Cargo.toml"), c).unwrap();
            std::fs::write(d.join(c).join("src/lib.rs"), "// x").unwrap();
        }
        std::fs::create_dir_all(d.join("sidecar/target")).unwrap();
        std::fs::write(d.join("Cargo.lock"), "lock").unwrap();
        std::fs::write(d.join("Cargo.toml"), "[workspace]").unwrap();
        d
    }

    #[test]
    fn sidecar_hash_tracks_sources_but_not_target() {
        let d = tmp_checkout("a");
        let opts = BuildOpts {
            source_dir: Some(d.clone()),
            ..Default::default()
        };
        let h1 = sidecar_hash(&opts).unwrap();
        std::fs::write(d.join("sidecar/target/junk"), "x").unwrap();
        assert_eq!(h1, sidecar_hash(&opts).unwrap(), "target/ must not count");
        std::fs::write(d.join("proxy/src/lib.rs"), "// y").unwrap();
        let h2 = sidecar_hash(&opts).unwrap();
        assert_ne!(h1, h2, "a proxy source change must change the hash");
        std::fs::write(d.join("Cargo.lock"), "lock2").unwrap();
        let h3 = sidecar_hash(&opts).unwrap();
        assert_ne!(h2, h3, "Cargo.lock counts");
        // The PGO profile, though under target/, is part of the build.
        let profile = d.join(recipe::SIDECAR_PGO_PROFILE);
        std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
        std::fs::write(&profile, "counts 1").unwrap();
        assert_eq!(sidecar_pgo_profile(&d), Some(profile.clone()));
        let h4 = sidecar_hash(&opts).unwrap();
        assert_ne!(h3, h4, "a PGO profile changes the build");
        std::fs::write(&profile, "counts 2").unwrap();
        assert_ne!(h4, sidecar_hash(&opts).unwrap(), "its bytes count");
        std::fs::remove_file(&profile).unwrap();
        assert_eq!(
            h3,
            sidecar_hash(&opts).unwrap(),
            "and without it, as before"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_checkout_is_a_clear_error() {
        let opts = BuildOpts {
            source_dir: Some(PathBuf::from("/nonexistent/bottle")),
            ..Default::default()
        };
        let e = format!("{:#}", sidecar_hash(&opts).unwrap_err());
        assert!(
            e.contains("/nonexistent/bottle") && e.contains("BOTTLE_SRC_DIR"),
            "{e}"
        );
    }

    #[test]
    fn a_static_sidecar_next_to_the_launcher_is_found_and_a_dynamic_one_ignored() {
        let d = std::env::temp_dir().join(format!("bottle-sibling-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let exe = d.join("bottle");
        assert_eq!(sibling_sidecar(&exe), None, "no sidecar beside it");
        // A minimal static ELF64 header: no program headers, so no interpreter.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        std::fs::write(d.join("bottle-sidecar"), &elf).unwrap();
        assert_eq!(sibling_sidecar(&exe), Some(d.join("bottle-sidecar")));
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        std::fs::write(d.join("bottle-sidecar"), me).unwrap();
        assert_eq!(sibling_sidecar(&exe), None, "a dynamic build is ignored");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn upstream_hash_follows_base() {
        assert_ne!(test_upstream_hash("a:1"), test_upstream_hash("a:2"));
        assert_eq!(agent_shell_hash(), agent_shell_hash());
        assert_eq!(agent_shell_hash().len(), 64);
    }
}
