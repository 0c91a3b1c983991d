//! Shared harness: a local upstream bare repository, the gate on 127.0.0.1, real git clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bottle_git_gate::{Credential, GateConfig, GitGate, PushPolicy, RemoteConfig};

/// A GitHub classic token shape built at run time (never a literal in the source).
pub fn token() -> String {
    format!("{}{}{}", "gh", "p_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")
}

/// Builds the upstream URL from the upstream repository's path.
pub type UrlFor = Box<dyn FnOnce(&Path) -> String>;

/// How to start a [`World`].
pub struct Opts {
    pub policy: PushPolicy,
    pub known: Vec<(String, Vec<u8>)>,
    /// Maps the upstream repository's path to the URL the gate uses (default `file://`).
    pub url: Option<UrlFor>,
    pub credential: Option<Credential>,
    pub fetch_timeout: Duration,
    pub max_blob_bytes: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            policy: PushPolicy::default(),
            known: Vec::new(),
            url: None,
            credential: None,
            fetch_timeout: Duration::from_secs(30),
            max_blob_bytes: 1 << 20,
        }
    }
}

pub struct World {
    pub tmp: tempfile::TempDir,
    pub upstream: PathBuf,
    pub base: String,
    pub gate: GitGate,
    pub rt: tokio::runtime::Runtime,
    /// Every audit record the gate emitted.
    pub audit: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

pub fn git_in(dir: &Path, home: &Path, args: &[&str]) -> Output {
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

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl World {
    pub fn start(policy: PushPolicy) -> World {
        Self::start_with(Opts {
            policy,
            ..Opts::default()
        })
    }

    pub fn start_with(opts: Opts) -> World {
        let Opts {
            policy,
            known,
            url,
            credential,
            fetch_timeout,
            max_blob_bytes,
        } = opts;
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
        let url = match url {
            Some(f) => f(&upstream),
            None => format!("file://{}", upstream.display()),
        };
        let mut cfg = GateConfig::new(
            w.tmp.path().join("gate-state"),
            PathBuf::from(env!("CARGO_BIN_EXE_bottle-git-hook")),
            vec![RemoteConfig {
                name: "proj".into(),
                url,
                credential,
                policy,
                git_config: Vec::new(),
            }],
        );
        cfg.known_secrets = known;
        cfg.limits.max_request_bytes = 8 << 20;
        cfg.limits.fetch_timeout = fetch_timeout;
        cfg.limits.max_blob_bytes = max_blob_bytes;
        cfg.limits.service_timeout = Duration::from_secs(60);
        let audit = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = audit.clone();
        cfg.audit = bottle_git_gate::AuditSink::new(move |r| {
            sink.lock().unwrap().push(serde_json::to_value(r).unwrap())
        });
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
            rt,
            audit,
        }
    }

    /// Only the temp dir and upstream (used while seeding).
    fn partial(tmp: tempfile::TempDir, upstream: PathBuf) -> PartialWorld {
        PartialWorld { tmp, upstream }
    }

    pub fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    pub fn git(&self, dir: &Path, args: &[&str]) -> Output {
        git_in(dir, &self.home(), args)
    }

    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.git(dir, args);
        assert!(o.status.success(), "git {args:?} failed: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn url(&self) -> String {
        format!("{}/proj", self.base)
    }

    /// Clones through the gate into `<tmp>/<name>`.
    pub fn clone(&self, name: &str) -> PathBuf {
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

    pub fn upstream_ref(&self, name: &str) -> Option<String> {
        let o = self.git(&self.upstream, &["rev-parse", "--verify", "-q", name]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    pub fn commit_file(&self, repo: &Path, path: &str, content: &str, msg: &str) -> String {
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
    pub fn ok(&self, dir: &Path, args: &[&str]) {
        let o = git_in(dir, &self.tmp.path().join("home"), args);
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    }
}

/// Sends a raw HTTP POST and returns the whole response (the server closes or finishes it).
pub fn raw_request(base: &str, path: &str, content_type: &str, body: &[u8]) -> String {
    raw_request_with(base, path, &[("Content-Type", content_type)], body)
}

/// [`raw_request`] with arbitrary headers.
pub fn raw_request_with(base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    assert!(r.is_ok() || !out.is_empty(), "no answer in time: {r:?}");
    String::from_utf8_lossy(&out).into_owned()
}
