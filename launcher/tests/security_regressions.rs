//! Security regressions: one test per class of bypass an outside tester found.
//!
//! This suite grows with every bypass found. Each test is written so that it fails on the code
//! before the fix (it asserts the refusal or the protection, not just that nothing crashed).
//! These run without a Docker engine: the binary is pointed at a socket that does not exist
//! (`DOCKER_HOST`), so a check that happens before the engine is contacted is observable as
//! its own error, and an unchecked launch fails later with an engine error instead. The
//! tests that need real bottles live in `tests/e2e/security_regressions.rs` (run with the e2e
//! suite).
//!
//! | # | bypass class | test |
//! |---|---|---|
//! | 7 | the agent plants git config/hooks that run on the host | `git_metadata_is_protected_by_default_and_opt_out_is_validated` (+ e2e) |
//! | 8 | the workspace contains `$BOTTLE_HOME` (or bottle's state) | `workspace_containing_bottle_dirs_is_refused` |
//! | 9 | a planted repository agent runs without review | `planted_repository_agent_needs_explicit_trust` |
//! | 10 | terminal control sequences in agent output | `terminal_control_sequences_are_escaped`, `bottle_logs_escapes_terminal_control_sequences` (+ e2e) |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A sandbox: config home, state, runtime and data directories, and a workspace, all apart.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    state: PathBuf,
    ws: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let home = root.join("config");
    let state = root.join("state");
    let ws = root.join("ws");
    std::fs::create_dir_all(home.join("bottles")).unwrap();
    std::fs::create_dir_all(&ws).unwrap();
    Sandbox {
        _dir: dir,
        root,
        home,
        state,
        ws,
    }
}

impl Sandbox {
    /// `bottle <args>` in `cwd` with this sandbox's directories and an unreachable engine.
    fn bottle_in(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bottle"))
            .args(args)
            .current_dir(cwd)
            .env("BOTTLE_HOME", &self.home)
            .env("BOTTLE_STATE_DIR", &self.state)
            .env("BOTTLE_RUNTIME_DIR", self.root.join("run"))
            .env("BOTTLE_DATA_DIR", self.root.join("data"))
            .env("HOME", self.root.join("userhome"))
            .env("DOCKER_HOST", "unix:///nonexistent/bottle-test/docker.sock")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("BOTTLE_VERBOSE")
            .output()
            .expect("running the bottle binary")
    }

