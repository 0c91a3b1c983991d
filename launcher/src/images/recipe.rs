//! The recipe texts of the offline images, compiled into `bottle` from `images/`.

/// `images/agent-shell/packages.txt`: the Debian packages of the agent base image.
pub const AGENT_PACKAGES: &str = include_str!("../../../images/agent-shell/packages.txt");
/// `images/sidecar/Dockerfile.offline`: the scratch image around the static sidecar binary.
pub const SIDECAR_DOCKERFILE: &str = include_str!("../../../images/sidecar/Dockerfile.offline");
/// `images/sidecar-git/packages.txt`: the git base rootfs of the git gate's sidecar.
pub const GIT_BASE_PACKAGES: &str = include_str!("../../../images/sidecar-git/packages.txt");
/// `images/test-sshd/packages.txt`: the e2e tests' ssh git upstream.
pub const TEST_SSHD_PACKAGES: &str = include_str!("../../../images/test-sshd/packages.txt");
/// `images/sidecar-git/Dockerfile.offline` (`{{BASE}}` is replaced by the git base tag).
pub const SIDECAR_GIT_DOCKERFILE: &str =
    include_str!("../../../images/sidecar-git/Dockerfile.offline");
/// `images/sidecar-git/Dockerfile`: the registry build (part of the hash, so both stay in step).
pub const SIDECAR_GIT_REGISTRY_DOCKERFILE: &str =
    include_str!("../../../images/sidecar-git/Dockerfile");
/// `images/test-upstream/Dockerfile.offline` (`{{BASE}}` is replaced by the agent-shell tag).
pub const UPSTREAM_DOCKERFILE: &str =
    include_str!("../../../images/test-upstream/Dockerfile.offline");
/// `images/test-upstream/server.py`.
pub const UPSTREAM_SERVER: &str = include_str!("../../../images/test-upstream/server.py");
/// `images/test-upstream/fake_llm.py`: the scripted Anthropic / OpenAI API fake.
pub const UPSTREAM_FAKE_LLM: &str = include_str!("../../../images/test-upstream/fake_llm.py");
/// `images/test-upstream/fake_model.py`: the fake model server (`server.py --model-server`).
pub const UPSTREAM_FAKE_MODEL: &str = include_str!("../../../images/test-upstream/fake_model.py");

/// `images/agent-init/bottle-agent-init`: the agent images' entrypoint (pre-answers first-run prompts).
pub const AGENT_INIT: &str = include_str!("../../../images/agent-init/bottle-agent-init");

/// An agent CLI shipped as a native binary inside a PyPI wheel, and the image around it.
#[derive(Debug, Clone, Copy)]
pub struct AgentCli {
    /// The template name (`claude`, `codex`).
    pub name: &'static str,
    /// `images/agent-<name>/wheel.txt`: one pip requirement with `--hash=sha256:…`.
    pub wheel_txt: &'static str,
    /// The binaries it needs, as (path inside the wheel, name in `/usr/local/bin/`); the first
    /// is the CLI itself.
    pub binaries: &'static [(&'static str, &'static str)],
    /// `images/agent-<name>/Dockerfile.offline` (`{{BASE}}` is replaced by the agent-shell tag).
    pub dockerfile: &'static str,
    /// `images/agent-<name>/Dockerfile`: the registry build (context: `images/`).
    pub registry_dockerfile: &'static str,
}

/// Claude Code, from the `claude-agent-sdk` wheel.
pub const CLAUDE: AgentCli = AgentCli {
    name: "claude",
    wheel_txt: include_str!("../../../images/agent-claude/wheel.txt"),
    binaries: &[("claude_agent_sdk/_bundled/claude", "claude")],
    dockerfile: include_str!("../../../images/agent-claude/Dockerfile.offline"),
    registry_dockerfile: include_str!("../../../images/agent-claude/Dockerfile"),
};

/// OpenAI Codex, from the `openai-codex-cli-bin` wheel.
pub const CODEX: AgentCli = AgentCli {
    name: "codex",
    wheel_txt: include_str!("../../../images/agent-codex/wheel.txt"),
    // Code mode (Codex's default tool interface) runs JavaScript in this separate host binary.
    binaries: &[
        ("codex_cli_bin/bin/codex", "codex"),
        (
            "codex_cli_bin/bin/codex-code-mode-host",
            "codex-code-mode-host",
        ),
    ],
    dockerfile: include_str!("../../../images/agent-codex/Dockerfile.offline"),
    registry_dockerfile: include_str!("../../../images/agent-codex/Dockerfile"),
};

/// A pinned wheel: `name==version --hash=sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPin {
    /// The distribution name as written (`claude-agent-sdk`).
    pub name: String,
    /// The exact version.
    pub version: String,
    /// The wheel's SHA-256, lower-case hex.
    pub sha256: String,
}

