//! Security regressions: every bypass anyone has found, one test per class, each driving the
//! proxy the way the attack did (real TLS clients through CONNECT, a real upstream). Each
//! test failed on the code the bypass was found in.
//!
//! **This suite grows with every bypass found.** A new bypass gets its test here *before*
//! it is fixed; the test names the class and the attack. (Launcher-side bypasses — the
//! workspace, the config home, planted agents — live in `launcher/tests/security_regressions.rs`.)
//!
//! Classes (issue 11, an outside escape test):
//! 1. any `Upgrade` spliced raw — [`upgrade_other_than_websocket_is_refused_not_spliced`],
//!    [`unframed_bytes_after_a_websocket_upgrade_never_reach_the_upstream`];
//! 2. WebSocket frames not scanned — [`websocket_messages_are_scanned_before_forwarding`];
//! 3. host-name exfiltration — [`secret_in_a_host_name_is_refused_before_any_dns_lookup`]
//!    (host-name DLP alone), [`label_cap_alone_refuses_long_or_random_labels_on_a_wildcard_route`]
//!    (the label cap alone);
//! 4. credential reflection — [`injected_credential_never_flows_back_in_headers`],
//!    [`injected_credential_never_flows_back_in_a_body`],
//!    [`injected_credential_never_flows_back_in_a_websocket_frame`],
//!    [`injected_credential_never_flows_back_in_a_declined_websocket_handshake`],
//!    [`no_prefix_of_a_secret_split_across_event_stream_chunks_reaches_the_agent`];
//! 5. `git push` through the proxy — [`smart_http_git_push_is_refused`];
//! 6. encoded pattern secrets in a path — [`encoded_pattern_secret_in_a_path_segment_is_blocked`];
//!
//! Plus: `websocket = false` ([`websocket_false_refuses_the_handshake_before_the_upstream`]),
//! bare parser refusals and HTTP/2 cookie crumbs.
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use common::{upstream_saw, Harness};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

const ROUTES: &str = r#"
[[route]]
id = "pub"
host = "allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
[[route.matches]]
path = "/pub"
methods = ["GET"]
[[route.matches]]
path = "/any-upgrade"
methods = ["GET"]
[[route.matches]]
path = "/ws"
methods = ["GET"]
[[route.matches]]
path_prefix = "/x/"
methods = ["GET"]
[[route.matches]]
path_prefix = "/acme/"

[[route]]
id = "wild"
host = "*.allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]

[[route]]
id = "cred"
host = "api.allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
auth = { scheme = "Bearer", secret = "TOK" }

[[route]]
id = "nocap"
host = "*.nocap.test"
ports = [{port}]
label_cap = false

[[route]]
id = "nows"
host = "nows.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
websocket = false

[[route]]
id = "pushy"
host = "ws.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
git_push = true
"#;

/// The bottle's own secret (built at run time; visibly fake).
fn secret() -> String {
    format!(
        "{}-{}",
        "bottle-test-token", "Qm7Wn2Xc4Vb6Zl8Kj0Hg3Fd5Sa9Pq1"
    )
}

fn harness() -> Harness {
    let mut s = HashMap::new();
    s.insert("TOK".to_string(), secret());
    Harness::start_full(ROUTES, "", false, Some(s))
}

/// CONNECT through the proxy, then TLS (trusting the bottle CA) with `alpn`.
async fn tunnel(
    h: &Harness,
    host: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
    let target = format!("{host}:{}", h.upstream_port);
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&h.ca_path).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
        .unwrap()
}

/// Reads a response head byte by byte (nothing after it is consumed); "" on EOF.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends a raw request and reads the response (head + Content-Length body).
async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, raw: &str) -> String {
    s.write_all(raw.as_bytes()).await.unwrap();
    let head = read_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body).await;
    format!("{head}{}", String::from_utf8_lossy(&body))
}

