//! The recipe texts of the offline images, compiled into `bottle` from `images/`.

/// `images/agent-shell/packages.txt`: the Debian packages of the agent base image.
pub const AGENT_PACKAGES: &str = include_str!("../../../images/agent-shell/packages.txt");
/// `images/sidecar/Dockerfile.offline`: the scratch image around the static sidecar binary.
pub const SIDECAR_DOCKERFILE: &str = include_str!("../../../images/sidecar/Dockerfile.offline");
/// `images/test-upstream/Dockerfile.offline` (`{{BASE}}` is replaced by the agent-shell tag).
pub const UPSTREAM_DOCKERFILE: &str =
    include_str!("../../../images/test-upstream/Dockerfile.offline");
/// `images/test-upstream/server.py`.
pub const UPSTREAM_SERVER: &str = include_str!("../../../images/test-upstream/server.py");

/// The Debian suite of the agent base image.
pub const DEBIAN_SUITE: &str = "bookworm";
/// The apt sources mmdebstrap uses (main, updates, security).
pub const DEBIAN_SOURCES: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// Extra mmdebstrap options (part of the hash).
pub const MMDEBSTRAP_OPTS: [&str; 5] = [
    "--variant=apt",
    "--format=tar",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
];
/// Dockerfile instructions applied by `docker import` to the agent base image (part of the hash).
pub const AGENT_IMPORT_CHANGES: [&str; 4] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "LABEL io.bottle.image=agent-shell",
    "CMD [\"/bin/bash\"]",
];
/// The Rust target and flags of the static sidecar build (part of the hash).
pub const SIDECAR_TARGET: &str = "x86_64-unknown-linux-gnu";
/// RUSTFLAGS of the static sidecar build.
pub const SIDECAR_RUSTFLAGS: &str = "-C target-feature=+crt-static";
/// A PGO profile for the sidecar build, relative to the source checkout (written by
/// `scripts/pgo.sh`): when it exists, the sidecar is compiled with `-C profile-use` of it and
/// the image hash covers its bytes.
pub const SIDECAR_PGO_PROFILE: &str = "target/pgo/bottle.profdata";

/// The package names of [`AGENT_PACKAGES`] (comments and blank lines dropped).
pub fn agent_packages() -> Vec<&'static str> {
    AGENT_PACKAGES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_parses() {
        let p = agent_packages();
        for needed in [
            "git",
            "curl",
            "ca-certificates",
            "python3",
            "nodejs",
            "openssl",
        ] {
            assert!(p.contains(&needed), "{needed} missing from packages.txt");
        }
        assert!(p.iter().all(|x| !x.contains(' ') && !x.starts_with('#')));
    }

    #[test]
    fn upstream_dockerfile_has_base_placeholder() {
        assert!(UPSTREAM_DOCKERFILE.contains("FROM {{BASE}}"));
    }
}
