//! The gate against a smart-HTTP upstream: `git http-backend` behind a tiny hyper CGI shim
//! that demands a bearer token. The credential reaches upstream only through the gate.

mod common;

use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bottle_git_gate::{Credential, PushPolicy};
use bytes::Bytes;
use common::{stderr, Opts, World};
use http_body_util::{BodyExt, Full};

/// The upstream token, built at run time.
fn upstream_token() -> String {
    format!("{}-{}", "upstream", "tok-5f2a9c1e7b3d4a6f")
}

/// A running CGI shim: its base URL and the Authorization values it saw.
struct Shim {
    base: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    _rt: tokio::runtime::Runtime,
}

fn start_shim(root: PathBuf, token: String) -> Shim {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (root, token, seen) = (root.clone(), token.clone(), seen2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (root, token, seen) = (root.clone(), token.clone(), seen.clone());
                    async move { Ok::<_, Infallible>(cgi(req, &root, &token, &seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Shim {
        base,
        seen,
        _rt: rt,
    }
}

async fn cgi(
    req: hyper::Request<hyper::body::Incoming>,
    root: &Path,
    token: &str,
    seen: &Mutex<Vec<Option<String>>>,
) -> hyper::Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().unwrap().push(auth.clone());
    if auth.as_deref() != Some(format!("Bearer {token}").as_str()) {
        return hyper::Response::builder()
            .status(401)
            .header("WWW-Authenticate", "Basic realm=\"upstream\"")
            .body(Full::new(Bytes::from_static(b"unauthorized\n")))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = std::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", h("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", h("content-encoding"))
        .env("GIT_PROTOCOL", h("git-protocol"))
        .env("REMOTE_USER", "gate")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out.stdout
    })
    .await
    .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("CGI headers");
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let mut resp = hyper::Response::builder();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                let code: u16 = v.trim()[..3].parse().unwrap();
                resp = resp.status(code);
            } else {
                resp = resp.header(k.trim(), v.trim());
            }
        }
    }
    resp.body(Full::new(Bytes::copy_from_slice(&out[split.0 + split.1..])))
        .unwrap()
}

/// A World whose upstream is served by the shim (which demands [`upstream_token`]) and whose
/// gate sends `token`.
fn world(token: String) -> (World, Shim, tempfile::TempDir) {
    let shim_root = tempfile::tempdir().unwrap();
    let shim = start_shim(shim_root.path().to_path_buf(), upstream_token());
    let base = shim.base.clone();
    let root = shim_root.path().to_path_buf();
    let w = World::start_with(Opts {
        url: Some(Box::new(move |up: &Path| {
            // Expose the upstream repository under the shim's project root.
            std::os::unix::fs::symlink(up, root.join("upstream.git")).unwrap();
            format!("{base}/upstream.git")
        })),
        credential: Some(Credential::Bearer(token)),
        policy: PushPolicy::default(),
        ..Opts::default()
    });
    (w, shim, shim_root)
}

#[test]
fn fetch_and_push_through_a_token_protected_smart_http_upstream() {
    let (w, shim, _root) = world(upstream_token());
    let c = w.clone("c");
    assert!(c.join("README.md").exists());
    let head = w.commit_file(&c, "src/main.rs", "fn main() {}\n", "clean");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.upstream_ref("main").as_deref(), Some(head.as_str()));
    let seen = shim.seen.lock().unwrap().clone();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|a| a.as_deref() == Some(format!("Bearer {}", upstream_token()).as_str())),
        "every upstream request carries the credential"
    );
    // The credential is in no file of the gate's state (mirror config, hooks).
    let state = w.tmp.path().join("gate-state");
    let grep = std::process::Command::new("grep")
        .args(["-rl", &upstream_token()])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
    // Pushing the upstream credential itself is rejected as a known secret.
    let before = head;
    w.commit_file(&c, "leak.txt", &format!("t={}\n", upstream_token()), "leak");
    let o = w.git(&c, &["push", "origin", "HEAD:main"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("known-secret") && e.contains("leak.txt"), "{e}");
    assert!(!e.contains(&upstream_token()), "{e}");
    assert_eq!(w.upstream_ref("main").as_deref(), Some(before.as_str()));
}

#[test]
fn a_wrong_credential_fails_closed_without_echoing_it() {
    let wrong = format!("{}-{}", "wrong", "tok-0a1b2c3d4e5f6071");
    let (w, _shim, _root) = world(wrong.clone());
    let o = w.git(w.tmp.path(), &["clone", &w.url(), "x"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("cannot refresh remote \"proj\" from upstream"),
        "{e}"
    );
    assert!(!e.contains(&wrong), "{e}");
}
