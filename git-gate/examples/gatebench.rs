//! The git gate benchmark (run by `bench/git-gate/run.sh`): in one run, side by side,
//!
//! 1. a push of ~`GATEBENCH_MB` MB (default 100) of new history through the gate vs straight
//!    to an identical upstream (the gate's own upstream push is part of its time), ratio;
//! 2. the gate's scan throughput on that push (bytes scanned / scan time, from its audit);
//! 3. a warm fetch (nothing new) through the gate — which refreshes its mirror from upstream
//!    first — vs straight from upstream, median of 15, ratio;
//! 4. the idle RSS of `bottle-sidecar` in bottle mode with and without a git remote loaded.
//!
//! Upstreams are local bare repositories (`file://`), so "direct" is the fastest possible
//! baseline and the ratio is the gate's whole overhead. Prints a table and one JSON line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bottle_git_gate::{AuditSink, GateConfig, GitGate, PushPolicy, RemoteConfig};
use bottle_protocol::bootstrap::{Bootstrap, Git, GitPushPolicy, GitRemote};
use bottle_protocol::events::{Event, GitEvent, GitResult};

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs")
}

fn ok(dir: &Path, args: &[&str]) {
    let o = git(dir, args);
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Deterministic source-like text (identifiers, numbers, punctuation): compresses like code.
fn text(seed: &mut u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "let", "fn", "value", "return", "match", "self", "config", "buffer", "index", "error",
        "Result", "String", "impl", "where", "async", "await",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let w = WORDS[(*seed % 16) as usize];
        out.extend_from_slice(w.as_bytes());
        out.extend_from_slice(format!("_{:x}", *seed % 100_000).as_bytes());
        out.push(if (*seed).is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
    }
    out
}

/// Commits ~`mb` MB of new files in `commits` commits with `git fast-import`.
fn make_history(work: &Path, mb: usize, commits: usize) {
    let files_per_commit = (mb * 4).div_ceil(commits); // 256 KiB files
    let mut fi = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(work)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = std::io::BufWriter::new(fi.stdin.take().unwrap());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let parent = String::from_utf8(git(work, &["rev-parse", "HEAD"]).stdout).unwrap();
    for c in 0..commits {
        writeln!(w, "commit refs/heads/main").unwrap();
        writeln!(
            w,
            "committer bench <bench@example.com> {} +0000",
            1_700_000_000 + c
        )
        .unwrap();
        let msg = format!("bench commit {c}");
        writeln!(w, "data {}\n{msg}", msg.len()).unwrap();
        if c == 0 {
            writeln!(w, "from {}", parent.trim()).unwrap();
        }
        for f in 0..files_per_commit {
            let data = text(&mut seed, 256 << 10);
            writeln!(w, "M 100644 inline src/c{c}/f{f}.rs").unwrap();
            writeln!(w, "data {}", data.len()).unwrap();
            w.write_all(&data).unwrap();
            writeln!(w).unwrap();
        }
    }
    drop(w);
    assert!(fi.wait().unwrap().success(), "git fast-import failed");
    ok(work, &["reset", "-q", "--hard", "main"]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Idle RSS (KiB) of `bottle-sidecar --bootstrap-stdin`, with a git remote or without.
fn sidecar_rss(sidecar: &Path, tmp: &Path, with_git: bool) -> u64 {
    let ca = tmp.join(format!("ca-{with_git}"));
    let o = Command::new(sidecar)
        .args(["gen-ca", "--out"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gen-ca: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let port = |base: u16| base + if with_git { 1 } else { 0 };
    let secret = |v: &str| zeroize::Zeroizing::new(v.to_string());
    let doc = Bootstrap {
        policy_toml: "[[route]]\nid = \"x\"\nhost = \"example.com\"\n".into(),
        ca_cert_pem: std::fs::read_to_string(ca.join("ca.pem")).unwrap(),
        ca_key_pem: secret(&std::fs::read_to_string(ca.join("ca.key")).unwrap()),
        secrets: [(
            "GH_TOKEN".to_string(),
            secret("ghp_benchmarkTokenValue0123456789abcdefAB"),
        )]
        .into_iter()
        .collect(),
        listen: format!("127.0.0.1:{}", port(23128)).parse().unwrap(),
        dns: None,
        lifeline: true,
        git: with_git.then(|| Git {
            listen: "127.0.0.1:28418".parse().unwrap(),
            state_dir: tmp.join("sidecar-git-state"),
            remotes: vec![GitRemote {
                name: "origin".into(),
                url: "https://127.0.0.1:1/bench.git".into(),
                secret: Some("GH_TOKEN".into()),
                username: None,
                ssh_key: None,
                host_key: None,
                allow_private: vec!["127.0.0.0/8".into()],
                policy: GitPushPolicy::default(),
            }],
            max_request_bytes: None,
            max_blob_bytes: None,
            fetch_timeout_secs: None,
        }),
        models: None,
    };
    let mut child = Command::new(sidecar)
        .arg("--bootstrap-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&doc.to_json().unwrap()).unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        Event::from_line(&line),
        Some(Event::Ready),
        "the sidecar did not start: {line}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    drop(stdin); // the lifeline: the sidecar exits
    let _ = child.wait();
    rss
}

fn main() {
    let mb: usize = std::env::var("GATEBENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let hook = std::env::var_os("GATEBENCH_HOOK")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe_dir.join("bottle-git-hook"));
    let sidecar = std::env::var_os("GATEBENCH_SIDECAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe_dir.join("bottle-sidecar"));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Two identical upstreams, a work clone with ~mb MB of new history.
    std::fs::create_dir_all(t.join("seed")).unwrap();
    ok(&t.join("seed"), &["init", "-q", "-b", "main"]);
    std::fs::write(t.join("seed/README"), "bench\n").unwrap();
    ok(&t.join("seed"), &["add", "README"]);
    ok(&t.join("seed"), &["commit", "-qm", "seed"]);
    for u in ["direct.git", "gated.git"] {
        ok(t, &["clone", "-q", "--bare", "seed", u]);
    }
    ok(t, &["clone", "-q", "seed", "work"]);
    eprintln!("gatebench: generating {mb} MB of history");
    make_history(&t.join("work"), mb, 10);
    let work = t.join("work");

    // The gate, in this process.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::<GitEvent>::new()));
    let sink = records.clone();
    let mut cfg = GateConfig::new(
        t.join("gate-state"),
        hook,
        vec![RemoteConfig {
            name: "proj".into(),
            url: format!("file://{}", t.join("gated.git").display()),
            credential: None,
            policy: PushPolicy::default(),
            git_config: Vec::new(),
        }],
    );
    cfg.limits.max_request_bytes = 2 << 30;
    cfg.limits.max_blob_bytes = 64 << 20;
    cfg.audit = AuditSink::new(move |r| sink.lock().unwrap().push(r.clone()));
    let gate = rt.block_on(GitGate::new(cfg)).expect("the gate starts");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/proj", listener.local_addr().unwrap());
    let g = gate.clone();
    rt.spawn(async move { g.serve(listener).await });

    // 1. Push.
    let direct_url = format!("file://{}", t.join("direct.git").display());
    let start = Instant::now();
    ok(&work, &["push", "-q", &direct_url, "main:main"]);
    let push_direct = start.elapsed();
    let start = Instant::now();
    ok(&work, &["push", "-q", &url, "main:main"]);
    let push_gate = start.elapsed();
    let push = records
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|r| match r {
            GitEvent::Push(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a push record");
    assert_eq!(push.result, GitResult::Accepted, "{push:?}");
    let scanned = push.bytes;
    let scan_ms = push.scan_ms.max(1);

    // 3. Warm fetches.
    ok(t, &["clone", "-q", &direct_url, "c-direct"]);
    ok(t, &["clone", "-q", &url, "c-gate"]);
    let time = |dir: &Path, remote: &str| {
        (0..15)
            .map(|_| {
                let s = Instant::now();
                ok(dir, &["fetch", "-q", remote]);
                s.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let fetch_direct = median(time(&t.join("c-direct"), &direct_url));
    let fetch_gate = median(time(&t.join("c-gate"), &url));

    // 4. Idle RSS.
    let (rss_plain, rss_git) = if sidecar.is_file() {
        (
            sidecar_rss(&sidecar, t, false),
            sidecar_rss(&sidecar, t, true),
        )
    } else {
        eprintln!("gatebench: {} not built; no RSS figures", sidecar.display());
        (0, 0)
    };

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let push_ratio = push_gate.as_secs_f64() / push_direct.as_secs_f64();
    let fetch_ratio = fetch_gate.as_secs_f64() / fetch_direct.as_secs_f64();
    let scan_mbs = scanned as f64 / 1e6 / (scan_ms as f64 / 1000.0);
    println!(
        "git gate benchmark ({:.0} MB pushed, {} objects scanned)",
        scanned as f64 / 1e6,
        push.objects
    );
    println!("| metric | gate | direct | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| push | {:.0} ms | {:.0} ms | {push_ratio:.2}× | ≤ 1.3× |",
        ms(push_gate),
        ms(push_direct)
    );
    println!("| scan throughput | {scan_mbs:.0} MB/s | | | ≥ 200 MB/s |");
    println!(
        "| warm fetch (median of 15) | {:.1} ms | {:.1} ms | {fetch_ratio:.2}× | ≤ 1.2× |",
        ms(fetch_gate),
        ms(fetch_direct)
    );
    println!(
        "| sidecar idle RSS | {:.1} MB (git gate loaded) | {:.1} MB (no git) | | ≤ 20 MB |",
        rss_git as f64 / 1024.0,
        rss_plain as f64 / 1024.0
    );
    println!(
        "{}",
        serde_json::json!({
            "pushed_bytes": scanned, "push_gate_ms": ms(push_gate), "push_direct_ms": ms(push_direct),
            "push_ratio": push_ratio, "scan_mb_s": scan_mbs, "fetch_gate_ms": ms(fetch_gate),
            "fetch_direct_ms": ms(fetch_direct), "fetch_ratio": fetch_ratio,
            "rss_git_kib": rss_git, "rss_plain_kib": rss_plain,
        })
    );
}