/// Reads everything until EOF, an error, or `quiet` without a byte.
async fn read_until_quiet<S: AsyncRead + Unpin>(s: &mut S, quiet: std::time::Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(quiet, s.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn ws_handshake(host: &str, port: u16, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
}

/// Class 1: `Upgrade: foo` / `h2c` answered 101 by the upstream turned the tunnel into a raw
/// splice that carried any request past the route's matchers.
#[test]
fn upgrade_other_than_websocket_is_refused_not_spliced() {
    let h = harness();
    let port = h.upstream_port;
    for (i, token) in ["foo", "h2c", "websocket, h2c", "TLS/1.2"]
        .iter()
        .enumerate()
    {
        h.rt.block_on(async {
            let mut t = tunnel(&h, "allowed.test", &[b"http/1.1"]).await;
            let marker = format!("/private/admin-{i}");
            let extra = if *token == "h2c" {
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            } else {
                ""
            };
            let resp = request(
                &mut t,
                &format!("GET /any-upgrade HTTP/1.1\r\nHost: allowed.test:{port}\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n{extra}\r\n"),
            )
            .await;
            assert!(resp.starts_with("HTTP/1.1 403"), "{token}: {resp}");
            assert!(resp.contains("x-bottle-deny: upgrade"), "{token}: {resp}");
            assert!(resp.contains("only WebSocket"), "{token}: {resp}");
            // What the attack sent next: an arbitrary request for the spliced upstream.
            let _ = t
                .write_all(
                    format!("DELETE {marker} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: token ghp_x\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let after = read_head(&mut t).await;
            assert!(
                after.is_empty() || after.starts_with("HTTP/1.1 4"),
                "{token}: {after}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(!upstream_saw(&marker), "{token}: the upstream received {marker}");
        });
    }
    assert!(
        !upstream_saw("GET /any-upgrade"),
        "no upgrade reached the upstream"
    );
}

/// Class 1: `Upgrade: websocket` followed by unframed bytes was spliced byte for byte.
#[test]
fn unframed_bytes_after_a_websocket_upgrade_never_reach_the_upstream() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "allowed.test", &[b"http/1.1"]).await;
        t.write_all(ws_handshake("allowed.test", port, "/ws").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut t).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions"),
            "no extension is negotiated: {head}"
        );
        t.write_all(b"DELETE /private/admin-ws HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            .await
            .unwrap();
        // The relay answers with a protocol-error close (or just closes).
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t.read(&mut buf)).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!upstream_saw("/private/admin-ws"));
    });
}

/// Class 2: frames carrying a GitHub token, the bottle's secret T, base64(T), or T split
/// across two fragments reached the upstream.
#[test]
fn websocket_messages_are_scanned_before_forwarding() {
    let h = harness();
    let port = h.upstream_port;
    let t_b64 = base64::engine::general_purpose::STANDARD.encode(secret());
    let whole = secret();
    let (half1, half2) = whole.split_at(12);
    let (half1, half2) = (half1.to_owned(), half2.to_owned());
    let cases: Vec<(&str, Vec<Vec<u8>>, String)> = vec![
        (
            "github token",
            vec![frame(
                true,
                1,
                format!("push {}", common::leak_token()).as_bytes(),
            )],
            common::leak_token(),
        ),
        (
            "own secret",
            vec![frame(true, 2, format!("k={}", secret()).as_bytes())],
            secret(),
        ),
        (
            "base64 of own secret",
            vec![frame(true, 1, format!("{{\"v\":\"{t_b64}\"}}").as_bytes())],
            t_b64.clone(),
        ),
        (
            "split across fragments",
            vec![
                frame(false, 1, format!("a {half1}").as_bytes()),
                frame(true, 0, format!("{half2} b").as_bytes()),
            ],
            half2.clone(),
        ),
    ];
    for (what, frames, needle) in cases {
        h.rt.block_on(async {
            let mut t = tunnel(&h, "allowed.test", &[b"http/1.1"]).await;
            t.write_all(ws_handshake("allowed.test", port, "/ws").as_bytes())
                .await
                .unwrap();
            let head = read_head(&mut t).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{what}: {head}");
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(t, Role::Client, None).await;
            // A clean message is echoed.
            ws.send(Message::text("hello clean")).await.unwrap();
            match ws.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hello clean"),
                other => panic!("{what}: expected the echo, got {other:?}"),
            }
            let mut raw = ws.into_inner();
            for f in &frames {
                raw.write_all(f).await.unwrap();
            }
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(raw, Role::Client, None).await;
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no close within 5 s"));
            match got {
                Some(Ok(Message::Close(Some(c)))) => {
                    assert_eq!(c.code, CloseCode::Policy, "{what}");
                    assert!(!c.reason.contains(&needle), "{what}: reason leaks");
                }
                other => panic!("{what}: expected close 1008, got {other:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(
                !common::upstream_saw_ws(&needle),
                "{what}: the upstream received it"
            );
        });
    }
    let audit = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!audit.contains(&secret()) && !audit.contains(&half2));
    let lines = h.audit_lines(4);
    assert!(lines
        .iter()
        .any(|l| l["path"].as_str().unwrap_or("").contains("dlp") || l["reason"] == "dlp"));
}

