//! Table-driven canonicalisation tests, including known allowlist-bypass classes.
use std::net::IpAddr;

use bottle_proxy::canon::{
    canonical_host, normalize_path, parse_absolute_target, parse_authority, redact_query, Host,
    Scheme,
};

fn name(s: &str) -> Host {
    Host::Name(s.to_string())
}

fn ip(s: &str) -> Host {
    Host::Ip(s.parse::<IpAddr>().unwrap())
}

#[test]
fn canonical_hosts() {
    let cases: &[(&str, Host)] = &[
        ("example.com", name("example.com")),
        ("example.com.", name("example.com")),
        ("EXAMPLE.com", name("example.com")),
        ("ExAmPlE.CoM.", name("example.com")),
        ("allowed.com.evil.com", name("allowed.com.evil.com")),
        ("bücher.example", name("xn--bcher-kva.example")),
        ("BÜCHER.example", name("xn--bcher-kva.example")),
        ("xn--bcher-kva.example", name("xn--bcher-kva.example")),
        // fullwidth full stop (U+3002) and fullwidth letters map under UTS #46
        ("example\u{3002}com", name("example.com")),
        ("ｅｘａｍｐｌｅ.com", name("example.com")),
        ("my_host.internal", name("my_host.internal")),
        ("localhost", name("localhost")),
        // IPv4 in every notation
        ("127.0.0.1", ip("127.0.0.1")),
        ("2130706433", ip("127.0.0.1")),
        ("0x7f.1", ip("127.0.0.1")),
        ("0x7F.0.0.1", ip("127.0.0.1")),
        ("0177.0.0.1", ip("127.0.0.1")),
        ("017700000001", ip("127.0.0.1")),
        ("127.1", ip("127.0.0.1")),
        ("127.0.1", ip("127.0.0.1")),
        ("127.0.0.1.", ip("127.0.0.1")),
        ("0xa9fea9fe", ip("169.254.169.254")),
        ("0", ip("0.0.0.0")),
        // fullwidth digits map to an IPv4 address, not a name
        ("１２７.０.０.１", ip("127.0.0.1")),
        // bracketed IPv6
        ("[::1]", ip("::1")),
        ("[::ffff:127.0.0.1]", ip("::ffff:127.0.0.1")),
        ("[::127.0.0.1]", ip("::127.0.0.1")),
        ("[2002:7f00:1::]", ip("2002:7f00:1::")),
        ("[64:ff9b::a9fe:a9fe]", ip("64:ff9b::169.254.169.254")),
        ("[2001:DB8::1]", ip("2001:db8::1")),
    ];
    for (input, want) in cases {
        match canonical_host(input) {
            Ok(h) => assert_eq!(&h, want, "input {input:?}"),
            Err(e) => panic!("input {input:?} refused: {e}"),
        }
    }
}

#[test]
fn refused_hosts() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("[example.com]", "brackets are only for IPv6"),
        ("[127.0.0.1]", "brackets are only for IPv6"),
        ("evil.com#@allowed.com", "userinfo"),
        ("evil.com#allowed.com", "`#`"),
        ("allowed.com@evil.com", "userinfo"),
        ("user:pass@allowed.com", "userinfo"),
        ("evil.com/allowed.com", "path separator"),
        ("evil.com\\allowed.com", "path separator"),
        ("evil.com?allowed.com", "query"),
        ("allowed.com evil.com", "whitespace"),
        ("allowed.com\tevil.com", "whitespace"),
        ("allowed.com\0", "control"),
        ("allowed%2ecom", "percent"),
        ("::1", "must be bracketed"),
        ("::ffff:127.0.0.1", "must be bracketed"),
        ("[::1", "unclosed"),
        ("[fe80::1%eth0]", "zone"),
        ("example.com..", "empty label"),
        ("..", "empty label"),
        (".", "no labels"),
        (".example.com", "empty label"),
        ("a..b", "empty label"),
        ("example.com:443", "port separately"),
        ("256.0.0.1", "IPv4"),
        ("1.2.3.4.5", "IPv4"),
        ("0x1g.1", "IPv4"),
        ("4294967296", "IPv4"),
        ("08.0.0.1", "IPv4"),
        ("foo.123", "IPv4"),
        ("exa*mple.com", "not allowed"),
        ("exa$mple.com", "not allowed"),
    ];
    for (input, why) in cases {
        match canonical_host(input) {
            Ok(h) => panic!("input {input:?} accepted as {h:?}"),
            Err(e) => assert!(
                e.to_string().contains(why),
                "input {input:?}: error {e} does not mention {why:?}"
            ),
        }
    }
    let long = format!("{}.com", "a".repeat(64));
    assert!(canonical_host(&long).is_err());
    let long_name = vec!["a".repeat(60); 5].join(".");
    assert!(canonical_host(&long_name).is_err(), "over 253 bytes");
}

#[test]
fn host_display_is_canonical_form() {
    assert_eq!(ip("::1").to_string(), "[::1]");
    assert_eq!(ip("10.0.0.1").to_string(), "10.0.0.1");
    assert_eq!(name("a.example").to_string(), "a.example");
    assert_eq!(ip("::1").to_server_name(), "::1");
    for s in ["[::1]", "10.0.0.1", "a.example", "xn--bcher-kva.example"] {
        assert_eq!(canonical_host(s).unwrap().to_string(), s, "round trip {s}");
    }
}

