//! `on_match = "redact"`, inbound (response) DLP and the safety of DLP locations, through the
//! proxy with curl: redactable secrets are replaced before the upstream sees the request,
//! unredactable ones (URL, encoded, compressed, the bottle's own token) still block, a
//! response carrying a credential never reaches the client on an `inbound_dlp` route, and no
//! deny body or audit record ever contains the secret — not even when it hides in a name.
mod common;

use std::collections::HashMap;
use std::io::Write;

use common::{leak_token, parse_http, Harness};

const ROUTES: &str = r#"
[[route]]
id = "redact"
host = "allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
on_match = "redact"

[[route]]
id = "inbound"
host = "api.allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
inbound_dlp = true

[[route]]
id = "plain"
host = "ws.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
"#;

/// The bottle's own (known) secret, visibly fake.
fn own_secret() -> String {
    format!(
        "{}-{}",
        "bottle-own-token", "Hq3Wm8Zx1Cv5Bn7Kj2Lp4Rt6Ys9Uf0"
    )
}

/// A GitHub-token-shaped value the default rules catch (built at run time).
fn pat() -> String {
    format!("{}{}", "gh", "p_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A")
}

fn harness() -> Harness {
    let mut s = HashMap::new();
    s.insert("OWN".to_string(), own_secret());
    Harness::start_full(ROUTES, "", false, Some(s))
}

/// Runs curl; returns (status, headers, body), asserting the body never holds a secret.
fn fetch(h: &Harness, args: &[&str]) -> (u16, Vec<(String, String)>, String) {
    let mut a = vec!["-i"];
    a.extend_from_slice(args);
    let out = h.curl(&a);
    parse_http(&out.stdout)
}

fn deny_of(headers: &[(String, String)]) -> &str {
    common::header(headers, "x-bottle-deny").unwrap_or("")
}

#[test]
fn redact_route_replaces_secrets_in_body_and_headers() {
    let h = harness();
    let p = pat();
    let url = h.url("allowed.test", "/echo-body");
    let json =
        format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"my token is {p} ok\"}}]}}");
    let (code, _, body) = fetch(
        &h,
        &[
            "-H",
            "content-type: application/json",
            "--data",
            &json,
            &url,
        ],
    );
    assert_eq!(code, 200, "redacted body is forwarded: {body}");
    assert!(!body.contains(&p), "upstream saw the secret: {body}");
    assert!(body.contains("[REDACTED]"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("still valid JSON");
    assert!(v["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("my token is [REDACTED]"));

    let echo = h.url("allowed.test", "/echo");
    let hdr = format!("X-Note: {p}");
    let (code, _, body) = fetch(&h, &["-H", &hdr, &echo]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("h:x-note=[REDACTED]"), "{body}");
    assert!(!body.contains(&p));

    let audit = h.audit_lines(4);
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&p), "audit holds the secret: {text}");
    let red: Vec<_> = audit
        .iter()
        .filter(|l| l["reason"] == "dlp_redacted")
        .collect();
    assert_eq!(red.len(), 2, "each redaction is audited: {text}");
    assert!(red
        .iter()
        .all(|l| l["decision"] == "allow"
            && l["rule"].as_str().is_some_and(|r| r.starts_with("github"))));
    assert!(
        red.iter().any(|l| l["location"] == "header:x-note"),
        "{text}"
    );
}

#[test]
fn redact_route_still_blocks_what_it_cannot_redact() {
    let h = harness();
    let p = pat();
    let url = h.url("allowed.test", "/echo-body");
    let query = h.url("allowed.test", &format!("/echo?q={p}"));
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("token={p}"))
    };
    let b64_json = format!("{{\"file\":\"{b64}\"}}");
    let escaped = format!("{{\"t\":\"{}\"}}", p.replace('_', "\\u005f"));
    let own = format!("note {}", own_secret());
    let dir = std::env::temp_dir().join(format!("bottle-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gz = dir.join("b.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(format!("t={p}").as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let gz_arg = format!("@{}", gz.display());
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("secret in the query", vec![&query]),
        ("base64 in JSON", vec!["--data", &b64_json, &url]),
        ("JSON-escaped", vec!["--data", &escaped, &url]),
        ("the bottle's own secret", vec!["--data", &own, &url]),
        (
            "gzip body",
            vec![
                "-H",
                "content-encoding: gzip",
                "--data-binary",
                &gz_arg,
                &url,
            ],
        ),
    ];
    for (what, args) in cases {
        let (code, headers, body) = fetch(&h, &args);
        assert_eq!(
            (code, deny_of(&headers)),
            (403, "dlp"),
            "{what} must block on a redact route: {body}"
        );
        assert!(!body.contains(&p) && !body.contains(&own_secret()));
    }
    assert_eq!(
        h.upstream_accepts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inbound_dlp_blocks_a_response_carrying_a_secret() {
    let h = harness();
    let (code, headers, body) = fetch(&h, &[&h.url("api.allowed.test", "/leak")]);
    assert_eq!((code, deny_of(&headers)), (403, "dlp"), "{body}");
    assert!(
        common::header(&headers, "x-bottle-rule").is_some_and(|r| r.starts_with("github")),
        "{headers:?}"
    );
    assert!(!body.contains(&leak_token()), "{body}");
    assert!(
        body.contains("response:"),
        "deny names the response: {body}"
    );
    // A clean response on the same route flows; a route without inbound_dlp is not scanned.
    let (code, _, body) = fetch(&h, &[&h.url("api.allowed.test", "/echo")]);
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = fetch(&h, &[&h.url("ws.test", "/leak")]);
    assert_eq!(code, 200);
    assert!(body.contains(&leak_token()));
    let audit = h.audit_lines(6);
    let text = serde_json::to_string(&audit).unwrap();
    let leak: Vec<_> = audit
        .iter()
        .filter(|l| l["host"] == "api.allowed.test" && l["method"] == "GET")
        .collect();
    assert_eq!(
        leak.iter()
            .map(|l| l["decision"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["deny", "allow"],
        "a refused response is audited once, as a deny: {text}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["reason"] == "dlp" && l["location"] == "response:body"),
        "{text}"
    );
}

#[test]
fn a_secret_in_a_name_never_reaches_the_deny_or_the_audit() {
    let h = harness();
    let p = pat();
    let url = h.url("ws.test", "/echo");
    let json = format!("{{\"{p}\":1}}");
    let hdr = format!("{p}: 1");
    let form = format!("{p}=1");
    for args in [
        vec![
            "-H",
            "content-type: application/json",
            "--data",
            &json,
            &url,
        ],
        vec!["-H", &hdr, &url],
        vec!["--data", &form, &url],
    ] {
        let (code, headers, body) = fetch(&h, &args);
        assert_eq!((code, deny_of(&headers)), (403, "dlp"), "{args:?}: {body}");
        assert!(
            !body.contains(&p[4..20]),
            "deny body leaks the name: {body}"
        );
    }
    let audit = h.audit_lines(6);
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&p[4..20]), "audit leaks the name: {text}");
    let denies: Vec<_> = audit.iter().filter(|l| l["decision"] == "deny").collect();
    assert_eq!(denies.len(), 3, "{text}");
    assert!(denies.iter().all(|l| l["rule"] == "github-pat"), "{text}");
}
