//! The proxy driven by Python `requests` (a real client library with its own proxy logic).
mod common;

use std::process::Command;

use common::Harness;

const SCRIPT: &str = r#"
import sys, requests
proxy, ca, port = sys.argv[1], sys.argv[2], sys.argv[3]
s = requests.Session()
s.proxies = {"https": proxy, "http": proxy}
s.verify = ca
s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override s.verify
base = f"https://api.allowed.test:{port}"
r = s.get(f"{base}/repos/acme/widget?page=2")
assert r.status_code == 200, r.text
assert "pq=/repos/acme/widget?page=2" in r.text, r.text
# Keep-alive reuse on the same tunnel.
for _ in range(5):
    assert s.get(f"{base}/repos/x").status_code == 200
r = s.post(f"{base}/upload", data=b"x" * 100000)
assert r.text.startswith("len=100000 "), r.text
# Chunked request body (a generator makes requests use Transfer-Encoding: chunked).
r = s.post(f"{base}/upload", data=(b"y" * 1000 for _ in range(100)))
assert r.text.startswith("len=100000 "), r.text
r = s.delete(f"{base}/repos/x")
assert r.status_code == 403 and r.headers["X-Bottle-Deny"] == "method", (r.status_code, r.headers)
assert "blocked by bottle policy" in r.text
try:
    s.get(f"https://nothere.test:{port}/")
    raise SystemExit("denied host was reachable")
except requests.exceptions.ProxyError as e:
    assert "403" in str(e), e
print("OK")
"#;

#[test]
fn python_requests_through_the_proxy() {
    let h = Harness::start();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(format!("http://{}", h.proxy_addr))
        .arg(&h.ca_path)
        .arg(h.upstream_port.to_string())
        .output()
        .expect("python3 is installed (scripts/deps.sh test)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = h.audit_lines(9);
    let text = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!text.contains("page=2"), "query value in audit: {text}");
    assert!(lines
        .iter()
        .any(|l| l["path"] == "/repos/acme/widget?page="));
}