impl WheelPin {
    /// The requirement line pip is given (with `--require-hashes`).
    pub fn requirement(&self) -> String {
        format!(
            "{}=={} --hash=sha256:{}",
            self.name, self.version, self.sha256
        )
    }

    /// The prefix of the wheel's file name (`claude_agent_sdk-0.2.189-`).
    pub fn file_prefix(&self) -> String {
        format!("{}-{}-", self.name.replace(['-', '.'], "_"), self.version)
    }
}

/// Parses a `wheel.txt`: exactly one `name==version --hash=sha256:<64 hex>` line (comments and
/// blank lines ignored). `what` names the file in errors.
pub fn parse_wheel_pin(text: &str, what: &str) -> Result<WheelPin, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let [line] = lines[..] else {
        return Err(format!(
            "{what}: expected exactly one `name==version --hash=sha256:<hex>` line, found {}",
            lines.len()
        ));
    };
    let mut parts = line.split_whitespace();
    let req = parts.next().unwrap_or_default();
    let (name, version) = req
        .split_once("==")
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("{what}: `{req}` must pin an exact version (`name==version`)"))?;
    let sha256 = parts
        .next()
        .and_then(|h| h.strip_prefix("--hash=sha256:"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("{what}: `{line}` needs `--hash=sha256:<64 hex digits>`"))?;
    if parts.next().is_some() {
        return Err(format!(
            "{what}: unexpected text after the hash in `{line}`"
        ));
    }
    let ok_name = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !ok_name(name) || !ok_name(version) {
        return Err(format!("{what}: `{req}` is not a plain `name==version`"));
    }
    Ok(WheelPin {
        name: name.to_string(),
        version: version.to_string(),
        sha256: sha256.to_ascii_lowercase(),
    })
}

/// The pip platform of the agent wheels (the images are x86_64 Linux).
pub const WHEEL_PLATFORM: &str = "manylinux_2_17_x86_64";

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
/// Dockerfile instructions applied by `docker import` to the git base image (part of the hash).
pub const GIT_BASE_IMPORT_CHANGES: [&str; 3] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "LABEL io.bottle.image=git-base",
];
/// Dockerfile instructions applied by `docker import` to the test sshd image.
pub const TEST_SSHD_IMPORT_CHANGES: [&str; 3] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "LABEL io.bottle.image=test-sshd",
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
    package_list(AGENT_PACKAGES)
}

/// The package names of [`GIT_BASE_PACKAGES`].
pub fn git_base_packages() -> Vec<&'static str> {
    package_list(GIT_BASE_PACKAGES)
}

/// The package names of [`TEST_SSHD_PACKAGES`].
pub fn test_sshd_packages() -> Vec<&'static str> {
    package_list(TEST_SSHD_PACKAGES)
}

fn package_list(text: &'static str) -> Vec<&'static str> {
    text.lines()
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
        for cli in [CLAUDE, CODEX] {
            assert!(cli.dockerfile.contains("FROM {{BASE}}"), "{}", cli.name);
            for (member, bin) in cli.binaries {
                assert!(cli.dockerfile.contains(&format!("COPY {bin} ")), "{bin}");
                assert!(cli.registry_dockerfile.contains(member), "{member}");
            }
        }
    }

    #[test]
    fn shipped_wheel_pins_parse() {
        for cli in [CLAUDE, CODEX] {
            let p = parse_wheel_pin(cli.wheel_txt, cli.name).unwrap();
            assert_eq!(p.sha256.len(), 64);
            assert!(p.requirement().contains("--hash=sha256:"));
        }
        let p = parse_wheel_pin(
            "claude-agent-sdk==0.2.189 --hash=sha256:"
                .to_string()
                .as_str(),
            "w",
        );
        assert!(p.unwrap_err().contains("64 hex"));
    }

    #[test]
    fn bad_wheel_pins_say_what_is_wrong() {
        let h = "a".repeat(64);
        let cases = [
            ("", "exactly one"),
            ("a==1 --hash=sha256:X\nb==2 --hash=sha256:Y", "found 2"),
            (
                &format!("claude-agent-sdk>=1 --hash=sha256:{h}"),
                "exact version",
            ),
            ("claude-agent-sdk==1", "--hash=sha256"),
            (&format!("x==1 --hash=md5:{h}"), "--hash=sha256"),
            (&format!("x==1 --hash=sha256:{h} extra"), "unexpected text"),
            (&format!("x;rm==1 --hash=sha256:{h}"), "plain"),
        ];
        for (text, want) in cases {
            let e = parse_wheel_pin(text, "wheel.txt").unwrap_err();
            assert!(
                e.contains(want) && e.starts_with("wheel.txt"),
                "{text:?}: {e}"
            );
        }
        let p = parse_wheel_pin(
            &format!("# c\n\nmy.pkg==1.0 --hash=sha256:{}\n", h.to_uppercase()),
            "w",
        )
        .unwrap();
        assert_eq!(p.file_prefix(), "my_pkg-1.0-");
        assert_eq!(p.sha256, h);
    }
}
