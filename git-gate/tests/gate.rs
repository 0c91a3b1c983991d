//! End-to-end tests of the git gate with real git clients against a local upstream (a bare
//! repository reached through `file://`). No network.

mod common;

use std::process::Output;
use std::time::Duration;

use bottle_git_gate::PushPolicy;
use common::{raw_request, stderr, token, Opts, World};

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
    let w = World::start_with(Opts {
        known: vec![("API_TOKEN".into(), secret.clone())],
        ..Opts::default()
    });
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

#[test]
fn an_upstream_rejection_reaches_the_agent_and_the_mirror_does_not_move() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let hook = w.upstream.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'upstream policy says no' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.commit_file(&c, "a.txt", "a\n", "clean change");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("upstream policy says no"), "{e}");
    assert!(e.contains("upstream refused it"), "{e}");
    assert_eq!(w.upstream_ref("main").as_deref(), Some(before.as_str()));
    let m = w.gate.mirror("proj").unwrap().dir().to_path_buf();
    assert_eq!(
        w.ok(&m, &["rev-parse", "main"]),
        before,
        "the mirror claims the ref moved"
    );
}

#[test]
fn a_hanging_upstream_fails_the_fetch_at_the_deadline() {
    // Accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    let w = World::start_with(Opts {
        url: Some(Box::new(move |_| format!("http://{addr}/r.git"))),
        fetch_timeout: Duration::from_secs(2),
        ..Opts::default()
    });
    let start = std::time::Instant::now();
    let o = w.git(w.tmp.path(), &["clone", &w.url(), "x"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("did not answer within 2s"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_gzip_protocol_v2_request_is_served() {
    let w = World::start(PushPolicy::default());
    let main = w.upstream_ref("main").unwrap();
    // The advertisement first (refreshes the mirror), then a gzip'd ls-refs.
    let o = w.git(w.tmp.path(), &["ls-remote", &w.url()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut req = Vec::new();
    req.extend(b"0014command=ls-refs\n");
    req.extend(b"0001");
    for l in ["peel\n", "ref-prefix refs/heads/\n"] {
        req.extend(format!("{:04x}{l}", l.len() + 4).bytes());
    }
    req.extend(b"0000");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &req).unwrap();
    let body = gz.finish().unwrap();
    let r = common::raw_request_with(
        &w.base,
        "/proj/git-upload-pack",
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Content-Encoding", "gzip"),
            ("Git-Protocol", "version=2"),
        ],
        &body,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains(&format!("{main} refs/heads/main")), "{r}");
}

#[test]
fn a_token_inside_a_binary_file_is_rejected() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let mut bin = vec![0u8, 159, 146, 150, 0, 0, 1];
    bin.extend_from_slice(token().as_bytes());
    bin.extend_from_slice(&[0, 0, 255, 254]);
    std::fs::write(c.join("blob.bin"), &bin).unwrap();
    w.ok(&c, &["add", "blob.bin"]);
    w.ok(&c, &["commit", "-qm", "binary"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(&w, &o, &before, &["github-pat", "blob.bin"]);
}

#[test]
fn every_fetch_and_push_is_an_audit_record_without_secrets() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let clean = w.commit_file(&c, "a.txt", "fine\n", "clean");
    assert!(w.git(&c, &["push", "origin", "HEAD:main"]).status.success());
    w.commit_file(&c, "b.env", &format!("T={}\n", token()), "leak");
    assert!(!w.git(&c, &["push", "origin", "HEAD:main"]).status.success());
    let recs = w.audit.lock().unwrap().clone();
    let text = serde_json::to_string(&recs).unwrap();
    assert!(!text.contains(&token()), "{text}");
    assert!(
        recs.iter()
            .any(|r| r["op"] == "fetch" && r["result"] == "ok" && r["remote"] == "proj"),
        "{text}"
    );
    let pushes: Vec<_> = recs.iter().filter(|r| r["op"] == "push").collect();
    assert_eq!(pushes.len(), 2, "{text}");
    assert_eq!(pushes[0]["result"], "accepted");
    assert_eq!(pushes[0]["refs"][0]["ref"], "refs/heads/main");
    assert_eq!(pushes[0]["refs"][0]["old"], before.as_str());
    assert_eq!(pushes[0]["refs"][0]["new"], clean.as_str());
    assert!(pushes[0]["objects"].as_u64().unwrap() >= 2, "{text}");
    assert_eq!(pushes[1]["result"], "rejected");
    assert_eq!(pushes[1]["decision"], "secrets");
    assert_eq!(pushes[1]["findings"]["github-pat"], 1, "{text}");
}

/// The ticket id in a gate rejection.
fn ticket_in(text: &str) -> Option<String> {
    let i = text.find("ticket ")? + "ticket ".len();
    Some(text.get(i..i + 12)?.to_string())
}

#[test]
fn a_review_finding_waits_for_a_human_approval_and_a_denial_sticks() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    // A generic high-entropy assignment: maybe a secret, maybe a test fixture.
    w.commit_file(
        &c,
        "conf/app.env",
        "API_TOKEN=Zx8kP2mQ9vL4nR7tY3wB6cD1\n",
        "conf",
    );
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("held for review") && e.contains("bottle approve"),
        "{e}"
    );
    assert!(!e.contains("Zx8kP2mQ9vL4nR7tY3wB6cD1"), "{e}");
    let id = ticket_in(&e).expect("a ticket id");
    let store = w.gate.tickets();
    assert_eq!(store.pending().len(), 1);
    assert_eq!(store.pending()[0].id, id);
    assert_eq!(w.upstream_ref("main").as_deref(), Some(before.as_str()));
    // Pushing again without a decision: still held, same ticket.
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_eq!(ticket_in(&stderr(&o)).as_deref(), Some(id.as_str()));
    store.decide(&id, true, "a test fixture").unwrap();
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert!(o.status.success(), "approved: {}", stderr(&o));
    let head = w.ok(&c, &["rev-parse", "HEAD"]);
    assert_eq!(w.upstream_ref("main").as_deref(), Some(head.as_str()));
    let recs = w.audit.lock().unwrap().clone();
    let last = recs.iter().rev().find(|r| r["op"] == "push").unwrap();
    assert_eq!(last["approved"][0], id.as_str(), "{last}");
    // A denied ticket stays refused, with the user's reason.
    w.commit_file(
        &c,
        "conf/other.env",
        "DB_PASSWORD=Qw7eR9tY2uI4oP6aS8dF3gH5\n",
        "more",
    );
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let id2 = ticket_in(&stderr(&o)).expect("a second ticket");
    assert_ne!(id2, id);
    store
        .decide(&id2, false, "that is the production password")
        .unwrap();
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("denied: that is the production password"), "{e}");
    // A hard finding is never held for review.
    w.commit_file(&c, "t.txt", &format!("{}\n", token()), "tok");
    let e = stderr(&w.git(&c, &["push", "origin", "HEAD:main"]));
    assert!(
        e.contains("secret finding") && !e.contains("held for review"),
        "{e}"
    );
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn a_token_inside_a_committed_zip_is_rejected_and_a_zip_bomb_is_refused() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    let z = zip_of("conf/deploy.env", format!("TOKEN={}\n", token()).as_bytes());
    std::fs::write(c.join("bundle.zip"), &z).unwrap();
    w.ok(&c, &["add", "bundle.zip"]);
    w.ok(&c, &["commit", "-qm", "bundle"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(
        &w,
        &o,
        &before,
        &["github-pat", "bundle.zip", "zip:conf/deploy.env"],
    );
    // 300 MiB of zeros in a ~300 KiB zip: over the unpack limit, refused rather than skipped.
    w.ok(&c, &["reset", "-q", "--hard", &before]);
    let bomb = zip_of("zeros", &vec![0u8; 300 << 20]);
    std::fs::write(c.join("bomb.zip"), &bomb).unwrap();
    w.ok(&c, &["add", "bomb.zip"]);
    w.ok(&c, &["commit", "-qm", "bomb"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("bomb.zip") && e.contains("cannot be scanned whole"),
        "{e}"
    );
    assert_eq!(w.upstream_ref("main").as_deref(), Some(before.as_str()));
}

#[test]
fn a_multi_ref_push_is_all_or_nothing() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    w.commit_file(&c, "ok.txt", "fine\n", "clean");
    w.ok(&c, &["branch", "clean"]);
    w.commit_file(&c, "bad.txt", &format!("{}\n", token()), "dirty");
    let o = w.git(
        &c,
        &[
            "push",
            "origin",
            "clean:refs/heads/clean",
            "HEAD:refs/heads/dirty",
        ],
    );
    assert_rejected(&w, &o, &before, &["bad.txt"]);
    assert!(
        w.upstream_ref("refs/heads/clean").is_none(),
        "the clean ref must not land either"
    );
    assert!(w.upstream_ref("refs/heads/dirty").is_none());
    // Two clean refs land together.
    let o = w.git(
        &c,
        &[
            "push",
            "origin",
            "clean:refs/heads/clean",
            "clean:refs/heads/clean2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.upstream_ref("refs/heads/clean").is_some());
    assert!(w.upstream_ref("refs/heads/clean2").is_some());
}

#[test]
fn concurrent_fetches_all_get_fresh_refs() {
    let w = World::start(PushPolicy::default());
    let main = w.upstream_ref("main").unwrap();
    let url = w.url();
    let home = w.home();
    let dir = w.tmp.path().to_path_buf();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, home, dir) = (url.clone(), home.clone(), dir.clone());
            std::thread::spawn(move || {
                common::git_in(&dir, &home, &["ls-remote", &url, "refs/heads/main"])
            })
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).starts_with(&main));
    }
}

