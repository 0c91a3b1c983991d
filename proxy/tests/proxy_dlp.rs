//! DLP and credential injection through the proxy with curl: planted secrets in every place
//! and encoding are refused before anything reaches the upstream; the credentialed route gets
//! the real token while the client only ever sent a placeholder.
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;

use common::{parse_http, Harness};

const ROUTES: &str = r#"
[[route]]
id = "allowed"
host = "allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
auth = { scheme = "Bearer", secret = "TOK" }

[[route]]
id = "other"
host = "api.allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
"#;

fn secret() -> String {
    // Built at run time; a visibly fake value of token shape.
    format!(
        "{}-{}",
        "bottle-test-token", "Zq8Xv2Lm4Np6Rt0Yw3Ks5Hd7Jf9Gb1"
    )
}

fn harness() -> Harness {
    let mut s = HashMap::new();
    s.insert("TOK".to_string(), secret());
    Harness::start_full(ROUTES, "", false, Some(s))
}

fn status(h: &Harness, args: &[&str]) -> (u16, String) {
    let mut a = vec!["-i"];
    a.extend_from_slice(args);
    let out = h.curl(&a);
    let (code, headers, body) = parse_http(&out.stdout);
    let deny = common::header(&headers, "x-bottle-deny")
        .unwrap_or("")
        .to_string();
    assert!(
        !body.contains(&secret()),
        "response never echoes the secret"
    );
    (code, deny)
}

#[test]
fn planted_secrets_are_blocked_in_every_place_and_encoding() {
    let h = harness();
    let tok = secret();
    let other = h.url("api.allowed.test", "/echo");
    let b64 = base64_std(tok.as_bytes());
    let hex: String = tok.bytes().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("bottle-dlp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gz = dir.join("body.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(format!("{{\"note\":\"{tok}\"}}").as_bytes())
        .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let gz_arg = format!("@{}", gz.display());
    let json = format!(
        "{{\"a\":{{\"b\":[\"x\",\"{}\"]}}}}",
        tok.replace('-', "\\u002d")
    );
    let up = dir.join("up.txt");
    std::fs::write(&up, format!("line\n{b64}\n")).unwrap();
    let mp = format!("file=@{};type=application/octet-stream", up.display());
    let own = h.url("allowed.test", "/echo");
    let path_url = h.url("api.allowed.test", &format!("/x/{tok}"));
    let query_url = h.url("api.allowed.test", &format!("/echo?q={hex}"));
    let header = format!("X-Note: {b64}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("path", vec![&path_url]),
        ("query hex", vec![&query_url]),
        ("header base64", vec!["-H", &header, &other]),
        (
            "json escaped",
            vec![
                "-H",
                "content-type: application/json",
                "--data",
                &json,
                &other,
            ],
        ),
        (
            "gzip body, lying type",
            vec![
                "-H",
                "content-encoding: gzip",
                "-H",
                "content-type: image/png",
                "--data-binary",
                &gz_arg,
                &other,
            ],
        ),
        ("multipart base64", vec!["-F", &mp, &other]),
        ("body to its own route", vec!["--data", &tok, &own]),
    ];
    for (what, args) in cases {
        let (code, deny) = status(&h, &args);
        assert_eq!(
            (code, deny.as_str()),
            (403, "dlp"),
            "{what} must be blocked by DLP"
        );
    }
    // A generic credential shape is caught by the rules too (built at run time).
    let pat = format!("{}{}", "gh", "p_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A");
    let (code, deny) = status(&h, &["--data", &format!("t={pat}"), &other]);
    assert_eq!((code, deny.as_str()), (403, "dlp"));
    assert_eq!(
        h.upstream_accepts.load(Ordering::SeqCst),
        0,
        "upstream received nothing"
    );
    let audit = h.audit_lines(8);
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&tok) && !text.contains(&pat) && !text.contains(&b64));
    assert!(audit.iter().any(|l| l["reason"] == "dlp"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn credential_is_injected_on_its_route_only() {
    let h = harness();
    let out = h.curl(&[
        "-H",
        "Authorization: Bearer placeholder-TOK",
        "-H",
        "Cookie: a=inject-test",
        &h.url("allowed.test", "/echo"),
    ]);
    // The upstream got the real token and neither the placeholder nor the cookie; the echo
    // of it never comes back to the client (the response check cuts it).
    assert!(common::upstream_saw(&format!("auth Bearer {}", secret())));
    assert!(!common::upstream_saw("auth Bearer placeholder-TOK"));
    assert!(!common::upstream_saw("cookie a=inject-test"));
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(!body.contains(&secret()), "{body}");
    let out = h.curl(&[&h.url("api.allowed.test", "/echo")]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("method=GET") && !body.contains(&secret()),
        "{body}"
    );
    // TRACE is refused on the credentialed route.
    let (code, _) = status(&h, &["-X", "TRACE", &h.url("allowed.test", "/echo")]);
    assert_eq!(code, 403);
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A secret split across two chunks of a chunked upload (written with a pause between the
/// halves, so the proxy sees separate frames) is still found, and nothing reaches upstream.
#[test]
fn secret_split_across_chunks_is_blocked() {
    use std::process::{Command, Stdio};
    let h = harness();
    let tok = secret();
    let (a, b) = tok.split_at(tok.len() / 2);
    let mut child = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30", "-x"])
        .arg(format!("http://{}", h.proxy_addr))
        .arg("--cacert")
        .arg(&h.ca_path)
        .args(["-H", "Transfer-Encoding: chunked", "-T", "-"])
        .arg(h.url("api.allowed.test", "/upload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}start {a}", "x".repeat(5000)).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stdin.write_all(format!("{b} end").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (code, headers, _) = parse_http(&out.stdout);
    assert_eq!(
        (code, common::header(&headers, "x-bottle-deny")),
        (403, Some("dlp")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(h.upstream_accepts.load(Ordering::SeqCst), 0);
}