/// Class 3: `CONNECT <base32(T) in two labels>.wild.test:443` was allowed, resolved (the
/// secret left through DNS) and logged. Driven on `*.nocap.test` (`label_cap = false`, and
/// the name is not in the resolver), so only host-name DLP stands between the name and a DNS
/// lookup: without it the deny would be `dns` and the resolver would have been asked.
#[test]
fn secret_in_a_host_name_is_refused_before_any_dns_lookup() {
    let h = harness();
    let b32 = data_encoding::BASE32_NOPAD
        .encode(secret().as_bytes())
        .to_ascii_lowercase();
    let hex = data_encoding::HEXLOWER.encode(secret().as_bytes());
    let split = |s: &str| {
        let mid = s.len() / 2;
        format!("{}.{}", &s[..mid], &s[mid..])
    };
    for (what, labels) in [("base32", split(&b32)), ("hex", split(&hex))] {
        let name = format!("{labels}.nocap.test");
        h.rt.block_on(async {
            let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
            let target = format!("{name}:{}", h.upstream_port);
            let resp = request(
                &mut s,
                &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            )
            .await;
            assert!(resp.starts_with("HTTP/1.1 403"), "{what}: {resp}");
            assert!(resp.contains("x-bottle-deny: host_name"), "{what}: {resp}");
            // DLP, not the label cap: the deny names the rule.
            assert!(
                resp.contains("x-bottle-rule: known-secret"),
                "{what}: {resp}"
            );
            assert!(resp.contains("secret detected"), "{what}: {resp}");
            assert!(!resp.contains(&labels), "{what}: the deny shows the name");
            // Absolute form too.
            let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
            let resp = request(
                &mut s,
                &format!("GET http://{name}/ HTTP/1.1\r\nHost: {name}\r\n\r\n"),
            )
            .await;
            assert!(resp.contains("x-bottle-deny: host_name"), "{what}: {resp}");
            assert!(
                resp.contains("x-bottle-rule: known-secret"),
                "{what}: {resp}"
            );
        });
        assert!(
            !h.resolver
                .queried()
                .iter()
                .any(|q| q.contains(&labels[..10])),
            "{what}: the name was looked up"
        );
    }
    let lines = h.audit_lines(4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert_eq!(l["reason"], "host_name", "{l}");
        assert_eq!(l["rule"], "known-secret", "{l}");
        assert_eq!(l["location"], "host", "{l}");
        assert_eq!(l["host"], "[redacted]", "{l}");
    }
    let audit = std::fs::read_to_string(&h.audit_path).unwrap_or_default();
    assert!(!audit.contains(&b32[..16]) && !audit.contains(&hex[..16]));
}