#[test]
fn shallow_and_partial_clones_work() {
    let w = World::start(PushPolicy::default());
    let d = w.tmp.path().join("shallow");
    w.ok(
        w.tmp.path(),
        &["clone", "-q", "--depth", "1", &w.url(), d.to_str().unwrap()],
    );
    assert_eq!(w.ok(&d, &["rev-parse", "--is-shallow-repository"]), "true");
    let p = w.tmp.path().join("partial");
    w.ok(
        w.tmp.path(),
        &[
            "clone",
            "-q",
            "--filter=blob:none",
            &w.url(),
            p.to_str().unwrap(),
        ],
    );
    assert!(p.join("README.md").exists());
}

#[test]
fn a_blob_over_the_cap_is_refused_not_skipped() {
    let w = World::start_with(Opts {
        max_blob_bytes: 4096,
        ..Opts::default()
    });
    let c = w.clone("c");
    let before = w.upstream_ref("main").unwrap();
    w.commit_file(&c, "big.dat", &"x".repeat(5000), "big");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(
        &w,
        &o,
        &before,
        &["big.dat", "5000 bytes", "limit of 4096 bytes"],
    );
}

#[test]
fn secrets_in_a_tag_message_or_a_ref_name_are_rejected() {
    let policy = PushPolicy {
        push: vec!["refs/heads/*".into(), "refs/tags/*".into()],
        allow_tags: true,
        ..PushPolicy::default()
    };
    let w = World::start(policy);
    let c = w.clone("c");
    w.ok(
        &c,
        &["tag", "-a", "-m", &format!("release key {}", token()), "v2"],
    );
    let o = w.git(&c, &["push", "origin", "refs/tags/v2"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("github-pat") && e.contains("tag object"), "{e}");
    assert!(w.upstream_ref("refs/tags/v2").is_none());
    let branch = format!("refs/heads/{}", token());
    let o = w.git(&c, &["push", "origin", &format!("HEAD:{branch}")]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("github-pat") && e.contains("ref name"), "{e}");
    assert!(w.upstream_ref(&branch).is_none());
}

#[test]
fn push_options_are_refused() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c");
    w.commit_file(&c, "a.txt", "a\n", "a");
    let o = w.git(
        &c,
        &[
            "push",
            "-o",
            "secret_push_protection.skip_all",
            "origin",
            "HEAD:main",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("push options"), "{}", stderr(&o));
}

#[test]
fn a_secret_already_upstream_at_the_same_path_is_not_re_flagged_but_a_copy_is() {
    let w = World::start(PushPolicy::default());
    // Upstream already holds a token in legacy.env (committed by someone, before the gate).
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
    w.commit_file(
        &other,
        "legacy.env",
        &format!("A=1\nT={}\n", token()),
        "legacy",
    );
    w.ok(&other, &["push", "-q", "origin", "HEAD:main"]);
    let c = w.clone("c");
    // Editing another line of that file passes...
    let edited = w.commit_file(&c, "legacy.env", &format!("A=2\nT={}\n", token()), "edit A");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.upstream_ref("main").as_deref(), Some(edited.as_str()));
    // ...copying the token to a new file does not.
    w.commit_file(&c, "copy.env", &format!("T={}\n", token()), "copy");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert_rejected(&w, &o, &edited, &["github-pat", "copy.env"]);
}

