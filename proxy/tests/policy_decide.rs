//! Route decisions (host, port, IP literals, private addresses) and request
//! matching (method, path, headers), table-driven.
use std::net::IpAddr;

use bottle_proxy::canon::{canonical_host, parse_authority};
use bottle_proxy::policy::{DenyReason, Policy};
use http::{HeaderMap, HeaderValue};

const POLICY: &str = r#"
[[route]]
id = "gh-api"
host = "api.github.com"
ports = [443]

[[route.matches]]
path_prefix = "/repos/acme/"
methods = ["GET"]

[[route.matches]]
path = "/graphql"
methods = ["POST"]
headers = { "content-type" = "application/json" }

[[route.matches]]
path_regex = "/users/[a-z0-9-]+"
methods = ["GET", "HEAD"]

[[route]]
id = "gh-wild"
host = "*.github.com"

[[route]]
id = "deep-wild"
host = "*.objects.github.com"
ports = [443]

[[route]]
id = "allowed"
host = "allowed.com"

[[route]]
id = "model"
host = "172.17.0.1"
ports = [8000]
allow_private = ["172.17.0.1/32"]

[[route]]
id = "lan-no-allow"
host = "192.168.1.10"

[[route]]
id = "public-ip"
host = "8.8.8.8"

[[route]]
id = "v6"
host = "[2606:4700::1111]"

[[route]]
id = "docker-name"
host = "ollama"
ports = [11434]
allow_private = ["172.16.0.0/12"]

[[route]]
id = "metadata-wide"
host = "meta.internal.example"
allow_private = ["169.254.0.0/16"]

[[route]]
id = "metadata-exact"
host = "meta2.internal.example"
allow_private = ["169.254.169.254/32"]

[[route]]
id = "prefix-no-slash"
host = "files.example.com"

[[route.matches]]
path_prefix = "/pub"
"#;