/// The label cap of a wildcard route refuses, on its own (no DLP finding), a label over
/// `max_len` or one that looks random, before any lookup, naming the limit and not the
/// label; an ordinary name on the same route passes. The deny is `host_name` like a
/// host-name DLP hit, but has no rule and no location (DLP's has `known-secret` / `host`).
#[test]
fn label_cap_alone_refuses_long_or_random_labels_on_a_wildcard_route() {
    let h = harness();
    let port = h.upstream_port;
    let long = "a".repeat(41);
    let random = "k3v9q7zx2m8w4t6b1n5rj0yc".to_owned();
    for (what, label, limit) in [
        ("long", &long, "label_cap.max_len of 40"),
        ("random", &random, "label_cap.max_entropy of 3.9"),
    ] {
        let name = format!("{label}.allowed.test");
        h.rt.block_on(async {
            let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
            let target = format!("{name}:{port}");
            let resp = request(
                &mut s,
                &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            )
            .await;
            assert!(resp.starts_with("HTTP/1.1 403"), "{what}: {resp}");
            assert!(resp.contains("x-bottle-deny: host_name"), "{what}: {resp}");
            assert!(!resp.contains("x-bottle-rule"), "{what}: not DLP: {resp}");
            assert!(resp.contains(limit), "{what}: {resp}");
            assert!(resp.contains("route `wild`"), "{what}: {resp}");
            assert!(resp.contains("[redacted].allowed.test"), "{what}: {resp}");
            assert!(
                !resp.contains(label.as_str()),
                "{what}: the deny shows the label"
            );
            let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
            let resp = request(
                &mut s,
                &format!("GET http://{name}:{port}/ HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n"),
            )
            .await;
            assert!(resp.contains("x-bottle-deny: host_name"), "{what}: {resp}");
            assert!(!resp.contains("x-bottle-rule"), "{what}: {resp}");
        });
        assert!(
            !h.resolver
                .queried()
                .iter()
                .any(|q| q.contains(label.as_str())),
            "{what}: the name was looked up"
        );
    }
    let lines = h.audit_lines(4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert_eq!(l["reason"], "host_name", "{l}");
        assert_eq!(l["route"], "wild", "{l}");
        assert!(l["rule"].is_null() && l["location"].is_null(), "{l}");
        assert_eq!(l["host"], "[redacted].allowed.test", "{l}");
    }
    let audit = std::fs::read_to_string(&h.audit_path).unwrap_or_default();
    assert!(!audit.contains(&long) && !audit.contains(&random));
    // An ordinary name on the same wildcard route passes the cap (and is resolved).
    h.rt.block_on(async {
        let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
        let target = format!("deep.api.allowed.test:{port}");
        let resp = request(
            &mut s,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    });
    assert!(h
        .resolver
        .queried()
        .iter()
        .any(|q| q.contains("deep.api.allowed.test")));
}

/// A route with `websocket = false` refuses the handshake itself (`upgrade`, naming the
/// setting); the upstream never sees it. The route is otherwise open.
#[test]
fn websocket_false_refuses_the_handshake_before_the_upstream() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "nows.test", &[b"http/1.1"]).await;
        let resp = request(&mut t, &ws_handshake("nows.test", port, "/ws-nows")).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("x-bottle-deny: upgrade"), "{resp}");
        assert!(
            resp.contains("route `nows` does not allow WebSocket (websocket = false)"),
            "{resp}"
        );
        // The same route answers a plain request.
        let resp = request(
            &mut t,
            &format!("GET /plain-nows HTTP/1.1\r\nHost: nows.test:{port}\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    });
    assert!(upstream_saw("GET /plain-nows"));
    assert!(
        !upstream_saw("/ws-nows"),
        "the upgrade reached the upstream"
    );
    let lines = h.audit_lines(3);
    assert!(
        lines
            .iter()
            .any(|l| l["reason"] == "upgrade" && l["route"] == "nows" && l["path"] == "/ws-nows"),
        "{lines:?}"
    );
}

/// Class 4: an upstream copying the injected Authorization into response headers
/// (`X-Echo-Auth`, `Set-Cookie`, `Location`), also on HEAD.
#[test]
fn injected_credential_never_flows_back_in_headers() {
    let h = harness();
    let url = h.url("api.allowed.test", "/echo-headers");
    for method in ["GET", "HEAD"] {
        let mut args = vec!["-i", "-H", "Authorization: Bearer placeholder"];
        if method == "HEAD" {
            args.push("-I");
        }
        args.push(&url);
        let out = h.curl(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&secret()), "{method}: {text}");
        assert!(
            text.contains("x-bottle-deny: dlp"),
            "{method}: {text} {err}"
        );
    }
    assert!(
        upstream_saw(&format!("auth Bearer {}", secret())),
        "the upstream got T"
    );
}

/// Class 4: the injected credential echoed in a response body (without `inbound_dlp`).
#[test]
fn injected_credential_never_flows_back_in_a_body() {
    let h = harness();
    let url = h.url("api.allowed.test", "/echo-auth-only");
    let out = h.curl(&["-i", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&secret()), "{text}");
    assert!(upstream_saw(&format!("auth Bearer {}", secret())));
    let audit = h.audit_lines(2);
    assert!(
        audit
            .iter()
            .any(|l| l["reason"] == "dlp" && l["route"] == "cred"),
        "{audit:?}"
    );
}

