//! Policy loader: accepted files, defaults, and refusals with file, line, key and reason.
use std::time::Duration;

use bottle_proxy::canon::Host;
use bottle_proxy::policy::{DlpSpec, HostPattern, OnMatch, Policy, PolicyError};

fn load(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml_str(text, "policy.toml")
}

fn err(text: &str) -> PolicyError {
    match load(text) {
        Ok(_) => panic!("policy was accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn full_example_loads_with_defaults() {
    let p = load(
        r#"
[settings]
max_tunnels = 16
idle_timeout_ms = 5000

[[route]]
id = "github-api"
host = "api.github.com"
ports = [443]
auth = { scheme = "Bearer", secret = "GH_TOKEN" }

[[route.matches]]
path_prefix = "/repos/acme/"
methods = ["GET", "POST"]
headers = { "accept" = "application/json" }

[[route]]
host = "*.github.com"

[[route]]
host = "172.17.0.1"
ports = [8000]
allow_private = ["172.17.0.1/32"]

[[route]]
host = "pinned.example.com"
passthrough = true
"#,
    )
    .unwrap();
    assert_eq!(p.settings.max_tunnels, 16);
    assert_eq!(p.settings.idle_timeout, Duration::from_millis(5000));
    assert_eq!(p.settings.max_request_head, 64 * 1024);
    assert_eq!(p.settings.connect_timeout, Duration::from_secs(10));
    assert_eq!(p.routes.len(), 4);
    let gh = &p.routes[0];
    assert_eq!(gh.id, "github-api");
    assert_eq!(gh.ports, vec![443]);
    assert_eq!(gh.matches.len(), 1);
    assert_eq!(gh.dlp, DlpSpec::Enabled(true));
    assert_eq!(gh.on_match, OnMatch::Block);
    let wild = &p.routes[1];
    assert_eq!(wild.id, "*.github.com");
    assert_eq!(wild.host, HostPattern::Wildcard("github.com".into()));
    assert_eq!(wild.ports, vec![443, 80]);
    assert_eq!(
        p.routes[2].host,
        HostPattern::Exact(Host::Ip("172.17.0.1".parse().unwrap()))
    );
    assert!(p.routes[3].passthrough);
    assert_eq!(p.routes[3].dlp, DlpSpec::Enabled(false));
}

#[test]
fn errors_name_file_line_key_and_reason() {
    let e = err("[[route]]\nhost = \"api.github.com\"\n\n[[route]]\nhost = \"*.com\"\n");
    assert_eq!(
        e.to_string(),
        "policy.toml:5: route[1].host: `*.com` is a public-suffix wildcard; name a registrable domain like `*.example.com`"
    );
}

/// (policy text, line, key, substring of the reason)
const REFUSED: &[(&str, usize, &str, &str)] = &[
    // hosts
    ("[[route]]\nhost = \"Example.com\"\n", 2, "route[0].host", "write `example.com`"),
    ("[[route]]\nhost = \"example.com.\"\n", 2, "route[0].host", "write `example.com`"),
    ("[[route]]\nhost = \"bücher.example\"\n", 2, "route[0].host", "write `xn--bcher-kva.example`"),
    ("[[route]]\nhost = \"*\"\n", 2, "route[0].host", "every host"),
    ("[[route]]\nhost = \"*.com\"\n", 2, "route[0].host", "public-suffix wildcard"),
    ("[[route]]\nhost = \"*.co.uk\"\n", 2, "route[0].host", "public-suffix wildcard"),
    ("[[route]]\nhost = \"*.com.au\"\n", 2, "route[0].host", "public-suffix wildcard"),
    ("[[route]]\nhost = \"*.github.io\"\n", 2, "route[0].host", "public-suffix wildcard"),
    ("[[route]]\nhost = \"*.internal\"\n", 2, "route[0].host", "public-suffix wildcard"),
    ("[[route]]\nhost = \"*.Example.com\"\n", 2, "route[0].host", "write `*.example.com`"),
    ("[[route]]\nhost = \"api.*.example.com\"\n", 2, "route[0].host", "leading `*.`"),
    ("[[route]]\nhost = \"*example.com\"\n", 2, "route[0].host", "leading `*.`"),
    ("[[route]]\nhost = \"*.*.example.com\"\n", 2, "route[0].host", "leading `*.`"),
    ("[[route]]\nhost = \"example.*\"\n", 2, "route[0].host", "leading `*.`"),
    ("[[route]]\nhost = \"*.10.0.0.1\"\n", 2, "route[0].host", "IP addresses"),
    ("[[route]]\nhost = \"\"\n", 2, "route[0].host", "empty"),
    ("[[route]]\nhost = \"example.com:443\"\n", 2, "route[0].host", "ports = [...]"),
    ("[[route]]\nhost = \"::1\"\n", 2, "route[0].host", "bracketed"),
    ("[[route]]\nhost = \"[example.com]\"\n", 2, "route[0].host", "only for IPv6"),
    ("[[route]]\nhost = \"0x7f.1\"\n", 2, "route[0].host", "write `127.0.0.1`"),
    ("[[route]]\nhost = \"[::FFFF:7f00:1]\"\n", 2, "route[0].host", "write `[::ffff:127.0.0.1]`"),
    ("[[route]]\nhost = \"user@example.com\"\n", 2, "route[0].host", "userinfo"),
    ("[[route]]\nhost = \"https://example.com\"\n", 2, "route[0].host", "is a URL"),
    // unknown keys and types
    ("[[route]]\nhost = \"a.example\"\nhots = \"b\"\n", 3, "route[0].hots", "unknown field `hots`"),
    ("[settings]\nmax_tunnel = 3\n", 2, "settings.max_tunnel", "unknown field"),
    ("[[route]]\nhost = \"a.example\"\n[[route.matches]]\npaht = \"/x\"\n", 4, "route[0].matches[0].paht", "unknown field"),
    ("[[route]]\nhost = \"a.example\"\nauth = { scheme = \"Bearer\", secret = \"X\", value = \"v\" }\n", 3, "route[0].auth.value", "unknown field `value`"),
    ("[[route]]\nhost = \"a.example\"\nports = [\"443\"]\n", 3, "route[0].ports[0]", "invalid type"),
    ("[[route]]\nhost = \"a.example\"\nports = [70000]\n", 3, "route[0].ports[0]", "expected u16"),
    ("[routes]\n", 1, "routes", "unknown field"),
    ("[[route]]\nid = \"x\"\n", 1, "route[0]", "missing field `host`"),
    ("[[route]\nhost = \"a\"\n", 1, "", ""),
    // ids and duplicates
    ("[[route]]\nhost = \"a.example\"\n\n[[route]]\nhost = \"a.example\"\nports = [8443]\n", 5, "route[1].host", "duplicate route id `a.example`"),
    ("[[route]]\nid = \"x\"\nhost = \"a.example\"\n[[route]]\nid = \"x\"\nhost = \"b.example\"\n", 5, "route[1].id", "duplicate route id `x`"),
    ("[[route]]\nid = \"a\"\nhost = \"a.example\"\n[[route]]\nid = \"b\"\nhost = \"a.example\"\nports = [80]\n", 6, "route[1].host", "merge"),
    ("[[route]]\nid = \"has space\"\nhost = \"a.example\"\n", 2, "route[0].id", "visible ASCII"),
    ("[[route]]\nid = \"\"\nhost = \"a.example\"\n", 2, "route[0].id", "1 to 128"),
    // ports
    ("[[route]]\nhost = \"a.example\"\nports = [0]\n", 3, "route[0].ports[0]", "port 0"),
    // allow_private
    ("[[route]]\nhost = \"a.example\"\nallow_private = [\"10.0.0.1/8\"]\n", 3, "route[0].allow_private[0]", "write `10.0.0.0/8`"),
    ("[[route]]\nhost = \"a.example\"\nallow_private = [\"banana\"]\n", 3, "route[0].allow_private[0]", "not a CIDR"),
    ("[[route]]\nhost = \"a.example\"\nallow_private = [\"0.0.0.0/0\"]\n", 3, "route[0].allow_private[0]", "too wide"),
    ("[[route]]\nhost = \"a.example\"\nallow_private = [\"::/0\"]\n", 3, "route[0].allow_private[0]", "too wide"),
    ("[[route]]\nhost = \"a.example\"\nallow_private = [\"10.0.0.0/33\"]\n", 3, "route[0].allow_private[0]", "not a CIDR"),
    // matches
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath_regex = \"/a(\"\n", 5, "route[0].matches[0].path_regex", "invalid regex"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath_regex = \"\"\n", 5, "route[0].matches[0].path_regex", "empty"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath_regex = \"(a{1000}){1000}\"\n", 5, "route[0].matches[0].path_regex", "simplify"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath = \"/a\"\npath_prefix = \"/b\"\n", 6, "route[0].matches[0].path_prefix", "at most one"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath = \"/a/../b\"\n", 5, "route[0].matches[0].path", "write `/b`"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath_prefix = \"/a/%2e%2e/b/\"\n", 5, "route[0].matches[0].path_prefix", "write `/b/`"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath = \"a\"\n", 5, "route[0].matches[0].path", "start with `/`"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\npath = \"/a?x=1\"\n", 5, "route[0].matches[0].path", "query"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nmethods = [\"\"]\n", 5, "route[0].matches[0].methods[0]", "empty"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nmethods = [\"get\"]\n", 5, "route[0].matches[0].methods[0]", "write `GET`"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nmethods = [\"GE T\"]\n", 5, "route[0].matches[0].methods[0]", "not an HTTP method"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nheaders = { \"Accept\" = \"x\" }\n", 5, "route[0].matches[0].headers.Accept", "write `accept`"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nheaders = { \"bad header\" = \"x\" }\n", 5, "route[0].matches[0].headers.\"bad header\"", "not a valid header name"),
    ("[[route]]\nhost = \"a.example\"\n\n[[route.matches]]\nheaders = { \"x-a\" = \"a\\nb\" }\n", 5, "route[0].matches[0].headers.x-a", "line breaks"),
    // passthrough
    ("[[route]]\nhost = \"a.example\"\npassthrough = true\n\n[[route.matches]]\npath = \"/\"\n", 5, "route[0].matches", "cannot check"),
    ("[[route]]\nhost = \"a.example\"\npassthrough = true\nauth = { scheme = \"Bearer\", secret = \"T\" }\n", 4, "route[0].auth", "cannot inject"),
    ("[[route]]\nhost = \"a.example\"\npassthrough = true\ndlp = true\n", 4, "route[0].dlp", "cannot scan"),
    ("[[route]]\nhost = \"a.example\"\npassthrough = true\ninbound_dlp = true\n", 4, "route[0].inbound_dlp", "cannot scan"),
    ("[[route]]\nhost = \"a.example\"\npassthrough = true\nbody_cap = 2048\n", 4, "route[0].body_cap", "passthrough"),
    // auth
    ("[[route]]\nhost = \"a.example\"\nauth = { secret = \"T\" }\n", 3, "route[0].auth.scheme", "give `scheme"),
    ("[[route]]\nhost = \"a.example\"\nauth = { scheme = \"Bearer\", header = \"x-api-key\", secret = \"T\" }\n", 3, "route[0].auth.header", "not both"),
    ("[[route]]\nhost = \"a.example\"\nauth = { scheme = \"bearer\", secret = \"T\" }\n", 3, "route[0].auth.scheme", "write `Bearer`"),
    ("[[route]]\nhost = \"a.example\"\nauth = { scheme = \"Digest\", secret = \"T\" }\n", 3, "route[0].auth.scheme", "not one of"),
    ("[[route]]\nhost = \"a.example\"\nauth = { header = \"X-Api-Key\", secret = \"T\" }\n", 3, "route[0].auth.header", "write `x-api-key`"),
    ("[[route]]\nhost = \"a.example\"\nauth = { header = \"host\", secret = \"T\" }\n", 3, "route[0].auth.header", "framing or routing"),
    ("[[route]]\nhost = \"a.example\"\nauth = { scheme = \"Bearer\", secret = \"ghp_abc def\" }\n", 3, "route[0].auth.secret", "name"),
    // DLP knobs and limits
    ("[[route]]\nhost = \"a.example\"\non_match = \"allow\"\n", 3, "route[0].on_match", "use `block` or `redact`"),
    ("[[route]]\nhost = \"a.example\"\non_match = \"explode\"\n", 3, "route[0].on_match", "unknown variant"),
    ("[[route]]\nhost = \"a.example\"\nbody_cap = 0\n", 3, "route[0].body_cap", "out of range"),
    ("[[route]]\nhost = \"a.example\"\nbody_cap = 1073741824\n", 3, "route[0].body_cap", "out of range"),
    ("[[route]]\nhost = \"a.example\"\ndlp = [\"\"]\n", 3, "route[0].dlp[0]", "rule id"),
    // settings
    ("[settings]\nmax_request_head = 10\n", 2, "settings.max_request_head", "1024 to 1048576"),
    ("[settings]\nmax_tunnels = 0\n", 2, "settings.max_tunnels", "out of range"),
    ("[settings]\nidle_timeout_ms = 0\n", 2, "settings.idle_timeout_ms", "out of range"),
    ("[settings]\nhandshake_timeout_ms = 0\n", 2, "settings.handshake_timeout_ms", "out of range"),
    ("[settings]\nconnect_timeout_ms = 99999999\n", 2, "settings.connect_timeout_ms", "out of range"),
    ("[settings]\nextra_roots = [\"/etc/ssl/ca.pem\"]\n", 2, "settings.extra_roots[0]", "not a file name"),
];

#[test]
fn refused_policies_say_where_and_why() {
    let mut failures = Vec::new();
    for (text, line, key, why) in REFUSED {
        match load(text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(e) => {
                if e.origin != "policy.toml"
                    || e.line != Some(*line)
                    || e.key != *key
                    || !e.reason.contains(why)
                {
                    failures.push(format!(
                        "{text:?}\n  want line {line} key {key:?} reason ~ {why:?}\n  got  {e:?}"
                    ));
                }
                let shown = e.to_string();
                assert!(
                    shown.starts_with(&format!("policy.toml:{line}: ")),
                    "{shown}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn accepted_edge_cases() {
    for text in [
        "",
        "[settings]\n",
        "[[route]]\nhost = \"[::1]\"\nallow_private = [\"::1/128\"]\n",
        "[[route]]\nhost = \"10.0.0.1\"\nallow_private = [\"10.0.0.1\"]\n",
        "[[route]]\nhost = \"*.example.co.uk\"\n",
        "[[route]]\nhost = \"*.acme.github.io\"\n",
        "[[route]]\nhost = \"xn--bcher-kva.example\"\n",
        "[[route]]\nhost = \"a.example\"\npassthrough = true\ndlp = false\n",
        "[[route]]\nhost = \"a.example\"\nauth = { header = \"x-api-key\", secret = \"API_KEY\" }\n",
        "[[route]]\nhost = \"a.example\"\nover_cap = \"allow\"\non_match = \"redact\"\ndlp = [\"aws-access-key-id\"]\n",
        "[[route]]\nhost = \"a.example\"\nports = [443, 443, 8443]\n",
        "[[route]]\nid = \"one\"\nhost = \"a.example\"\nports = [443]\n[[route]]\nid = \"two\"\nhost = \"a.example\"\nports = [8443]\n",
        "[[route]]\nid = \"exact\"\nhost = \"a.example.com\"\n[[route]]\nid = \"wild\"\nhost = \"*.example.com\"\n",
        "[[route]]\nhost = \"a.example\"\n[[route.matches]]\nmethods = [\"GET\"]\n",
    ] {
        if let Err(e) = load(text) {
            panic!("refused {text:?}: {e}");
        }
    }
    let p = load("[[route]]\nhost = \"a.example\"\nports = [443, 443, 8443]\n").unwrap();
    assert_eq!(p.routes[0].ports, vec![443, 8443]);
}

#[test]
fn from_spec_and_load_agree() {
    use bottle_proxy::policy::{PolicyFile, RouteSpec};
    let spec = PolicyFile {
        routes: vec![RouteSpec {
            host: "*.com".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = Policy::from_spec(spec, "rendered").unwrap_err();
    assert_eq!(e.line, None);
    assert_eq!(
        e.to_string(),
        "rendered: route[0].host: `*.com` is a public-suffix wildcard; name a registrable domain like `*.example.com`"
    );
    let ok = PolicyFile {
        routes: vec![RouteSpec {
            host: "api.github.com".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // A launcher-rendered spec round-trips through TOML to the same policy.
    let text = toml::to_string(&ok).unwrap();
    let a = Policy::from_spec(ok, "rendered").unwrap();
    let b = load(&text).unwrap();
    assert_eq!(a.routes[0].id, b.routes[0].id);
    assert_eq!(a.routes[0].host, b.routes[0].host);
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("bottle-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        "[[route]]\nhost = \"a.example\"\n\n[[route]]\nhost = \"*\"\n",
    )
    .unwrap();
    let e = Policy::load(&path).unwrap_err();
    assert_eq!(e.line, Some(5));
    assert!(e
        .to_string()
        .starts_with(&format!("{}:5: route[1].host: ", path.display())));
    let missing = Policy::load(&dir.join("nope.toml")).unwrap_err();
    assert!(
        missing.to_string().contains("cannot read the policy file"),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_never_panics() {
    // Odd but syntactically valid TOML; each must be refused or accepted, never panic.
    for text in [
        "route = 1",
        "route = []",
        "route = [1]",
        "[[route]]\nhost = \"\\u0000\"\n",
        "[[route]]\nhost = \"a.example\"\nports = [-1]\n",
        "[[route]]\nhost = \"a.example\"\nbody_cap = -5\n",
        "[[route]]\nhost = \"a.example\"\n[[route.matches]]\npath_regex = \"(?x)\"\n",
        "[settings]\nmax_tunnel_bytes = 18446744073709551615\n",
        "\u{feff}[[route]]\nhost = \"a.example\"\n",
    ] {
        let _ = load(text);
    }
}

/// A team rule file in `settings.dlp_rules` (TOML text), rules turned off with
/// `settings.dlp_disable`, and route rule lists checked against the resulting rule ids.
#[test]
fn custom_dlp_rules_and_disable() {
    let team = r#"
[[rules]]
id = "acme-internal-token"
description = "ACME internal service token"
regex = '''acme_tok_[a-z0-9]{24}'''
keywords = ["acme_tok_"]
"#;
    let ok = format!(
        "[settings]\ndlp_rules = [{}]\ndlp_disable = [\"jwt\"]\n\n[[route]]\nhost = \"a.example\"\ndlp = [\"acme-internal-token\"]\n",
        toml::Value::String(team.into())
    );
    let p = load(&ok).unwrap();
    let s = p.settings.dlp_scanner(std::iter::empty()).unwrap();
    let ids: Vec<String> = s.rules().into_iter().map(|r| r.id).collect();
    assert!(ids.iter().any(|i| i == "acme-internal-token"));
    assert!(!ids.iter().any(|i| i == "jwt"), "disabled rule is gone");
    let hit = s.scan(b"x = acme_tok_0123456789abcdefghijklmn");
    assert_eq!(
        hit.first().map(|f| f.rule_id.as_str()),
        Some("acme-internal-token")
    );

    // A typo in a route's rule list is refused with a suggestion (it would otherwise leave
    // the route with only the core floor).
    let e = err("[[route]]\nhost = \"a.example\"\ndlp = [\"jwtt\"]\n");
    assert_eq!(e.key, "route[0].dlp[0]", "{e}");
    assert!(e.reason.contains("did you mean `jwt`"), "{e}");
    // Core-floor rules cannot be disabled; unknown ids are named.
    let e = err("[settings]\ndlp_disable = [\"github-pat\"]\n");
    assert!(e.key.starts_with("settings.dlp_disable"), "{e}");
    assert!(e.reason.contains("core floor"), "{e}");
    let e = err("[settings]\ndlp_disable = [\"no-such-rule\"]\n");
    assert!(e.reason.contains("no-such-rule"), "{e}");
    // A broken rule file names the setting, the line and the rule.
    let bad = "[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\nkeywords = [\"xyzzy\"]\n";
    let e = err(&format!(
        "[settings]\ndlp_rules = [{}]\n",
        toml::Value::String(bad.into())
    ));
    assert_eq!(e.key, "settings.dlp_rules[0]", "{e}");
    assert!(
        e.reason.contains("settings.dlp_rules[0]:") && e.reason.contains("rule `x`"),
        "{e}"
    );
}