#[test]
fn a_push_racing_an_upstream_change_is_refused_not_overwritten() {
    let w = World::start(PushPolicy::default());
    let c = w.clone("c"); // the mirror now has main = M
    let m = w.ok(&c, &["rev-parse", "HEAD"]);
    let n = w.commit_file(&c, "mine.txt", "mine\n", "mine");
    // Upstream moves after the gate's last advertisement.
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
    let theirs = w.commit_file(&other, "theirs.txt", "theirs\n", "theirs");
    w.ok(&other, &["push", "-q", "origin", "HEAD:main"]);
    // A receive-pack request built by hand against the old advertisement (no new GET).
    let pack = {
        let mut child = std::process::Command::new("git")
            .args(["pack-objects", "--stdout", "--revs", "-q"])
            .current_dir(&c)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{n}\n^{m}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let cmd = format!("{m} {n} refs/heads/main\0report-status side-band-64k\n");
    let mut body = format!("{:04x}{cmd}0000", cmd.len() + 4).into_bytes();
    body.extend_from_slice(&pack);
    let r = raw_request(
        &w.base,
        "/proj/git-receive-pack",
        "application/x-git-receive-pack-request",
        &body,
    );
    assert!(r.contains("ng refs/heads/main"), "{r}");
    assert!(r.contains("upstream refused it"), "{r}");
    assert_eq!(
        w.upstream_ref("main").as_deref(),
        Some(theirs.as_str()),
        "upstream was overwritten"
    );
    let mirror = w.gate.mirror("proj").unwrap().dir().to_path_buf();
    assert_eq!(
        w.ok(&mirror, &["rev-parse", "main"]),
        m,
        "the mirror claims the ref moved"
    );
}

#[test]
fn a_multi_megabyte_push_streams_through_and_an_oversized_chunked_body_lands_nothing() {
    let w = World::start_with(Opts {
        max_blob_bytes: 6 << 20,
        ..Opts::default()
    });
    let c = w.clone("c");
    // ~3 MiB of incompressible bytes (the pack is about as large).
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(c.join("noise.bin"), &data).unwrap();
    w.ok(&c, &["add", "noise.bin"]);
    w.ok(&c, &["commit", "-qm", "noise"]);
    let head = w.ok(&c, &["rev-parse", "HEAD"]);
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.upstream_ref("main").as_deref(), Some(head.as_str()));
    // A chunked body (no Content-Length) over the 8 MiB limit: answered, no hang, nothing lands
    // (the gate cuts it at the limit; receive.maxInputSize would refuse it too).
    let addr = w.base.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    use std::io::{Read, Write};
    let z = "0".repeat(40);
    let cmd = format!("{z} {head} refs/heads/big\0report-status\n");
    let mut first = format!("{:04x}{cmd}0000", cmd.len() + 4).into_bytes();
    first.extend_from_slice(b"PACK\0\0\0\x02\0\0\x10\0");
    write!(
        s,
        "POST /proj/git-receive-pack HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-git-receive-pack-request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'z'; 1 << 20];
    let _ = write!(s, "{:x}\r\n", first.len())
        .and_then(|_| s.write_all(&first))
        .and_then(|_| s.write_all(b"\r\n"));
    for _ in 0..10 {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert!(!r.contains("ok refs/heads/big"), "{r}");
    assert!(w.upstream_ref("refs/heads/big").is_none());
}