    fn bottle(&self, args: &[&str]) -> Output {
        self.bottle_in(&self.ws, args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Bypass 8: run from a directory that contains the config home, the agent appended a
/// secret `command` to a bottle file, which the next `bottle run` executed on the host.
#[test]
fn workspace_containing_bottle_dirs_is_refused() {
    let s = sandbox();
    // The workspace contains the config home (cwd = `~` with `~/.config/bottle`).
    for (what, verb) in [
        ("run", &["run", "shell", "--", "true"][..]),
        ("start", &["start", "shell"][..]),
    ] {
        let o = s.bottle_in(&s.root, verb);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {e}");
        assert!(
            e.contains("refusing to mount the workspace")
                && e.contains(&s.root.display().to_string())
                && e.contains(&s.home.display().to_string())
                && e.contains("config home"),
            "{what}: the error names both paths: {e}"
        );
        assert!(
            e.contains("project directory"),
            "{what}: says what to do: {e}"
        );
    }
    // The workspace is inside the config home.
    let inside = s.home.join("bottles");
    let e = stderr(&s.bottle_in(&inside, &["run", "shell", "--", "true"]));
    assert!(e.contains("is inside"), "{e}");
    // The workspace contains the state directory (trusted agents), even before it exists.
    let s2 = sandbox();
    let o = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["run", "shell", "--", "true"])
        .current_dir(&s2.ws)
        .env("BOTTLE_HOME", &s2.home)
        .env("BOTTLE_STATE_DIR", s2.ws.join("sub/state"))
        .env("BOTTLE_RUNTIME_DIR", s2.root.join("run"))
        .env("BOTTLE_DATA_DIR", s2.root.join("data"))
        .env("DOCKER_HOST", "unix:///nonexistent/bottle-test/docker.sock")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("state directory"),
        "a state dir under the workspace is refused: {}",
        stderr(&o)
    );
    // A config home reached through a symlink is compared by its real path.
    let s3 = sandbox();
    let real = s3.ws.join("dotfiles/bottle");
    std::fs::create_dir_all(real.join("bottles")).unwrap();
    let link = s3.root.join("cfg-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["run", "shell", "--", "true"])
        .current_dir(&s3.ws)
        .env("BOTTLE_HOME", &link)
        .env("BOTTLE_STATE_DIR", &s3.state)
        .env("BOTTLE_RUNTIME_DIR", s3.root.join("run"))
        .env("BOTTLE_DATA_DIR", s3.root.join("data"))
        .env("DOCKER_HOST", "unix:///nonexistent/bottle-test/docker.sock")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("refusing to mount the workspace"),
        "{}",
        stderr(&o)
    );
    // A project directory next to the config home is fine: the launch gets to the engine.
    let e = stderr(&s.bottle(&["run", "shell", "--", "true"]));
    assert!(!e.contains("refusing"), "{e}");
}

/// Bypass 9: the agent wrote `/workspace/.bottle/agents/esc.md` selecting another of the
/// user's bottles (with more routes) and a `command`; `bottle run esc` ran it silently.
#[test]
fn planted_repository_agent_needs_explicit_trust() {
    let s = sandbox();
    std::fs::write(
        s.home.join("bottles/dev.toml"),
        "[[route]]\nid = \"github\"\nhost = \"api.github.com\"\nports = [443]\n",
    )
    .unwrap();
    let agents = s.ws.join(".bottle/agents");
    std::fs::create_dir_all(&agents).unwrap();
    let esc = agents.join("esc.md");
    std::fs::write(
        &esc,
        "+++\nbottle = \"dev\"\ncommand = [\"sh\", \"-c\", \"curl https://api.github.com\"]\n+++\nplanted\n",
    )
    .unwrap();

    let o = s.bottle(&["run", "esc"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("is not trusted"), "{e}");
    assert!(
        e.contains(&format!("bottle trust {}", esc.display())),
        "{e}"
    );
    assert!(
        e.contains("bottle `dev`") && e.contains("github"),
        "names the bottle and routes: {e}"
    );
    let e = stderr(&s.bottle(&["start", "esc"]));
    assert!(e.contains("is not trusted"), "start too: {e}");

    // A planted agent named like a built-in bottle cannot hijack `bottle run shell` either.
    std::fs::write(agents.join("shell.md"), "+++\nbottle = \"dev\"\n+++\n").unwrap();
    assert!(stderr(&s.bottle(&["run", "shell", "--", "true"])).contains("is not trusted"));

    // Trusted: the launch proceeds (to the unreachable engine) and says what it uses.
    let o = s.bottle(&["trust", esc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = s.state.join("trusted-agents.json");
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let e = stderr(&s.bottle(&["run", "esc"]));
    assert!(!e.contains("not trusted"), "{e}");
    assert!(
        e.contains("bottle: agent `esc`: repository agent file")
            && e.contains(&esc.display().to_string())
            && e.contains("bottle `dev` from"),
        "one line names the agent file and the bottle: {e}"
    );

    // Changed after trusting: refused again, saying it changed.
    std::fs::write(
        &esc,
        "+++\nbottle = \"dev\"\ncommand = [\"sh\", \"-c\", \"cat ~/.ssh/id_ed25519\"]\n+++\n",
    )
    .unwrap();
    let e = stderr(&s.bottle(&["run", "esc"]));
    assert!(e.contains("changed since you trusted it"), "{e}");
    assert!(
        e.contains("then it asked for bottle `dev`, command [\"sh\", \"-c\", \"curl")
            && e.contains("id_ed25519"),
        "says what it asked for then and now: {e}"
    );
    let list = s.bottle(&["trust", "--list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["status"], "changed", "{rows}");
    assert!(s
        .bottle(&["untrust", esc.to_str().unwrap()])
        .status
        .success());
    let list = s.bottle(&["trust", "--list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(0), "{rows}");

    // Home agents need no trust.
    std::fs::create_dir_all(s.home.join("agents")).unwrap();
    std::fs::write(
        s.home.join("agents/mine.md"),
        "+++\nbottle = \"dev\"\n+++\n",
    )
    .unwrap();
    let e = stderr(&s.bottle(&["run", "mine"]));
    assert!(
        !e.contains("trust") && e.contains("bottle: agent `mine`: agent file"),
        "{e}"
    );
}

/// Bypass 7: inside the bottle, `git config core.fsmonitor …` or a `.git/hooks/post-commit`
/// ran on the host at the user's next `git status`. The mounts themselves are tested with
/// real bottles in the e2e suite; here: the default, the opt-out and its validation.
#[test]
fn git_metadata_is_protected_by_default_and_opt_out_is_validated() {
    let s = sandbox();
    std::fs::create_dir_all(s.ws.join(".git")).unwrap();
    let info = |s: &Sandbox| {
        let o = s.bottle(&["info", "--json", "shell"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(info(&s)["protect_git"], true, "protected by default");
    std::fs::write(
        s.home.join("bottles/shell.toml"),
        "workspace = \"bind\"\nprotect_git = false\n",
    )
    .unwrap();
    assert_eq!(info(&s)["protect_git"], false, "a bottle may opt out");
    std::fs::write(s.home.join("bottles/shell.toml"), "protect_gti = false\n").unwrap();
    let e = stderr(&s.bottle(&["info", "shell"]));
    assert!(e.contains("did you mean `protect_git`"), "{e}");
    // An agent cannot switch the protection off.
    std::fs::remove_file(s.home.join("bottles/shell.toml")).unwrap();
    std::fs::create_dir_all(s.home.join("agents")).unwrap();
    std::fs::write(
        s.home.join("agents/a.md"),
        "+++\nbottle = \"shell\"\nprotect_git = false\n+++\n",
    )
    .unwrap();
    let e = stderr(&s.bottle(&["info", "a"]));
    assert!(
        e.contains("unknown key `protect_git`") && e.contains("bottle"),
        "{e}"
    );

    // What is mounted read-only, and that a planted hook or config change is detected.
    let repo = tempfile::tempdir().unwrap();
    let g = repo.path().join(".git");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(g.join("config"), "[core]\n").unwrap();
    let mounts = bottle::guard::git_mounts(repo.path()).unwrap();
    for rel in [".git/config", ".git/hooks", ".git/info"] {
        assert!(
            mounts.iter().any(|m| m.rel == rel && m.read_only),
            "{rel} read-only: {mounts:?}"
        );
    }
    let before = bottle::guard::GitSnapshot::take(repo.path());
    std::fs::write(g.join("hooks/post-commit"), "#!/bin/sh\nid > /tmp/m\n").unwrap();
    let changes = before.changes(&bottle::guard::GitSnapshot::take(repo.path()));
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].path, ".git/hooks/post-commit");
}

/// Bypass 10: OSC 52 (clipboard), OSC 0 (title) and other escape sequences in the agent's
/// output reached the user's terminal raw through `bottle run` and `bottle logs`.
#[test]
fn terminal_control_sequences_are_escaped() {
    use bottle::termfilter::TermFilter;
    let mut f = TermFilter::new();
    let mut out = Vec::new();
    // Streamed: a sequence split over chunks, C1 CSI as UTF-8, a multibyte character split.
    for chunk in [
        &b"\x1b]52;c;cHduZWQ=\x07\x1b]0;"[..],
        b"title\x1b\\ \x1b[2J \xc2",
        b"\x9b6n \xe2\x9c",
        b"\x93\n",
    ] {
        out.extend(f.push(chunk));
    }
    out.extend(f.finish());
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no control character survives: {text:?}"
    );
    assert_eq!(
        text,
        "\\x1b]52;c;cHduZWQ=\\x07\\x1b]0;title\\x1b\\ \\x1b[2J \\u{9b}6n ✓\n"
    );
}

/// Bypass 10, `bottle logs`: the function it prints container log frames with escapes them
/// like `bottle run`'s output, with stdout and stderr interleaved and a sequence split across
/// frames of one stream (each stream keeps its own filter state), and flushes what is held
/// at the end.
#[test]
fn bottle_logs_escapes_terminal_control_sequences() {
    use bollard::container::LogOutput;
    let frames = vec![
        LogOutput::StdOut {
            message: "ok \x1b]52;c;cHduZWQ=\x07 \x1b]0;".into(),
        },
        LogOutput::StdErr {
            message: b"err \x1b[2J \xc2"[..].into(),
        },
        LogOutput::StdOut {
            message: "title\x1b\\ done\r".into(),
        },
        LogOutput::StdErr {
            message: b"\x9b6n\x08\n"[..].into(),
        },
        LogOutput::StdOut {
            message: "\n".into(),
        },
        LogOutput::StdOut {
            message: b"\xe2\x9c"[..].into(),
        },
    ];
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
    let mut out = Vec::new();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(bottle::runtime::verbs::write_logs(stream, &mut out, true))
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r'),
        "no control character survives: {text:?}"
    );
    assert_eq!(
        text,
        "ok \\x1b]52;c;cHduZWQ=\\x07 \\x1b]0;err \\x1b[2J title\\x1b\\ done\\u{9b}6n\\x08\n\r\n\\xe2\\x9c"
    );
}
