//! Body, URL and header decoders: secrets in every structured place are found, with locations.

use std::io::Write;

use base64::Engine as _;
use bottle_scanner::corpus::Rng;
use bottle_scanner::decode::{scan_body, scan_headers, scan_url, DecodeError, DecodeLimits};
use bottle_scanner::Scanner;

fn setup() -> (Scanner, String, String) {
    let mut rng = Rng::new(77);
    let known = format!("{}{}", "sk-ant-oat01-", rng.chars('w', 95));
    let rule_secret = format!("gh{}_{}", "p", rng.chars('a', 36));
    let s = Scanner::builder()
        .default_rules(true)
        .known_secret("ANTHROPIC", &known)
        .build()
        .unwrap();
    (s, known, rule_secret)
}

fn has(findings: &[bottle_scanner::Finding], rule: &str, loc_part: &str) -> bool {
    findings
        .iter()
        .any(|f| f.rule_id == rule && f.location.as_deref().unwrap_or("").contains(loc_part))
}

#[test]
fn url_query_path_and_double_encoding() {
    let (s, known, tok) = setup();
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let f = scan_url(&s, &format!("/api?x=1&leak={}", enc(&enc(&tok))));
    assert!(has(&f, "github-pat", "query:leak"), "{f:?}");
    let f = scan_url(&s, &format!("/files/{}/x", enc(&known)));
    assert!(
        f.iter()
            .any(|f| f.known_secret.as_deref() == Some("ANTHROPIC")),
        "{f:?}"
    );
    // split across two params: only the joined values reveal it
    let (a, b) = tok.split_at(20);
    let f = scan_url(&s, &format!("/q?a={a}&b={b}"));
    assert!(has(&f, "github-pat", "query:*"), "{f:?}");
    // base64 in a param
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tok);
    let f = scan_url(&s, &format!("/q?d={b64}"));
    assert!(has(&f, "github-pat", "query:d"), "{f:?}");
    assert!(scan_url(&s, "/v1/messages?beta=true").is_empty());
}

#[test]
fn headers_scanned_with_names() {
    let (s, _known, tok) = setup();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{tok}"));
    let hv = format!("Basic {basic}");
    let f = scan_headers(
        &s,
        [
            ("X-Custom", tok.as_bytes()),
            ("Authorization", hv.as_bytes()),
        ],
    );
    assert!(has(&f, "github-pat", "header:x-custom"), "{f:?}");
    assert!(has(&f, "github-pat", "header:authorization"), "{f:?}");
}

#[test]
fn json_body_paths_and_escapes() {
    let (s, known, tok) = setup();
    let escaped: String = known
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let body = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":\"see {tok}\"}},{{\"content\":\"{escaped}\"}}]}}"
    );
    let r = scan_body(
        &s,
        Some("text/plain"),
        None,
        body.as_bytes(),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert!(
        has(&r.findings, "github-pat", "$.messages[0].content"),
        "{:?}",
        r.findings
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.known_secret.as_deref() == Some("ANTHROPIC")
                && f.location.as_deref() == Some("$.messages[1].content")),
        "{:?}",
        r.findings
    );
    assert!(r.decoded_as.contains(&"json".to_string()));
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_bodies_and_cap() {
    let (s, _known, tok) = setup();
    let body = format!("{{\"k\":\"{tok}\"}}");
    let r = scan_body(
        &s,
        Some("application/json"),
        Some("gzip"),
        &gz(body.as_bytes()),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert!(has(&r.findings, "github-pat", "$.k"), "{:?}", r.findings);
    // undeclared gzip with a lying content type
    let r = scan_body(
        &s,
        Some("image/png"),
        None,
        &gz(body.as_bytes()),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert!(
        r.findings.iter().any(|f| f.rule_id == "github-pat"),
        "{:?}",
        r.findings
    );
    // deflate (zlib)
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body.as_bytes()).unwrap();
    let r = scan_body(
        &s,
        None,
        Some("deflate"),
        &e.finish().unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    assert!(r.findings.iter().any(|f| f.rule_id == "github-pat"));
    // cap
    let big = gz(&vec![b'a'; 2 << 20]);
    let lim = DecodeLimits {
        max_decoded: 1 << 20,
        ..Default::default()
    };
    let e = scan_body(&s, None, Some("gzip"), &big, &lim).unwrap_err();
    assert!(matches!(e, DecodeError::TooLarge { .. }));
    assert!(e.to_string().contains("1048576"), "{e}");
    assert!(matches!(
        scan_body(&s, None, Some("lzma"), b"x", &lim),
        Err(DecodeError::UnknownEncoding(_))
    ));
    assert!(scan_body(&s, None, Some("br"), b"\xff\xff\xff", &lim).is_err());
}

#[test]
fn multipart_parts_and_transfer_encodings() {
    let (s, known, tok) = setup();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("config\n{tok}\n"));
    let qp = known.replace('-', "=2D");
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{qp}\r\n--XyZ--\r\n"
    );
    for ct in [
        Some("multipart/form-data; boundary=XyZ"),
        Some("application/octet-stream"),
        None,
    ] {
        let r = scan_body(&s, ct, None, body.as_bytes(), &DecodeLimits::default()).unwrap();
        assert!(
            has(&r.findings, "github-pat", "multipart:file/"),
            "{ct:?} {:?}",
            r.findings
        );
        assert!(
            r.findings.iter().any(|f| f.known_secret.is_some()
                && f.location
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("multipart:note/")),
            "{:?}",
            r.findings
        );
    }
}

#[test]
fn form_bodies() {
    let (s, _known, tok) = setup();
    let body = format!("a=1&token={}", tok.replace('_', "%5F"));
    let r = scan_body(&s, None, None, body.as_bytes(), &DecodeLimits::default()).unwrap();
    assert!(
        has(&r.findings, "github-pat", "form:token"),
        "{:?}",
        r.findings
    );
}