/// Class 4: the injected credential in the first WebSocket frame.
#[test]
fn injected_credential_never_flows_back_in_a_websocket_frame() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "api.allowed.test", &[b"http/1.1"]).await;
        t.write_all(ws_handshake("api.allowed.test", port, "/ws-auth").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut t).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(t, Role::Client, None).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame or close within 5 s");
        match got {
            Some(Ok(Message::Close(Some(c)))) => assert_eq!(c.code, CloseCode::Policy),
            Some(Ok(Message::Text(t))) => panic!("the credential came back: {t}"),
            other => {
                let s = format!("{other:?}");
                assert!(!s.contains(&secret()), "{s}");
            }
        }
    });
}

/// Class 4: a credentialed route whose upstream declines the WebSocket upgrade with a 200
/// echoing the injected Authorization in the body: only the declined response's headers
/// were checked, the body went back to the agent unscanned.
#[test]
fn injected_credential_never_flows_back_in_a_declined_websocket_handshake() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "api.allowed.test", &[b"http/1.1"]).await;
        t.write_all(ws_handshake("api.allowed.test", port, "/ws-decline-auth").as_bytes())
            .await
            .unwrap();
        let got = read_until_quiet(&mut t, std::time::Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&got);
        // The body is cut before any of it is forwarded: hyper drops the connection, often
        // before the head went out.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
        assert!(
            !text.contains(&secret()[..8]),
            "the credential came back: {text}"
        );
    });
    assert!(upstream_saw(&format!("auth Bearer {}", secret())));
    let audit = h.audit_lines(2);
    assert!(
        audit.iter().any(|l| l["reason"] == "dlp"
            && l["route"] == "cred"
            && l["rule"] == "known-secret"
            && l["location"] == "response:body"),
        "{audit:?}"
    );
}

/// Class 4: an event stream whose upstream splits the injected credential across two
/// chunks: streaming bodies were forwarded chunk by chunk, so the chunk holding the
/// credential's first part reached the agent before the second made the secret whole.
/// Not even its first 8 bytes may arrive; the event before it must (events are not held).
#[test]
fn no_prefix_of_a_secret_split_across_event_stream_chunks_reaches_the_agent() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "api.allowed.test", &[b"http/1.1"]).await;
        t.write_all(
            format!("GET /sse-split-auth HTTP/1.1\r\nHost: api.allowed.test:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !String::from_utf8_lossy(&got).contains("data: hello\n\n") {
            match tokio::time::timeout_at(deadline, t.read(&mut buf)).await {
                Ok(Ok(n @ 1..)) => got.extend_from_slice(&buf[..n]),
                other => panic!(
                    "the first event did not arrive before the second chunk: {other:?} {}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        common::SSE_SPLIT_RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
        got.extend(read_until_quiet(&mut t, std::time::Duration::from_secs(3)).await);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("text/event-stream"), "{text}");
        assert!(
            !text.contains(&secret()[..8]),
            "a prefix of the credential came back: {text}"
        );
        assert!(
            !text.contains("data: bye"),
            "the stream was not cut: {text}"
        );
    });
    let audit = h.audit_lines(2);
    assert!(
        audit.iter().any(|l| l["reason"] == "dlp"
            && l["route"] == "cred"
            && l["location"] == "response:body"),
        "{audit:?}"
    );
}