#[test]
fn authorities() {
    let ok: &[(&str, Host, u16)] = &[
        ("example.com:443", name("example.com"), 443),
        ("example.com", name("example.com"), 8443),
        ("EXAMPLE.com.:8080", name("example.com"), 8080),
        ("[::1]:443", ip("::1"), 443),
        ("[::1]", ip("::1"), 8443),
        ("127.1:80", ip("127.0.0.1"), 80),
        ("2130706433:443", ip("127.0.0.1"), 443),
        ("example.com:00443", name("example.com"), 443),
        ("example.com:65535", name("example.com"), 65535),
    ];
    for (input, host, port) in ok {
        assert_eq!(
            parse_authority(input, 8443).unwrap_or_else(|e| panic!("{input:?}: {e}")),
            (host.clone(), *port),
            "{input:?}"
        );
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty"),
        ("example.com:", "empty port"),
        ("example.com:0", "1-65535"),
        ("example.com:65536", "1-65535"),
        ("example.com:+443", "1-65535"),
        ("example.com:443 ", "1-65535"),
        ("example.com:4a3", "1-65535"),
        ("example.com:443:443", "bracketed"),
        ("::1:443", "bracketed"),
        ("[::1]443", "after `]`"),
        ("[::1]:", "empty port"),
        ("[example.com]:443", "brackets are only for IPv6"),
        ("allowed.com@evil.com:443", "userinfo"),
        ("allowed.com:443@evil.com:443", "userinfo"),
        ("evil.com#@allowed.com:443", "userinfo"),
        (":443", "empty"),
    ];
    for (input, why) in bad {
        match parse_authority(input, 443) {
            Ok(v) => panic!("{input:?} accepted as {v:?}"),
            Err(e) => assert!(
                e.to_string().contains(why),
                "{input:?}: error {e} does not mention {why:?}"
            ),
        }
    }
}

#[test]
fn errors_never_echo_userinfo() {
    let e = parse_authority("user:s3cr3t@evil.com:443", 443).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    let e = canonical_host("admin:hunter2@evil.com").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn absolute_targets() {
    let t = parse_absolute_target(&"http://Example.COM./a/b?x=1".parse().unwrap()).unwrap();
    assert_eq!(t.scheme, Scheme::Http);
    assert_eq!(t.host, name("example.com"));
    assert_eq!(t.port, 80);
    assert_eq!(t.path_and_query, "/a/b?x=1");
    let t = parse_absolute_target(&"https://[::1]:8443".parse().unwrap()).unwrap();
    assert_eq!((t.scheme, t.host, t.port), (Scheme::Https, ip("::1"), 8443));
    assert_eq!(t.path_and_query, "/");
    let t = parse_absolute_target(&"http://0x7f.1:8080/".parse().unwrap()).unwrap();
    assert_eq!((t.host, t.port), (ip("127.0.0.1"), 8080));

    for bad in [
        "http://user:pw@allowed.com/",
        "http://allowed.com@evil.com/",
        "ftp://example.com/",
        "/relative/only",
        "http://[example.com]/",
        "http://example.com:0/",
    ] {
        let Ok(uri) = bad.parse::<http::Uri>() else {
            continue; // refused by the HTTP layer already
        };
        let r = parse_absolute_target(&uri);
        assert!(r.is_err(), "{bad:?} accepted: {r:?}");
        if let Err(e) = r {
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }
    // `#` never reaches the authority: either the URI is refused or the
    // authority is evil.com.
    if let Ok(uri) = "http://evil.com#@allowed.com/".parse::<http::Uri>() {
        if let Ok(t) = parse_absolute_target(&uri) {
            assert_ne!(t.host, name("allowed.com"));
        }
    }
}

#[test]
fn query_values_are_redacted() {
    for (input, want) in [
        ("/a?x=1&y=2", "/a?x=&y="),
        ("/a", "/a"),
        ("/a?", "/a?"),
        ("/a?token", "/a?"),
        ("/a?x=1&ghp_secret&y=", "/a?x=&&y="),
        ("/a?x=a=b", "/a?x="),
        ("/a?x=1#frag", "/a?x="),
        ("/a#frag?x=1", "/a"),
    ] {
        assert_eq!(redact_query(input), want, "{input:?}");
    }
}

#[test]
fn paths_are_normalised() {
    let ok = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a//b", "/a/b"),
        ("//a///b//", "/a/b/"),
        ("/public//../secret", "/secret"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E/b", "/a/b"),
        ("/a/.%2e/b", "/b"),
        ("/%61%62c", "/abc"),
        ("/a%7e", "/a~"),
        ("/a%2fb", "/a%2Fb"),
        ("/group%2Fproject/x", "/group%2Fproject/x"),
        ("/a%20b", "/a%20b"),
        ("/a%3Fb", "/a%3Fb"),
    ];
    for (input, want) in ok {
        assert_eq!(
            normalize_path(input).unwrap_or_else(|e| panic!("{input:?}: {e}")),
            want,
            "{input:?}"
        );
    }
    let bad = [
        ("", "start with `/`"),
        ("a/b", "start with `/`"),
        ("*", "start with `/`"),
        ("/a%2F..%2Fb", "hidden"),
        ("/a/..%2Fb", "hidden"),
        ("/a/..%5Cb", "hidden"),
        ("/a/..\\b", "hidden"),
        ("/a/%2e%2e%2fb", "hidden"),
        ("/a%", "malformed"),
        ("/a%2", "malformed"),
        ("/a%zz", "malformed"),
        ("/a b", "space"),
        ("/a\u{e9}", "non-ASCII"),
        ("/a?x=1", "`?`"),
        ("/a#f", "`#`"),
    ];
    for (input, why) in bad {
        match normalize_path(input) {
            Ok(p) => panic!("{input:?} accepted as {p:?}"),
            Err(e) => assert!(e.to_string().contains(why), "{input:?}: {e}"),
        }
    }
}
