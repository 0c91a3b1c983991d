//! End-to-end tests of the git gate with real git clients against a local upstream (a bare
//! repository reached through `file://`). No network.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bottle_git_gate::{GateConfig, GitGate, PushPolicy, RemoteConfig};

/// A GitHub classic token shape built at run time (never a literal in the source).
fn token() -> String {
    format!("{}{}{}", "gh", "p_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")
}

struct World {
    tmp: tempfile::TempDir,
    upstream: PathBuf,
    base: String,
    gate: GitGate,
    _rt: tokio::runtime::Runtime,
}

fn git_in(dir: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .output()
        .expect("run git")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl World {
    fn start(policy: PushPolicy) -> World {
        Self::start_with(policy, Vec::new(), None)
    }

    fn start_with(policy: PushPolicy, known: Vec<(String, Vec<u8>)>, url: Option<String>) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let upstream = tmp.path().join("upstream.git");
        let o = git_in(
            tmp.path(),
            &home,
            &[
                "init",
                "--bare",
                "-q",
                "-b",
                "main",
                upstream.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let seed = tmp.path().join("seed");
        let o = git_in(
            tmp.path(),
            &home,
            &[
                "clone",
                "-q",
                upstream.to_str().unwrap(),
                seed.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        let w = World::partial(tmp, upstream.clone());
        w.ok(&seed, &["add", "."]);
        w.ok(&seed, &["commit", "-qm", "initial"]);
        w.ok(&seed, &["push", "-q", "origin", "HEAD:main"]);
        let url = url.unwrap_or_else(|| format!("file://{}", upstream.display()));
        let mut cfg = GateConfig::new(
            w.tmp.path().join("gate-state"),
            PathBuf::from(env!("CARGO_BIN_EXE_bottle-git-hook")),
            vec![RemoteConfig {
                name: "proj".into(),
                url,
                credential: None,
                policy,
            }],
        );
        cfg.known_secrets = known;
        cfg.limits.max_request_bytes = 8 << 20;
        cfg.limits.fetch_timeout = Duration::from_secs(30);
        cfg.limits.service_timeout = Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let gate = rt.block_on(GitGate::new(cfg)).expect("gate starts");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let g = gate.clone();
        rt.spawn(async move { g.serve(listener).await });
        World {
            tmp: w.tmp,
            upstream,
            base,
            gate,
            _rt: rt,
        }
    }

    /// Only the temp dir and upstream (used while seeding).
    fn partial(tmp: tempfile::TempDir, upstream: PathBuf) -> PartialWorld {
        PartialWorld { tmp, upstream }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn git(&self, dir: &Path, args: &[&str]) -> Output {
        git_in(dir, &self.home(), args)
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.git(dir, args);
        assert!(o.status.success(), "git {args:?} failed: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn url(&self) -> String {
        format!("{}/proj", self.base)
    }

    /// Clones through the gate into `<tmp>/<name>`.
    fn clone(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        let o = self.git(
            self.tmp.path(),
            &["clone", "-q", &self.url(), dir.to_str().unwrap()],
        );
        assert!(
            o.status.success(),
            "clone through the gate failed: {}",
            stderr(&o)
        );
        dir
    }

    fn upstream_ref(&self, name: &str) -> Option<String> {
        let o = self.git(&self.upstream, &["rev-parse", "--verify", "-q", name]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn commit_file(&self, repo: &Path, path: &str, content: &str, msg: &str) -> String {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self.ok(repo, &["add", "-A"]);
        self.ok(repo, &["commit", "-qm", msg]);
        self.ok(repo, &["rev-parse", "HEAD"])
    }
}

struct PartialWorld {
    tmp: tempfile::TempDir,
    #[allow(dead_code)]
    upstream: PathBuf,
}

impl PartialWorld {
    fn ok(&self, dir: &Path, args: &[&str]) {
        let o = git_in(dir, &self.tmp.path().join("home"), args);
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    }
}

#[test]
fn clone_and_fetch_see_upstream_including_a_fresh_commit() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    assert_eq!(
        std::fs::read_to_string(c.join("README.md")).unwrap(),
        "hello\n"
    );
    assert_eq!(w.ok(&c, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    // Someone else pushes straight to upstream: the next fetch through the gate sees it.
    let other = w.tmp.path().join("other");
    w.ok(
        w.tmp.path(),
        &[
            "clone",
            "-q",
            w.upstream.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    let fresh = w.commit_file(&other, "new.txt", "new\n", "upstream moves");
    w.ok(&other, &["push", "-q", "origin", "HEAD:main"]);
    w.ok(&c, &["fetch", "-q"]);
    assert_eq!(w.ok(&c, &["rev-parse", "origin/main"]), fresh);
    // Protocol v0 advertisement too.
    let ls = w.ok(
        &c,
        &[
            "-c",
            "protocol.version=0",
            "ls-remote",
            &w.url(),
            "refs/heads/main",
        ],
    );
    assert!(ls.starts_with(&fresh), "{ls}");
}

#[test]
fn unreachable_upstream_fails_closed_with_a_clear_error() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let moved = w.tmp.path().join("moved.git");
    std::fs::rename(&w.upstream, &moved).unwrap();
    let o = w.git(&c, &["fetch"]);
    assert!(!o.status.success(), "fetch must fail when upstream is gone");
    let e = stderr(&o);
    assert!(
        e.contains("cannot refresh remote \"proj\" from upstream"),
        "{e}"
    );
    assert!(e.contains("stale"), "{e}");
    let o = w.git(&c, &["push", "origin", "HEAD:refs/heads/x"]);
    assert!(!o.status.success(), "push must fail when upstream is gone");
    // Back again: works.
    std::fs::rename(&moved, &w.upstream).unwrap();
    w.ok(&c, &["fetch", "-q"]);
}

#[test]
fn an_undeclared_remote_is_a_clear_error() {
    let w = World::start(PushPolicy::default());
    let o = w.git(w.tmp.path(), &["clone", &format!("{}/nope", w.base), "x"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no remote named \"nope\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_clean_push_reaches_upstream() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let head = w.commit_file(&c, "src/lib.rs", "pub fn f() {}\n", "add lib");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("clean; pushing to upstream"),
        "{}",
        stderr(&o)
    );
    assert_eq!(w.upstream_ref("main").as_deref(), Some(head.as_str()));
    // A new branch too.
    let o = w.git(&c, &["push", "origin", "HEAD:refs/heads/feature/x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.upstream_ref("feature/x").as_deref(), Some(head.as_str()));
    // The mirror agrees with upstream.
    let m = w.gate.mirror("proj").unwrap().dir().to_path_buf();
    assert_eq!(w.ok(&m, &["rev-parse", "main"]), head);
}

fn assert_rejected(w: &World, o: &Output, before: &str, needles: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "push must be rejected: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(
        !e.contains(&token()),
        "the secret value leaked into the message: {e}"
    );
    assert_eq!(
        w.upstream_ref("main").as_deref(),
        Some(before),
        "upstream moved"
    );
}

#[test]
fn a_token_in_a_file_rejects_the_push_and_names_path_and_rule() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let head = w.commit_file(
        &c,
        "config/app.env",
        &format!("A=1\nGITHUB_TOKEN={}\n", token()),
        "config",
    );
    let blob = w.ok(&c, &["rev-parse", "HEAD:config/app.env"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(
        &w,
        &o,
        &before,
        &[
            "github-pat",
            "config/app.env",
            "line 2",
            &head[..12],
            "nothing was pushed upstream",
        ],
    );
    // The quarantine was discarded: the mirror never stored the blob.
    let m = w.gate.mirror("proj").unwrap().dir().to_path_buf();
    assert!(!w.git(&m, &["cat-file", "-e", &blob]).status.success());
}

#[test]
fn a_token_added_then_removed_in_the_pushed_range_is_still_rejected() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let bad = w.commit_file(&c, "notes/old.txt", &format!("token {}\n", token()), "oops");
    std::fs::remove_file(c.join("notes/old.txt")).unwrap();
    w.ok(&c, &["commit", "-qam", "remove it again"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(
        &w,
        &o,
        &before,
        &["github-pat", "notes/old.txt", &bad[..12]],
    );
}

#[test]
fn a_token_in_a_commit_message_is_rejected() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let head = w.commit_file(&c, "a.txt", "a\n", &format!("use {} for CI", token()));
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(&w, &o, &before, &["github-pat", "commit", &head[..12]]);
}

#[test]
fn the_bottles_known_secret_base64_encoded_is_rejected() {
    let secret = b"bottle-injected-token-0123456789".to_vec();
    let w = World::start_with(
        PushPolicy::default(),
        vec![("API_TOKEN".into(), secret.clone())],
        None,
    );
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode(&secret);
    w.commit_file(&c, "data.txt", &format!("blob: {enc}\n"), "data");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(&w, &o, &before, &["known-secret", "data.txt"]);
    assert!(!stderr(&o).contains(&enc));
}

#[test]
fn delete_tag_and_force_are_refused_by_default() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let base = w.commit_file(&c, "a.txt", "a\n", "a");
    w.ok(
        &c,
        &["push", "-q", "origin", "HEAD:main", "HEAD:refs/heads/side"],
    );
    assert_eq!(w.upstream_ref("main").as_deref(), Some(base.as_str()));
    // delete
    let o = w.git(&c, &["push", "origin", ":refs/heads/side"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("deleting refs is not allowed"),
        "{}",
        stderr(&o)
    );
    assert!(w.upstream_ref("refs/heads/side").is_some());
    // tag
    w.ok(&c, &["tag", "v1"]);
    let o = w.git(&c, &["push", "origin", "refs/tags/v1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("refs/tags/v1: pushing this ref is not allowed"),
        "{}",
        stderr(&o)
    );
    assert!(w.upstream_ref("refs/tags/v1").is_none());
    // force (non-fast-forward)
    w.ok(&c, &["reset", "-q", "--hard", "HEAD~1"]);
    w.commit_file(&c, "b.txt", "b\n", "rewrite");
    let o = w.git(&c, &["push", "--force", "origin", "HEAD:main"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("non-fast-forward"), "{}", stderr(&o));
    assert_eq!(w.upstream_ref("main").as_deref(), Some(base.as_str()));
}

#[test]
fn enabled_policy_allows_tags_deletes_and_force_in_the_namespace_only() {
    let policy = PushPolicy {
        push: vec!["refs/heads/*".into(), "refs/tags/*".into()],
        allow_delete: true,
        allow_tags: true,
        allow_force: false,
        force_namespaces: vec!["refs/heads/bottle/*".into()],
    };
    let w = World::start(policy);
    let c = w.clone("c");
    let first = w.commit_file(&c, "a.txt", "a\n", "a");
    w.ok(
        &c,
        &[
            "push",
            "-q",
            "origin",
            "HEAD:main",
            "HEAD:refs/heads/bottle/wip",
        ],
    );
    w.ok(&c, &["tag", "-a", "-m", "release one", "v1"]);
    w.ok(&c, &["push", "-q", "origin", "refs/tags/v1"]);
    assert!(w.upstream_ref("refs/tags/v1").is_some());
    w.ok(&c, &["reset", "-q", "--hard", "HEAD~1"]);
    let rewritten = w.commit_file(&c, "b.txt", "b\n", "rewrite");
    w.ok(
        &c,
        &[
            "push",
            "-q",
            "--force",
            "origin",
            "HEAD:refs/heads/bottle/wip",
        ],
    );
    assert_eq!(
        w.upstream_ref("refs/heads/bottle/wip").as_deref(),
        Some(rewritten.as_str())
    );
    let o = w.git(&c, &["push", "--force", "origin", "HEAD:main"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("only in refs/heads/bottle/*"),
        "{}",
        stderr(&o)
    );
    assert_eq!(w.upstream_ref("main").as_deref(), Some(first.as_str()));
    w.ok(&c, &["push", "-q", "origin", ":refs/heads/bottle/wip"]);
    assert!(w.upstream_ref("refs/heads/bottle/wip").is_none());
}

/// Sends a raw HTTP request and returns the whole response (the server closes or finishes it).
fn raw_request(base: &str, path: &str, content_type: &str, body: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    assert!(r.is_ok() || !out.is_empty(), "no answer in time: {r:?}");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn garbage_bodies_get_errors_not_hangs_and_the_gate_keeps_serving() {
    let w = World::start(PushPolicy::default());
    let before = w.upstream_ref("main").unwrap();
    let mut garbage = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..100_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    let r = raw_request(
        &w.base,
        "/proj/git-receive-pack",
        "application/x-git-receive-pack-request",
        &garbage,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = raw_request(
        &w.base,
        "/proj/git-upload-pack",
        "application/x-git-upload-pack-request",
        &garbage,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A pkt-line that claims a ref update followed by a garbage "pack".
    let z = "0".repeat(40);
    let cmd = format!("{z} {} refs/heads/main\0report-status\n", "1".repeat(40));
    let mut body = format!("{:04x}{cmd}0000", cmd.len() + 4).into_bytes();
    body.extend_from_slice(b"PACK\0\0\0\x02\0\0\0\x05garbage-garbage");
    let r = raw_request(
        &w.base,
        "/proj/git-receive-pack",
        "application/x-git-receive-pack-request",
        &body,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!r.contains("ok refs/heads/main"), "{r}");
    // Wrong content type and an oversized body are refused with a reason.
    let r = raw_request(&w.base, "/proj/git-receive-pack", "text/plain", b"x");
    assert!(
        r.contains("Content-Type must be application/x-git-receive-pack-request"),
        "{r}"
    );
    let big = vec![b'0'; (8 << 20) + 10];
    let r = raw_request(
        &w.base,
        "/proj/git-upload-pack",
        "application/x-git-upload-pack-request",
        &big,
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{}", &r[..r.len().min(200)]);
    assert!(
        r.contains("exceeds the limit"),
        "{}",
        &r[..r.len().min(300)]
    );
    // Still serving, upstream untouched.
    let c = w.clone("c");
    assert!(c.join("README.md").exists());
    assert_eq!(w.upstream_ref("main").as_deref(), Some(before.as_str()));
}