fn policy() -> Policy {
    Policy::from_toml_str(POLICY, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// Decides on a CONNECT-style authority string.
fn decide(p: &Policy, authority: &str) -> Result<String, String> {
    let (host, port) = parse_authority(authority, 443).map_err(|_| "bad_request".to_string())?;
    p.decide(&host, port)
        .map(|r| r.id.clone())
        .map_err(|d| d.reason.code().to_string())
}

#[test]
fn connect_decisions() {
    let p = policy();
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("api.github.com:443", Ok("gh-api")),
        ("API.GitHub.com.:443", Ok("gh-api")),
        ("api.github.com:80", Ok("gh-wild")), // exact route lacks 80; wildcard covers it
        ("github.com:443", Err("no_route")),  // wildcard never matches the apex
        ("raw.github.com:443", Ok("gh-wild")),
        ("a.b.github.com:443", Ok("gh-wild")),
        ("x.objects.github.com:443", Ok("deep-wild")), // longer suffix wins
        ("x.objects.github.com:80", Ok("gh-wild")),
        ("objects.github.com:443", Ok("gh-wild")),
        ("notgithub.com:443", Err("no_route")),
        ("github.com.evil.com:443", Err("no_route")),
        ("evilgithub.com:443", Err("no_route")),
        ("allowed.com:443", Ok("allowed")),
        ("allowed.com.:80", Ok("allowed")),
        ("ALLOWED.COM:443", Ok("allowed")),
        ("allowed.com:8443", Err("port")),
        ("allowed.com.evil.com:443", Err("no_route")),
        ("sub.allowed.com:443", Err("no_route")),
        ("allowed.com@evil.com:443", Err("bad_request")),
        ("evil.com#@allowed.com:443", Err("bad_request")),
        ("[allowed.com]:443", Err("bad_request")),
        // IP literals
        ("172.17.0.1:8000", Ok("model")),
        ("0xac.17.0.1:8000", Ok("model")),
        ("2886795265:8000", Ok("model")),
        ("172.17.0.1:443", Err("port")),
        ("172.17.0.2:8000", Err("ip_literal")),
        ("192.168.1.10:443", Err("private_address")),
        ("8.8.8.8:443", Ok("public-ip")),
        ("134744072:443", Ok("public-ip")),
        ("[2606:4700::1111]:443", Ok("v6")),
        ("1.1.1.1:443", Err("ip_literal")),
        ("127.0.0.1:443", Err("ip_literal")),
        ("0x7f.1:443", Err("ip_literal")),
        ("2130706433:443", Err("ip_literal")),
        ("017700000001:443", Err("ip_literal")),
        ("127.1:443", Err("ip_literal")),
        ("[::1]:443", Err("ip_literal")),
        ("[::ffff:127.0.0.1]:443", Err("ip_literal")),
        ("[::127.0.0.1]:443", Err("ip_literal")),
        ("[2002:7f00:1::]:443", Err("ip_literal")),
        ("[64:ff9b::a9fe:a9fe]:443", Err("ip_literal")),
        (
            "[2001:0:4136:e378:8000:63bf:80ff:fffe]:443",
            Err("ip_literal"),
        ),
        ("[::ffff:8.8.8.8]:443", Err("ip_literal")), // same host, different literal: not named
        ("169.254.169.254:80", Err("ip_literal")),
        ("ollama:11434", Ok("docker-name")),
    ];
    for (authority, want) in cases {
        let got = decide(&p, authority);
        let want = want.map(str::to_string).map_err(str::to_string);
        assert_eq!(got, want, "{authority}");
    }
}

#[test]
fn deny_details_are_safe_and_statuses_right() {
    let p = policy();
    let host = canonical_host("nope.example").unwrap();
    let d = p.decide(&host, 443).unwrap_err();
    assert_eq!(d.reason, DenyReason::NoRoute);
    assert_eq!(d.reason.status(), 403);
    assert!(d.detail.contains("nope.example"), "{}", d.detail);
    assert_eq!(DenyReason::HostMismatch.status(), 421);
    assert_eq!(DenyReason::SniMismatch.status(), 421);
    assert_eq!(DenyReason::Upstream.status(), 502);
    assert_eq!(DenyReason::Dns.status(), 502);
    assert_eq!(DenyReason::BadRequest.status(), 400);
    assert_eq!(DenyReason::TooLarge.status(), 413);
    assert_eq!(DenyReason::Limit.status(), 503);
    assert_eq!(DenyReason::Loop.status(), 508);
    assert_eq!(DenyReason::PrivateAddress.code(), "private_address");
    assert_eq!(DenyReason::IpLiteral.code(), "ip_literal");
    assert_eq!(DenyReason::NoRoute.code(), "no_route");
}

#[test]
fn allow_private_covers_resolved_addresses() {
    let p = policy();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let ollama = p.route("docker-name").unwrap();
    assert!(ollama.allows_private(ip("172.18.0.5")));
    assert!(ollama.allows_private(ip("::ffff:172.18.0.5")));
    assert!(ollama.allows_private(ip("2002:ac12:5::")));
    assert!(!ollama.allows_private(ip("10.0.0.1")));
    assert!(!ollama.allows_private(ip("127.0.0.1")));
    assert!(!ollama.allows_private(ip("::ffff:127.0.0.1")));
    // Metadata addresses need an exact entry, never a wider range.
    let wide = p.route("metadata-wide").unwrap();
    assert!(wide.allows_private(ip("169.254.1.1")));
    assert!(!wide.allows_private(ip("169.254.169.254")));
    assert!(!wide.allows_private(ip("::ffff:169.254.169.254")));
    let exact = p.route("metadata-exact").unwrap();
    assert!(exact.allows_private(ip("169.254.169.254")));
    let gh = p.route("gh-api").unwrap();
    assert!(!gh.allows_private(ip("10.0.0.1")));
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn request_matching() {
    let p = policy();
    let gh = p.route("gh-api").unwrap();
    let json = headers(&[("content-type", "application/json")]);
    let none = HeaderMap::new();
    let cases: &[(&str, &str, &HeaderMap, Result<(), &str>)] = &[
        ("GET", "/repos/acme/widget", &none, Ok(())),
        ("GET", "/repos/acme/widget/issues", &none, Ok(())),
        ("GET", "/repos/acme/", &none, Ok(())),
        ("GET", "/repos/acme", &none, Err("path")), // prefix ends in `/`
        ("POST", "/repos/acme/widget", &none, Err("method")),
        ("get", "/repos/acme/widget", &none, Err("method")), // methods are case-sensitive
        ("GET", "/repos/other/widget", &none, Err("path")),
        ("GET", "/repos/acmeevil/x", &none, Err("path")),
        // dot segments and encodings are normalised before matching
        ("GET", "/repos/acme/../other/x", &none, Err("path")),
        ("GET", "/repos/acme/%2e%2e/other/x", &none, Err("path")),
        ("GET", "/repos/acme/..%2Fother", &none, Err("path")),
        ("GET", "/repos/acme%2F..%2Fother", &none, Err("path")),
        ("GET", "/repos/other/../acme/x", &none, Ok(())),
        ("GET", "/repos//acme/x", &none, Ok(())),
        ("GET", "/repos/%61cme/x", &none, Ok(())),
        ("GET", "/repos/acme/x%2Fy", &none, Ok(())),
        ("GET", "/repos/acme/x%zz", &none, Err("path")),
        // exact path + header
        ("POST", "/graphql", &json, Ok(())),
        ("POST", "/graphql", &none, Err("header")),
        ("POST", "/graphql/", &json, Err("path")),
        ("POST", "/x/../graphql", &json, Ok(())),
        ("GET", "/graphql", &json, Err("method")),
        // regex is anchored to the whole path
        ("GET", "/users/octocat", &none, Ok(())),
        ("HEAD", "/users/octo-cat", &none, Ok(())),
        ("GET", "/users/octocat/repos", &none, Err("path")),
        ("GET", "/x/users/octocat", &none, Err("path")),
        ("GET", "/users/OCTOCAT", &none, Err("path")),
    ];
    for (method, path, h, want) in cases {
        let got = gh
            .check_request(method, path, h)
            .map_err(|d| d.reason.code().to_string());
        let want = want.map_err(str::to_string);
        assert_eq!(got, want, "{method} {path}");
    }
    let wrong = headers(&[("content-type", "text/plain")]);
    let d = gh.check_request("POST", "/graphql", &wrong).unwrap_err();
    assert_eq!(d.reason, DenyReason::Header);
    assert!(!d.detail.contains("text/plain"), "{}", d.detail);
    let multi = headers(&[
        ("content-type", "text/plain"),
        ("content-type", "application/json"),
    ]);
    assert!(gh.check_request("POST", "/graphql", &multi).is_ok());

    // Prefix without a trailing slash matches on a segment boundary.
    let files = p.route("prefix-no-slash").unwrap();
    for (path, ok) in [
        ("/pub", true),
        ("/pub/", true),
        ("/pub/a/b", true),
        ("/public", false),
        ("/pubx/a", false),
        ("/", false),
        ("/pub/../secret", false),
    ] {
        assert_eq!(
            files.check_request("GET", path, &none).is_ok(),
            ok,
            "{path}"
        );
    }

    // A route without matchers allows any well-formed path, but not a malformed one.
    let any = p.route("allowed").unwrap();
    assert!(any
        .check_request("DELETE", "/anything/at/all", &none)
        .is_ok());
    assert_eq!(
        any.check_request("GET", "/a/..%2Fb", &none)
            .unwrap_err()
            .reason,
        DenyReason::Path
    );
}
