//! The proxy driven by hand-written clients: WebSocket upgrade (relayed frame by frame), absolute-form inside a
//! tunnel, HTTP/2 `:authority` mismatch.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::Harness;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// CONNECT through the proxy, then TLS (trusting the bottle CA) with `sni` and `alpn`.
async fn tunnel(
    h: &Harness,
    connect_host: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = TcpStream::connect(h.proxy_addr).await.unwrap();
    let target = format!("{connect_host}:{}", h.upstream_port);
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
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
        .unwrap()
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "EOF in head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

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
    s.read_exact(&mut body).await.unwrap();
    format!("{head}{}", String::from_utf8_lossy(&body))
}

#[test]
fn websocket_upgrade_is_checked_then_relayed_frame_by_frame() {
    let h = Harness::start();
    h.rt.block_on(async {
        let mut t = tunnel(&h, "ws.test", "ws.test", &[b"http/1.1"]).await;
        let port = h.upstream_port;
        t.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: ws.test:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut t).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
        // RFC 6455's sample key and its accept value.
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        // A masked text frame "hi"; the echo comes back as an unmasked server frame.
        let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        for _ in 0..3 {
            t.write_all(&frame).await.unwrap();
            let mut back = [0u8; 4];
            t.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [0x81, 0x02, b'h', b'i']);
        }
    });
    let lines = h.audit_lines(2);
    assert!(lines
        .iter()
        .any(|l| l["path"] == "/ws" && l["decision"] == "allow"));
}

#[test]
fn websocket_handshake_is_policy_checked() {
    // The wildcard route only allows /repos/, /upload, /bytes/: /ws is refused before upgrading.
    let h = Harness::start();
    h.rt.block_on(async {
        let mut t = tunnel(&h, "api.allowed.test", "api.allowed.test", &[b"http/1.1"]).await;
        let port = h.upstream_port;
        let resp = request(
            &mut t,
            &format!(
                "GET /ws HTTP/1.1\r\nHost: api.allowed.test:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n\r\n"
            ),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("x-bottle-deny: path"), "{resp}");
    });
}

#[test]
fn absolute_form_inside_a_tunnel_must_match_the_connect_target() {
    let h = Harness::start();
    h.rt.block_on(async {
        let mut t = tunnel(&h, "allowed.test", "allowed.test", &[b"http/1.1"]).await;
        let port = h.upstream_port;
        let ok = request(
            &mut t,
            &format!("GET https://allowed.test:{port}/same HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("pq=/same"), "{ok}");
        let bad = request(
            &mut t,
            &format!("GET https://evil.test:{port}/x HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"),
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 421"), "{bad}");
        assert!(bad.contains("x-bottle-deny: host_mismatch"), "{bad}");
        let http = request(
            &mut t,
            &format!("GET http://allowed.test:{port}/x HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"),
        )
        .await;
        assert!(http.starts_with("HTTP/1.1 421"), "{http}");
    });
}

#[test]
fn h2_authority_must_match_the_connect_target() {
    let h = Harness::start();
    h.rt.block_on(async {
        let t = tunnel(&h, "allowed.test", "allowed.test", &[b"h2"]).await;
        assert_eq!(t.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(t))
                .await
                .unwrap();
        tokio::spawn(conn);
        let port = h.upstream_port;
        for (authority, want) in [
            (format!("allowed.test:{port}"), 200u16),
            (format!("evil.test:{port}"), 421),
            (format!("allowed.test:{}", port.wrapping_add(1)), 421),
            (format!("allowed.test:{port}"), 200),
        ] {
            let req = http::Request::get(format!("https://{authority}/a"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), want, "{authority}");
            if want == 421 {
                assert_eq!(resp.headers()["x-bottle-deny"], "host_mismatch");
            }
            let _ = resp.into_body().collect().await.unwrap();
        }
    });
}