/// Class 5: `POST …/git-receive-pack` to an allowed host updated refs; pack contents are
/// invisible to body DLP.
#[test]
fn smart_http_git_push_is_refused() {
    let h = harness();
    let port = h.upstream_port;
    let paths = [
        ("POST", "/acme/widget.git/git-receive-pack"),
        ("POST", "/acme/widget/git-receive-pack"),
        ("GET", "/acme/widget.git/info/refs?service=git-receive-pack"),
        ("POST", "/acme/widget.git%2Fgit-receive-pack"),
        ("POST", "/acme/widget/git%2Dreceive%2Dpack"),
    ];
    for (method, path) in paths {
        h.rt.block_on(async {
            let mut t = tunnel(&h, "allowed.test", &[b"http/1.1"]).await;
            let resp = request(
                &mut t,
                &format!("{method} {path} HTTP/1.1\r\nHost: allowed.test:{port}\r\nContent-Length: 4\r\n\r\n0000"),
            )
            .await;
            assert!(resp.starts_with("HTTP/1.1 403"), "{path}: {resp}");
            assert!(resp.contains("x-bottle-deny: git_push"), "{path}: {resp}");
            assert!(resp.contains("git gate"), "{path}: {resp}");
        });
    }
    // Over HTTP/2 too.
    h.rt.block_on(async {
        let t = tunnel(&h, "allowed.test", &[b"h2"]).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(t))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post(format!(
            "https://allowed.test:{port}/acme/h2push.git/git-receive-pack"
        ))
        .body(Empty::<Bytes>::new())
        .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["x-bottle-deny"], "git_push");
    });
    assert!(!upstream_saw("git-receive-pack") && !upstream_saw("h2push"));
    // A route that says `git_push = true` in so many words lets it through.
    let out = h.curl(&[
        "-i",
        "-X",
        "POST",
        &h.url("ws.test", "/acme/allowed-push.git/git-receive-pack"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/2 200")
            || String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200")
    );
    assert!(upstream_saw("allowed-push.git/git-receive-pack"));
}

/// Class 6: hex(`ghp_…`) and base64(`ghp_…`) in a URL path segment passed.
#[test]
fn encoded_pattern_secret_in_a_path_segment_is_blocked() {
    let h = harness();
    let tok = common::leak_token();
    let hex = data_encoding::HEXLOWER.encode(tok.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(tok.as_bytes());
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok.as_bytes());
    for (what, seg) in [("hex", &hex), ("base64", &b64), ("base64url", &b64url)] {
        let seg = seg.replace('/', "%2F").replace('+', "%2B");
        let out = h.curl(&["-i", &h.url("allowed.test", &format!("/x/{seg}"))]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("x-bottle-deny: dlp"), "{what}: {text}");
    }
    assert!(!upstream_saw(&hex[..20]));
}

/// Refusals by hyper's parser were a bare `400` with no `X-Bottle-Deny` and no body.
#[test]
fn parser_refusals_carry_the_deny_code_and_a_reason() {
    let h = harness();
    let port = h.upstream_port;
    let raws = [
        "CONNECT allowed.test:443:22 HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_owned(),
        format!("GET http://allowed.test:{port}/pub HTTP/1.1\r\nHost: allowed.test\r\nX-A: one\r\n two\r\n\r\n"),
        format!("POST http://allowed.test:{port}/pub HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ];
    for raw in raws {
        h.rt.block_on(async {
            let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
            let resp = request(&mut s, &raw).await;
            assert!(resp.starts_with("HTTP/1.1 4"), "{raw:?}: {resp}");
            assert!(resp.contains("x-bottle-deny: "), "{raw:?}: {resp}");
            assert!(resp.contains("bottle: "), "{raw:?}: {resp}");
        });
    }
}

/// HTTP/2 cookie crumbs must be joined with `; ` for an HTTP/1.1 upstream (RFC 9113 §8.2.3).
#[test]
fn h2_cookie_crumbs_are_joined_for_an_h1_upstream() {
    let h = Harness::start_opts(ROUTES, "", true);
    let port = h.upstream_port;
    h.rt.block_on(async {
        let t = tunnel(&h, "ws.test", &[b"h2"]).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(t))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://ws.test:{port}/cookies"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("h:cookie=a=1; b=2"), "{body}");
        assert_eq!(body.matches("h:cookie=").count(), 1, "{body}");
    });
}

/// `Content-Length` with `Transfer-Encoding` was forwarded as chunked (hyper drops the
/// `Content-Length`); it is refused, on the proxy port and inside a tunnel.
#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let h = harness();
    let port = h.upstream_port;
    h.rt.block_on(async {
        let mut t = tunnel(&h, "allowed.test", &[b"http/1.1"]).await;
        let resp = request(
            &mut t,
            &format!("POST /acme/smuggle HTTP/1.1\r\nHost: allowed.test:{port}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("x-bottle-deny: bad_request"), "{resp}");
        assert!(resp.contains("Transfer-Encoding"), "{resp}");
        let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
        let resp = request(
            &mut s,
            &format!("POST http://allowed.test:{port}/acme/smuggle2 HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        )
        .await;
        assert!(resp.contains("x-bottle-deny: bad_request"), "{resp}");
    });
    assert!(!upstream_saw("/acme/smuggle"));
}
