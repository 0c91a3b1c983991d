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
